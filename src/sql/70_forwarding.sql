-- Forwarding: what the worker and delq.dispatch() run, through the C code
-- in src/store.c.  Claims commit before any byte is sent (a crash can only
-- resend, never drop); outcomes are recorded in batches.

-- Per-destination health, kept apart from the configuration so that the
-- worker's updates never contend with alter_destination().
CREATE TABLE IF NOT EXISTS delq.destination_state (
    name text PRIMARY KEY REFERENCES delq.destination (name) ON DELETE CASCADE,
    consecutive_failures integer NOT NULL DEFAULT 0,
    -- circuit breaker: open while set; one probe at a time once it passed
    breaker_until timestamptz,
    breaker_opens integer NOT NULL DEFAULT 0,
    last_success_at timestamptz,
    last_failure_at timestamptz,
    last_failure text
);
-- when the breaker last opened (src/sql/75_breaker.sql)
ALTER TABLE delq.destination_state ADD COLUMN IF NOT EXISTS breaker_opened_at timestamptz;

GRANT SELECT ON delq.destination_state TO delq_operator;
SELECT pg_catalog.pg_extension_config_dump('delq.destination_state', '');

-- the next retry of each destination (_next_due)
CREATE INDEX IF NOT EXISTS delivery_next_attempt_idx ON delq.delivery (destination, next_attempt_at)
    WHERE state = 'queued';

-- The HTTP body a destination receives (docs/destinations.md, "The request").  A SQL-standard body
-- (RETURN ...): parsed once at CREATE EXTENSION, so it needs no SET
-- search_path, and _claim() inlines it instead of calling it per row.
CREATE OR REPLACE FUNCTION delq._webhook_body(r delq.pending, webhook_id text, confirm text)
RETURNS text
LANGUAGE sql STABLE
RETURN (pg_catalog.jsonb_build_object(
        'type', 'erasure.requested',
        'id', webhook_id,
        'request_id', r.id,
        'subject', r.subject,
        'source', r.source,
        'reason', r.reason,
        'attributes', r.attributes,
        'external_id', r.external_id,
        'submitted_at', r.submitted_at,
        'due_at', r.due_at,
        'confirmation', confirm)
    -- callback mode: the link that confirms this delivery over HTTP
    -- (src/sql/69_confirm_link.sql), while delq.http_public_url is set
    OPERATOR(pg_catalog.||) CASE WHEN confirm OPERATOR(pg_catalog.=) 'callback'
        THEN pg_catalog.jsonb_strip_nulls(
                 pg_catalog.jsonb_build_object('confirm_url', delq._confirm_url(webhook_id)))
        ELSE '{}'::jsonb END)::text;

-- The secrets that sign a destination's webhooks, space-separated: its
-- secret, and its previous one while the rotation overlap lasts
-- (alter_destination); src/webhook.c signs with each (Standard Webhooks:
-- "v1,<sig> v1,<sig>").  A SQL-standard body: inlined into _claim().
CREATE OR REPLACE FUNCTION delq._signing_secrets(t delq.destination)
RETURNS text
LANGUAGE sql STABLE
RETURN CASE WHEN t.secret IS NOT NULL AND t.previous_secret IS NOT NULL
                 AND t.previous_secret_until OPERATOR(pg_catalog.>) pg_catalog.now()
            THEN t.secret OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) t.previous_secret
            ELSE t.secret END;

