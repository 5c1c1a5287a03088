--
-- validation: bad input.  Each failing call shows its SQLSTATE and
-- message (regress.bad) or, for some, the full message and hint a user
-- sees; each is followed by proof that no delq table changed.  Cases that
-- must succeed are checked inside transactions that roll back.
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

SELECT delq.add_destination('t03_dest', 'https://t03.example/erase');
SELECT delq.add_route('t03_dest', '{"source": "t03"}') AS route_t03 \gset
SELECT delq.submit('ann.t03@example.com', 't03') AS r1 \gset
SELECT regress.snapshot();

--
-- submit: subject
--
SELECT delq.submit(NULL, 't03');
SELECT regress.unchanged();
SELECT delq.submit('   ', 't03');
SELECT regress.unchanged();
SELECT regress.bad($$SELECT delq.submit('', 't03')$$);
SELECT regress.bad($$SELECT delq.submit(E' \t\r\n ', 't03')$$);
SELECT regress.bad($$SELECT delq.submit(repeat('x', 1001), 't03')$$);
SELECT regress.bad($$SELECT delq.submit(repeat('é', 1001), 't03')$$);
SELECT regress.bad($$SELECT delq.submit(E'ann\n@example.com', 't03')$$);
SELECT regress.bad($$SELECT delq.submit(E'ann\t@example.com', 't03')$$);
SELECT regress.bad($$SELECT delq.submit(E'ann\x01@example.com', 't03')$$);
SELECT regress.bad($$SELECT delq.submit(E'ann\x1b[0m@example.com', 't03')$$);
SELECT regress.bad($$SELECT delq.submit(E'ann@example.com\x7f', 't03')$$);
BEGIN;
SELECT regress.sqlstate($$SELECT delq.submit(repeat('x', 1000), 't03')$$) AS chars_1000;
SELECT regress.sqlstate($$SELECT delq.submit(repeat('é', 1000), 't03')$$) AS multibyte_1000;
SELECT regress.sqlstate($$SELECT delq.submit(' padded.t03@example.com ', 't03')$$) AS padded;
ROLLBACK;
SELECT regress.unchanged();

--
-- submit: source
--
SELECT delq.submit('ann.t03@example.com', NULL);
SELECT regress.unchanged();
SELECT delq.submit('ann.t03@example.com', 'Shop');
SELECT regress.unchanged();
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', '')$$);
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', '1shop')$$);
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', '-shop')$$);
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 'shop!')$$);
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 'my shop')$$);
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 'shop/eu')$$);
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', E'shop\n')$$);
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 'shöp')$$);
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 'a' || repeat('b', 63))$$);
BEGIN;
SELECT regress.sqlstate($$SELECT delq.submit('ann.t03@example.com', 'a' || repeat('b', 62))$$) AS chars_63;
SELECT regress.sqlstate($$SELECT delq.submit('ann.t03@example.com', 'crm.eu')$$) AS dotted;
SELECT regress.sqlstate($$SELECT delq.submit('ann.t03@example.com', 'app-2_x')$$) AS dashed;
ROLLBACK;
SELECT regress.unchanged();

--
-- submit: reason (free text; newlines and tabs allowed)
--
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 't03', '')$$);
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 't03', E' \n ')$$);
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 't03', repeat('r', 1001))$$);
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 't03', E'fraud\x01')$$);
BEGIN;
SELECT regress.sqlstate($$SELECT delq.submit('ann.t03@example.com', 't03', E'line one\n\tline two')$$) AS multiline;
ROLLBACK;
SELECT regress.unchanged();

--
-- submit: attributes (an object of at most 16384 bytes, without the
-- routing keys source and reason)
--
SELECT delq.submit('ann.t03@example.com', 't03', attributes => '[]');
SELECT regress.unchanged();
SELECT delq.submit('ann.t03@example.com', 't03', attributes => '{"source": "crm"}');
SELECT regress.unchanged();
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 't03', attributes => NULL)$$);
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 't03', attributes => '"eu"')$$);
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 't03', attributes => '42')$$);
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 't03', attributes => 'null')$$);
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 't03', attributes => '{"reason": "x"}')$$);
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 't03', attributes => '{"a": 1, "source": "x", "reason": "y"}')$$);
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 't03', attributes => jsonb_build_object('k', repeat('x', 16376)))$$);
BEGIN;
SELECT octet_length(jsonb_build_object('k', repeat('x', 16375))::text) AS bytes;
SELECT regress.sqlstate($$SELECT delq.submit('ann.t03@example.com', 't03', attributes => jsonb_build_object('k', repeat('x', 16375)))$$) AS bytes_16384;
SELECT regress.sqlstate($$SELECT delq.submit('ann.t03@example.com', 't03', attributes => '{"meta": {"source": "crm"}}')$$) AS nested_source;
ROLLBACK;
SELECT regress.unchanged();

