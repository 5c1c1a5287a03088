--
-- kinds_pull: pull destinations.  Consumers take deliveries, answer
-- with ack (done or not held) or nack (retry or fail); leases expire back
-- into the queue with the attempt counted; an answer after someone else
-- took the delivery is refused; consumers see and act on their own
-- destinations only.  (Two consumers racing: test/isolation/specs/pull_race.spec.)
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

CREATE ROLE k41_etl LOGIN;
CREATE ROLE k41_team NOLOGIN;
CREATE ROLE k41_alice LOGIN IN ROLE k41_team;
CREATE ROLE k41_bob LOGIN IN ROLE k41_team;
CREATE ROLE k41_other LOGIN;
CREATE ROLE k41_nobody LOGIN;

-- Bad input: a clear SQLSTATE and nothing written.
SELECT regress.snapshot();
SELECT regress.bad($$SELECT delq.add_pull_destination('t41_x', NULL)$$);
SELECT regress.bad($$SELECT delq.add_pull_destination('t41_x', 'delq_consumer')$$);
SELECT regress.bad($$SELECT delq.add_pull_destination('t41_x', 'k41_no_such_role')$$);
SELECT regress.bad($$SELECT delq.add_pull_destination('t41_x', 'k41_etl', lease => '0 seconds')$$);
SELECT regress.bad($$SELECT delq.add_pull_destination('t41_x', 'k41_etl', lease => '31 days')$$);
SELECT regress.bad($$SELECT delq.add_pull_destination('T41', 'k41_etl')$$);
SELECT regress.bad($$SELECT delq.add_pull_destination('t41_x', 'k41_etl', max_attempts => 0)$$);

SELECT delq.add_pull_destination('t41_pull', 'k41_etl', lease => '10 minutes', max_attempts => 3);
SELECT delq.add_pull_destination('t41_manual', 'k41_team', lease => '1 day');
SELECT delq.add_pull_destination('t41_other', 'k41_other');
SELECT delq.add_route(d, '{"source": "t41"}') IS NOT NULL AS routed
  FROM unnest(ARRAY['t41_pull', 't41_manual', 't41_other']) d;
SELECT regress.snapshot();
SELECT regress.bad($$SELECT delq.add_pull_destination('t41_pull', 'k41_etl')$$);

SELECT name, kind, url, consumer, lease_ms, max_attempts, enabled
  FROM delq.destinations WHERE name LIKE 't41%' ORDER BY name;
SELECT kind, destination, detail FROM delq.event
 WHERE kind = 'destination_added' AND destination LIKE 't41%' ORDER BY id;
-- consumers got delq_consumer, and nothing else of delq
SELECT r.rolname, pg_has_role(r.rolname, 'delq_consumer', 'MEMBER') AS consumer,
       pg_has_role(r.rolname, 'delq_submitter', 'MEMBER') AS submitter
  FROM pg_roles r WHERE r.rolname LIKE 'k41%' ORDER BY 1;

-- pull destinations have no url; the generic settings still apply
SELECT regress.snapshot();
SELECT regress.bad($$SELECT delq.alter_destination('t41_pull', url => 'https://x.example/')$$);
SELECT delq.alter_destination('t41_pull', max_attempts => 2);
SELECT regress.snapshot();
SELECT regress.bad($$SELECT delq.alter_pull_destination('t41_pull', lease => '-1 second')$$);
SELECT regress.bad($$SELECT delq.alter_pull_destination('no_such', lease => '1 hour')$$);
SELECT delq.add_destination('t41_hook', 'https://hook.t41.example/erase');
SELECT regress.snapshot();
SELECT regress.bad($$SELECT delq.alter_pull_destination('t41_hook', lease => '1 hour')$$);
SELECT delq.drop_destination('t41_hook');
SELECT delq.alter_pull_destination('t41_pull', lease => '5 minutes');
SELECT lease_ms FROM delq.destinations WHERE name = 't41_pull';

