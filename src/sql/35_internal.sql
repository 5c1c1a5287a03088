-- Internal helpers of the request life cycle: settings, planning and the
-- request status that follows from its deliveries.  Not granted to anyone.

CREATE OR REPLACE FUNCTION delq._load()
RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'delq_load';

CREATE OR REPLACE FUNCTION delq._wake_on_commit()
RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'delq_wake_on_commit';

CREATE OR REPLACE FUNCTION delq.worker_running()
RETURNS boolean
LANGUAGE c
AS 'MODULE_PATHNAME', 'delq_worker_running';

-- A duration setting (delq.hold_period, ...) as an interval.
CREATE OR REPLACE FUNCTION delq._setting_interval(name text)
RETURNS interval
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq._load();
    RETURN current_setting(name)::interval;
END
$$;

-- The request or a clear 42704 error.  Locks the row when lock is true.
CREATE OR REPLACE FUNCTION delq._request(request_id uuid, lock boolean)
RETURNS delq.pending
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r delq.pending;
BEGIN
    PERFORM delq._not_null('id', request_id);
    IF lock THEN
        SELECT * INTO r FROM delq.pending p WHERE p.id = _request.request_id FOR UPDATE;
    ELSE
        SELECT * INTO r FROM delq.pending p WHERE p.id = _request.request_id;
    END IF;
    IF r.id IS NULL THEN
        IF EXISTS (SELECT 1 FROM delq.finished f WHERE f.id = _request.request_id) THEN
            RAISE EXCEPTION 'request % is archived', request_id
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Archived requests are final; see delq.finished.';
        END IF;
        RAISE EXCEPTION 'request % does not exist', request_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Pass the id that delq.submit() returned.';
    END IF;
    RETURN r;
END
$$;