-- Claim up to max_rows due deliveries, earliest deadline first, keeping
-- each destination under its concurrency cap and holding back destinations
-- whose circuit breaker is open (one probe once its cool-down passed).
-- The ids are picked first, so that the update and the joins that follow
-- are planned for a batch (index lookups), not for the whole queue.
-- method is NULL for a webhook (the signed Standard Webhooks POST); for a
-- templated destination it is the method of the step's request, which
-- _step_request (72_steps.sql) renders into url, headers and body, or
-- into render_error when it cannot.  The C code reads the result columns
-- by name (src/store.c, claim_columns): a renamed column fails at once.
CREATE OR REPLACE FUNCTION delq._claim(max_rows integer)
RETURNS TABLE (delivery_id bigint, request_id uuid, destination text, webhook_id text,
               url text, headers text[], secret text, timeout_ms integer,
               connect_timeout_ms integer, ca_file text, client_cert text,
               client_key text, body text, method text, render_error text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- cached generic plans are costed for the whole queue; compiling them
-- costs ten times what they run (docs/performance.md)
SET jit = off
AS $$
DECLARE
    ids bigint[];
BEGIN
    ids := ARRAY(
        SELECT c.id
          FROM (SELECT d.name,
                       delq._breaker_room(d.concurrency, s.breaker_until, now())
                       - (SELECT count(*) FROM delq.delivery x
                           WHERE x.destination = d.name AND x.state = 'sending')::integer AS free
                  FROM delq.destination d
                  LEFT JOIN delq.destination_state s ON s.name = d.name
                 -- the kinds this engine sends (52_pull.sql: consumers take theirs)
                 WHERE d.enabled AND d.kind IN ('webhook', 'http')) room,
               LATERAL (SELECT dl.id, dl.due_at, dl.next_attempt_at
                          FROM delq.delivery dl
                         WHERE dl.destination = room.name AND dl.state = 'queued'
                           AND dl.next_attempt_at <= now()
                         ORDER BY dl.due_at, dl.next_attempt_at
                         LIMIT least(room.free, max_rows)
                           FOR UPDATE SKIP LOCKED) c
         WHERE room.free > 0
         ORDER BY c.due_at, c.next_attempt_at
         LIMIT max_rows);
    IF cardinality(ids) = 0 THEN
        RETURN;
    END IF;
    -- The heads of the requests' ledger chains, without waiting: a delivery
    -- whose request another transaction is writing (recording an outcome of
    -- another of its deliveries, say) is left for the next claim.  A claim
    -- thus never waits for a lock: recording takes its locks in one order
    -- (requests ascending, then destinations ascending), and the worker's
    -- turn records and then claims in one transaction, which would
    -- otherwise deadlock with a dispatch pass (test/isolation/specs/
    -- record_vs_claim.spec).
    ids := ARRAY(
        SELECT dl.id FROM delq.delivery dl
         WHERE dl.id = ANY (ids)
           AND (EXISTS (SELECT FROM delq.ledger_head h
                         WHERE h.chain = delq._ledger_chain(dl.request_id, NULL)
                           FOR NO KEY UPDATE SKIP LOCKED)
                OR NOT EXISTS (SELECT FROM delq.ledger_head h
                                WHERE h.chain = delq._ledger_chain(dl.request_id, NULL))));
    IF cardinality(ids) = 0 THEN
        RETURN;
    END IF;

    RETURN QUERY
    WITH claimed AS (
        UPDATE delq.delivery dl
           SET state = 'sending', attempts = dl.attempts + 1,
               first_attempt_at = coalesce(dl.first_attempt_at, now()),
               last_attempt_at = now(),
               lease_until = now() + make_interval(secs => 60 + 2 * t.timeout_ms / 1000.0)
          FROM delq.destination t
         WHERE dl.id = ANY (ids) AND t.name = dl.destination
        RETURNING dl.*
    ), logged AS (
        INSERT INTO delq.event (kind, request_id, destination, detail, actor)
        SELECT 'sending', c.request_id, c.destination,
               jsonb_build_object('attempt', c.attempts), 'delq'
          FROM claimed c
         ORDER BY c.request_id
    )
    SELECT c.id, c.request_id, c.destination, c.webhook_id,
           CASE WHEN t.request IS NULL THEN t.url ELSE r.url END,
           CASE WHEN t.request IS NULL
                THEN ARRAY(SELECT h.key || ': ' || h.value FROM jsonb_each_text(t.headers) h ORDER BY h.key)
                ELSE r.headers END,
           delq._signing_secrets(t), t.timeout_ms, t.connect_timeout_ms, t.ca_file, t.client_cert,
           t.client_key,
           CASE WHEN t.request IS NULL THEN delq._webhook_body(p, c.webhook_id, t.confirm) ELSE r.body END,
           r.method, r.error
      FROM claimed c
      JOIN delq.destination t ON t.name = c.destination
      JOIN delq.pending p ON p.id = c.request_id
      -- a gating condition (OFFSET 0 keeps the subquery, so that it
      -- gates): webhooks never call it
      LEFT JOIN LATERAL (SELECT * FROM delq._step_request(c.id, c.webhook_id, t, p)
                          WHERE t.request IS NOT NULL OFFSET 0) r ON true
     ORDER BY c.due_at, c.next_attempt_at;
END
$$;

-- The pause before the next attempt of a delivery that failed its
-- attempt-th try (counted from the last delq.retry()): Retry-After
-- (capped at max_ms) when the answer gave one (retry_after >= 0), else
-- full jitter on a capped exponential.  The one backoff rule, for
-- _record() and delq.nack().  A SQL-standard body: inlined.
CREATE OR REPLACE FUNCTION delq._backoff_ms(attempt integer, base_ms double precision,
                                 max_ms double precision, retry_after integer)
RETURNS double precision
LANGUAGE sql VOLATILE
RETURN CASE WHEN retry_after >= 0
            THEN least(retry_after * 1000.0, max_ms)
            ELSE pg_catalog.random() * least(max_ms,
                     base_ms * pg_catalog.power(2, least(attempt - 1, 40)))
       END;

-- Lock the requests of the deliveries ids, in id order, before their
-- deliveries: the lock order of reject() and confirm(), so that recording
-- an outcome (_record, _record_step in 72_steps.sql) never deadlocks with
-- an operator.
CREATE OR REPLACE FUNCTION delq._lock_requests_of(ids bigint[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM 1 FROM delq.pending p
     WHERE p.id IN (SELECT dl.request_id FROM delq.delivery dl WHERE dl.id = ANY (ids))
     ORDER BY p.id
       FOR UPDATE OF p;
END
$$;

-- Record a batch of outcomes: each delivery's new state, its event, the
-- request's status, then the destinations' health and circuit breaker
-- (_breaker_record, 75_breaker.sql).  Only rows still 'sending' change: a
-- delivery confirmed by callback or cancelled meanwhile stays as it is.
--
-- The C-to-SQL contract (src/store.c, delq_store_record; the values come
-- from src/webhook.c, delq_webhook_finish), one element per delivery:
--   outcomes       'confirmed', 'not_held', 'retry' or 'failed'.  'not_held'
--                  (the system holds no data on the subject) completes the
--                  delivery as 'confirmed' does, also in callback mode:
--                  there is nothing to wait for.
--   statuses       the HTTP status, 0 when no answer came
--   error_classes  what went wrong without the answer's body ('HTTP 503',
--                  curl's message), '' when nothing: events and health keep
--                  only this, as an answer's body may quote personal data
--   errors         the error class and the body's first bytes
--                  ('HTTP 503: busy'), '' when nothing: delivery.last_error
--   retry_after    Retry-After in seconds, -1 when absent
--   gone           whether the answer was 410 Gone
CREATE OR REPLACE FUNCTION delq._record(ids bigint[], outcomes text[], statuses integer[],
                             error_classes text[], errors text[], retry_after integer[],
                             gone boolean[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    base_ms double precision := extract(epoch FROM current_setting('delq.retry_base')::interval) * 1000;
    max_ms double precision := extract(epoch FROM current_setting('delq.retry_max')::interval) * 1000;
    default_attempts integer := current_setting('delq.max_attempts')::integer;
    touched uuid[];
BEGIN
    PERFORM delq._lock_requests_of(ids);

    WITH o AS (
        SELECT dl.id, dl.request_id, dl.destination, dl.attempts, dl.attempts_base,
               o.outcome, nullif(o.status, 0) AS status, nullif(o.error, '') AS error,
               nullif(o.error_class, '') AS error_class,
               o.retry_after, t.confirm,
               coalesce(t.max_attempts, default_attempts) AS max_attempts,
               coalesce(t.retry_base_ms, base_ms) AS base_ms,
               coalesce(t.retry_max_ms, max_ms) AS max_ms
          FROM unnest(ids, outcomes, statuses, error_classes, errors, retry_after)
               AS o(id, outcome, status, error_class, error, retry_after)
          JOIN delq.delivery dl ON dl.id = o.id
          JOIN delq.destination t ON t.name = dl.destination
         WHERE dl.id = ANY (ids) AND dl.state = 'sending'
           FOR UPDATE OF dl
    ), decided AS (
        SELECT o.*,
               CASE WHEN o.outcome = 'confirmed' AND o.confirm = 'callback' THEN 'awaiting_confirmation'
                    WHEN delq._delivery_done(o.outcome) THEN o.outcome
                    WHEN o.outcome = 'retry' AND o.attempts - o.attempts_base < o.max_attempts THEN 'queued'
                    ELSE 'failed' END AS state,
               delq._backoff_ms(o.attempts - o.attempts_base, o.base_ms, o.max_ms,
                                o.retry_after) AS delay_ms
          FROM o
    ), updated AS (
        UPDATE delq.delivery dl
           SET state = d.state,
               last_status = d.status,
               last_error = CASE WHEN delq._delivery_done(d.outcome) THEN NULL ELSE d.error END,
               confirmed_at = CASE WHEN delq._delivery_done(d.state) THEN now() END,
               next_attempt_at = CASE WHEN d.state = 'queued'
                                      THEN now() + make_interval(secs => d.delay_ms / 1000.0)
                                      ELSE dl.next_attempt_at END,
               lease_until = NULL
          FROM decided d
         WHERE dl.id = d.id
        RETURNING dl.request_id, dl.destination, dl.state, dl.attempts, dl.next_attempt_at,
                  d.status, d.error_class, d.outcome
    ), logged AS (
        INSERT INTO delq.event (kind, request_id, destination, detail, actor)
        SELECT CASE u.state WHEN 'queued' THEN 'retry_scheduled' ELSE u.state END,
               u.request_id, u.destination,
               jsonb_strip_nulls(jsonb_build_object(
                   'attempt', u.attempts, 'status', u.status,
                   'error', CASE WHEN NOT delq._delivery_done(u.outcome) THEN u.error_class END,
                   'next_attempt_at', CASE WHEN u.state = 'queued' THEN u.next_attempt_at END)),
               'delq'
          FROM updated u
         ORDER BY u.request_id
        RETURNING request_id
    )
    SELECT array_agg(DISTINCT request_id) INTO touched FROM logged;

    IF touched IS NOT NULL THEN
        PERFORM delq._refresh_status(touched, 'delq');
    END IF;
    -- destination health and the circuit breaker (75_breaker.sql), after
    -- the request chains' events, as in _claim
    PERFORM delq._breaker_record(ids, outcomes, error_classes, gone);
    RETURN coalesce(array_length(ids, 1), 0);
END
$$;

-- Deliveries left 'sending' by a worker that died (all of them at worker
-- start, else those whose lease expired) go back to the queue.
CREATE OR REPLACE FUNCTION delq._requeue_stale(all_sending boolean)
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT delq._requeue(all_sending, NULL);
$$;

-- The worker's or dispatch()'s claims whose lease expired go back to the
-- queue, the attempt counted, of one destination or (NULL) all; with
-- all_sending every claim of theirs (at worker start: its claims died with
-- it).  What a pull consumer took (leased_by set) is the consumer's,
-- whatever the worker does: only its lapsed lease counts, as a failed
-- attempt (delq._pull_failed, 52_pull.sql: requeued while attempts are
-- left, else failed).
CREATE OR REPLACE FUNCTION delq._requeue(all_sending boolean, only_destination text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
    lapsed bigint[];
BEGIN
    WITH requeued AS (
        UPDATE delq.delivery dl
           SET state = 'queued', next_attempt_at = now(), lease_until = NULL
         WHERE dl.state = 'sending' AND dl.leased_by IS NULL
           AND (only_destination IS NULL OR dl.destination = only_destination)
           AND (dl.lease_until < now() OR all_sending)
        RETURNING dl.request_id, dl.destination, dl.attempts
    ), logged AS (
        INSERT INTO delq.event (kind, request_id, destination, detail, actor)
        SELECT 'requeued', q.request_id, q.destination,
               jsonb_build_object('attempt', q.attempts,
                                  'because', CASE WHEN all_sending THEN 'worker restarted'
                                                  ELSE 'lease expired' END),
               'delq'
          FROM requeued q
         ORDER BY q.request_id
        RETURNING 1
    )
    SELECT count(*)::integer INTO n FROM logged;

    SELECT array_agg(dl.id ORDER BY dl.id) INTO lapsed FROM delq.delivery dl
     WHERE dl.state = 'sending' AND dl.leased_by IS NOT NULL AND dl.lease_until < now()
       AND (only_destination IS NULL OR dl.destination = only_destination);
    IF lapsed IS NOT NULL THEN
        n := n + delq._pull_failed(lapsed, true, NULL, true, NULL);
    END IF;
    RETURN n;
END
$$;

-- When the next piece of work the worker could act on falls due: a retry
-- of an enabled destination with room (or when its breaker lets a probe
-- through), a held request.  A destination at its concurrency cap gets
-- room when a transfer ends, which wakes the worker anyway.  NULL when
-- nothing is scheduled.
CREATE OR REPLACE FUNCTION delq._next_due()
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- PL/pgSQL keeps the plan; the worker asks after every turn
    RETURN (
        SELECT min(t) FROM (
            SELECT greatest(q.next_attempt_at, s.breaker_until)
              FROM delq.destination d
              LEFT JOIN delq.destination_state s ON s.name = d.name
             CROSS JOIN LATERAL (SELECT dl.next_attempt_at FROM delq.delivery dl
                                  WHERE dl.destination = d.name AND dl.state = 'queued'
                                  ORDER BY dl.next_attempt_at LIMIT 1) q
             WHERE d.enabled AND d.kind IN ('webhook', 'http', 'sql')
               AND (SELECT count(*) FROM delq.delivery x
                     WHERE x.destination = d.name AND x.state = 'sending')
                   < delq._breaker_room(d.concurrency, s.breaker_until, 'infinity')
            UNION ALL
            -- the first hold to end, from pending_held_idx in hold_until
            -- order (min() let a plan made on small tables read every open
            -- request through pending_due_idx, on every call)
            (SELECT p.hold_until FROM delq.pending p
              WHERE p.status = 'held' AND p.hold_until IS NOT NULL
              ORDER BY p.hold_until LIMIT 1)
        ) due(t));
END
$$;

CREATE OR REPLACE FUNCTION delq._dispatch(max_deliveries integer)
RETURNS integer
LANGUAGE c
AS 'MODULE_PATHNAME', 'delq_dispatch';

-- The bounds of a pass's max_deliveries, for dispatch() and dispatch_pass().
CREATE OR REPLACE FUNCTION delq._check_max_deliveries(max_deliveries integer)
RETURNS integer
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq._not_null('max_deliveries', max_deliveries);
    RETURN delq._check_range('max_deliveries', max_deliveries, 1, 1000000);
END
$$;

-- One forwarding pass in the calling session: release held requests,
-- requeue expired leases, send up to max_deliveries due deliveries, wait
-- for their answers and record them, committing each claim before anything
-- is sent (src/dispatch.c).  For installations without the worker:
-- pg_cron runs CALL delq.dispatch_pass().  Not SECURITY DEFINER (a
-- procedure that commits cannot be): its steps take the owner's identity
-- and a pinned search_path themselves.
CREATE OR REPLACE PROCEDURE delq.dispatch_pass(max_deliveries integer DEFAULT 1000)
LANGUAGE c
AS 'MODULE_PATHNAME', 'delq_dispatch_pass';

-- The same pass in the caller's statement (deprecated: a session that dies
-- after a send rolls back the record of it; refused in a transaction block).
CREATE OR REPLACE FUNCTION delq.dispatch(max_deliveries integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq._check_max_deliveries(max_deliveries);
    RETURN delq._dispatch(max_deliveries);
END
$$;

-- Per destination: what is queued, in flight, waiting, done (confirmed,
-- not held), failed, and whether its circuit breaker is open.
CREATE OR REPLACE VIEW delq.destination_health AS
SELECT d.name, d.enabled,
       count(dl.id) FILTER (WHERE dl.state = 'queued') AS queued,
       count(dl.id) FILTER (WHERE dl.state = 'sending') AS sending,
       count(dl.id) FILTER (WHERE dl.state = 'awaiting_confirmation') AS awaiting,
       count(dl.id) FILTER (WHERE dl.state = 'confirmed') AS confirmed,
       count(dl.id) FILTER (WHERE dl.state = 'failed') AS failed,
       coalesce(s.consecutive_failures, 0) AS consecutive_failures,
       -- twin of delq._breaker_state (75_breaker.sql), which a view may not call
       CASE WHEN s.breaker_until IS NULL THEN 'closed'
            WHEN s.breaker_until > now() THEN 'open'
            ELSE 'probing' END AS breaker,
       s.breaker_until,
       s.last_success_at, s.last_failure_at, s.last_failure,
       -- 1.1: last, so that CREATE OR REPLACE VIEW can add it over 1.0's
       count(dl.id) FILTER (WHERE dl.state = 'not_held') AS not_held
  FROM delq.destination d
  LEFT JOIN delq.destination_state s ON s.name = d.name
  LEFT JOIN delq.delivery dl ON dl.destination = d.name
 GROUP BY d.name, d.enabled, s.name;
GRANT SELECT ON delq.destination_health TO delq_operator;
