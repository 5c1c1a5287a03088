-- Proof and reporting: a signed receipt per request (GDPR Art. 5(2),
-- CCPA regs §7101), and the yearly metrics of CCPA regs §7102.
-- See docs/privacy.md.

-- What each destination did for a request: from the delivery rows while
-- it is pending, the archived summary (the same objects, archive() wrote
-- them) once it is finished.
CREATE OR REPLACE FUNCTION delq._receipt_deliveries(request_id uuid)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(
        (SELECT jsonb_agg(delq._delivery_summary(dl) ORDER BY dl.destination)
           FROM delq.delivery dl WHERE dl.request_id = _receipt_deliveries.request_id),
        (SELECT f.deliveries FROM delq.finished f WHERE f.id = _receipt_deliveries.request_id),
        '[]');
$$;

-- The signature object of a receipt body.
CREATE OR REPLACE FUNCTION delq._receipt_signature(body jsonb, key_name text)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'alg', 'HMAC-SHA256', 'key', key_name,
        'value', encode(delq._hmac_sha256(delq._secret(key_name), convert_to(body::text, 'UTF8')), 'hex'));
$$;

-- A signed account of one request: the request (its subject, and the
-- attributes named in delq.redact_attributes, only as keyed hashes), every event with its ledger hash, each destination's
-- outcome, and where the request's ledger chain ends (with the last
-- checkpoint that sealed it).  delq.verify_receipt() tells whether a
-- receipt is unchanged.
CREATE OR REPLACE FUNCTION delq.receipt(id uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    request jsonb;
    chain_name text := delq._ledger_chain(receipt.id, NULL);
    body jsonb;
BEGIN
    PERFORM delq._not_null('id', receipt.id);

    SELECT jsonb_build_object(
               'id', p.id, 'source', p.source, 'external_id', p.external_id,
               'subject_hash', delq._subject_hash(p.subject), 'reason', delq._scrub_text(p.reason, p.subject),
               'attributes', delq._redact_attributes(p.attributes, delq._redact_keys()),
               'status', p.status,
               'submitted_at', p.submitted_at, 'due_at', p.due_at,
               'completed_at', p.completed_at, 'rejected_at', p.rejected_at,
               'rejection_reason', delq._scrub_text(p.rejection_reason, p.subject),
               'failure_reason', delq._scrub_text(p.failure_reason, p.subject),
               'archived', false)
      INTO request
      FROM delq.pending p WHERE p.id = receipt.id;
    IF request IS NULL THEN
        SELECT jsonb_build_object(
                   'id', f.id, 'source', f.source, 'external_id', f.external_id,
                   'subject_hash', CASE WHEN f.redacted_at IS NULL THEN delq._subject_hash(f.subject)
                                        ELSE f.subject END,
                   -- redacted ones are scrubbed already (delq.redact())
                   'reason', delq._scrub_text(f.reason, f.subject),
                   'attributes', CASE WHEN f.redacted_at IS NULL
                                      THEN delq._redact_attributes(f.attributes, delq._redact_keys())
                                      ELSE f.attributes END,
                   'status', f.status,
                   'submitted_at', f.submitted_at, 'due_at', f.due_at,
                   'completed_at', f.completed_at, 'rejected_at', f.rejected_at,
                   'rejection_reason', delq._scrub_text(f.rejection_reason, f.subject),
                   'failure_reason', delq._scrub_text(f.failure_reason, f.subject),
                   'archived', true, 'finished_at', f.finished_at, 'redacted_at', f.redacted_at)
          INTO request
          FROM delq.finished f WHERE f.id = receipt.id;
    END IF;
    IF request IS NULL THEN
        RAISE EXCEPTION 'request % does not exist', receipt.id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Pass the id that delq.submit() returned.';
    END IF;

    body := jsonb_build_object(
        'type', 'delq.receipt',
        'version', 1,
        'issued_at', now(),
        'request', request,
        'destinations', delq._receipt_deliveries(receipt.id),
        'timeline', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                          'id', e.id, 'at', e.at, 'kind', e.kind, 'actor', e.actor,
                                          'destination', e.destination, 'detail', e.detail,
                                          'prev_hash', encode(e.prev_hash, 'hex'),
                                          'hash', encode(e.hash, 'hex'))
                                          ORDER BY e.id)
                                FROM delq.event e WHERE e.request_id = receipt.id), '[]'),
        'ledger', jsonb_build_object(
            'chain', chain_name,
            'events', (SELECT h.events FROM delq.ledger_head h WHERE h.chain = chain_name),
            'head', (SELECT encode(h.hash, 'hex') FROM delq.ledger_head h WHERE h.chain = chain_name),
            'checkpoint', (SELECT jsonb_build_object('id', c.id, 'at', c.at, 'events', k.events,
                                                     'hash', encode(c.hash, 'hex'))
                             FROM delq.ledger_checkpoint_head k
                             JOIN delq.ledger_checkpoint c ON c.id = k.checkpoint_id
                            WHERE k.chain = chain_name
                            ORDER BY k.checkpoint_id DESC LIMIT 1)));
    RETURN body || jsonb_build_object('signature', delq._receipt_signature(body, 'receipt'));
