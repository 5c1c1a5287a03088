-- Deadlines: extensions (GDPR Art. 12(3): at most two further months,
-- once, with reasons, decided within the first period), the at-risk view,
-- and alerts on channel delq_alerts when a request becomes at risk or
-- overdue.  Earliest deadline first is the claim order (delq._claim).
-- See docs/privacy.md.

-- Extend the deadline of an unfinished request, once, by at most two
-- months, before the deadline passes.  Moves its deliveries' deadlines
-- too (the claim orders by them).  Returns the new deadline.
CREATE OR REPLACE FUNCTION delq.extend(id uuid, by interval, reason text)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the interval as the event records it, whatever the caller's style
SET IntervalStyle = postgres
AS $$
DECLARE
    r delq.pending;
    new_due timestamptz;
BEGIN
    PERFORM delq._not_null('id', extend.id);
    PERFORM delq._not_null('by', extend.by);
    IF extend.by <= interval '0' OR extend.by > interval '2 months' THEN
        PERFORM delq._invalid('by', format('is out of range (%s)', extend.by),
                              'GDPR Art. 12(3) allows two further months at most: pass an interval greater than 0 and at most ''2 months''.');
    END IF;
    PERFORM delq._check_text('reason', extend.reason, 1000, true, true);

    r := delq._request(extend.id, true);
    IF r.status NOT IN ('held', 'forwarding', 'failed') THEN
        PERFORM delq._wrong_state(r.id, r.status, 'Only requests that are not completed or rejected can be extended.');
    END IF;
    IF EXISTS (SELECT 1 FROM delq.event e WHERE e.request_id = r.id AND e.kind = 'extended') THEN
        RAISE EXCEPTION 'request % has already been extended', r.id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Its deadline is %s.', r.due_at),
                  HINT = 'GDPR Art. 12(3) allows one extension of at most two further months in total.';
    END IF;
    IF r.due_at <= now() THEN
        RAISE EXCEPTION 'the deadline of request % has passed', r.id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('It was due at %s.', r.due_at),
                  HINT = 'An extension must be decided, and the person told why, within the original period (GDPR Art. 12(3)).';
    END IF;

    new_due := r.due_at + extend.by;
    -- '1 month 30 days' from 31 December is 2 March: more than two months
    IF new_due > r.due_at + interval '2 months' THEN
        PERFORM delq._invalid('by', format('would move the deadline more than two calendar months (%s, to %s)',
                                           extend.by, new_due),
                              format('GDPR Art. 12(3) allows two further months at most: the deadline may move to %s at the latest.',
                                     r.due_at + interval '2 months'));
    END IF;
    UPDATE delq.pending p SET due_at = new_due WHERE p.id = r.id;
    UPDATE delq.delivery dl SET due_at = new_due WHERE dl.request_id = r.id;
    PERFORM delq._log('extended', r.id, NULL,
                      jsonb_build_object('by', extend.by::text, 'reason', extend.reason,
                                         'previous_due_at', r.due_at, 'due_at', new_due));
    RETURN new_due;
END
$$;

-- Unfinished requests whose deadline is less than delq.warn_before away.
-- Those past it are in delq.overdue (same first columns).  The setting is
-- read with pg_catalog functions only (a view runs with the caller's
-- EXECUTE rights): the library may not be loaded in the session yet, so
-- the fallback is the C default.
CREATE OR REPLACE VIEW delq.at_risk AS
SELECT p.id, p.source, p.external_id, p.status, p.submitted_at, p.due_at,
       p.due_at - now() AS due_in,
       coalesce((SELECT jsonb_object_agg(dl.destination, dl.state ORDER BY dl.destination)
                   FROM delq.delivery dl WHERE dl.request_id = p.id), '{}') AS deliveries
  FROM delq.pending p
 WHERE p.status IN ('held', 'forwarding', 'failed')
   AND p.due_at >= now()
   AND p.due_at < now() + coalesce(nullif(pg_catalog.current_setting('delq.warn_before', true), ''),
                                   '7d')::interval;
