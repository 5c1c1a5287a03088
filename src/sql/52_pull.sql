-- Pull destinations (docs/pull.md): their
-- deliveries wait until a consumer (a program, or a person in psql: a
-- manual destination) takes them with delq.take(), erases, and answers
-- with delq.ack() or delq.nack().  A taken delivery is 'sending', leased to
-- the role that took it (delivery.leased_by, delq._caller() of
-- 45_sources.sql) until lease_until;
-- an expired lease is a failed attempt, as a nack is (delq._pull_failed,
-- called by delq._requeue of 70_forwarding.sql).  Consumers get the role
-- delq_consumer, which may call take, ack and nack and read delq.tasks,
-- and act on the destinations whose consumer role they are members of.

-- Whether role_name (a role that may have been dropped since) includes
-- who.  A dropped role includes nobody.
CREATE OR REPLACE FUNCTION delq._member_of(who name, role_name text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT FROM pg_roles r
                    WHERE r.rolname = role_name AND pg_has_role(who, r.oid, 'MEMBER'));
$$;

-- The consumer role of a pull destination: a role, not delq_consumer itself.
CREATE OR REPLACE FUNCTION delq._check_consumer(consumer regrole)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq._not_null('consumer', consumer);
    IF consumer = 'delq_consumer'::regrole THEN
        PERFORM delq._invalid('consumer', 'must not be delq_consumer',
                              'Pass the role of the program or team that works the destination; delq grants it delq_consumer.');
    END IF;
    RETURN consumer::text;
END
$$;

-- Give the consumer role what consumers may do (once; GRANT again would
-- only say so).
CREATE OR REPLACE FUNCTION delq._grant_consumer(consumer text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_auth_members m
                    WHERE m.roleid = 'delq_consumer'::regrole
                      AND m.member = consumer::regrole) THEN
        EXECUTE format('GRANT delq_consumer TO %I', consumer);
    END IF;
END
$$;