END
$$;

-- Whether receipt is exactly as delq.receipt() signed it: any change to
-- any part of it (but the order of keys or spaces, which jsonb does not
-- keep) makes it false.
CREATE OR REPLACE FUNCTION delq.verify_receipt(receipt jsonb)
RETURNS boolean
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sig jsonb;
BEGIN
    PERFORM delq._not_null('receipt', receipt);
    IF jsonb_typeof(receipt) <> 'object' THEN
        PERFORM delq._invalid('receipt', format('must be a JSON object, not %s', jsonb_typeof(receipt)),
                              'Pass the whole object that delq.receipt() returned.');
    END IF;
    sig := receipt -> 'signature';
    IF jsonb_typeof(sig) IS DISTINCT FROM 'object'
       OR sig ->> 'alg' IS DISTINCT FROM 'HMAC-SHA256'
       OR sig ->> 'key' IS DISTINCT FROM 'receipt'
       OR coalesce(sig ->> 'value', '') !~ '^[0-9a-f]{64}$' THEN
        RETURN false;
    END IF;
    -- compare digests, not the values, so the time taken tells nothing
    RETURN sha256(convert_to(delq._receipt_signature(receipt - 'signature', 'receipt') ->> 'value', 'UTF8'))
           = sha256(convert_to(sig ->> 'value', 'UTF8'));
END
$$;

-- Every request, pending or finished, with the times that count.
CREATE OR REPLACE FUNCTION delq._report_requests()
RETURNS TABLE (id uuid, status text, submitted_at timestamptz, due_at timestamptz,
               completed_at timestamptz, rejected_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.id, p.status, p.submitted_at, p.due_at, p.completed_at, p.rejected_at
      FROM delq.pending p
    UNION ALL
    SELECT f.id, f.status, f.submitted_at, f.due_at, f.completed_at, f.rejected_at
      FROM delq.finished f;
$$;

-- Every delivery, pending or archived, with its request's times.
CREATE OR REPLACE FUNCTION delq._report_deliveries()
RETURNS TABLE (destination text, state text, submitted_at timestamptz, due_at timestamptz,
               rejected_at timestamptz, confirmed_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT dl.destination, dl.state, p.submitted_at, p.due_at, p.rejected_at, dl.confirmed_at
      FROM delq.delivery dl JOIN delq.pending p ON p.id = dl.request_id
    UNION ALL
    SELECT d ->> 'destination', d ->> 'state', f.submitted_at, f.due_at, f.rejected_at,
           (d ->> 'confirmed_at')::timestamptz
      FROM delq.finished f, jsonb_array_elements(f.deliveries) d;
$$;

-- Median and mean of a set of durations, in days (2 decimals).
CREATE OR REPLACE FUNCTION delq._days(durations interval[])
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
               'median', round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d))
                                / 86400)::numeric, 2),
               'mean', round(avg(extract(epoch FROM d)) / 86400, 2))
      FROM unnest(durations) d;
$$;