SELECT delq.submit('ann.t41@example.com', 't41') AS r1 \gset
SELECT delq.submit('bea.t41@example.com', 't41') AS r2 \gset
SELECT delq.submit('cai.t41@example.com', 't41') AS r3 \gset

-- The engine never claims pull deliveries.
SELECT count(*) AS claimed FROM delq._claim(1000) c WHERE c.destination LIKE 't41%';
SELECT delq._next_due() IS NULL OR NOT EXISTS (
           SELECT FROM delq.delivery WHERE destination LIKE 't41%' AND next_attempt_at = delq._next_due())
       AS not_due_for_worker;

--
-- A consumer takes: up to max, earliest deadline first; the payload is a
-- webhook's.
--
UPDATE delq.pending SET due_at = now() + interval '2 days' WHERE id = :'r2';
UPDATE delq.delivery SET due_at = now() + interval '2 days' WHERE request_id = :'r2';
SET ROLE k41_etl;
SELECT destination, request_id = :'r1' AS r1, request_id = :'r2' AS r2, status, leased_by,
       leased_since, lease_until, open_from <= now() AS open_now, attempts, due_at > now() AS due_later,
       last_error
  FROM delq.tasks ORDER BY due_at, request_id;
SELECT request_id = :'r2' AS earliest_first, attempt, lease_until > now() AS leased,
       payload ->> 'type' AS type, payload ->> 'subject' AS subject, payload ->> 'id' = webhook_id AS id_is_webhook_id,
       payload ? 'request_id' AS has_request_id
  FROM delq.take('t41_pull', 1) \gset t_
SELECT :'t_earliest_first', :'t_attempt', :'t_leased', :'t_type', :'t_subject', :'t_id_is_webhook_id';
RESET ROLE;
SELECT webhook_id AS w2 FROM delq.delivery WHERE request_id = :'r2' AND destination = 't41_pull' \gset
SELECT state, attempts, leased_by, lease_until > now() AS leased FROM delq.delivery
 WHERE request_id = :'r2' AND destination = 't41_pull';
SET ROLE k41_etl;
SELECT destination, status, leased_by, leased_since IS NOT NULL AS since, lease_until IS NOT NULL AS until,
       attempts FROM delq.tasks WHERE request_id = :'r2';

-- the consumer sees nothing else of delq
SELECT regress.st('SELECT * FROM delq.pending');
SELECT regress.st('SELECT * FROM delq.delivery');
SELECT regress.st('SELECT * FROM delq.destinations');
SELECT regress.st('SELECT * FROM delq.requests');
SELECT regress.st($$SELECT delq.submit('x@example.com', 't41')$$);
SELECT regress.st($$SELECT delq.receipt('00000000-0000-4000-8000-000000000000')$$);
SELECT regress.st($$SELECT delq.recipients('00000000-0000-4000-8000-000000000000')$$);
-- nor the work of other consumers' destinations
SELECT DISTINCT destination FROM delq.tasks ORDER BY 1;
SELECT regress.st($$SELECT * FROM delq.take('t41_other', 10)$$);
SELECT regress.st($$SELECT * FROM delq.take('t41_manual', 10)$$);
SELECT regress.st($$SELECT * FROM delq.take('no_such', 10)$$);
RESET ROLE;

SET ROLE k41_other;
SELECT DISTINCT destination FROM delq.tasks ORDER BY 1;
SELECT regress.st(format('SELECT delq.ack(%L)', :'w2'));
SELECT regress.st(format('SELECT delq.nack(%L, %L)', :'w2', 'no'));
RESET ROLE;
SET ROLE k41_nobody;
SELECT regress.st('SELECT * FROM delq.tasks');
SELECT regress.st($$SELECT * FROM delq.take('t41_pull')$$);
RESET ROLE;

