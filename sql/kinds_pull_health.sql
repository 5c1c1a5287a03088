--
-- kinds_pull_health: a pull destination's answers are its health.  ack
-- is a success, nack and a lapsed lease a failure, recorded in
-- delq.destination_state as a webhook's outcome is (delq._breaker_record,
-- 75_breaker.sql), but the circuit breaker never opens (nothing is sent).
-- A lapsed lease counts against max_attempts as a nack does: out of
-- attempts, the delivery fails and the request needs attention.
-- delq_consumer is revoked when its role consumes from no pull destination.
-- (docs/pull.md#health-and-attempts)
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

CREATE ROLE k42_etl LOGIN;
CREATE ROLE k42_etl2 LOGIN IN ROLE k42_etl;
CREATE ROLE k42_two LOGIN;
CREATE ROLE k42_self LOGIN;
CREATE ROLE k42_granter NOLOGIN;

-- requests are submitted one at a time, so that each take finds one
SELECT delq.add_pull_destination('t42_pull', 'k42_etl', lease => '10 minutes', max_attempts => 3);
SELECT delq.add_route('t42_pull', '{"source": "t42"}') IS NOT NULL AS routed;
SELECT delq.submit('ann.t42@example.com', 't42') AS r1 \gset

-- nothing answered yet
SELECT name, queued, consecutive_failures, breaker, last_success_at, last_failure_at, last_failure
  FROM delq.destination_health WHERE name = 't42_pull';

-- an ack is a success
SET ROLE k42_etl;
SELECT webhook_id AS w1 FROM delq.take('t42_pull', 1) \gset
SELECT delq.ack(:'w1') AS acked;
RESET ROLE;
SELECT consecutive_failures, breaker, last_success_at IS NOT NULL AS success_at,
       last_failure_at, last_failure
  FROM delq.destination_health WHERE name = 't42_pull';
-- a repeated ack writes nothing
UPDATE delq.destination_state SET last_success_at = '2000-01-01' WHERE name = 't42_pull';
SET ROLE k42_etl;
SELECT delq.ack(:'w1') AS acked;
RESET ROLE;
SELECT last_success_at FROM delq.destination_state WHERE name = 't42_pull';

-- a nack is a failure: the class 'nack', never the consumer's text
SELECT delq.submit('bea.t42@example.com', 't42') AS r2 \gset
SET ROLE k42_etl;
SELECT webhook_id AS w2 FROM delq.take('t42_pull', 1) \gset
SELECT delq.nack(:'w2', 'store of bea.t42@example.com offline') AS state;
RESET ROLE;
SELECT consecutive_failures, breaker, last_success_at = '2000-01-01' AS success_kept,
       last_failure_at IS NOT NULL AS failure_at, last_failure
  FROM delq.destination_health WHERE name = 't42_pull';

-- a lapsed lease is a failure too: requeued at once while attempts are left
UPDATE delq.delivery SET next_attempt_at = now() WHERE webhook_id = :'w2';
SET ROLE k42_etl;
SELECT webhook_id = :'w2' AS same, attempt FROM delq.take('t42_pull', 1);
RESET ROLE;
UPDATE delq.delivery SET lease_until = now() - interval '1 second' WHERE webhook_id = :'w2';
SELECT delq._requeue_stale(false) AS requeued;
SELECT state, attempts, next_attempt_at <= now() AS due, last_error, lease_until
  FROM delq.delivery WHERE webhook_id = :'w2';
SELECT consecutive_failures, breaker, breaker_until, last_failure
  FROM delq.destination_health WHERE name = 't42_pull';

-- the third attempt's lease lapses too: max_attempts (3) used up, it
-- fails as after a nack, and the request needs attention; take, which
-- returns lapsed leases first, does not lease it again
SET ROLE k42_etl;
SELECT webhook_id = :'w2' AS same, attempt FROM delq.take('t42_pull', 1);
RESET ROLE;
UPDATE delq.delivery SET lease_until = now() - interval '1 second' WHERE webhook_id = :'w2';
SET ROLE k42_etl;
SELECT count(*) AS taken FROM delq.take('t42_pull', 10);
RESET ROLE;
SELECT state, attempts, last_error, lease_until FROM delq.delivery WHERE webhook_id = :'w2';
SELECT kind, detail - 'next_attempt_at' AS detail, nullif(actor, session_user::text) AS actor
  FROM delq.event WHERE request_id = :'r2' AND destination = 't42_pull' AND kind <> 'taken'
 ORDER BY id;
SELECT status FROM delq.pending WHERE id = :'r2';
SELECT destination, problem FROM delq.needs_attention WHERE request_id = :'r2' ORDER BY 1;
SELECT consecutive_failures, breaker, last_failure
  FROM delq.destination_health WHERE name = 't42_pull';
-- the consumer whose lease lapsed may still ack late (nobody else took
-- it): the delivery is done and the request leaves needs_attention;
-- another consumer (k42_etl2, also a member of k42_etl) may not
SET ROLE k42_etl2;
SELECT regress.st(format('SELECT delq.ack(%L)', :'w2'));
RESET ROLE;
SET ROLE k42_etl;
SELECT regress.st(format('SELECT delq.nack(%L, %L)', :'w2', 'no'));
SELECT delq.ack(:'w2', note => 'done after all') AS acked;
RESET ROLE;
SELECT state, confirmed_at IS NOT NULL AS done_at FROM delq.delivery WHERE webhook_id = :'w2';
SELECT kind, detail FROM delq.event
 WHERE request_id = :'r2' AND destination = 't42_pull' ORDER BY id DESC LIMIT 1;
SELECT status FROM delq.pending WHERE id = :'r2';
SELECT count(*) AS attention FROM delq.needs_attention WHERE request_id = :'r2';
SELECT consecutive_failures, last_failure FROM delq.destination_health WHERE name = 't42_pull';
-- an operator's retry after a failure by lapse; the late-ack exception
-- holds only while that failure is the latest event
SELECT delq.submit('eve.t42@example.com', 't42') AS r5 \gset
SET ROLE k42_etl;
SELECT webhook_id AS w5 FROM delq.take('t42_pull', 1) \gset
SELECT delq.nack(:'w5', 'gave up', retry => false) AS state;
SELECT regress.st(format('SELECT delq.ack(%L)', :'w5'));
RESET ROLE;
SELECT delq.retry(:'r5', 't42_pull');

-- nack of a lapsed lease that nobody took again: the same rule, once
SET ROLE k42_etl;
SELECT webhook_id = :'w5' AS same, attempt FROM delq.take('t42_pull', 1);
RESET ROLE;
UPDATE delq.delivery SET lease_until = now() - interval '1 second' WHERE webhook_id = :'w5';
SET ROLE k42_etl;
SELECT delq.nack(:'w5', 'gave up', retry => false) AS state;
RESET ROLE;
SELECT state, attempts - attempts_base AS attempts, last_error FROM delq.delivery WHERE webhook_id = :'w5';
SET ROLE k42_etl;
SELECT regress.st(format('SELECT delq.ack(%L)', :'w5'));
RESET ROLE;

-- the breaker never opens, past delq.breaker_threshold (10) failures
-- (a superuser may take and answer: it is a member of every role)
SELECT delq.add_pull_destination('t42_many', 'k42_two', max_attempts => 50);
SELECT delq.add_route('t42_many', '{"source": "t42m"}') IS NOT NULL AS routed;
SELECT delq.submit('dan.t42@example.com', 't42m') AS r4 \gset
DO $$
BEGIN
    FOR i IN 1..12 LOOP
        UPDATE delq.delivery SET next_attempt_at = now() WHERE destination = 't42_many';
        PERFORM delq.nack(t.webhook_id, 'busy') FROM delq.take('t42_many') t;
    END LOOP;
END
$$;
SELECT state, attempts FROM delq.delivery WHERE destination = 't42_many';
SELECT consecutive_failures, breaker, breaker_until, last_failure
  FROM delq.destination_health WHERE name = 't42_many';
SELECT count(*) AS breaker_events FROM delq.event
 WHERE destination = 't42_many' AND kind LIKE 'breaker%';
SELECT delq.drop_destination('t42_many', cancel_deliveries => true);

-- a success resets the count
SELECT delq.submit('cai.t42@example.com', 't42') AS r3 \gset
SET ROLE k42_etl;
SELECT delq.ack(webhook_id, not_held => true) AS acked FROM delq.take('t42_pull', 10);
RESET ROLE;
SELECT consecutive_failures, breaker, last_success_at > '2000-01-01' AS success_at, last_failure
  FROM delq.destination_health WHERE name = 't42_pull';

--
-- delq_consumer goes when the role consumes from no pull destination any
-- more (through a drop or a change of consumer); a grant of someone else's
-- stays.
--
GRANT delq_consumer TO k42_granter WITH ADMIN OPTION;
GRANT delq_consumer TO k42_self GRANTED BY k42_granter;
SELECT delq.add_pull_destination('t42_a', 'k42_two');
SELECT delq.add_pull_destination('t42_b', 'k42_two');
SELECT delq.add_pull_destination('t42_c', 'k42_self');
SELECT delq.drop_destination('t42_a');
SELECT pg_has_role('k42_two', 'delq_consumer', 'MEMBER') AS two_consumer;
SELECT delq.alter_pull_destination('t42_b', consumer => 'k42_etl');
SELECT pg_has_role('k42_two', 'delq_consumer', 'MEMBER') AS two_consumer,
       pg_has_role('k42_etl', 'delq_consumer', 'MEMBER') AS etl_consumer;
SELECT delq.drop_destination('t42_c');
SELECT pg_has_role('k42_self', 'delq_consumer', 'MEMBER') AS self_consumer;
SELECT delq.drop_destination('t42_pull', cancel_deliveries => true);
SELECT pg_has_role('k42_etl', 'delq_consumer', 'MEMBER') AS etl_consumer;
SELECT delq.drop_destination('t42_b');
SELECT pg_has_role('k42_etl', 'delq_consumer', 'MEMBER') AS etl_consumer;

REVOKE delq_consumer FROM k42_self, k42_granter;
DROP ROLE k42_etl2, k42_etl, k42_two, k42_self, k42_granter;