--
-- submit: external_id (at most 255 characters, printable)
--
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 't03', external_id => repeat('e', 256))$$);
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 't03', external_id => '')$$);
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 't03', external_id => ' ')$$);
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 't03', external_id => E'T03\n1')$$);
BEGIN;
SELECT regress.sqlstate($$SELECT delq.submit('ann.t03@example.com', 't03', external_id => repeat('e', 255))$$) AS chars_255;
ROLLBACK;
SELECT regress.unchanged();

--
-- submit: due_at must be in the future
--
SELECT delq.submit('ann.t03@example.com', 't03', due_at => '2000-01-01 00:00:00+00');
SELECT regress.unchanged();
SELECT regexp_replace(regress.bad($$SELECT delq.submit('ann.t03@example.com', 't03', due_at => now())$$),
                      '\(.*\)', '(now)') AS bad;
SELECT regress.bad($$SELECT delq.submit('ann.t03@example.com', 't03', due_at => '-infinity')$$);
BEGIN;
SELECT regress.sqlstate($$SELECT delq.submit('ann.t03@example.com', 't03', due_at => now() + interval '1 minute')$$) AS future;
ROLLBACK;
SELECT regress.unchanged();

--
-- add_destination: name (a plain identifier)
--
SELECT delq.add_destination('T03', 'https://t03.example/');
SELECT regress.unchanged();
SELECT regress.bad($$SELECT delq.add_destination(NULL, 'https://t03.example/')$$);
SELECT regress.bad($$SELECT delq.add_destination('', 'https://t03.example/')$$);
SELECT regress.bad($$SELECT delq.add_destination('1dest', 'https://t03.example/')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03-dest', 'https://t03.example/')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03 dest', 'https://t03.example/')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03.dest', 'https://t03.example/')$$);
SELECT regress.bad($$SELECT delq.add_destination('"t03"', 'https://t03.example/')$$);
SELECT regress.bad($$SELECT delq.add_destination('dést', 'https://t03.example/')$$);
SELECT regress.bad($$SELECT delq.add_destination('t' || repeat('x', 63), 'https://t03.example/')$$);
BEGIN;
SELECT regress.sqlstate($$SELECT delq.add_destination('_t03', 'https://t03.example/')$$) AS underscore;
SELECT regress.sqlstate($$SELECT delq.add_destination('t' || repeat('x', 62), 'https://t03.example/')$$) AS chars_63;
ROLLBACK;
SELECT regress.unchanged();

--
-- add_destination: url (http or https with a host; no credentials,
-- fragment or spaces; port 1..65535)
--
SELECT delq.add_destination('t03_u', 'ftp://files.t03.example/erase');
SELECT regress.unchanged();
SELECT delq.add_destination('t03_u', 'https://t03.example:70000/erase');
SELECT regress.unchanged();
SELECT regress.bad($$SELECT delq.add_destination('t03_u', NULL)$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', '')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 't03.example/erase')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', '//t03.example/erase')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'file:///etc/passwd')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'gopher://t03.example/')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'javascript:alert(1)')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'http://')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'http:///erase')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'https://?x=1')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'https://:443/erase')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'http://t03 .example/erase')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'http://t03.example/erase now')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', ' http://t03.example/erase')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', E'http://t03.example/erase\n')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'http://user:pw@t03.example/erase')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'https://user@t03.example/erase')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'https://:pw@t03.example/erase')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'http://t03.example:0/erase')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'http://t03.example:65536/erase')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'http://t03.example:99999')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'http://t03.example:123456/')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'http://[::1]:0/erase')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'HTTP://t03.example:0/erase')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'Https://t03.example:70000/erase')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'http://t03.example:/erase')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'http://t03.example/erase#done')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'http://t03.example#done')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'http://-t03.example/')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'http://t03_host.example/')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'http://t03.example\@evil.example/')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_u', 'https://t03.example/' || repeat('p', 2048))$$);
BEGIN;
SELECT u AS url, regress.sqlstate(format('SELECT delq.add_destination(%L, %L)', 't03_ok' || n, u)) AS result
  FROM (VALUES (1, 'http://localhost/erase'),
               (2, 'https://t03.example'),
               (3, 'https://t03.example:1/erase'),
               (4, 'https://t03.example:65535/erase'),
               (5, 'http://10.0.0.7:8080/erase?tenant=t03&x=1'),
               (6, 'https://[::1]:8443/erase'),
               (7, 'https://t03.example?x=1'),
               (8, 'https://t03.example/p@th/erase'),
               (9, 'HTTPS://T03.EXAMPLE/ERASE')) v(n, u)
 ORDER BY n;