-- Take delq_consumer back from consumer when it consumes from no pull
-- destination any more, if delq gave it (_grant_consumer: the grantor is
-- delq's owner, the role these SECURITY DEFINER callers run as); a grant
-- of someone else's stays.  Called after the destination row changed.
CREATE OR REPLACE FUNCTION delq._revoke_consumer(consumer text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM delq.destination d
                    WHERE d.kind = 'pull' AND d.consumer = _revoke_consumer.consumer)
       AND EXISTS (SELECT FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member
                    WHERE m.roleid = 'delq_consumer'::regrole AND r.rolname = consumer
                      AND m.grantor = (SELECT o.oid FROM pg_roles o
                                        WHERE o.rolname = current_user)) THEN
        EXECUTE format('REVOKE delq_consumer FROM %I', consumer);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION delq.add_pull_destination(name text, consumer regrole,
                                          lease interval DEFAULT '1 hour',
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
    d.kind := 'pull';
    d.created_at := now();
    d.consumer := delq._check_consumer(consumer);
    d.lease_ms := delq._check_duration('lease', lease, '1 second', '30 days');
    PERFORM delq._check_range('max_attempts', max_attempts, 1, 1000);
    IF retry_base = interval '0' THEN
        PERFORM delq._check_duration('retry_base', retry_base, '1 millisecond', '1 day');
    END IF;
    IF retry_max = interval '0' THEN
        PERFORM delq._check_duration('retry_max', retry_max, '1 second', '30 days');
    END IF;
    -- timeout, concurrency and confirm do not apply: the table's defaults
    d := delq._merge_destination(d, NULL, '{}', NULL, '30 seconds', '10 seconds',
                                 max_attempts, 16, 'response', retry_base, retry_max,
                                 enabled, NULL, NULL, NULL);
    PERFORM delq._insert_destination(d, jsonb_build_object('consumer', d.consumer,
                                                           'lease', lease::text,
                                                           'enabled', d.enabled));
    PERFORM delq._grant_consumer(d.consumer);
END
$$;

-- Change what only pull destinations have; NULL keeps a value.  The other
-- settings (enabled, max_attempts, retry_base, retry_max) through
-- delq.alter_destination().
CREATE OR REPLACE FUNCTION delq.alter_pull_destination(name text, consumer regrole DEFAULT NULL,
                                            lease interval DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d delq.destination := delq._destination(name, true);
    old_consumer text := d.consumer;
    changed text[] := '{}'::text[];
BEGIN
    IF d.kind <> 'pull' THEN
        RAISE EXCEPTION 'destination % is not a pull destination', quote_literal(d.name)
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Change other kinds with delq.alter_destination() or delq.alter_sql_destination().';
    END IF;
    IF consumer IS NOT NULL AND delq._check_consumer(consumer) <> d.consumer THEN
        d.consumer := consumer::text;
        changed := changed || 'consumer'::text;
        PERFORM delq._grant_consumer(d.consumer);
    END IF;
    IF lease IS NOT NULL
       AND delq._check_duration('lease', lease, '1 second', '30 days') <> d.lease_ms THEN
        d.lease_ms := delq._check_duration('lease', lease, '1 second', '30 days');
        changed := changed || 'lease_ms'::text;
    END IF;
    UPDATE delq.destination t SET consumer = d.consumer, lease_ms = d.lease_ms, updated_at = now()
     WHERE t.name = d.name;
    IF old_consumer <> d.consumer THEN
        PERFORM delq._revoke_consumer(old_consumer);
    END IF;
    PERFORM delq._log('destination_altered', NULL, d.name, jsonb_build_object('changed', changed));
END
$$;

-- The pull destination name, if the caller is one of its consumers (or a
-- superuser).  Another kind, or one of someone else's, is "does not
-- exist" to a consumer: consumers see nothing of other destinations.
CREATE OR REPLACE FUNCTION delq._pull_destination(name text)
RETURNS delq.destination
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d delq.destination;
BEGIN
    PERFORM delq._not_null('destination', name);
    SELECT * INTO d FROM delq.destination t WHERE t.name = _pull_destination.name;
    IF d.name IS NULL OR d.kind <> 'pull' OR NOT delq._member_of(delq._caller(), d.consumer) THEN
        RAISE EXCEPTION 'no pull destination % of yours exists', quote_literal(name)
            USING ERRCODE = 'undefined_object',
                  HINT = 'Pass the name of a pull destination whose consumer role you are a member of; see delq.tasks.';
    END IF;
    RETURN d;
END
$$;

-- Lease up to max due deliveries of destination to the caller, earliest
-- deadline first, each for the destination's lease.  Concurrent takers
-- skip each other's rows (SKIP LOCKED): a delivery goes to one of them.
-- Leases that expired go back to the queue first.  Returns what a webhook
-- receives (payload, with the webhook id as "id"), the attempt and when
-- the lease ends.  A paused destination (enabled false) gives nothing.
CREATE OR REPLACE FUNCTION delq.take(destination text, max integer DEFAULT 1)
RETURNS TABLE (webhook_id text, request_id uuid, attempt integer, lease_until timestamptz,
               due_at timestamptz, payload jsonb)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- a failed call must not write the statement into the server log
SET log_min_error_statement = panic
AS $$
DECLARE
    d delq.destination := delq._pull_destination(destination);
BEGIN
    PERFORM delq._not_null('max', take.max);
    PERFORM delq._check_range('max', take.max, 1, 1000);
    IF NOT d.enabled THEN
        RETURN;
    END IF;
    PERFORM delq._requeue(false, d.name);

    RETURN QUERY
    WITH picked AS (
        SELECT dl.id FROM delq.delivery dl
         WHERE dl.destination = d.name AND dl.state = 'queued' AND dl.next_attempt_at <= now()
         ORDER BY dl.due_at, dl.next_attempt_at
         LIMIT take.max
           FOR UPDATE SKIP LOCKED
    ), taken AS (
        UPDATE delq.delivery dl
           SET state = 'sending', attempts = dl.attempts + 1,
               first_attempt_at = coalesce(dl.first_attempt_at, now()),
               last_attempt_at = now(),
               lease_until = now() + make_interval(secs => d.lease_ms / 1000.0),
               leased_by = delq._caller()
          FROM picked
         WHERE dl.id = picked.id
        RETURNING dl.*
    ), logged AS (
        INSERT INTO delq.event (kind, request_id, destination, detail, actor)
        SELECT 'taken', t.request_id, t.destination,
               jsonb_build_object('attempt', t.attempts, 'lease_until', t.lease_until),
               t.leased_by
          FROM taken t
         ORDER BY t.request_id
    )
    SELECT t.webhook_id, t.request_id, t.attempts, t.lease_until, t.due_at,
           delq._webhook_body(p, t.webhook_id, d.confirm)::jsonb
      FROM taken t JOIN delq.pending p ON p.id = t.request_id
     ORDER BY t.due_at, t.next_attempt_at;
END
$$;

-- The taken delivery a consumer answers for, locked (request first, as
-- everywhere).  Unknown ids, deliveries never taken and those of
-- destinations the caller does not consume from are all "no delivery of
-- yours": nothing about them is revealed.
CREATE OR REPLACE FUNCTION delq._taken(webhook_id text)
RETURNS delq.delivery
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dl delq.delivery;
BEGIN
    PERFORM delq._not_null('webhook_id', webhook_id);
    -- delivery_leased_idx
    SELECT x.* INTO dl FROM delq.delivery x JOIN delq.destination d ON d.name = x.destination
     WHERE x.webhook_id = _taken.webhook_id AND x.leased_by IS NOT NULL
       AND d.kind = 'pull' AND delq._member_of(delq._caller(), d.consumer);
    IF dl.id IS NULL THEN
        RAISE EXCEPTION 'no taken delivery % of yours exists', quote_literal(webhook_id)
            USING ERRCODE = 'undefined_object',
                  HINT = 'Pass the webhook_id that delq.take() returned to you.';
    END IF;
    PERFORM 1 FROM delq.pending p WHERE p.id = dl.request_id FOR UPDATE;
    SELECT * INTO dl FROM delq.delivery x WHERE x.id = dl.id FOR UPDATE;
    RETURN dl;
END
$$;

-- Refuse an answer for a delivery that is no longer the caller's to
-- answer: someone else took it after the caller's lease expired, or it is
-- final, or an operator must act on it first.  A late ack is accepted
-- while nobody else took the delivery since: also when the caller's lease
-- expired on the last attempt and failed it (_pull_failed), which its
-- latest event says.
CREATE OR REPLACE FUNCTION delq._check_lease(dl delq.delivery, action text, queued_ok boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF dl.state = 'sending' AND dl.leased_by IS DISTINCT FROM delq._caller() THEN
        RAISE EXCEPTION 'delivery % is leased to % since %', quote_literal(dl.webhook_id),
                        dl.leased_by, dl.last_attempt_at
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Your lease expired; %s took it until %s.', dl.leased_by, dl.lease_until),
                  HINT = format('Only the holder of the lease can %s it; take deliveries again with delq.take().', action);
    END IF;
    IF dl.state = 'queued' AND (NOT queued_ok OR dl.leased_by IS DISTINCT FROM delq._caller()) THEN
        RAISE EXCEPTION 'delivery % is not leased to you', quote_literal(dl.webhook_id)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Its lease expired and it went back to the queue.',
                  HINT = 'Take it again with delq.take().';
    END IF;
    IF dl.state = 'failed' AND queued_ok AND dl.leased_by IS NOT DISTINCT FROM delq._caller()
       AND (SELECT e.kind = 'failed' AND e.detail ->> 'because' = 'lease expired'
              FROM delq.event e  -- event_request_idx
             WHERE e.request_id = dl.request_id AND e.destination = dl.destination
             ORDER BY e.id DESC LIMIT 1) THEN
        RETURN;
    END IF;
    IF dl.state IN ('cancelled', 'failed', 'awaiting_confirmation') THEN
        RAISE EXCEPTION 'delivery % is %', quote_literal(dl.webhook_id), dl.state
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = CASE dl.state WHEN 'cancelled' THEN 'Its request was rejected or its destination dropped: nothing to do.'
                                      ELSE 'An operator acts on it first (delq.retry() or delq.confirm()).' END;
    END IF;
END
$$;

-- A failed attempt of taken pull deliveries: the consumer's nack (lapsed
-- false: error, retry, by actor) or lapsed leases (lapsed true, by delq).
-- The one rule for both: while retry and attempts are left (max_attempts,
-- counted from the last delq.retry()), back to the queue, after the
-- backoff for a nack, at once for a lapsed lease (its holder went away);
-- else failed, and the request needs attention.  Then the destination's
-- health (_breaker_record, 75_breaker.sql).  Lock order as _record():
-- requests, deliveries, the state row.  Only deliveries still taken (and,
-- for lapsed, still lapsed) change.  Returns how many changed.
CREATE OR REPLACE FUNCTION delq._pull_failed(ids bigint[], lapsed boolean, error text,
                                             retry boolean, actor text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    base_ms double precision;
    max_ms double precision;
    default_attempts integer;
    done bigint[];
    outcomes text[];
    touched uuid[];
BEGIN
    PERFORM delq._load();
    base_ms := extract(epoch FROM delq._setting_interval('delq.retry_base')) * 1000;
    max_ms := extract(epoch FROM delq._setting_interval('delq.retry_max')) * 1000;
    default_attempts := current_setting('delq.max_attempts')::integer;
    PERFORM delq._lock_requests_of(ids);

    WITH o AS (
        SELECT dl.id,
               retry AND dl.attempts - dl.attempts_base
                         < coalesce(t.max_attempts, default_attempts) AS again,
               delq._backoff_ms(dl.attempts - dl.attempts_base,
                                coalesce(t.retry_base_ms, base_ms),
                                coalesce(t.retry_max_ms, max_ms), -1) AS delay_ms
          FROM delq.delivery dl JOIN delq.destination t ON t.name = dl.destination
         WHERE dl.id = ANY (ids) AND dl.state = 'sending' AND dl.leased_by IS NOT NULL
           AND (NOT lapsed OR dl.lease_until < now())
           FOR UPDATE OF dl
    ), updated AS (
        UPDATE delq.delivery dl
           SET state = CASE WHEN o.again THEN 'queued' ELSE 'failed' END,
               last_error = coalesce(error, 'lease expired'), lease_until = NULL,
               next_attempt_at = CASE WHEN NOT o.again THEN dl.next_attempt_at
                                      WHEN lapsed THEN now()
                                      ELSE now() + make_interval(secs => o.delay_ms / 1000.0) END
          FROM o
         WHERE dl.id = o.id
        RETURNING dl.id, dl.request_id, dl.destination, dl.state, dl.attempts, dl.next_attempt_at
    ), logged AS (
        INSERT INTO delq.event (kind, request_id, destination, detail, actor)
        SELECT CASE WHEN u.state = 'failed' THEN 'failed'
                    WHEN lapsed THEN 'requeued' ELSE 'retry_scheduled' END,
               u.request_id, u.destination,
               jsonb_strip_nulls(jsonb_build_object(
                   'via', CASE WHEN NOT lapsed THEN 'delq.nack' END,
                   'because', CASE WHEN lapsed THEN 'lease expired' END,
                   'attempt', u.attempts,
                   'error', CASE WHEN NOT lapsed
                                 THEN delq._scrub_text(left(error, 200), p.subject) END,
                   'next_attempt_at', CASE WHEN u.state = 'queued' AND NOT lapsed
                                           THEN u.next_attempt_at END)),
               CASE WHEN lapsed THEN 'delq' ELSE actor END
          FROM updated u JOIN delq.pending p ON p.id = u.request_id
         ORDER BY u.request_id
        RETURNING 1
    )
    SELECT array_agg(u.id ORDER BY u.id),
           array_agg(CASE u.state WHEN 'queued' THEN 'retry' ELSE 'failed' END ORDER BY u.id),
           array_agg(DISTINCT u.request_id)
      INTO done, outcomes, touched
      FROM updated u;  -- logged runs anyway: a WITH that writes always does

    IF done IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM delq._refresh_status(touched, CASE WHEN lapsed THEN 'delq' END);
    PERFORM delq._breaker_record(done, outcomes,
                                 array_fill(CASE WHEN lapsed THEN 'lease expired' ELSE 'nack' END,
                                            ARRAY[cardinality(done)]),
                                 array_fill(false, ARRAY[cardinality(done)]));
    RETURN cardinality(done);
END
$$;

-- The consumer erased the data (not_held false), or found none (true).
-- note (optional, e.g. what a person removed) goes into the event with
-- any copy of the subject replaced.  An ack after the lease expired is
-- accepted while nobody else has taken the delivery since.  Returns
-- false when the delivery was done already (nothing is written).
CREATE OR REPLACE FUNCTION delq.ack(webhook_id text, not_held boolean DEFAULT false,
                         note text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
AS $$
DECLARE
    dl delq.delivery;
    outcome text := CASE WHEN not_held THEN 'not_held' ELSE 'confirmed' END;
BEGIN
    PERFORM delq._not_null('not_held', not_held);
    PERFORM delq._check_text('note', note, 1000, false, true);
    PERFORM delq._load();
    dl := delq._taken(webhook_id);
    IF delq._delivery_done(dl.state) THEN
        RETURN false;
    END IF;
    PERFORM delq._check_lease(dl, 'ack', true);

    PERFORM delq._confirm_delivery(
        dl, outcome, 'delq.ack',
        jsonb_strip_nulls(jsonb_build_object(
            'attempt', dl.attempts,
            'late', CASE WHEN dl.state IN ('queued', 'failed') OR dl.lease_until < now() THEN true END,
            'note', delq._scrub_text(note, (SELECT p.subject FROM delq.pending p
                                            WHERE p.id = dl.request_id)))),
        delq._caller());
    -- the destination's health, as a webhook's success (75_breaker.sql)
    PERFORM delq._breaker_record(ARRAY[dl.id], ARRAY[outcome], ARRAY[''], ARRAY[false]);
    RETURN true;
END
$$;

-- The consumer could not erase: retry (the default) puts the delivery
-- back in the queue after the destination's backoff, while attempts are
-- left; else, or when retry is false, it fails and an operator acts
-- (delq._pull_failed).
-- error is kept in delivery.last_error; the event gets it without the
-- subject.  Returns the delivery's new state ('queued' or 'failed').
CREATE OR REPLACE FUNCTION delq.nack(webhook_id text, error text, retry boolean DEFAULT true)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
AS $$
DECLARE
    dl delq.delivery;
BEGIN
    PERFORM delq._check_text('error', error, 1000, true, true);
    PERFORM delq._not_null('retry', retry);
    dl := delq._taken(webhook_id);
    IF delq._delivery_done(dl.state) THEN
        RAISE EXCEPTION 'delivery % is %', quote_literal(dl.webhook_id), dl.state
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'It is done; nothing to retry.';
    END IF;
    PERFORM delq._check_lease(dl, 'nack', false);

    PERFORM delq._pull_failed(ARRAY[dl.id], false, error, retry, delq._caller());
    RETURN (SELECT x.state FROM delq.delivery x WHERE x.id = dl.id);
END
$$;

-- The work of pull destinations: what is open (waiting to be taken) and
-- what is leased, by whom, since when, until when, and the deadline.
-- Operators see every task; a consumer only those of the destinations it
-- consumes from (security_barrier: a function of the caller's in a WHERE
-- clause sees only rows the filter let through).  No subject: take() gives
-- it to whoever takes the task.
CREATE OR REPLACE VIEW delq.tasks WITH (security_barrier) AS
SELECT dl.destination, dl.request_id, dl.webhook_id,
       CASE WHEN dl.state = 'queued' THEN 'open'
            WHEN dl.lease_until >= pg_catalog.now() THEN 'leased'
            ELSE 'lease expired' END AS status,
       CASE WHEN dl.state = 'sending' THEN dl.leased_by END AS leased_by,
       CASE WHEN dl.state = 'sending' THEN dl.last_attempt_at END AS leased_since,
       CASE WHEN dl.state = 'sending' THEN dl.lease_until END AS lease_until,
       CASE WHEN dl.state = 'queued' THEN dl.next_attempt_at END AS open_from,
       dl.attempts, dl.due_at, dl.last_error
  FROM delq.delivery dl
  JOIN delq.destination d ON d.name = dl.destination
 WHERE d.kind = 'pull' AND dl.state IN ('queued', 'sending')
   -- delq._member_of's rule, in pg_catalog functions only: a view calls
   -- functions with the caller's EXECUTE rights
   AND (pg_catalog.pg_has_role('delq_operator', 'USAGE')
        OR EXISTS (SELECT FROM pg_catalog.pg_roles r
                    WHERE r.rolname OPERATOR(pg_catalog.=) d.consumer
                      AND pg_catalog.pg_has_role(CURRENT_USER, r.oid, 'MEMBER')));
GRANT SELECT ON delq.tasks TO delq_consumer, delq_operator;

GRANT USAGE ON SCHEMA delq TO delq_consumer;
GRANT EXECUTE ON FUNCTION delq.take(text, integer), delq.ack(text, boolean, text),
                          delq.nack(text, text, boolean)
    TO delq_consumer;
GRANT EXECUTE ON FUNCTION
    delq.add_pull_destination(text, regrole, interval, integer, interval, interval, boolean),
    delq.alter_pull_destination(text, regrole, interval)
    TO delq_admin;
