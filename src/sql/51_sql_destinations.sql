-- SQL destinations (DESIGN.md "1.1: destinations"; docs/sql-destinations.md):
-- the erasure is a function in this database, function(request jsonb),
-- which the worker (or dispatch()) calls as the role run_as in the
-- transaction that records the outcome, so the erasure and its proof
-- commit together, exactly once.  The call itself is C (src/sqldest.c):
-- the function runs with run_as's privileges only, in a security-
-- restricted operation, never inside a SECURITY DEFINER function of delq.
-- Here: adding and changing them, the checks that keep run_as from
-- reaching delq, the claim, and the outcome.

-- What is wrong with running fn as run_as, as (SQLSTATE, message), or
-- (NULL, NULL) when nothing is: checked when a SQL destination is added or
-- changed, and again before every call (a later GRANT or ALTER ROLE must
-- not slip through).  run_as may not be a superuser, hold CREATEROLE (it
-- could grant itself a delq role), reach the server's files or programs
-- (pg_read_server_files, pg_write_server_files, pg_execute_server_program:
-- the data files and secrets underneath delq), be a member of a delq role,
-- or hold a write privilege on a delq table; fn takes one jsonb and returns void,
-- boolean, integer or bigint (the outcome, see _sql_outcome), is not
-- delq's, and is not SECURITY DEFINER unless it already runs as run_as.
CREATE OR REPLACE FUNCTION delq._sql_problem(fn oid, run_as oid, OUT code text, OUT problem text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p pg_proc;
    r pg_roles;
    t text;
BEGIN
    SELECT * INTO p FROM pg_proc x WHERE x.oid = fn;
    SELECT * INTO r FROM pg_roles x WHERE x.oid = run_as;
    IF p.oid IS NULL THEN
        code := '42883'; problem := 'the function does not exist (any more)';
    ELSIF r.oid IS NULL THEN
        code := '42704'; problem := 'the role run_as does not exist (any more)';
    ELSIF p.prokind <> 'f' OR p.proretset THEN
        code := '22023'; problem := format('%s is not a plain function returning one value', fn::regprocedure);
    ELSIF p.pronargs <> 1 OR p.proargtypes[0] <> 'jsonb'::regtype THEN
        code := '22023'; problem := format('%s must take one argument of type jsonb', fn::regprocedure);
    ELSIF p.prorettype NOT IN ('void'::regtype, 'boolean'::regtype, 'integer'::regtype, 'bigint'::regtype) THEN
        code := '22023'; problem := format('%s returns %s, not void, boolean, integer or bigint',
                                           fn::regprocedure, p.prorettype::regtype);
    ELSIF p.pronamespace = 'delq'::regnamespace THEN
        code := '22023'; problem := format('%s is a function of delq', fn::regprocedure);
    ELSIF r.rolsuper THEN
        code := '42501'; problem := format('role %s is a superuser', r.rolname);
    ELSIF r.rolcreaterole THEN
        code := '42501'; problem := format('role %s has CREATEROLE (it could grant itself a delq role)', r.rolname);
    ELSIF pg_has_role(run_as, 'pg_execute_server_program', 'MEMBER')
          OR pg_has_role(run_as, 'pg_write_server_files', 'MEMBER')
          OR pg_has_role(run_as, 'pg_read_server_files', 'MEMBER') THEN
        code := '42501'; problem := format('role %s may run programs or read or write files as the server (pg_*_server_*)', r.rolname);
    ELSIF p.prosecdef AND p.proowner <> run_as THEN
        code := '42501'; problem := format('%s is SECURITY DEFINER: it would run as %s, not as %s',
                                           fn::regprocedure, pg_get_userbyid(p.proowner), r.rolname);
    ELSIF pg_has_role(run_as, 'delq_submitter', 'MEMBER') OR pg_has_role(run_as, 'delq_consumer', 'MEMBER') THEN
        code := '42501'; problem := format('role %s is a member of a delq role: it could change delq''s records', r.rolname);
    ELSIF NOT has_function_privilege(run_as, fn, 'EXECUTE') THEN
        code := '42501'; problem := format('role %s may not execute %s', r.rolname, fn::regprocedure);
    ELSE
        SELECT c.relname INTO t FROM pg_class c
         WHERE c.relnamespace = 'delq'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'S')
           AND (has_table_privilege(run_as, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
                OR has_any_column_privilege(run_as, c.oid, 'INSERT, UPDATE'))
         ORDER BY 1 LIMIT 1;
        IF t IS NOT NULL THEN
            code := '42501'; problem := format('role %s may write delq.%s', r.rolname, t);
        END IF;
    END IF;
END
$$;

-- Check a SQL destination's function and role for whoever sets them:
-- the caller must be a member of run_as (a delq_admin cannot borrow a
-- role it does not have), and _sql_problem must find nothing.
CREATE OR REPLACE FUNCTION delq._check_sql_destination(fn regprocedure, run_as regrole)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    x record;
BEGIN
    PERFORM delq._not_null('function', fn);
    PERFORM delq._not_null('run_as', run_as);
    IF NOT pg_has_role(delq._caller(), run_as, 'MEMBER') THEN
        RAISE EXCEPTION 'you are not a member of role %', run_as
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Only a member of run_as may make delq run a function as that role.';
    END IF;
    x := delq._sql_problem(fn, run_as);
    IF x.code IS NOT NULL THEN
        RAISE EXCEPTION 'SQL destination refused: %', x.problem
            USING ERRCODE = x.code,
                  HINT = 'run_as must be an ordinary role without CREATEROLE, outside the delq roles and without write access to delq''s tables; the function takes (request jsonb), returns void, boolean, integer or bigint, and is not SECURITY DEFINER (docs/sql-destinations.md).';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION delq.add_sql_destination(name text, function regprocedure, run_as regrole,
                                         timeout interval DEFAULT '30 seconds',
                                         max_attempts integer DEFAULT NULL,
                                         retry_base interval DEFAULT NULL,
                                         retry_max interval DEFAULT NULL,
                                         enabled boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d delq.destination;
BEGIN
    d.name := delq._check_name('name', name);
    d.kind := 'sql';
    d.created_at := now();
    PERFORM delq._check_sql_destination(function, run_as);
    d.sql_function := function::text;
    d.run_as := run_as::text;
    PERFORM delq._check_range('max_attempts', max_attempts, 1, 1000);
    IF retry_base = interval '0' THEN
        PERFORM delq._check_duration('retry_base', retry_base, '1 millisecond', '1 day');
    END IF;
    IF retry_max = interval '0' THEN
        PERFORM delq._check_duration('retry_max', retry_max, '1 second', '30 days');
    END IF;
    -- connect_timeout, concurrency and confirm do not apply: the defaults
    d := delq._merge_destination(d, NULL, '{}', NULL, timeout, '10 seconds',
                                 max_attempts, 16, 'response', retry_base, retry_max,
                                 enabled, NULL, NULL, NULL);
    PERFORM delq._insert_destination(d, jsonb_build_object('function', d.sql_function,
                                                           'run_as', d.run_as,
                                                           'timeout_ms', d.timeout_ms,
                                                           'enabled', d.enabled));
    PERFORM delq._wake_on_commit();
END
$$;

-- Change what only SQL destinations have; NULL keeps a value.  The other
-- settings (timeout, enabled, max_attempts, retry_base, retry_max) through
-- delq.alter_destination().  The pair is checked again, whichever changes.
CREATE OR REPLACE FUNCTION delq.alter_sql_destination(name text, function regprocedure DEFAULT NULL,
                                           run_as regrole DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d delq.destination := delq._destination(name, true);
    fn regprocedure;
    role regrole;
    changed text[] := '{}'::text[];
BEGIN
    IF d.kind <> 'sql' THEN
        RAISE EXCEPTION 'destination % is not a SQL destination', quote_literal(d.name)
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Change other kinds with delq.alter_destination() or delq.alter_pull_destination().';
    END IF;
    fn := coalesce(function, to_regprocedure(d.sql_function));
    role := coalesce(run_as, to_regrole(d.run_as));
    PERFORM delq._check_sql_destination(fn, role);
    IF fn::text <> d.sql_function THEN
        changed := changed || 'sql_function'::text;
    END IF;
    IF role::text <> d.run_as THEN
        changed := changed || 'run_as'::text;
    END IF;
    UPDATE delq.destination t SET sql_function = fn::text, run_as = role::text, updated_at = now()
     WHERE t.name = d.name;
    PERFORM delq._log('destination_altered', NULL, d.name, jsonb_build_object('changed', changed));
    PERFORM delq._wake_on_commit();
END
$$;

-- Whether a due delivery of an enabled SQL destination is waiting (the
-- worker asks before it opens a transaction for one, on every turn a
-- commit woke).  plpgsql, not sql: a sql function with a SET clause is
-- planned again on every call (about 0.25 ms a turn); this plan is kept.
CREATE OR REPLACE FUNCTION delq._sql_due()
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN EXISTS (SELECT FROM delq.destination d
                    WHERE d.kind = 'sql' AND d.enabled
                      AND EXISTS (SELECT FROM delq.delivery dl
                                   WHERE dl.destination = d.name AND dl.state = 'queued'
                                     AND dl.next_attempt_at <= now()));
END
$$;

-- Claim one due delivery of a SQL destination for a call in this very
-- transaction, earliest deadline first, within the breaker's room: its
-- request, then the delivery, then the request's ledger chain are locked
-- (the lock order of _record, reject and confirm), skipping any another
-- session holds, so the claim never waits; the delivery
-- becomes 'sending' with one more attempt.  Returns what the call needs,
-- and the problem (_sql_problem) that forbids it, if any.
CREATE OR REPLACE FUNCTION delq._claim_sql()
RETURNS TABLE (delivery_id bigint, function_oid oid, run_as oid, timeout_ms integer,
               body jsonb, problem_code text, problem text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cand record;
    dl delq.delivery;
    d delq.destination;
    fn oid;
    role oid;
    x record;
BEGIN
    FOR cand IN
        SELECT c.id, c.request_id
          FROM delq.destination t
          LEFT JOIN delq.destination_state s ON s.name = t.name
         CROSS JOIN LATERAL (SELECT q.id, q.request_id, q.due_at, q.next_attempt_at
                               FROM delq.delivery q
                              WHERE q.destination = t.name AND q.state = 'queued'
                                AND q.next_attempt_at <= now()
                              ORDER BY q.due_at, q.next_attempt_at LIMIT 10) c
         WHERE t.kind = 'sql' AND t.enabled
           AND delq._breaker_room(t.concurrency, s.breaker_until, now()) > 0
         ORDER BY c.due_at, c.next_attempt_at
         LIMIT 10
    LOOP
        PERFORM 1 FROM delq.pending p WHERE p.id = cand.request_id FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        SELECT * INTO dl FROM delq.delivery q
         WHERE q.id = cand.id AND q.state = 'queued' AND q.next_attempt_at <= now()
           FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN dl.id IS NULL;
        -- nor a ledger chain, as _claim()
        CONTINUE WHEN EXISTS (SELECT FROM delq.ledger_head h
                               WHERE h.chain = delq._ledger_chain(dl.request_id, NULL))
                  AND NOT EXISTS (SELECT FROM delq.ledger_head h
                                   WHERE h.chain = delq._ledger_chain(dl.request_id, NULL)
                                     FOR NO KEY UPDATE SKIP LOCKED);

        d := delq._destination(dl.destination, false);
        UPDATE delq.delivery q
           SET state = 'sending', attempts = q.attempts + 1,
               first_attempt_at = coalesce(q.first_attempt_at, now()), last_attempt_at = now(),
               lease_until = now() + make_interval(secs => 60 + 2 * d.timeout_ms / 1000.0)
         WHERE q.id = dl.id
        RETURNING * INTO dl;
        PERFORM delq._log('sending', dl.request_id, dl.destination,
                          jsonb_build_object('attempt', dl.attempts), 'delq');

        fn := to_regprocedure(d.sql_function);
        role := to_regrole(d.run_as);
        x := delq._sql_problem(fn, role);
        delivery_id := dl.id;
        function_oid := fn;
        run_as := role;
        timeout_ms := d.timeout_ms;
        body := (SELECT delq._webhook_body(p, dl.webhook_id, d.confirm)::jsonb
                   FROM delq.pending p WHERE p.id = dl.request_id);
        problem_code := x.code;
        problem := x.problem;
        RETURN NEXT;
        RETURN;
    END LOOP;
END
$$;

-- Whether an error of a SQL destination's function is worth retrying:
-- serialization failures, deadlocks, lock and statement timeouts (the
-- destination's timeout too), and lost connections (class 08: dblink,
-- postgres_fdw).  The one place that says so.
CREATE OR REPLACE FUNCTION delq._sqlstate_retryable(sqlstate text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN sqlstate OPERATOR(pg_catalog.=) ANY ('{40001,40P01,55P03,57014}'::text[])
       OR pg_catalog.left(sqlstate, 2) OPERATOR(pg_catalog.=) '08';

-- Record what a SQL destination's call came to (src/sqldest.c), through
-- _record, in the transaction of the call: outcome 'confirmed' or
-- 'not_held' when the function returned; '' when it raised sqlstate with
-- message, which is kept (without the subject) in delivery.last_error
-- while events and health keep only "SQLSTATE xxxxx".
CREATE OR REPLACE FUNCTION delq._sql_outcome(delivery_id bigint, outcome text, sqlstate text,
                                  message text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    subject text;
    cls text := '';
    err text := '';
BEGIN
    IF coalesce(outcome, '') = '' THEN
        SELECT p.subject INTO subject
          FROM delq.delivery dl JOIN delq.pending p ON p.id = dl.request_id
         WHERE dl.id = _sql_outcome.delivery_id;
        outcome := CASE WHEN delq._sqlstate_retryable(sqlstate) THEN 'retry' ELSE 'failed' END;
        cls := 'SQLSTATE ' || sqlstate;
        err := cls || ': ' || left(delq._scrub_text(message, subject), 500);
    END IF;
    PERFORM delq._record(ARRAY[delivery_id], ARRAY[outcome], ARRAY[0], ARRAY[cls], ARRAY[err],
                         ARRAY[-1], ARRAY[false]);
END
$$;

GRANT EXECUTE ON FUNCTION
    delq.add_sql_destination(text, regprocedure, regrole, interval, integer, interval, interval, boolean),
    delq.alter_sql_destination(text, regprocedure, regrole)
    TO delq_admin;
