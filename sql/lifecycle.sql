--
-- lifecycle: confirm, reject, delivery failure and retry, and the
-- actions refused in the wrong state (55000).
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

SELECT delq.add_destination('t04_a', 'https://a.t04.example/erase');
SELECT delq.add_destination('t04_b', 'https://b.t04.example/erase', confirm => 'callback');
SELECT delq.add_route('t04_a', '{"source": "t04"}') AS route_a \gset
SELECT delq.add_route('t04_b', '{"source": "t04"}') AS route_b \gset

--
-- confirm: returns true once, false when repeated (and writes nothing);
-- the request completes when every delivery is confirmed.
--
SELECT delq.submit('ann.t04@example.com', 't04') AS r1 \gset
SELECT destination, state FROM delq.delivery WHERE request_id = :'r1' ORDER BY destination;
SELECT delq.confirm(:'r1', 't04_a') AS confirmed;
SELECT status, completed_at FROM delq.pending WHERE id = :'r1';
SELECT regress.snapshot();
SELECT delq.confirm(:'r1', 't04_a') AS confirmed;
SELECT regress.unchanged();
SELECT delq.confirm(:'r1', 't04_b') AS confirmed;
SELECT status, completed_at IS NOT NULL AS has_completed_at, failure_reason
  FROM delq.pending WHERE id = :'r1';
SELECT destination, state, confirmed_at IS NOT NULL AS has_confirmed_at
  FROM delq.delivery WHERE request_id = :'r1' ORDER BY destination;
SELECT kind, destination, detail, actor = session_user AS by_session_user
  FROM delq.event WHERE request_id = :'r1' ORDER BY id;
SELECT regress.snapshot();
SELECT delq.confirm(:'r1', 't04_b') AS confirmed;
SELECT regress.unchanged();

-- A completed request can be neither approved, rejected nor retried.
SELECT regress.bad(format('SELECT delq.approve(%L)', :'r1'));
SELECT regress.bad(format('SELECT delq.reject(%L, %L)', :'r1', 'too late'));
SELECT regress.bad(format('SELECT delq.retry(%L)', :'r1'));

--
-- approve and retry need a held or failed request.
--
SELECT delq.submit('bob.t04@example.com', 't04') AS r2 \gset
SELECT regress.snapshot();
SELECT regress.bad(format('SELECT delq.approve(%L)', :'r2'));
SELECT regress.bad(format('SELECT delq.retry(%L)', :'r2'));
SELECT regress.bad(format('SELECT delq.retry(%L, %L)', :'r2', 't04_a'));

--
-- reject: cancels the deliveries while nothing has been sent.
--
SELECT delq.reject(:'r2', 'duplicate account');
SELECT status, rejected, rejection_reason, rejected_at IS NOT NULL AS has_rejected_at,
       completed_at
  FROM delq.pending WHERE id = :'r2';
SELECT destination, state FROM delq.delivery WHERE request_id = :'r2' ORDER BY destination;
SELECT kind, destination, detail FROM delq.event WHERE request_id = :'r2' ORDER BY id;
SELECT regress.snapshot();
SELECT regress.bad(format('SELECT delq.reject(%L, %L)', :'r2', 'again'));
SELECT regress.bad(format('SELECT delq.confirm(%L, %L)', :'r2', 't04_a'));
SELECT regress.bad(format('SELECT delq.approve(%L)', :'r2'));
SELECT regress.bad(format('SELECT delq.retry(%L)', :'r2'));

-- A held request is rejected before any delivery exists.
SET delq.require_approval = on;
SELECT delq.submit('cy.t04@example.com', 't04') AS r3 \gset
RESET delq.require_approval;
SELECT delq.reject(:'r3', 'not a customer');
SELECT status, rejected, (SELECT count(*) FROM delq.delivery WHERE request_id = :'r3') AS deliveries
  FROM delq.pending WHERE id = :'r3';
SELECT regress.snapshot();
SELECT regress.bad(format('SELECT delq.approve(%L)', :'r3'));
SELECT regress.bad(format('SELECT delq.confirm(%L, %L)', :'r3', 't04_a'));

-- A request that failed for want of a route can be rejected.
SELECT delq.submit('dee.t04@example.com', 't04none') AS r4 \gset
SELECT status FROM delq.pending WHERE id = :'r4';
SELECT delq.reject(:'r4', 'unknown source');
SELECT status, rejected FROM delq.pending WHERE id = :'r4';