GRANT SELECT ON delq.at_risk TO delq_operator;

-- Which deadline of each request was alerted, and at which level; the
-- 'at_risk' and 'overdue' events are the permanent record.
CREATE TABLE IF NOT EXISTS delq.deadline_alert (
    request_id uuid PRIMARY KEY REFERENCES delq.pending (id) ON DELETE CASCADE,
    level text NOT NULL CHECK (level IN ('at_risk', 'overdue')),
    due_at timestamptz NOT NULL,
    alerted_at timestamptz NOT NULL
);

GRANT SELECT ON delq.deadline_alert TO delq_operator;
SELECT pg_catalog.pg_extension_config_dump('delq.deadline_alert', '');

-- Find requests that became at risk or overdue since they were last
-- alerted (once per level and deadline: an extended request can become
-- at risk again), log an 'at_risk' or 'overdue' event for each and
-- NOTIFY delq_alerts with a JSON payload without the subject (any role
-- may LISTEN to any channel).  At most max_alerts per call, earliest
-- deadline first.  Returns how many it alerted.  The worker calls it on
-- every housekeeping round; pg_cron can too.
CREATE OR REPLACE FUNCTION delq.check_deadlines(max_alerts integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    warn interval := delq._setting_interval('delq.warn_before');
    a record;
    payload jsonb;
    n integer := 0;
BEGIN
    PERFORM delq._not_null('max_alerts', max_alerts);
    PERFORM delq._check_range('max_alerts', max_alerts, 1, 1000000);

    FOR a IN
        WITH candidate AS (
            SELECT p.id, p.source, p.status, p.due_at,
                   CASE WHEN p.due_at < now() THEN 'overdue' ELSE 'at_risk' END AS level
              FROM delq.pending p
              LEFT JOIN delq.deadline_alert al ON al.request_id = p.id
             WHERE p.status IN ('held', 'forwarding', 'failed')
               AND p.due_at < now() + warn
               AND (al.request_id IS NULL OR al.due_at <> p.due_at
                    OR (al.level = 'at_risk' AND p.due_at < now()))
             ORDER BY p.due_at, p.id
             LIMIT max_alerts
               FOR KEY SHARE OF p SKIP LOCKED
        ), alerted AS (
            INSERT INTO delq.deadline_alert AS al (request_id, level, due_at, alerted_at)
            SELECT c.id, c.level, c.due_at, now() FROM candidate c
            ON CONFLICT (request_id) DO UPDATE
               SET level = excluded.level, due_at = excluded.due_at, alerted_at = excluded.alerted_at
             WHERE al.due_at <> excluded.due_at
                OR (al.level = 'at_risk' AND excluded.level = 'overdue')
            RETURNING al.request_id
        )
        SELECT c.* FROM candidate c JOIN alerted x ON x.request_id = c.id
         ORDER BY c.due_at, c.id
    LOOP
        payload := jsonb_build_object(
            'alert', a.level, 'request_id', a.id, 'source', a.source, 'status', a.status,
            'due_at', a.due_at,
            'unconfirmed', (SELECT coalesce(jsonb_agg(dl.destination ORDER BY dl.destination), '[]')
                              FROM delq.delivery dl
                             WHERE dl.request_id = a.id
                               AND dl.state <> 'cancelled'
                               AND NOT delq._delivery_done(dl.state)));
        IF octet_length(payload::text) > 7000 THEN
            -- NOTIFY payloads are limited to 8000 bytes
            payload := jsonb_set(payload, '{unconfirmed}', to_jsonb(jsonb_array_length(payload -> 'unconfirmed')));
        END IF;
        PERFORM delq._log(a.level, a.id, NULL, payload - 'alert' - 'request_id', 'delq');
        PERFORM pg_notify('delq_alerts', payload::text);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;

GRANT EXECUTE ON FUNCTION delq.extend(uuid, interval, text), delq.check_deadlines(integer)
    TO delq_operator;