--
-- ack: done once; again returns false and writes nothing.
--
SET ROLE k41_etl;
SELECT delq.ack(:'w2') AS acked;
RESET ROLE;
SELECT state, confirmed_at IS NOT NULL AS done_at, lease_until, leased_by FROM delq.delivery
 WHERE request_id = :'r2' AND destination = 't41_pull';
SELECT kind, detail - 'lease_until' AS detail, nullif(actor, session_user::text) AS actor FROM delq.event
 WHERE request_id = :'r2' AND destination = 't41_pull' ORDER BY id;
SELECT regress.snapshot();
SET ROLE k41_etl;
SELECT delq.ack(:'w2') AS acked;
SELECT delq.ack(:'w2', not_held => true) AS acked;
RESET ROLE;
SELECT regress.unchanged();
SET ROLE k41_etl;
SELECT regress.st(format('SELECT delq.nack(%L, %L)', :'w2', 'too late'));
SELECT regress.st(format('SELECT delq.ack(%L, NULL)', :'w2'));
SELECT regress.st('SELECT delq.ack(NULL)');
SELECT regress.st($$SELECT delq.ack('msg_unknown')$$);
SELECT regress.st(format('SELECT delq.nack(%L, NULL)', :'w2'));
SELECT regress.st($$SELECT * FROM delq.take('t41_pull', 0)$$);
SELECT regress.st($$SELECT * FROM delq.take('t41_pull', NULL)$$);

--
-- nack with retry: back to the queue after the backoff, attempts left;
-- then out of attempts (max_attempts 2): failed, an operator acts.
--
SELECT webhook_id AS w1 FROM delq.take('t41_pull', 1) \gset
SELECT delq.nack(:'w1', 'archive server ann.t41@example.com offline') AS state;
RESET ROLE;
SELECT request_id = :'r1' AS r1, state, attempts, next_attempt_at > now() AS later,
       last_error, leased_by FROM delq.delivery WHERE webhook_id = :'w1';
SELECT kind, detail - 'next_attempt_at' - 'lease_until' AS detail, detail ? 'next_attempt_at' AS has_next,
       nullif(actor, session_user::text) AS actor
  FROM delq.event WHERE request_id = :'r1' AND destination = 't41_pull' ORDER BY id;
SET ROLE k41_etl;
-- not due yet: take gives nothing of it
SELECT count(*) AS taken FROM delq.take('t41_pull', 10) WHERE request_id = :'r1';
RESET ROLE;
UPDATE delq.delivery SET next_attempt_at = now() WHERE webhook_id = :'w1';
SET ROLE k41_etl;
SELECT attempt FROM delq.take('t41_pull', 10) WHERE request_id = :'r1';
SELECT delq.nack(:'w1', 'still offline') AS state;
RESET ROLE;
SELECT state, attempts, last_error FROM delq.delivery WHERE webhook_id = :'w1';
SELECT status, failure_reason FROM delq.pending WHERE id = :'r1';
SELECT destination, problem, detail FROM delq.needs_attention WHERE request_id = :'r1';
SET ROLE k41_etl;
SELECT regress.st(format('SELECT delq.ack(%L)', :'w1'));
RESET ROLE;
SELECT delq.retry(:'r1', 't41_pull');
SET ROLE k41_etl;
SELECT delq.nack(webhook_id, 'a permanent problem', retry => false) AS state
  FROM delq.take('t41_pull', 10) WHERE request_id = :'r1';
RESET ROLE;
SELECT state, attempts, attempts_base FROM delq.delivery WHERE webhook_id = :'w1';