-- Once a delivery has been attempted (the worker commits attempts + 1
-- before it sends; simulated here), the request can no longer be
-- rejected.
SELECT delq.submit('eve.t04@example.com', 't04') AS r5 \gset
UPDATE delq.delivery SET attempts = 1 WHERE request_id = :'r5' AND destination = 't04_b';
SELECT regress.snapshot();
SELECT regress.bad(format('SELECT delq.reject(%L, %L)', :'r5', 'fraud'));
SELECT status FROM delq.pending WHERE id = :'r5';
SELECT destination, state FROM delq.delivery WHERE request_id = :'r5' ORDER BY destination;
-- awaiting confirmation, or confirmed: received too
UPDATE delq.delivery SET attempts = 0, state = 'awaiting_confirmation'
 WHERE request_id = :'r5' AND destination = 't04_b';
SELECT regress.snapshot();
SELECT regress.bad(format('SELECT delq.reject(%L, %L)', :'r5', 'fraud'));

--
-- A delivery that fails permanently fails the request, which then needs
-- attention; retry requeues it with the same webhook id.
--
SELECT delq.submit('fay.t04@example.com', 't04') AS r6 \gset
SELECT webhook_id AS wh_a FROM delq.delivery
 WHERE request_id = :'r6' AND destination = 't04_a' \gset
UPDATE delq.delivery
   SET state = 'failed', attempts = 3, last_status = 410, last_error = 'HTTP 410 Gone',
       first_attempt_at = now(), last_attempt_at = now()
 WHERE request_id = :'r6' AND destination = 't04_a';
SELECT delq._refresh_status(ARRAY[:'r6'::uuid]);
SELECT status, failure_reason, completed_at FROM delq.pending WHERE id = :'r6';
SELECT kind, destination, detail FROM delq.event
 WHERE request_id = :'r6' AND kind NOT IN ('submitted', 'queued') ORDER BY id;
SELECT destination, problem, detail, last_status, since IS NOT NULL AS has_since
  FROM delq.needs_attention WHERE request_id = :'r6' ORDER BY destination NULLS FIRST;
-- It has been sent: rejecting is refused; retry must name a failed delivery.
SELECT regress.snapshot();
SELECT regress.bad(format('SELECT delq.reject(%L, %L)', :'r6', 'fraud'));
SELECT regress.bad(format('SELECT delq.retry(%L, %L)', :'r6', 't04_b'));
SELECT regress.bad(format('SELECT delq.retry(%L, %L)', :'r6', 't04_nope'));
SELECT regress.bad(format('SELECT delq.approve(%L)', :'r6'));
SELECT delq.retry(:'r6') AS requeued;
SELECT destination, state, attempts, attempts_base, last_status, webhook_id = :'wh_a' AS same_webhook_id
  FROM delq.delivery WHERE request_id = :'r6' ORDER BY destination;
SELECT status, failure_reason FROM delq.pending WHERE id = :'r6';
SELECT kind, destination, detail FROM delq.event
 WHERE request_id = :'r6' AND kind NOT IN ('submitted', 'queued') ORDER BY id;
SELECT count(*) AS needs_attention FROM delq.needs_attention WHERE request_id = :'r6';
SELECT regress.snapshot();
SELECT regress.bad(format('SELECT delq.retry(%L)', :'r6'));

-- Both deliveries fail; retry one destination at a time.
UPDATE delq.delivery SET state = 'failed', attempts = attempts + 1
 WHERE request_id = :'r6';
SELECT delq._refresh_status(ARRAY[:'r6'::uuid]);
SELECT status, failure_reason FROM delq.pending WHERE id = :'r6';
SELECT count(*) AS needs_attention FROM delq.needs_attention WHERE request_id = :'r6';
SELECT delq.retry(:'r6', 't04_a') AS requeued;
SELECT status, failure_reason FROM delq.pending WHERE id = :'r6';
SELECT destination, state, attempts, attempts_base FROM delq.delivery
 WHERE request_id = :'r6' ORDER BY destination;
-- An operator may record that a system erased the data by other means:
-- confirming a failed delivery.
SELECT delq.confirm(:'r6', 't04_b') AS confirmed;
SELECT status, failure_reason FROM delq.pending WHERE id = :'r6';
SELECT delq.confirm(:'r6', 't04_a') AS confirmed;
SELECT status, completed_at IS NOT NULL AS has_completed_at FROM delq.pending WHERE id = :'r6';
SELECT kind, destination, detail FROM delq.event
 WHERE request_id = :'r6' AND kind NOT IN ('submitted', 'queued') ORDER BY id;

SELECT count(*) AS routes FROM (SELECT delq.drop_route(id) FROM delq.route WHERE destination LIKE 't04\_%') d;
