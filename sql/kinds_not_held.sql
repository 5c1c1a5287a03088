--
-- kinds_not_held: the outcome "not held" (the destination holds no data
-- on the subject).  It completes a delivery as a confirmation does, and is
-- recorded as what it is: delivery state, event, request status, health,
-- deadlines, archive summary, receipt and report.
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

SELECT delq.add_destination('t40_a', 'https://a.t40.example/erase');
SELECT delq.add_destination('t40_b', 'https://b.t40.example/erase');
SELECT delq.add_destination('t40_cb', 'https://cb.t40.example/erase', confirm => 'callback');
SELECT delq.add_route('t40_a', '{"source": "t40"}') IS NOT NULL AS routed;
SELECT delq.add_route('t40_b', '{"source": "t40"}') IS NOT NULL AS routed;
SELECT delq.add_route('t40_cb', '{"source": "t40", "callback": true}') IS NOT NULL AS routed;

-- What the forwarding engine does when it claims, without the claim's
-- other rows of this database: the delivery is 'sending', one attempt.
CREATE FUNCTION pg_temp.send(request uuid, dest text) RETURNS bigint
LANGUAGE sql AS $$
    UPDATE delq.delivery SET state = 'sending', attempts = attempts + 1,
                             first_attempt_at = now(), last_attempt_at = now()
     WHERE request_id = request AND destination = dest
    RETURNING id;
$$;
-- An outcome as the engine records it (src/store.c).
CREATE FUNCTION pg_temp.record(request uuid, dest text, outcome text, status integer)
RETURNS integer
LANGUAGE sql AS $$
    SELECT delq._record(ARRAY[pg_temp.send(request, dest)], ARRAY[outcome], ARRAY[status],
                        ARRAY[''], ARRAY[''], ARRAY[-1], ARRAY[false]);
$$;

--
-- One destination holds nothing, the other erased: the request completes.
--
SELECT delq.submit('ann.t40@example.com', 't40') AS r1 \gset
SELECT pg_temp.record(:'r1', 't40_a', 'not_held', 404);
SELECT destination, state, last_status, last_error, confirmed_at IS NOT NULL AS done_at
  FROM delq.delivery WHERE request_id = :'r1' ORDER BY destination;
SELECT status FROM delq.pending WHERE id = :'r1';
-- the deadline alert lists only what is not done
UPDATE delq.pending SET due_at = now() + interval '1 hour' WHERE id = :'r1';
SELECT delq.check_deadlines() >= 1 AS alerted;
SELECT detail -> 'unconfirmed' AS unconfirmed FROM delq.event
 WHERE request_id = :'r1' AND kind = 'at_risk';
SELECT pg_temp.record(:'r1', 't40_b', 'confirmed', 200);
SELECT status, completed_at IS NOT NULL AS has_completed_at FROM delq.pending WHERE id = :'r1';
SELECT kind, destination, detail, actor FROM delq.event
 WHERE request_id = :'r1' AND kind NOT IN ('submitted', 'queued', 'extended', 'at_risk') ORDER BY id;

-- done: confirm() says so and writes nothing; reject() is refused
SELECT regress.snapshot();
SELECT delq.confirm(:'r1', 't40_a') AS confirmed;
SELECT regress.unchanged();
SELECT regress.bad(format('SELECT delq.reject(%L, %L)', :'r1', 'too late'));

-- An answer that arrives for a delivery no longer 'sending' changes nothing.
SELECT delq._record(ARRAY[(SELECT id FROM delq.delivery WHERE request_id = :'r1' AND destination = 't40_a')],
                    ARRAY['failed'], ARRAY[500], ARRAY['HTTP 500'], ARRAY['HTTP 500'], ARRAY[-1], ARRAY[false]);
SELECT state FROM delq.delivery WHERE request_id = :'r1' AND destination = 't40_a';

--
-- In callback mode, not held is final at once: nothing to wait for.
--
SELECT delq.submit('bob.t40@example.com', 't40', attributes => '{"callback": true}') AS r2 \gset
SELECT pg_temp.record(:'r2', 't40_cb', 'not_held', 404);
SELECT pg_temp.record(:'r2', 't40_a', 'not_held', 404);
SELECT pg_temp.record(:'r2', 't40_b', 'confirmed', 204);
SELECT destination, state FROM delq.delivery WHERE request_id = :'r2' ORDER BY destination;
SELECT status FROM delq.pending WHERE id = :'r2';

-- Every delivery not held: completed too (nothing is left anywhere), and
-- was_erased() answers true.
SELECT delq.submit('cem.t40@example.com', 't40') AS r3 \gset
SELECT pg_temp.record(:'r3', 't40_a', 'not_held', 404);
SELECT pg_temp.record(:'r3', 't40_b', 'not_held', 404);
SELECT status FROM delq.pending WHERE id = :'r3';
SELECT delq.was_erased('cem.t40@example.com') AS erased;

-- A not-held answer is a success of the destination: it closes the breaker.
SELECT name, consecutive_failures, breaker, last_success_at IS NOT NULL AS succeeded,
       confirmed, not_held
  FROM delq.destination_health WHERE name LIKE 't40%' ORDER BY name;

--
-- The receipt, the archive summary and the report tell the same.
--
SELECT d ->> 'destination' AS destination, d ->> 'state' AS state,
       d ? 'confirmed_at' AS has_confirmed_at
  FROM jsonb_array_elements(delq.receipt(:'r2') -> 'destinations') d ORDER BY 1;
SELECT delq.archive() >= 3 AS archived;
SELECT d ->> 'destination' AS destination, d ->> 'state' AS state, d ->> 'last_status' AS last_status
  FROM delq.finished f, jsonb_array_elements(f.deliveries) d
 WHERE f.id = :'r2' ORDER BY 1;
SELECT (delq.receipt(:'r2') -> 'destinations') = (SELECT deliveries FROM delq.finished WHERE id = :'r2')
       AS receipt_is_archive_summary;
SELECT d ->> 'destination' AS destination, d -> 'received' AS received, d -> 'confirmed' AS confirmed,
       d -> 'not_held' AS not_held, d -> 'overdue' AS overdue,
       (d -> 'days_to_confirm' ->> 'median') IS NOT NULL AS has_days
  FROM jsonb_array_elements(delq.report(now() - interval '1 hour', now() + interval '1 hour')
                            -> 'destinations') d
 WHERE d ->> 'destination' LIKE 't40%' ORDER BY 1;