CREATE OR REPLACE FUNCTION delq._wrong_state(request_id uuid, status text, allowed text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'request % is %', request_id, status
        USING ERRCODE = 'object_not_in_prerequisite_state', HINT = allowed;
END
$$;

-- The document routes are matched against.
CREATE OR REPLACE FUNCTION delq._routing_document(r delq.pending)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.attributes || jsonb_build_object('source', r.source)
           || CASE WHEN r.reason IS NULL THEN '{}'::jsonb
                   ELSE jsonb_build_object('reason', r.reason) END;
$$;

-- Whether a route's match applies to a routing document: the one rule of
-- planning (_plan) and of delq.explain_routes().  A SQL-standard body:
-- inlined.
CREATE OR REPLACE FUNCTION delq._route_matches(doc jsonb, match jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN doc OPERATOR(pg_catalog.@>) match;

-- Plan one delivery per destination with a matching route; a request that
-- matches nothing fails so that an operator sees it.  Returns the number
-- of deliveries planned.  The caller holds the request's row lock.
CREATE OR REPLACE FUNCTION delq._plan(request_id uuid, actor text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r delq.pending;
    doc jsonb;
    planned integer;
BEGIN
    SELECT * INTO r FROM delq.pending p WHERE p.id = _plan.request_id;
    doc := delq._routing_document(r);

    WITH new AS (
        INSERT INTO delq.delivery (request_id, destination, due_at, webhook_id)
        SELECT r.id, d.name, r.due_at,
               'msg_' || replace(gen_random_uuid()::text, '-', '')
          FROM delq.destination d
         WHERE EXISTS (SELECT 1 FROM delq.route rt
                        WHERE rt.destination = d.name AND delq._route_matches(doc, rt.match))
         ORDER BY d.name
        -- a delivery cancelled by drop_destination is revived, with its
        -- webhook id, when the destination is back
        ON CONFLICT ON CONSTRAINT delivery_request_id_destination_key DO UPDATE
            SET state = 'queued', next_attempt_at = now(), attempts_base = delivery.attempts,
                lease_until = NULL
            WHERE delivery.state = 'cancelled'
        RETURNING delivery.destination
    )
    INSERT INTO delq.event (kind, request_id, destination, actor)
    SELECT 'queued', r.id, new.destination, coalesce(actor, session_user) FROM new;
    GET DIAGNOSTICS planned = ROW_COUNT;

    IF NOT EXISTS (SELECT 1 FROM delq.delivery dl
                    WHERE dl.request_id = r.id AND dl.state <> 'cancelled') THEN
        UPDATE delq.pending p SET status = 'failed', failure_reason = 'no route matched'
         WHERE p.id = r.id;
        PERFORM delq._log('no_route', r.id, NULL,
                          -- a count, not the keys: a submitter chooses them,
                          -- and this trail is never erased
                          jsonb_build_object('status', 'failed', 'attribute_count',
                                             (SELECT count(*) FROM jsonb_object_keys(doc) k
                                               WHERE k NOT IN ('source', 'reason'))),
                          actor);
    ELSIF r.status <> 'forwarding' THEN
        UPDATE delq.pending p SET status = 'forwarding', failure_reason = NULL
         WHERE p.id = r.id;
        -- re-planned next to deliveries that are already done
        PERFORM delq._refresh_status(ARRAY[r.id], actor);
    END IF;
    RETURN planned;
END
$$;

-- What an archived request keeps of one delivery (delq.finished.deliveries),
-- and what a receipt shows of it.  A SQL-standard body: inlined.
CREATE OR REPLACE FUNCTION delq._delivery_summary(dl delq.delivery)
RETURNS jsonb
LANGUAGE sql STABLE
RETURN pg_catalog.jsonb_build_object(
    'destination', dl.destination, 'state', dl.state,
    'attempts', dl.attempts, 'last_status', dl.last_status,
    'first_attempt_at', dl.first_attempt_at,
    'last_attempt_at', dl.last_attempt_at,
    'confirmed_at', dl.confirmed_at, 'webhook_id', dl.webhook_id);

-- Whether a delivery state is a final answer of its destination: confirmed
-- (the data was erased), or not_held (the system holds nothing on the
-- subject).  Either completes the delivery; the one place that says so.
-- A SQL-standard body: inlined where it is used.
CREATE OR REPLACE FUNCTION delq._delivery_done(state text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN state OPERATOR(pg_catalog.=) ANY ('{confirmed,not_held}'::text[]);

-- Derive each request's status from its deliveries: failed if any failed,
-- completed when all are done (confirmed or not_held; or cancelled, with
-- one done), forwarding otherwise.  Logs every change.  Held and rejected requests
-- are left alone.
CREATE OR REPLACE FUNCTION delq._refresh_status(request_ids uuid[], actor text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- plpgsql, not sql: the plan is kept instead of made on every call
    WITH derived AS (
        SELECT dl.request_id,
               CASE WHEN bool_or(dl.state = 'failed') THEN 'failed'
                    WHEN bool_and(dl.state = 'cancelled' OR delq._delivery_done(dl.state))
                         AND bool_or(delq._delivery_done(dl.state)) THEN 'completed'
                    WHEN bool_and(dl.state = 'cancelled') THEN 'failed'
                    ELSE 'forwarding' END AS status,
               CASE WHEN bool_or(dl.state = 'failed')
                    THEN 'delivery failed: ' || string_agg(dl.destination, ', ' ORDER BY dl.destination)
                                                FILTER (WHERE dl.state = 'failed')
                    WHEN bool_and(dl.state = 'cancelled') THEN 'every delivery was cancelled'
               END AS failure_reason
          FROM delq.delivery dl
         WHERE dl.request_id = ANY (_refresh_status.request_ids)
         GROUP BY dl.request_id
    ), changed AS (
        UPDATE delq.pending p
           SET status = d.status,
               failure_reason = d.failure_reason,
               completed_at = CASE WHEN d.status = 'completed' THEN now() END
          FROM derived d
         WHERE p.id = d.request_id
           AND p.status NOT IN ('held', 'rejected')
           AND (p.status <> d.status OR p.failure_reason IS DISTINCT FROM d.failure_reason)
        RETURNING p.id, p.status, p.failure_reason
    )
    INSERT INTO delq.event (kind, request_id, detail, actor)
    SELECT c.status, c.id,
           jsonb_strip_nulls(jsonb_build_object('status', c.status, 'failure_reason', c.failure_reason)),
           coalesce(_refresh_status.actor, session_user)
      FROM changed c
     ORDER BY c.id;
END
$$;

-- Release held requests whose hold period is over (the worker and
-- delq.dispatch() call this), the earliest hold end first: that order is
-- pending_held_idx's, so a call reads only the requests it releases
-- (ordered by due_at, a plan may read every open request instead).
-- Returns how many were released.
CREATE OR REPLACE FUNCTION delq._release_held(max_requests integer)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rid uuid;
    released integer := 0;
BEGIN
    FOR rid IN
        SELECT p.id FROM delq.pending p
         WHERE p.status = 'held' AND p.hold_until <= now()
         ORDER BY p.hold_until
         LIMIT max_requests
         FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM delq._log('released', rid, NULL, '{"by": "hold_period"}', 'delq');
        PERFORM delq._plan(rid, 'delq');
        released := released + 1;
    END LOOP;
    RETURN released;
END
$$;
