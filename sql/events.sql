--
-- events: the audit trail.  One row per state change, with the actor;
-- never the subject; append-only, even for a superuser.
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

SELECT delq.add_destination('t08_a', 'https://a.t08.example/erase');
SELECT delq.add_route('t08_a', '{"source": "t08"}') AS route_a \gset

-- A request's whole life, held to archived.
SET delq.require_approval = on;
SELECT delq.submit('ann.t08@example.com', 't08', 'gdpr', '{"plan": "pro"}', 'T08-1') AS r1 \gset
RESET delq.require_approval;
SELECT delq.approve(:'r1');
UPDATE delq.delivery SET state = 'failed', attempts = 1 WHERE request_id = :'r1';
SELECT delq._refresh_status(ARRAY[:'r1'::uuid]);
SELECT delq.retry(:'r1');
SELECT delq.confirm(:'r1', 't08_a');
SELECT delq.confirm(:'r1', 't08_a');
SELECT delq.archive() > 0 AS archived;
SELECT kind, destination, detail, actor = session_user AS by_session_user,
       at <= clock_timestamp() AS has_time
  FROM delq.event WHERE request_id = :'r1' ORDER BY id;
-- events are in time order
SELECT bool_and(at >= prev) AS ordered
  FROM (SELECT at, lag(at, 1, '-infinity') OVER (ORDER BY id) AS prev FROM delq.event) e;

-- A held request whose hold period is over, released by delq itself.
SET delq.hold_period = '1h';
SELECT delq.submit('bea.t08@example.com', 't08') AS h1 \gset
RESET delq.hold_period;
UPDATE delq.pending SET hold_until = now() - interval '1 second' WHERE id = :'h1';
SELECT delq._release_held(100) >= 1 AS released;

-- Every event of this database so far was made by the session user,
-- except the release of a held request after its hold period and the
-- planning that followed, made by delq itself.
SELECT CASE WHEN actor = session_user THEN 'session_user' ELSE actor END AS actor,
       count(*) > 0 AS some
  FROM delq.event GROUP BY 1 ORDER BY 1;
SELECT DISTINCT kind FROM delq.event WHERE actor <> session_user;

-- No event holds a subject: this file's, or those of the files run before
-- it in the same database.
SELECT count(*) >= 2 AS subjects
  FROM (SELECT subject FROM delq.pending UNION SELECT subject FROM delq.finished) s;
SELECT count(*) AS events_with_a_subject
  FROM delq.event e
 WHERE EXISTS (SELECT 1
                 FROM (SELECT subject FROM delq.pending UNION SELECT subject FROM delq.finished) s
                WHERE strpos(e.detail::text, s.subject) > 0
                   OR strpos(coalesce(e.destination, ''), s.subject) > 0
                   OR strpos(e.kind, s.subject) > 0);
SELECT count(*) AS events_with_an_at_sign FROM delq.event WHERE detail::text LIKE '%@%';

--
-- Append-only: UPDATE, DELETE and TRUNCATE are refused, also for a
-- superuser.
--
SELECT count(*) AS events FROM delq.event \gset
SELECT regress.snapshot();
UPDATE delq.event SET kind = 'forged' WHERE request_id = :'r1';
SELECT regress.unchanged();
DELETE FROM delq.event WHERE request_id = :'r1';
SELECT regress.unchanged();
TRUNCATE delq.event;
SELECT regress.unchanged();
SELECT regress.bad('DELETE FROM delq.event');
SELECT regress.bad('UPDATE delq.event SET detail = ''{}''');
SELECT regress.bad('TRUNCATE delq.event CASCADE');
-- not even with triggers disabled for replication
BEGIN;
SET LOCAL session_replication_role = replica;
SELECT regress.bad('DELETE FROM delq.event');
SELECT regress.bad('UPDATE delq.event SET detail = ''{}''');
SELECT regress.bad('TRUNCATE delq.event');
ROLLBACK;
SELECT count(*) = :events AS all_events_kept FROM delq.event;

SELECT count(*) AS routes FROM (SELECT delq.drop_route(id) FROM delq.route WHERE destination LIKE 't08\_%') d;
