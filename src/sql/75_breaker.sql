-- The circuit breaker of each destination (docs/worker.md#circuit-breaker).
-- Its state lives in delq.destination_state (70_forwarding.sql):
--   closed   breaker_until IS NULL: up to the destination's concurrency;
--   open     breaker_until > now(): nothing is sent;
--   probing  breaker_until <= now(): one delivery at a time, the probe,
--            tests the destination.  A probe is a delivery claimed after
--            breaker_until (its last_attempt_at): so the claim, which must
--            never wait for a lock (_claim), writes nothing for it; its
--            breaker_probe event is written with its outcome.
-- A burst opens it once: answers to requests sent before it opened change
-- nothing.  Only a failed probe reopens it, for twice the previous
-- cool-down, at most delq.breaker_max_cooldown.  A success closes it.  An
-- operator's fix (alter_destination of the url, headers, secret or TLS
-- files, enabling it, retry()) lets a probe through at once;
-- delq.reset_breaker() closes it.  Every transition is an event on the
-- destination's chain: breaker_opened, breaker_probe, breaker_closed,
-- breaker_reset.

-- The breaker's state at time at: the one place it is decided from
-- breaker_until (the view delq.destination_health, 70_forwarding.sql,
-- writes it out again: a view calls functions with its reader's EXECUTE
-- rights, and delq._* functions are for nobody).
-- SQL-standard bodies: inlined into the queries that call them.
CREATE OR REPLACE FUNCTION delq._breaker_state(breaker_until timestamptz, at timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN breaker_until IS NULL THEN 'closed'
            WHEN breaker_until <= at THEN 'probing'
            ELSE 'open' END;

-- How many deliveries of a destination may be in flight at time at
-- (_claim() asks for now(), _next_due() for 'infinity', i.e. once the
-- cool-down has passed).
CREATE OR REPLACE FUNCTION delq._breaker_room(concurrency integer, breaker_until timestamptz,
                                              at timestamptz)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE delq._breaker_state(breaker_until, at)
            WHEN 'closed' THEN concurrency
            WHEN 'probing' THEN 1
            ELSE 0 END;

-- The cool-down of the opens-th opening in a row: delq.breaker_cooldown,
-- doubled for each failed probe, at most delq.breaker_max_cooldown.
CREATE OR REPLACE FUNCTION delq._breaker_cooldown(opens integer)
RETURNS interval
LANGUAGE sql STABLE
RETURN least(pg_catalog.current_setting('delq.breaker_cooldown')::interval
             * pg_catalog.power(2, least(greatest(opens, 1) - 1, 30)),
             pg_catalog.current_setting('delq.breaker_max_cooldown')::interval);

-- Open (or reopen) the breaker of one destination whose state row the
-- caller has locked.
CREATE OR REPLACE FUNCTION delq._breaker_open(s delq.destination_state, because text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cool interval := delq._breaker_cooldown(s.breaker_opens + 1);
BEGIN
    UPDATE delq.destination_state t
       SET breaker_until = now() + cool, breaker_opens = s.breaker_opens + 1,
           breaker_opened_at = now()
     WHERE t.name = s.name;
    PERFORM delq._log('breaker_opened', NULL, s.name,
                      jsonb_build_object('because', because, 'cooldown', cool,
                                         'until', now() + cool,
                                         'consecutive_failures', s.consecutive_failures),
                      'delq');
END
$$;

-- Health and breaker after a batch of outcomes (from delq._record(), after
-- the requests' events; from a pull consumer's ack, nack or lapsed lease,
-- delq._pull_failed in 52_pull.sql).  Destinations dropped meanwhile are
-- left out: their answers are ignored (docs/sql-api.md, drop_destination).
-- Pull destinations get health only: nothing is sent to them, so there is
-- nothing for a breaker to hold back (docs/pull.md#health-and-attempts).
CREATE OR REPLACE FUNCTION delq._breaker_record(ids bigint[], outcomes text[],
                                                error_classes text[], gone boolean[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    threshold integer := current_setting('delq.breaker_threshold')::integer;
    g record;
    s delq.destination_state;
BEGIN
    FOR g IN
        SELECT dl.destination, d.kind = 'pull' AS pull,
               bool_or(delq._delivery_done(o.outcome)) AS success,
               count(*) FILTER (WHERE NOT delq._delivery_done(o.outcome))::integer AS failures,
               coalesce(bool_or(o.gone AND NOT delq._delivery_done(o.outcome)), false) AS gone,
               -- probes: claimed once the breaker let them through
               coalesce(bool_or(NOT delq._delivery_done(o.outcome)
                                AND dl.last_attempt_at >= st.breaker_until), false) AS probe_failed,
               jsonb_agg(jsonb_build_object('delivery_id', dl.id, 'sent_at', dl.last_attempt_at,
                                            'outcome', o.outcome, 'error', o.error_class)
                         ORDER BY dl.id)
                   FILTER (WHERE dl.last_attempt_at >= st.breaker_until) AS probes,
               -- the class, never the answer's body (_record, 70_forwarding.sql)
               (array_agg(o.error_class ORDER BY o.id DESC)
                    FILTER (WHERE NOT delq._delivery_done(o.outcome)))[1] AS last_failure
          FROM unnest(ids, outcomes, error_classes, gone) AS o(id, outcome, error_class, gone)
          JOIN delq.delivery dl ON dl.id = o.id
          JOIN delq.destination d ON d.name = dl.destination
          LEFT JOIN delq.destination_state st ON st.name = dl.destination
         GROUP BY dl.destination, d.kind
         ORDER BY dl.destination
    LOOP
        INSERT INTO delq.destination_state (name) VALUES (g.destination)
            ON CONFLICT (name) DO NOTHING;
        SELECT * INTO s FROM delq.destination_state t WHERE t.name = g.destination FOR UPDATE;
        IF g.probes IS NOT NULL AND s.breaker_until IS NOT NULL THEN
            PERFORM delq._log('breaker_probe', NULL, s.name, p, 'delq')
               FROM jsonb_array_elements(g.probes) p;
        END IF;
        IF g.success THEN
            UPDATE delq.destination_state t
               SET consecutive_failures = 0, breaker_until = NULL, breaker_opens = 0,
                   last_success_at = now(),
                   last_failure_at = CASE WHEN g.failures > 0 THEN now() ELSE t.last_failure_at END,
                   last_failure = coalesce(g.last_failure, t.last_failure)
             WHERE t.name = s.name;
            IF s.breaker_until IS NOT NULL THEN
                PERFORM delq._log('breaker_closed', NULL, s.name,
                                  jsonb_build_object('was', delq._breaker_state(s.breaker_until, now()),
                                                     'opened_at', s.breaker_opened_at),
                                  'delq');
            END IF;
            CONTINUE;
        END IF;

        UPDATE delq.destination_state t
           SET consecutive_failures = t.consecutive_failures + g.failures,
               last_failure_at = now(), last_failure = g.last_failure
         WHERE t.name = s.name
        RETURNING * INTO s;
        IF g.pull THEN
            CONTINUE;
        ELSIF s.breaker_until IS NULL THEN
            IF g.gone OR s.consecutive_failures >= threshold THEN
                PERFORM delq._breaker_open(s, CASE WHEN g.gone THEN '410 Gone'
                                                   ELSE 'consecutive failures' END);
            END IF;
        ELSIF g.probe_failed AND s.breaker_until <= now() THEN
            PERFORM delq._breaker_open(s, 'probe failed');
        END IF;
        -- else: answers to requests sent before the breaker opened
    END LOOP;
END
$$;

-- An operator acted on a destination (because says how): an open breaker
-- lets a probe through at once (close => false) or closes (close => true);
-- with due_now, its queued deliveries are due now.  Returns whether the
-- breaker changed.  Lock order, as _record(): deliveries, the state row,
-- then the destination's chain (callers log their own events after this).
CREATE OR REPLACE FUNCTION delq._breaker_reset(destination text, because text, close boolean,
                                               due_now boolean)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s delq.destination_state;
BEGIN
    IF due_now THEN
        UPDATE delq.delivery dl SET next_attempt_at = now()
         WHERE dl.destination = _breaker_reset.destination AND dl.state = 'queued'
           AND dl.next_attempt_at > now();
    END IF;
    SELECT * INTO s FROM delq.destination_state t WHERE t.name = destination FOR UPDATE;
    PERFORM delq._wake_on_commit();
    IF s.breaker_until IS NULL OR (NOT close AND s.breaker_until <= now()) THEN
        IF close AND s.consecutive_failures > 0 THEN
            UPDATE delq.destination_state t SET consecutive_failures = 0 WHERE t.name = s.name;
        END IF;
        RETURN false;
    END IF;
    UPDATE delq.destination_state t
       SET breaker_until = CASE WHEN close THEN NULL ELSE now() END,
           breaker_opens = 0,
           consecutive_failures = CASE WHEN close THEN 0 ELSE t.consecutive_failures END
     WHERE t.name = s.name;
    PERFORM delq._log('breaker_reset', NULL, s.name,
                      jsonb_build_object('because', because,
                                         'was', delq._breaker_state(s.breaker_until, now()),
                                         'now', CASE WHEN close THEN 'closed' ELSE 'probing' END));
    RETURN true;
END
$$;

-- Close a destination's circuit breaker now (docs/sql-api.md): its queued
-- deliveries are sent at once.  Returns whether it was open or probing.
CREATE OR REPLACE FUNCTION delq.reset_breaker(destination text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d delq.destination := delq._destination(destination, true);
BEGIN
    RETURN delq._breaker_reset(d.name, 'reset_breaker', true, true);
END
$$;

REVOKE ALL ON FUNCTION delq.reset_breaker(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION delq.reset_breaker(text) TO delq_operator;