ROLLBACK;
SELECT regress.unchanged();

--
-- add_destination: headers (an object of "Name": "value" strings; not
-- the headers delq sets itself)
--
SELECT delq.add_destination('t03_h', 'https://t03.example/', headers => '{"Content-Type": "text/plain"}');
SELECT regress.unchanged();
SELECT regress.bad($$SELECT delq.add_destination('t03_h', 'https://t03.example/', headers => NULL)$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_h', 'https://t03.example/', headers => '[]')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_h', 'https://t03.example/', headers => '"X-A: b"')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_h', 'https://t03.example/', headers => '{"X A": "b"}')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_h', 'https://t03.example/', headers => '{"X-A:": "b"}')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_h', 'https://t03.example/', headers => '{"": "b"}')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_h', 'https://t03.example/', headers => '{"X-Ä": "b"}')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_h', 'https://t03.example/', headers => jsonb_build_object(repeat('x', 101), 'b'))$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_h', 'https://t03.example/', headers => '{"X-A": 1}')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_h', 'https://t03.example/', headers => '{"X-A": null}')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_h', 'https://t03.example/', headers => '{"X-A": ["b"]}')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_h', 'https://t03.example/', headers => '{"X-A": "b\r\nX-Injected: c"}')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_h', 'https://t03.example/', headers => jsonb_build_object('X-A', repeat('v', 4097)))$$);
SELECT h AS header, regress.bad(format($$SELECT delq.add_destination('t03_h', 'https://t03.example/', headers => jsonb_build_object(%L, 'x'))$$, h)) AS result
  FROM unnest(ARRAY['content-type', 'Content-Length', 'Host', 'User-Agent', 'Idempotency-Key',
                    'webhook-id', 'Webhook-Timestamp', 'WEBHOOK-SIGNATURE', 'Transfer-Encoding',
                    'Connection', 'Expect']) h;
BEGIN;
SELECT regress.sqlstate($$SELECT delq.add_destination('t03_h', 'https://t03.example/', headers => '{"Authorization": "Bearer abc", "X-Tenant": "t03"}')$$) AS two_headers;
SELECT regress.sqlstate($$SELECT delq.add_destination('t03_h2', 'https://t03.example/', headers => jsonb_build_object('X-A', repeat('v', 4096)))$$) AS value_4096;
ROLLBACK;
SELECT regress.unchanged();

--
-- add_destination: secret (whsec_ and the base64 of 24 to 64 bytes)
--
CREATE FUNCTION pg_temp.whsec(bytes integer) RETURNS text LANGUAGE sql
AS $$ SELECT 'whsec_' || translate(encode(decode(repeat('a5', bytes), 'hex'), 'base64'), E'\n', '') $$;
SELECT delq.add_destination('t03_s', 'https://t03.example/', secret => 'not-a-secret');
SELECT regress.unchanged();
SELECT regress.bad($$SELECT delq.add_destination('t03_s', 'https://t03.example/', secret => '')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_s', 'https://t03.example/', secret => 'whsec_')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_s', 'https://t03.example/', secret => 'whsec_!!!!')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_s', 'https://t03.example/', secret => pg_temp.whsec(23))$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_s', 'https://t03.example/', secret => pg_temp.whsec(16))$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_s', 'https://t03.example/', secret => pg_temp.whsec(65))$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_s', 'https://t03.example/', secret => upper(pg_temp.whsec(32)))$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_s', 'https://t03.example/', secret => substr(pg_temp.whsec(32), 7))$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_s', 'https://t03.example/', secret => pg_temp.whsec(32) || ' ')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_s', 'https://t03.example/', secret => 'whsec_' || encode(decode(repeat('a5', 64), 'hex'), 'base64'))$$);
BEGIN;
SELECT n AS bytes, regress.sqlstate(format('SELECT delq.add_destination(%L, %L, secret => %L)',
                                           't03_s' || n, 'https://t03.example/', pg_temp.whsec(n))) AS result
  FROM unnest(ARRAY[24, 32, 64]) n;
-- base64 without its "=" padding is refused: receivers decode the secret
-- with standard base64 decoders, and some (Python's) refuse it too
-- (src/signing.c holds the rule; SQL asks it)
SELECT n AS bytes, regress.sqlstate(format('SELECT delq.add_destination(%L, %L, secret => %L)',
                                           't03_u' || n, 'https://t03.example/',
                                           rtrim(pg_temp.whsec(n), '='))) AS unpadded
  FROM unnest(ARRAY[25, 26]) n;
SELECT regress.sqlstate($$SELECT delq.add_destination('t03_p', 'https://t03.example/', secret => pg_temp.whsec(25) || '==')$$) AS overpadded;
ROLLBACK;
SELECT regress.unchanged();

--
-- add_destination: the other options
--
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', timeout => NULL)$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', timeout => '99 ms')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', timeout => '11 minutes')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', timeout => '-5 s')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', connect_timeout => '6 minutes')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', max_attempts => 0)$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', max_attempts => 1001)$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', concurrency => NULL)$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', concurrency => 0)$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', concurrency => 10001)$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', confirm => NULL)$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', confirm => 'email')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', confirm => 'Callback')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', retry_base => '0')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', retry_base => '2 days')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', retry_max => '0.5 s')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', retry_max => '31 days')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', retry_base => '1 min', retry_max => '30 s')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', enabled => NULL)$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', ca_file => 'certs/ca.pem')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', client_cert => '/etc/delq/client.pem')$$);
SELECT regress.bad($$SELECT delq.add_destination('t03_o', 'https://t03.example/', client_key => '/etc/delq/client.key')$$);
BEGIN;
SELECT regress.sqlstate($$SELECT delq.add_destination('t03_o1', 'https://t03.example/', timeout => '100 ms', connect_timeout => '5 minutes', max_attempts => 1000, concurrency => 10000, confirm => 'callback')$$) AS bounds;
SELECT regress.sqlstate($$SELECT delq.add_destination('t03_o2', 'https://t03.example/', retry_base => '1 ms', retry_max => '1 s')$$) AS retry_low;
SELECT regress.sqlstate($$SELECT delq.add_destination('t03_o3', 'https://t03.example/', retry_base => '1 day', retry_max => '30 days')$$) AS retry_high;
SELECT regress.sqlstate($$SELECT delq.add_destination('t03_o4', 'https://t03.example/', retry_max => '25 days')$$) AS retry_max_25d;
SELECT regress.sqlstate($$SELECT delq.add_destination('t03_o5', 'https://t03.example/', ca_file => '/etc/delq/ca.pem', client_cert => '/etc/delq/c.pem', client_key => '/etc/delq/c.key')$$) AS tls_files;
ROLLBACK;
SELECT regress.unchanged();