-- Metrics for [from_time, to_time), for the records of CCPA regs §7101
-- and the yearly disclosure of §7102: requests received, completed,
-- rejected (denied) and overdue (deadline in the period and missed), the
-- median and mean days to complete and to respond (complete or deny), and
-- per destination the same for its deliveries (a not_held answer is
-- counted apart from confirmations; both are answers in days_to_confirm
-- and in overdue).
CREATE OR REPLACE FUNCTION delq.report(from_time timestamptz, to_time timestamptz)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    upto timestamptz;
    requests jsonb;
    destinations jsonb;
BEGIN
    PERFORM delq._not_null('from_time', from_time);
    PERFORM delq._not_null('to_time', to_time);
    IF from_time >= to_time THEN
        PERFORM delq._invalid('to_time', 'must be later than from_time',
                              'Pass a period such as (''2025-01-01'', ''2026-01-01''): from_time is included, to_time is not.');
    END IF;
    -- deadlines still ahead are not missed yet
    upto := least(to_time, now());

    SELECT jsonb_build_object(
               'received', count(*) FILTER (WHERE r.submitted_at >= from_time AND r.submitted_at < to_time),
               'completed', count(*) FILTER (WHERE r.completed_at >= from_time AND r.completed_at < to_time),
               'rejected', count(*) FILTER (WHERE r.rejected_at >= from_time AND r.rejected_at < to_time),
               'overdue', count(*) FILTER (WHERE r.due_at >= from_time AND r.due_at < upto
                                             AND coalesce(r.completed_at, r.rejected_at, 'infinity') > r.due_at),
               'days_to_complete', delq._days(array_agg(r.completed_at - r.submitted_at)
                                       FILTER (WHERE r.completed_at >= from_time AND r.completed_at < to_time)),
               'days_to_respond', delq._days(array_agg(coalesce(r.completed_at, r.rejected_at) - r.submitted_at)
                                      FILTER (WHERE coalesce(r.completed_at, r.rejected_at) >= from_time
                                                AND coalesce(r.completed_at, r.rejected_at) < to_time)))
      INTO requests
      FROM delq._report_requests() r;

    SELECT coalesce(jsonb_agg(x.o ORDER BY x.destination), '[]') INTO destinations
      FROM (SELECT d.destination,
                   jsonb_build_object(
                       'destination', d.destination,
                       'received', count(*) FILTER (WHERE d.submitted_at >= from_time AND d.submitted_at < to_time),
                       'confirmed', count(*) FILTER (WHERE d.state = 'confirmed'
                                                       AND d.confirmed_at >= from_time AND d.confirmed_at < to_time),
                       -- answered that it holds no data on the subject
                       'not_held', count(*) FILTER (WHERE d.state = 'not_held'
                                                      AND d.confirmed_at >= from_time AND d.confirmed_at < to_time),
                       'cancelled', count(*) FILTER (WHERE d.state = 'cancelled'
                                                       AND d.rejected_at >= from_time AND d.rejected_at < to_time),
                       'failed', count(*) FILTER (WHERE d.state = 'failed'
                                                    AND d.submitted_at >= from_time AND d.submitted_at < to_time),
                       'overdue', count(*) FILTER (WHERE d.state <> 'cancelled'
                                                     AND d.due_at >= from_time AND d.due_at < upto
                                                     AND coalesce(d.confirmed_at, 'infinity') > d.due_at),
                       'days_to_confirm', delq._days(array_agg(d.confirmed_at - d.submitted_at)
                                              FILTER (WHERE d.confirmed_at >= from_time AND d.confirmed_at < to_time))) AS o
              FROM delq._report_deliveries() d
             GROUP BY d.destination
            HAVING count(*) FILTER (WHERE (d.submitted_at >= from_time AND d.submitted_at < to_time)
                                       OR (d.confirmed_at >= from_time AND d.confirmed_at < to_time)
                                       OR (d.due_at >= from_time AND d.due_at < to_time)) > 0) x;

    RETURN jsonb_build_object('from', from_time, 'to', to_time,
                              'requests', requests, 'destinations', destinations);
END
$$;

GRANT EXECUTE ON FUNCTION delq.receipt(uuid), delq.verify_receipt(jsonb),
                          delq.report(timestamptz, timestamptz)
    TO delq_operator;
