--
-- views: delq.requests, delq.overdue, delq.needs_attention and
-- delq.destinations.
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

-- What each view shows: never a subject, never a secret or header value.
SELECT table_name, array_agg(column_name::text ORDER BY ordinal_position) AS columns
  FROM information_schema.columns
 WHERE table_schema = 'delq'
   AND table_name IN ('requests', 'overdue', 'needs_attention', 'destinations')
 GROUP BY table_name ORDER BY table_name;

CREATE FUNCTION pg_temp.whsec(bytes integer) RETURNS text LANGUAGE sql
AS $$ SELECT 'whsec_' || translate(encode(decode(repeat('7e', bytes), 'hex'), 'base64'), E'\n', '') $$;
SELECT delq.add_destination('t07_a', 'https://a.t07.example/erase',
                            headers => '{"Authorization": "Bearer t07-token", "X-Tenant": "t07"}',
                            secret => pg_temp.whsec(32));
SELECT delq.add_destination('t07_b', 'https://b.t07.example/erase', confirm => 'callback',
                            enabled => false);
SELECT delq.add_route('t07_a', '{"source": "t07"}') AS route_a \gset
SELECT delq.add_route('t07_b', '{"source": "t07"}') AS route_b \gset

--
-- delq.destinations: header names only, and whether it signs.
--
SELECT name, url, enabled, confirm, header_names, signed, timeout_ms, connect_timeout_ms,
       max_attempts, concurrency, retry_base_ms, retry_max_ms, ca_file, client_cert
  FROM delq.destinations WHERE name LIKE 't07%' ORDER BY name;
SELECT count(*) AS rows_showing_secrets FROM delq.destinations d
 WHERE to_jsonb(d)::text LIKE '%' || substr(pg_temp.whsec(32), 7, 20) || '%'
    OR to_jsonb(d)::text LIKE '%t07-token%';
SELECT delq.alter_destination('t07_a', secret => '');
SELECT name, signed FROM delq.destinations WHERE name = 't07_a';

--
-- delq.requests: pending and finished requests together.
--
SELECT delq.submit('ann.t07@example.com', 't07', external_id => 'T07-done') AS done \gset
SELECT delq.confirm(:'done', 't07_a'), delq.confirm(:'done', 't07_b');
SELECT delq.archive() > 0 AS archived;
SELECT delq.submit('bob.t07@example.com', 't07', external_id => 'T07-fwd') AS fwd \gset
SELECT delq.confirm(:'fwd', 't07_b');
SELECT delq.submit('cy.t07@example.com', 't07none', external_id => 'T07-failed') AS failed \gset
SELECT external_id, status, finished_at IS NOT NULL AS finished, deliveries, failure_reason,
       completed_at IS NOT NULL AS has_completed_at
  FROM delq.requests WHERE source LIKE 't07%' ORDER BY external_id;
SELECT (SELECT count(*) FROM delq.requests)
     = (SELECT count(*) FROM delq.pending) + (SELECT count(*) FROM delq.finished) AS all_requests,
       (SELECT count(*) FROM delq.requests) = (SELECT count(DISTINCT id) FROM delq.requests) AS each_once;

--
-- delq.overdue: past due_at and not completed or rejected.
--
SELECT delq.submit('dee.t07@example.com', 't07', external_id => 'T07-late',
                   due_at => now() + interval '0.5 s') AS late \gset
SELECT delq.submit('eve.t07@example.com', 't07', external_id => 'T07-late-done',
                   due_at => now() + interval '0.5 s') AS late_done \gset
SET delq.require_approval = on;
SELECT delq.submit('fay.t07@example.com', 't07', external_id => 'T07-late-held',
                   due_at => now() + interval '0.5 s') AS late_held \gset
SELECT delq.submit('gus.t07@example.com', 't07', external_id => 'T07-late-rejected',
                   due_at => now() + interval '0.5 s') AS late_rejected \gset
RESET delq.require_approval;
SELECT delq.submit('hal.t07@example.com', 't07', external_id => 'T07-later',
                   due_at => now() + interval '1 hour') AS later \gset
SELECT pg_sleep(0.6);
SELECT delq.confirm(:'late_done', 't07_a'), delq.confirm(:'late_done', 't07_b');
SELECT delq.reject(:'late_rejected', 'not a customer');
SELECT external_id, status, overdue_by > interval '0' AS overdue, deliveries
  FROM delq.overdue WHERE source = 't07' ORDER BY external_id;

--
-- delq.needs_attention: failed requests, and each failed delivery.
--
UPDATE delq.delivery SET state = 'failed', attempts = 5, last_status = 400,
                         last_error = 'HTTP 400 Bad Request', last_attempt_at = now()
 WHERE request_id = :'late' AND destination = 't07_a';
SELECT delq._refresh_status(ARRAY[:'late'::uuid]);
SELECT r.external_id, n.destination, n.problem, n.detail, n.last_status,
       n.due_at = r.due_at AS due_at_ok, n.since IS NOT NULL AS has_since
  FROM delq.needs_attention n JOIN delq.requests r ON r.id = n.request_id
 WHERE r.source LIKE 't07%'
 ORDER BY r.external_id, n.destination NULLS FIRST;
SELECT delq.retry(:'late');
SELECT count(*) AS needs_attention FROM delq.needs_attention WHERE request_id = :'late';

SELECT count(*) AS routes FROM (SELECT delq.drop_route(id) FROM delq.route WHERE destination LIKE 't07\_%') d;
