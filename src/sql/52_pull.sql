-- Pull destinations (docs/pull.md): their
-- deliveries wait until a consumer (a program, or a person in psql: a
-- manual destination) takes them with delq.take(), erases, and answers
-- with delq.ack() or delq.nack().  A taken delivery is 'sending', leased to
-- the role that took it (delivery.leased_by, delq._caller() of
-- 45_sources.sql) until lease_until;
-- an expired lease returns it to the queue, the attempt counted
-- (delq._requeue, 70_forwarding.sql).  Consumers get the role
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
-- final, or an operator must act on it first.
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
    IF dl.state IN ('cancelled', 'failed', 'awaiting_confirmation') THEN
        RAISE EXCEPTION 'delivery % is %', quote_literal(dl.webhook_id), dl.state
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = CASE dl.state WHEN 'cancelled' THEN 'Its request was rejected or its destination dropped: nothing to do.'
                                      ELSE 'An operator acts on it first (delq.retry() or delq.confirm()).' END;
    END IF;
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
BEGIN
    PERFORM delq._not_null('not_held', not_held);
    PERFORM delq._check_text('note', note, 1000, false, true);
    dl := delq._taken(webhook_id);
    IF delq._delivery_done(dl.state) THEN
        RETURN false;
    END IF;
    PERFORM delq._check_lease(dl, 'ack', true);

    RETURN delq._confirm_delivery(
        dl, CASE WHEN not_held THEN 'not_held' ELSE 'confirmed' END, 'delq.ack',
        jsonb_strip_nulls(jsonb_build_object(
            'attempt', dl.attempts,
            'late', CASE WHEN dl.state = 'queued' OR dl.lease_until < now() THEN true END,
            'note', delq._scrub_text(note, (SELECT p.subject FROM delq.pending p
                                            WHERE p.id = dl.request_id)))),
        delq._caller());
END
$$;

-- The consumer could not erase: retry (the default) puts the delivery
-- back in the queue after the destination's backoff, while attempts are
-- left; else, or when retry is false, it fails and an operator acts.
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
    d delq.destination;
    new_state text;
    delay_ms double precision;
BEGIN
    PERFORM delq._check_text('error', error, 1000, true, true);
    PERFORM delq._not_null('retry', retry);
    PERFORM delq._load();
    dl := delq._taken(webhook_id);
    IF delq._delivery_done(dl.state) THEN
        RAISE EXCEPTION 'delivery % is %', quote_literal(dl.webhook_id), dl.state
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'It is done; nothing to retry.';
    END IF;
    PERFORM delq._check_lease(dl, 'nack', false);

    d := delq._destination(dl.destination, false);
    IF retry AND dl.attempts - dl.attempts_base
                 < coalesce(d.max_attempts, current_setting('delq.max_attempts')::integer) THEN
        new_state := 'queued';
        delay_ms := delq._backoff_ms(dl.attempts - dl.attempts_base,
                                     coalesce(d.retry_base_ms, extract(epoch FROM delq._setting_interval('delq.retry_base')) * 1000),
                                     coalesce(d.retry_max_ms, extract(epoch FROM delq._setting_interval('delq.retry_max')) * 1000),
                                     -1);
    ELSE
        new_state := 'failed';
    END IF;
    UPDATE delq.delivery x
       SET state = new_state, last_error = error, lease_until = NULL,
           next_attempt_at = CASE WHEN new_state = 'queued'
                                  THEN now() + make_interval(secs => delay_ms / 1000.0)
                                  ELSE x.next_attempt_at END
     WHERE x.id = dl.id
    RETURNING * INTO dl;
    PERFORM delq._log(CASE new_state WHEN 'queued' THEN 'retry_scheduled' ELSE 'failed' END,
                      dl.request_id, dl.destination,
                      jsonb_strip_nulls(jsonb_build_object(
                          'via', 'delq.nack', 'attempt', dl.attempts,
                          'error', delq._scrub_text(left(error, 200), (SELECT p.subject FROM delq.pending p
                                                                       WHERE p.id = dl.request_id)),
                          'next_attempt_at', CASE WHEN new_state = 'queued' THEN dl.next_attempt_at END)),
                      delq._caller());
    PERFORM delq._refresh_status(ARRAY[dl.request_id]);
    RETURN new_state;
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
