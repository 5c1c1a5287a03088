--
-- destinations: add, alter and drop destinations and routes.
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

CREATE FUNCTION pg_temp.whsec(bytes integer) RETURNS text LANGUAGE sql
AS $$ SELECT 'whsec_' || translate(encode(decode(repeat('c3', bytes), 'hex'), 'base64'), E'\n', '') $$;

-- Every option, as stored (only delq_admin can read delq.destination).
SELECT delq.add_destination('t05_a', 'https://a.t05.example/erase',
                            headers => '{"Authorization": "Bearer t05-token", "X-Tenant": "t05"}',
                            secret => pg_temp.whsec(32),
                            timeout => '45 s', connect_timeout => '2 s',
                            max_attempts => 7, concurrency => 3, confirm => 'callback',
                            retry_base => '2 s', retry_max => '1 hour', enabled => true,
                            ca_file => '/etc/delq/ca.pem', client_cert => '/etc/delq/a.pem',
                            client_key => '/etc/delq/a.key');
SELECT name, url, headers, secret = pg_temp.whsec(32) AS secret_kept, timeout_ms,
       connect_timeout_ms, max_attempts, concurrency, confirm, retry_base_ms, retry_max_ms,
       ca_file, client_cert, client_key, enabled, created_at = updated_at AS never_updated
  FROM delq.destination WHERE name = 't05_a';
-- Defaults.
SELECT delq.add_destination('t05_b', 'http://b.t05.example:8080/erase');
SELECT name, url, headers, secret, timeout_ms, connect_timeout_ms, max_attempts,
       concurrency, confirm, retry_base_ms, retry_max_ms, ca_file, client_cert, client_key,
       enabled
  FROM delq.destination WHERE name = 't05_b';
-- The audit trail records the destination without its secret or headers.
SELECT kind, destination, detail FROM delq.event
 WHERE kind = 'destination_added' AND destination LIKE 't05%' ORDER BY id;

--
-- alter_destination: NULL keeps a setting; secret => '' removes the
-- secret, headers => '{}' the headers, ca_file/client_* => '' the files.
--
SELECT delq.alter_destination('t05_a');
SELECT name, url, headers, secret = pg_temp.whsec(32) AS secret_kept, timeout_ms,
       connect_timeout_ms, max_attempts, concurrency, confirm, retry_base_ms, retry_max_ms,
       ca_file, client_cert, client_key, enabled
  FROM delq.destination WHERE name = 't05_a';
SELECT delq.alter_destination('t05_a', url => 'https://a2.t05.example/erase', timeout => '1 minute',
                              enabled => false, concurrency => 5);
SELECT url, timeout_ms, enabled, concurrency, max_attempts, confirm,
       secret = pg_temp.whsec(32) AS secret_kept, headers ? 'X-Tenant' AS headers_kept,
       updated_at >= created_at AS updated
  FROM delq.destination WHERE name = 't05_a';
SELECT delq.alter_destination('t05_a', secret => pg_temp.whsec(24));
SELECT secret = pg_temp.whsec(24) AS new_secret FROM delq.destination WHERE name = 't05_a';
SELECT delq.alter_destination('t05_a', secret => '');
SELECT secret FROM delq.destination WHERE name = 't05_a';
SELECT delq.alter_destination('t05_a', headers => '{}', ca_file => '', client_cert => '',
                              client_key => '', enabled => true);
SELECT headers, ca_file, client_cert, client_key, enabled
  FROM delq.destination WHERE name = 't05_a';
-- max_attempts => 0 and retry_base, retry_max => '0' return to the
-- settings' defaults.
SELECT delq.alter_destination('t05_a', max_attempts => 0, retry_base => '0', retry_max => '0');
SELECT max_attempts, retry_base_ms, retry_max_ms FROM delq.destination WHERE name = 't05_a';
SELECT delq.alter_destination('t05_a', max_attempts => 9, retry_max => '30 days');
SELECT max_attempts, retry_base_ms, retry_max_ms FROM delq.destination WHERE name = 't05_a';
-- Each change is logged with the names of what changed, never the values.
SELECT kind, detail FROM delq.event
 WHERE kind = 'destination_altered' AND destination = 't05_a' ORDER BY id;
SELECT count(*) AS events_with_secret_or_token FROM delq.event
 WHERE detail::text LIKE '%' || substr(pg_temp.whsec(24), 7, 20) || '%'
    OR detail::text LIKE '%' || substr(pg_temp.whsec(32), 7, 20) || '%'
    OR detail::text LIKE '%t05-token%';

--
-- Routes: drop_route stops routing; dropping a destination drops its
-- routes.
--
SELECT delq.add_route('t05_a', '{"source": "t05"}') AS route_a \gset
SELECT delq.add_route('t05_b', '{"source": "t05"}') AS route_b \gset
SELECT delq.add_route('t05_b', '{"source": "t05x"}') AS route_bx \gset
SELECT delq.submit('ann.t05@example.com', 't05') AS r1 \gset
SELECT array_agg(destination ORDER BY destination) AS destinations
  FROM delq.delivery WHERE request_id = :'r1';