--
-- Duplicate and unknown destinations
--
SELECT delq.add_destination('t03_dest', 'https://other.t03.example/');
SELECT regress.unchanged();
SELECT delq.add_route('t03_nope');
SELECT regress.unchanged();
SELECT regress.bad($$SELECT delq.add_route('t03_nope', '{"source": "t03"}')$$);
SELECT regress.bad($$SELECT delq.add_route(NULL)$$);
SELECT regress.bad($$SELECT delq.alter_destination('t03_nope', enabled => false)$$);
SELECT regress.bad($$SELECT delq.alter_destination(NULL, enabled => false)$$);
SELECT regress.bad($$SELECT delq.drop_destination('t03_nope')$$);
SELECT regress.bad($$SELECT delq.drop_destination(NULL)$$);
SELECT regress.bad($$SELECT delq.drop_destination('T03_DEST')$$);
SELECT regress.bad($$SELECT delq.drop_destination('t03_dest', NULL)$$);

--
-- alter_destination checks what it is given like add_destination
--
SELECT regress.bad($$SELECT delq.alter_destination('t03_dest', url => 'ftp://t03.example/')$$);
SELECT regress.bad($$SELECT delq.alter_destination('t03_dest', url => 'https://u:p@t03.example/')$$);
SELECT regress.bad($$SELECT delq.alter_destination('t03_dest', headers => '{"Host": "x"}')$$);
SELECT regress.bad($$SELECT delq.alter_destination('t03_dest', secret => 'whsec_short')$$);
SELECT regress.bad($$SELECT delq.alter_destination('t03_dest', timeout => '1 hour')$$);
SELECT regress.bad($$SELECT delq.alter_destination('t03_dest', concurrency => 0)$$);
SELECT regress.bad($$SELECT delq.alter_destination('t03_dest', max_attempts => -1)$$);
SELECT regress.bad($$SELECT delq.alter_destination('t03_dest', confirm => 'never')$$);
SELECT regress.bad($$SELECT delq.alter_destination('t03_dest', retry_base => '2 min', retry_max => '1 min')$$);
SELECT regress.bad($$SELECT delq.alter_destination('t03_dest', client_cert => '/etc/delq/c.pem')$$);

