-- The request API: submit, approve, reject, retry, confirm, archive.

-- Whether request id (pending, or archived and perhaps redacted) is for
-- subject; true when the request is gone (deleted after its retention).
CREATE OR REPLACE FUNCTION delq._same_subject(id uuid, subject text)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    stored text;
    redacted boolean := false;
BEGIN
    SELECT p.subject INTO stored FROM delq.pending p WHERE p.id = _same_subject.id;
    IF NOT FOUND THEN
        SELECT f.subject, f.redacted_at IS NOT NULL INTO stored, redacted
          FROM delq.finished f WHERE f.id = _same_subject.id;
        IF NOT FOUND THEN
            RETURN true;
        END IF;
    END IF;
    RETURN stored = CASE WHEN redacted THEN delq._subject_hash(subject) ELSE subject END;
END
$$;

CREATE OR REPLACE FUNCTION delq.submit(subject text, source text, reason text DEFAULT NULL,
                            attributes jsonb DEFAULT '{}', external_id text DEFAULT NULL,
                            due_at timestamptz DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- a failed call must not write the subject into the server log
SET log_min_error_statement = panic
AS $$
DECLARE
    new_id uuid := gen_random_uuid();
    existing uuid;
    hold interval;
    held boolean;
BEGIN
    PERFORM delq._check_text('subject', subject, 1000, true);
    PERFORM delq._check_source(source);
    PERFORM delq._check_source_grant(source);
    PERFORM delq._check_text('reason', reason, 1000, false, true);
    PERFORM delq._check_attributes(attributes);
    PERFORM delq._check_text('external_id', external_id, 255, false);
    IF due_at IS NOT NULL AND due_at <= now() THEN
        PERFORM delq._invalid('due_at', format('is in the past (%s)', due_at),
                              'Pass a future time, or NULL for now() + delq.default_deadline.');
    END IF;
    -- bounded like delq.default_deadline: a far deadline is never at risk,
    -- overdue or late in report(), and escapes extend()'s limit
    IF due_at IS NOT NULL AND (NOT isfinite(due_at) OR due_at > now() + interval '365 days') THEN
        PERFORM delq._invalid('due_at', format('is too far ahead (%s)', due_at),
                              'Pass a time at most 365 days from now, or NULL for now() + delq.default_deadline.');
    END IF;

    -- Idempotency: the first (source, external_id) wins, pending or finished;
    -- a concurrent duplicate waits here for the first one's transaction.
    IF external_id IS NOT NULL THEN
        INSERT INTO delq.request_key AS k (source, external_id, request_id)
        VALUES (submit.source, submit.external_id, new_id)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            SELECT k.request_id INTO existing FROM delq.request_key k
             WHERE k.source = submit.source AND k.external_id = submit.external_id;
            IF NOT delq._same_subject(existing, submit.subject) THEN
                RAISE EXCEPTION 'source % already has a request with this external_id, for another subject',
                                quote_literal(submit.source)
                    USING ERRCODE = 'unique_violation',
                          HINT = 'An external_id names one request of its source: pass a new external_id for a new request (a replay with the same subject returns the first request''s id).';
            END IF;
            RETURN existing;
        END IF;
    END IF;

    hold := delq._setting_interval('delq.hold_period');
    held := current_setting('delq.require_approval')::boolean OR hold > interval '0';

    INSERT INTO delq.pending (id, source, external_id, subject, reason, attributes,
                              status, due_at, hold_until)
    VALUES (new_id, submit.source, submit.external_id, submit.subject, submit.reason,
            submit.attributes,
            CASE WHEN held THEN 'held' ELSE 'forwarding' END,
            coalesce(submit.due_at, now() + delq._setting_interval('delq.default_deadline')),
            CASE WHEN held AND NOT current_setting('delq.require_approval')::boolean
                 THEN now() + hold END);

    PERFORM delq._log('submitted', new_id, NULL,
                      jsonb_build_object('source', submit.source,
                                         'status', CASE WHEN held THEN 'held' ELSE 'forwarding' END));
    IF NOT held THEN
        PERFORM delq._plan(new_id);
    END IF;
    -- also when held: the worker then learns when the hold ends
    PERFORM delq._wake_on_commit();
    RETURN new_id;
END
$$;

CREATE OR REPLACE FUNCTION delq.approve(id uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r delq.pending := delq._request(id, true);
BEGIN
    IF r.status <> 'held' THEN
        PERFORM delq._wrong_state(r.id, r.status, 'Only held requests can be approved.');
    END IF;
    PERFORM delq._log('approved', r.id);
    PERFORM delq._plan(r.id);
    PERFORM delq._wake_on_commit();
END
$$;

CREATE OR REPLACE FUNCTION delq.reject(id uuid, reason text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r delq.pending;
    sent text;
BEGIN
    PERFORM delq._check_text('reason', reason, 1000, true, true);
    r := delq._request(id, true);
    IF r.status IN ('completed', 'rejected') THEN
        PERFORM delq._wrong_state(r.id, r.status, 'Only requests that are held, forwarding or failed, and not yet sent anywhere, can be rejected.');
    END IF;

    -- The worker commits its claim (attempts + 1) before sending, so once
    -- these rows are locked, attempts tells whether anything left.
    PERFORM 1 FROM delq.delivery d WHERE d.request_id = r.id FOR UPDATE;
    SELECT string_agg(dl.destination, ', ' ORDER BY dl.destination) INTO sent
      FROM delq.delivery dl
     WHERE dl.request_id = r.id
       AND (dl.attempts > 0 OR dl.state IN ('sending', 'awaiting_confirmation')
            OR delq._delivery_done(dl.state));
    IF sent IS NOT NULL THEN
        RAISE EXCEPTION 'request % has already been sent to %', r.id, sent
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A request that a destination may have received cannot be rejected.',
                  HINT = 'Ask the destination to disregard it, or let it complete.';
    END IF;

    WITH cancelled AS (
        UPDATE delq.delivery d SET state = 'cancelled', next_attempt_at = now()
         WHERE d.request_id = r.id AND d.state IN ('queued', 'failed')
        RETURNING d.destination
    )
    INSERT INTO delq.event (kind, request_id, destination, detail)
    SELECT 'cancelled', r.id, c.destination, '{"because": "rejected"}' FROM cancelled c;

    UPDATE delq.pending p
       SET status = 'rejected', rejected = true, rejection_reason = reject.reason,
           rejected_at = now()
     WHERE p.id = r.id;
    PERFORM delq._log('rejected', r.id, NULL, jsonb_build_object('reason', reject.reason));
END
$$;

CREATE OR REPLACE FUNCTION delq.retry(id uuid, destination text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r delq.pending := delq._request(id, true);
    n integer;
    dests text[];
BEGIN
    IF r.status <> 'failed' THEN
        PERFORM delq._wrong_state(r.id, r.status, 'Only failed requests can be retried.');
    END IF;
    IF destination IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM delq.delivery d WHERE d.request_id = r.id AND d.destination = retry.destination) THEN
        RAISE EXCEPTION 'request % has no delivery to destination %', r.id, destination
            USING ERRCODE = 'undefined_object',
                  HINT = 'See delq.delivery for the destinations of this request, or pass NULL for all.';
    END IF;

    -- Nothing failed to requeue (no route matched, or every delivery was
    -- cancelled): plan again with today's routes.
    IF destination IS NULL AND NOT EXISTS (
        SELECT 1 FROM delq.delivery d WHERE d.request_id = r.id AND d.state <> 'cancelled') THEN
        PERFORM delq._log('retried', r.id, NULL, '{"replanned": true}');
        n := delq._plan(r.id);
        PERFORM delq._wake_on_commit();
        RETURN n;
    END IF;

    WITH requeued AS (
        UPDATE delq.delivery d
           SET state = 'queued', next_attempt_at = now(), attempts_base = d.attempts,
               lease_until = NULL
         WHERE d.request_id = r.id AND d.state = 'failed'
           AND (retry.destination IS NULL OR d.destination = retry.destination)
        RETURNING d.destination, d.attempts
    ), logged AS (
        INSERT INTO delq.event AS e (kind, request_id, destination, detail)
        SELECT 'retried', r.id, q.destination, jsonb_build_object('attempts_so_far', q.attempts)
          FROM requeued q
         ORDER BY q.destination
        RETURNING e.destination AS dest
    )
    SELECT count(*), array_agg(l.dest ORDER BY l.dest) INTO n, dests FROM logged l;
    IF n = 0 THEN
        RAISE EXCEPTION 'request % has no failed delivery%', r.id,
                        coalesce(' to ' || destination, '')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Only failed deliveries can be retried; see delq.needs_attention.';
    END IF;
    PERFORM delq._refresh_status(ARRAY[r.id]);
    -- an open breaker lets the retried deliveries through at once
    PERFORM delq._breaker_reset(x, 'retry', false, false) FROM unnest(dests) x;
    PERFORM delq._wake_on_commit();
    RETURN n;
END
$$;

-- Confirmation of a delivery: the callback of a destination in 'callback'
-- mode, or an operator recording that a system erased the data by other
-- means.  Confirming twice is harmless and returns false.
CREATE OR REPLACE FUNCTION delq.confirm(id uuid, destination text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r delq.pending;
    d delq.delivery;
BEGIN
    PERFORM delq._not_null('destination', destination);
    r := delq._request(id, true);
    SELECT * INTO d FROM delq.delivery dl
     WHERE dl.request_id = r.id AND dl.destination = confirm.destination FOR UPDATE;
    IF d.id IS NULL THEN
        RAISE EXCEPTION 'request % has no delivery to destination %', r.id, destination
            USING ERRCODE = 'undefined_object',
                  HINT = 'See delq.delivery for the destinations of this request.';
    END IF;
    RETURN delq._confirm_delivery(d, 'confirmed', 'delq.confirm');
END
$$;

-- The end of a delivery that a system confirmed outside the worker:
-- 'confirmed' (erased) or 'not_held' (it held nothing).  Shared by
-- delq.confirm(), the HTTP confirmation links (delq._http_confirm,
-- 88_http.sql) and a pull consumer's delq.ack() (52_pull.sql, with more
-- detail for the event and the consumer as its actor); the caller has
-- locked the request and found d.  Done already: false, nothing written.
CREATE OR REPLACE FUNCTION delq._confirm_delivery(d delq.delivery, outcome text, via text,
                                                  detail jsonb DEFAULT '{}',
                                                  actor text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF delq._delivery_done(d.state) THEN
        -- confirmed, or the destination said it holds nothing: done either way
        RETURN false;
    END IF;
    IF d.state = 'cancelled' THEN
        RAISE EXCEPTION 'delivery of request % to % is cancelled', d.request_id, d.destination
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Cancelled deliveries (of rejected requests) cannot be confirmed.';
    END IF;

    UPDATE delq.delivery dl
       SET state = outcome, confirmed_at = now(), lease_until = NULL
     WHERE dl.id = d.id;
    PERFORM delq._log(outcome, d.request_id, d.destination,
                      jsonb_build_object('via', via, 'previous_state', d.state) || detail, actor);
    PERFORM delq._refresh_status(ARRAY[d.request_id]);
    RETURN true;
END
$$;

-- Move completed and rejected requests, with a summary of their
-- deliveries, to delq.finished.
CREATE OR REPLACE FUNCTION delq.archive(older_than interval DEFAULT '0')
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    moved bigint;
BEGIN
    PERFORM delq._not_null('older_than', older_than);
    PERFORM delq._check_not_negative('older_than', older_than,
                                     'Pass how long a request must have been finished, e.g. ''30 days'', or ''0'' for all.');

    WITH victims AS (
        SELECT p.id FROM delq.pending p
         WHERE p.status IN ('completed', 'rejected')
           AND coalesce(p.completed_at, p.rejected_at) <= now() - older_than
         FOR UPDATE
    ), summary AS (
        SELECT dl.request_id,
               jsonb_agg(delq._delivery_summary(dl) ORDER BY dl.destination) AS deliveries
          FROM delq.delivery dl
         WHERE dl.request_id IN (SELECT v.id FROM victims v)
         GROUP BY dl.request_id
    ), gone AS (
        DELETE FROM delq.pending p USING victims v WHERE p.id = v.id
        RETURNING p.*
    ), kept AS (
        INSERT INTO delq.finished
            (id, source, external_id, subject, reason, attributes, status, submitted_at,
             due_at, hold_until, rejected, rejection_reason, rejected_at, completed_at,
             failure_reason, deliveries)
        SELECT g.id, g.source, g.external_id, g.subject, g.reason, g.attributes, g.status,
               g.submitted_at, g.due_at, g.hold_until, g.rejected, g.rejection_reason,
               g.rejected_at, g.completed_at, g.failure_reason,
               coalesce(s.deliveries, '[]')
          FROM gone g LEFT JOIN summary s ON s.request_id = g.id
        RETURNING finished.id, finished.status
    )
    INSERT INTO delq.event (kind, request_id, detail)
    SELECT 'archived', k.id, jsonb_build_object('status', k.status) FROM kept k ORDER BY k.id;
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END
$$;