SELECT delq.drop_route(:route_b);
SELECT destination, match FROM delq.route WHERE destination LIKE 't05%' ORDER BY id;
SELECT kind, destination, detail - 'route_id' AS detail FROM delq.event
 WHERE kind IN ('route_added', 'route_dropped') AND destination LIKE 't05%' ORDER BY id;
SELECT delq.submit('bob.t05@example.com', 't05') AS r2 \gset
SELECT array_agg(destination ORDER BY destination) AS destinations
  FROM delq.delivery WHERE request_id = :'r2';
-- the request already planned keeps its delivery
SELECT array_agg(destination ORDER BY destination) AS destinations
  FROM delq.delivery WHERE request_id = :'r1';
SELECT regress.snapshot();
SELECT regexp_replace(regress.bad(format('SELECT delq.drop_route(%s)', :route_b)),
                      'route \d+', 'route <id>') AS bad;

--
-- drop_destination: refused while deliveries are open, unless
-- cancel_deliveries => true.
--
SELECT delq.drop_destination('t05_b');
SELECT regress.unchanged();
SELECT delq.drop_destination('t05_b', false);
SELECT regress.unchanged();
-- r1 goes to t05_a and t05_b, r2 only to t05_a; r3 to t05_b only
-- (confirmed) and r4 to t05_b only, already attempted.
SELECT delq.submit('cy.t05@example.com', 't05x') AS r3 \gset
SELECT delq.confirm(:'r3', 't05_b');
SELECT delq.submit('dee.t05@example.com', 't05x') AS r4 \gset
UPDATE delq.delivery SET attempts = 2 WHERE request_id = :'r4';
SELECT delq.confirm(:'r1', 't05_a');
SELECT delq.drop_destination('t05_b', cancel_deliveries => true);
SELECT count(*) AS destinations FROM delq.destination WHERE name = 't05_b';
SELECT count(*) AS routes FROM delq.route WHERE destination = 't05_b';
-- Delivery history stays readable.
SELECT CASE request_id WHEN :'r1' THEN 'r1' WHEN :'r3' THEN 'r3' WHEN :'r4' THEN 'r4' END AS request,
       state, attempts
  FROM delq.delivery WHERE destination = 't05_b' ORDER BY 1;
-- r1: confirmed by t05_a, cancelled for t05_b: completed.  r3: unchanged.
-- r4: its only delivery is cancelled: failed, needs attention.
SELECT CASE id WHEN :'r1' THEN 'r1' WHEN :'r2' THEN 'r2' WHEN :'r3' THEN 'r3' WHEN :'r4' THEN 'r4' END AS request,
       status, failure_reason
  FROM delq.pending WHERE id IN (:'r1', :'r2', :'r3', :'r4') ORDER BY 1;
SELECT problem, detail FROM delq.needs_attention WHERE request_id = :'r4';
SELECT kind, destination, detail FROM delq.event
 WHERE (request_id IN (:'r1', :'r4') AND kind NOT IN ('submitted', 'queued', 'confirmed'))
    OR (kind = 'destination_dropped' AND destination = 't05_b')
 ORDER BY kind = 'destination_dropped', kind;  -- the two requests' order is arbitrary
-- A failed request whose deliveries were all cancelled is planned again by
-- retry, like one that matched no route (here to a new destination); it
-- must not be stuck: it was sent already, so it cannot be rejected.
SELECT delq.add_destination('t05_c', 'https://c.t05.example/erase');
SELECT delq.add_route('t05_c', '{"source": "t05x"}') AS route_c \gset
SELECT regress.snapshot();
SELECT regress.bad(format('SELECT delq.reject(%L, %L)', :'r4', 'stuck'));
SELECT delq.retry(:'r4') AS planned;
SELECT status, failure_reason FROM delq.pending WHERE id = :'r4';
SELECT destination, state FROM delq.delivery WHERE request_id = :'r4' ORDER BY destination;

-- Without open deliveries no cancel is needed.
SELECT delq.confirm(:'r2', 't05_a');
SELECT delq.alter_destination('t05_a', enabled => false);
SELECT count(*) AS open_deliveries FROM delq.delivery
 WHERE destination = 't05_a' AND state NOT IN ('confirmed', 'cancelled');
SELECT delq.drop_destination('t05_a');
SELECT kind, detail FROM delq.event
 WHERE kind = 'destination_dropped' AND destination = 't05_a';
SELECT name FROM delq.destination WHERE name LIKE 't05%' ORDER BY 1;

SELECT count(*) AS routes FROM (SELECT delq.drop_route(id) FROM delq.route WHERE destination LIKE 't05\_%') d;