--
-- Routes: match must be an object; one route per (destination, match)
--
SELECT delq.add_route('t03_dest', '[]');
SELECT regress.unchanged();
SELECT delq.add_route('t03_dest', '{"source": "t03"}');
SELECT regress.unchanged();
SELECT regress.bad($$SELECT delq.add_route('t03_dest', NULL)$$);
SELECT regress.bad($$SELECT delq.add_route('t03_dest', '"t03"')$$);
SELECT regress.bad($$SELECT delq.add_route('t03_dest', 'null')$$);
SELECT regress.bad($$SELECT delq.add_route('t03_dest', '[{"source": "t03"}]')$$);
SELECT regress.bad($$SELECT delq.add_route('t03_dest', jsonb_build_object('k', repeat('x', 16400)))$$);
SELECT regress.bad($$SELECT delq.add_route('t03_dest', '{ "source" :"t03" }')$$);
SELECT regress.bad($$SELECT delq.drop_route(-1)$$);
SELECT regress.bad($$SELECT delq.drop_route(NULL)$$);
BEGIN;
SELECT regress.sqlstate($$SELECT delq.add_route('t03_dest', '{"source": "t03", "region": "eu"}')$$) AS narrower;
ROLLBACK;
SELECT regress.unchanged();

--
-- Unknown requests (42704) and NULL ids (22004)
--
SELECT delq.approve('00000000-0000-0000-0000-000000000000');
SELECT regress.unchanged();
SELECT regress.bad($$SELECT delq.reject('00000000-0000-0000-0000-000000000000', 'spam')$$);
SELECT regress.bad($$SELECT delq.retry('00000000-0000-0000-0000-000000000000')$$);
SELECT regress.bad($$SELECT delq.retry('00000000-0000-0000-0000-000000000000', 't03_dest')$$);
SELECT regress.bad($$SELECT delq.confirm('00000000-0000-0000-0000-000000000000', 't03_dest')$$);
SELECT regress.bad($$SELECT delq.approve(NULL)$$);
SELECT regress.bad($$SELECT delq.reject(NULL, 'spam')$$);
SELECT regress.bad($$SELECT delq.retry(NULL)$$);
SELECT regress.bad($$SELECT delq.confirm(NULL, 't03_dest')$$);
-- a known request, but no delivery to that destination
SELECT regress.bad(format('SELECT delq.confirm(%L, NULL)', :'r1'));
SELECT regress.bad(format('SELECT delq.confirm(%L, %L)', :'r1', 't03_nope'));

--
-- reject needs a reason
--
SELECT delq.reject(:'r1', NULL);
SELECT regress.unchanged();
SELECT regress.bad(format('SELECT delq.reject(%L, %L)', :'r1', ''));
SELECT regress.bad(format('SELECT delq.reject(%L, %L)', :'r1', E' \t\n'));
SELECT regress.bad(format('SELECT delq.reject(%L, %L)', :'r1', repeat('r', 1001)));
SELECT regress.bad(format('SELECT delq.reject(%L, %L)', :'r1', E'spam\x01'));

--
-- archive: a non-negative interval
--
SELECT delq.archive(NULL);
SELECT regress.unchanged();
SELECT regress.bad($$SELECT delq.archive('-1 day')$$);
SELECT regress.bad($$SELECT delq.archive('-1 second')$$);

-- Nothing above changed r1.
SELECT status, rejected FROM delq.pending WHERE id = :'r1';
SELECT count(*) AS routes FROM (SELECT delq.drop_route(id) FROM delq.route WHERE destination LIKE 't03\_%') d;