--
-- Manual destination, worked by people of a team: leases, expiry, the
-- late ack refused once someone else took it, and accepted while nobody did.
--
SET ROLE k41_alice;
SELECT count(*) AS taken FROM delq.take('t41_manual', 10);
RESET ROLE;
SELECT webhook_id AS m3 FROM delq.delivery WHERE request_id = :'r3' AND destination = 't41_manual' \gset
SELECT destination, status, leased_by FROM delq.tasks WHERE webhook_id = :'m3';
-- a worker restart does not take a consumer's lease away
SELECT delq._requeue_stale(true) >= 0 AS requeued;
SELECT state, leased_by FROM delq.delivery WHERE webhook_id = :'m3';
-- the lease expires (time travel): the task shows it, and the next take
-- returns it to the queue, the attempt counted, and leases it anew
UPDATE delq.delivery SET lease_until = now() - interval '1 second' WHERE webhook_id = :'m3';
SELECT status, leased_by FROM delq.tasks WHERE webhook_id = :'m3';
SET ROLE k41_bob;
SELECT webhook_id = :'m3' AS same, attempt FROM delq.take('t41_manual', 10) WHERE request_id = :'r3';
RESET ROLE;
SELECT kind, detail ->> 'because' AS because, detail ->> 'attempt' AS attempt,
       nullif(actor, session_user::text) AS actor FROM delq.event
 WHERE request_id = :'r3' AND destination = 't41_manual' ORDER BY id;
SET ROLE k41_alice;
SELECT regress.st(format('SELECT delq.ack(%L, note => %L)', :'m3', 'shredded the file'));
SELECT regress.st(format('SELECT delq.nack(%L, %L)', :'m3', 'cannot find it'));
RESET ROLE;
-- bob's lease expires and the delivery goes back to the queue (the worker
-- or dispatch() requeues); nobody takes it; bob's late ack is accepted
UPDATE delq.delivery SET lease_until = now() - interval '1 second' WHERE webhook_id = :'m3';
SELECT delq._requeue_stale(false) >= 1 AS requeued;
SELECT state, leased_by FROM delq.delivery WHERE webhook_id = :'m3';
SET ROLE k41_alice;
SELECT regress.st(format('SELECT delq.ack(%L)', :'m3'));
RESET ROLE;
SET ROLE k41_bob;
SELECT regress.st(format('SELECT delq.nack(%L, %L)', :'m3', 'no'));
SELECT delq.ack(:'m3', not_held => true,
                note => 'Checked the paper archive: nothing filed for cai.t41@example.com.') AS acked;
RESET ROLE;
SELECT state, confirmed_at IS NOT NULL AS done_at FROM delq.delivery WHERE webhook_id = :'m3';
SELECT kind, detail, actor FROM delq.event
 WHERE request_id = :'r3' AND destination = 't41_manual' AND kind = 'not_held';

-- Operators see every task; consumers see their own.
SELECT destination, request_id = :'r1' AS r1, request_id = :'r2' AS r2, request_id = :'r3' AS r3, status
  FROM delq.tasks WHERE destination LIKE 't41%' ORDER BY 1, 2 DESC, 3 DESC, 4 DESC;
SET ROLE k41_alice;
SELECT DISTINCT destination FROM delq.tasks ORDER BY 1;
RESET ROLE;

-- A paused pull destination gives nothing; enabled again, the work is
-- there (alice's lease of r1 expired meanwhile).
UPDATE delq.delivery SET lease_until = now() - interval '1 second'
 WHERE request_id = :'r1' AND destination = 't41_manual';
SELECT delq.alter_destination('t41_manual', enabled => false);
SET ROLE k41_bob;
SELECT count(*) AS taken FROM delq.take('t41_manual', 10);
RESET ROLE;
SELECT delq.alter_destination('t41_manual', enabled => true);
SET ROLE k41_bob;
SELECT count(*) AS taken FROM delq.take('t41_manual', 10);
RESET ROLE;

-- Everything done: the request completes like any other.
SELECT delq.confirm(:'r3', 't41_pull'), delq.confirm(:'r3', 't41_other');
SELECT status FROM delq.pending WHERE id = :'r3';
SELECT destination, state FROM delq.delivery WHERE request_id = :'r3' ORDER BY destination;
