--
-- templates: templated HTTP destinations (docs/connectors.md).  The
-- template checks when a destination is added, the rendering of each
-- step's request, and what each answer does to a delivery: lookup with
-- pages, erase per item, async poll, OAuth2 token, render errors.  The
-- HTTP side is in test/t/072_templates.pl.
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

-- ---------------------------------------------------------------------
-- Validation: a clear SQLSTATE, the key path named, nothing written.

-- Each call as SQLSTATE: message.
CREATE FUNCTION pg_temp.err(call text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE 'SELECT ' || call;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "/a/{{subjct}}"}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "/a/{{subject | lowr}}"}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "/a/{{credentials.key}}"}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "/a/{{credentials.key}}"}}',
                            credentials => '{"other": "x"}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "{{attributes.host}}/a"}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "https://{{attributes.host}}/a"}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "ftp://x.t70.example/a"}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "/a/{{subject"}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "/a/{{item}}"}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "/a/{{job_id}}"}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example',
                            request => '{"lookup": {"url": "/a", "items": "$.data[*"}, "erase": {"url": "/a/{{item}}"}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example',
                            request => '{"lookup": {"url": "/a"}, "erase": {"url": "/a/{{item}}"}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example',
                            request => '{"erase": {"url": "/a"}, "poll": {"url": "/j/{{job_id}}", "job_id": "$.id", "finished": "$.status = "}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example',
                            request => '{"erase": {"url": "/a"}, "poll": {"url": "/j", "job_id": "$.id", "finished": "$.done", "interval": "soon"}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "/a", "answers": {"done": [200], "fail": [200]}}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "/a", "answers": {"gone": [410]}}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "/a", "answers": {"done": [600]}}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "/a", "method": "FETCH"}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "/a", "json": {}, "form": {}}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "/a", "headers": {"Host": "x"}}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "/a"}, "extra": 1}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"lookup": {"url": "/a", "items": "$.x"}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "/a"}, "auth": {"digest": "x"}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "/a"}, "auth": {"oauth2": {"token_url": "/t"}}}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "/a"}}', credentials => '{"n": 1}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', credentials => '{"k": "v"}')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "/a"}}',
                            secret => 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '{"erase": {"url": "/a"}}', confirm => 'callback')$c$);
SELECT pg_temp.err($c$delq.add_destination('t70_bad', 'https://x.t70.example', request => '[1]')$c$);
SELECT count(*) AS nothing_written FROM delq.destination WHERE name = 't70_bad';

-- ---------------------------------------------------------------------
-- Rendering.

SELECT delq._urlencode('a b/ü+&=~') AS urlencoded,
       delq._tpl_filter('Alice@Example.COM', 'lower') AS lower,
       delq._tpl_filter(delq._tpl_filter('Alice@Example.COM', 'lower'), 'md5') AS mailchimp_hash,
       delq._tpl_filter('alice@example.com', 'sha256') AS sha256,
       delq._tpl_filter('user:päss word', 'base64') AS base64;

CREATE TEMP TABLE ctx AS
SELECT delq._step_context(
    jsonb_populate_record(NULL::delq.pending, '{"id": "00000000-0000-0000-0000-0000000000aa", "source": "shop",
        "external_id": "ext-1", "subject": "Alice+x@Example.com", "reason": "gdpr",
        "attributes": {"user_id": 42, "ids": {"crm": "c/1"}, "tags": ["a", "b"]},
        "submitted_at": "2026-01-01T10:00:00Z", "due_at": "2026-01-31T10:00:00Z"}'),
    'msg_x', '{"key": "s3cr3t-key"}', '"cus_1"', NULL) AS c;

SELECT delq._tpl_url('/v1/x/{{subject}}/{{attributes.ids.crm}}', '{"email": "{{subject | lower}}", "n": "{{attributes.user_id}}"}',
                     'https://api.t70.example/base/', c, 'lookup') FROM ctx;
SELECT delq._tpl_url('/m/{{subject | lower | md5}}?x={{item}}&y={{subject | urlencode}}', NULL,
                     'https://api.t70.example', c, 'erase') FROM ctx;
SELECT delq._tpl_json('{"ids": ["{{attributes.user_id}}"], "n": "{{attributes.user_id}}", "s": "x{{attributes.user_id}}",
                        "tags": "{{attributes.tags}}", "{{source}}": "{{due_at}}", "q": "say \"{{subject}}\""}', c, 'erase.json')
  FROM ctx;
SELECT delq._tpl_form('{"grant_type": "client_credentials", "who": "{{subject}}"}', c, 'form') FROM ctx;
SELECT delq._step_auth('{"basic": {"username": "{{credentials.key}}", "password": ""}}', NULL, c) FROM ctx;
SELECT delq._step_auth('{"bearer": "{{credentials.key}}"}', NULL, c) FROM ctx;

-- render errors name the field, never the value
SELECT delq._tpl_text('/x/{{attributes.segment_id}}', c, 'erase.url', 'url') FROM ctx;
SELECT delq._tpl_text('{{reason}}', c || '{"reason": "a\r\nX-Evil: 1"}', 'erase.headers.X-Reason', 'header') FROM ctx;

-- answers: exact code, then class, then the webhook rules
SELECT s, delq._step_class('{"not_held": [404], "retry": [409], "done": ["3xx"], "fail": [503]}', s)
  FROM unnest(ARRAY[0, 200, 204, 302, 404, 409, 410, 429, 503, 500]) s;

-- ---------------------------------------------------------------------
-- Steps.  What the forwarding engine does, without the claim's other rows
-- of this database: the delivery goes 'sending' and its step's request is
-- rendered (as _claim does); then the answer is recorded (src/store.c).

CREATE FUNCTION pg_temp.send(dest text, subj text DEFAULT 'alice@example.com')
RETURNS TABLE (method text, url text, headers text[], body text, error text)
LANGUAGE sql AS $$
    WITH c AS (
        UPDATE delq.delivery dl SET state = 'sending', attempts = attempts + 1
          FROM delq.pending p
         WHERE dl.destination = dest AND dl.state = 'queued' AND p.id = dl.request_id AND p.subject = subj
        RETURNING dl.*
    )
    SELECT r.* FROM c JOIN delq.destination d ON d.name = c.destination
                      JOIN delq.pending p ON p.id = c.request_id,
           LATERAL delq._step_request(c.id, c.webhook_id, d, p) r;
$$;
CREATE FUNCTION pg_temp.answer(dest text, code integer, answer text DEFAULT NULL,
                               subj text DEFAULT 'alice@example.com', retry_after integer DEFAULT -1)
RETURNS integer
LANGUAGE sql AS $$
    SELECT delq._record_step(ARRAY[dl.id], ARRAY[code],
                             ARRAY[CASE WHEN code BETWEEN 200 AND 299 THEN 'confirmed'
                                        WHEN code = 0 OR code IN (408, 425, 429) OR code >= 500 THEN 'retry'
                                        ELSE 'failed' END],
                             ARRAY[CASE WHEN code NOT BETWEEN 200 AND 299 THEN 'HTTP ' || code || ': ' || coalesce(answer, '') END],
                             ARRAY[retry_after], ARRAY[answer])
      FROM delq.delivery dl JOIN delq.pending p ON p.id = dl.request_id
     WHERE dl.destination = dest AND p.subject = subj AND dl.state = 'sending';
$$;
CREATE FUNCTION pg_temp.state(dest text, subj text DEFAULT 'alice@example.com')
RETURNS TABLE (state text, due_now boolean, last_status integer, last_error text, phase text, page integer,
               item integer, erased integer, not_held integer, job_id jsonb)
LANGUAGE sql AS $$
    SELECT dl.state, dl.next_attempt_at <= now(), dl.last_status, dl.last_error, s.phase, s.page, s.item,
           s.erased, s.not_held, s.job_id
      FROM delq.delivery dl JOIN delq.pending p ON p.id = dl.request_id
      LEFT JOIN delq.delivery_step s ON s.delivery_id = dl.id
     WHERE dl.destination = dest AND p.subject = subj;
$$;
CREATE FUNCTION pg_temp.steps(dest text) RETURNS SETOF jsonb
LANGUAGE sql AS $$
    SELECT CASE WHEN kind = 'step' THEN detail
                ELSE jsonb_build_object('kind', kind) || (detail - 'attempt' - 'next_attempt_at') END
      FROM delq.event WHERE destination = dest AND kind NOT IN ('sending', 'destination_added', 'route_added')
     ORDER BY id;
$$;

-- lookup by e-mail over cursor pages, erase each customer, 404 not held
SELECT delq.add_destination('t70_shop', 'https://api.t70.example', request => $${
    "auth":   {"bearer": "{{credentials.api_key}}"},
    "lookup": {"url": "/v1/customers", "query": {"email": "{{subject}}", "limit": "2"},
               "items": "$.data[*].id",
               "next": {"cursor": "$.data[last].id", "param": "starting_after", "while": "$.has_more"},
               "max_pages": 3},
    "erase":  {"method": "DELETE", "url": "/v1/customers/{{item}}", "answers": {"not_held": [404]}}
  }$$, credentials => '{"api_key": "sk_test_t70secret"}');
SELECT delq.add_route('t70_shop', '{"t70": "shop"}') IS NOT NULL AS routed;
SELECT name, kind, steps, credential_names FROM delq.destinations WHERE name = 't70_shop';

SELECT delq.submit('alice@example.com', 't70', NULL, '{"t70": "shop"}') IS NOT NULL AS submitted;
SELECT * FROM pg_temp.send('t70_shop');
SELECT pg_temp.answer('t70_shop', 200, '{"data": [{"id": "cus_1"}, {"id": "cus_2"}], "has_more": true}');
SELECT * FROM pg_temp.state('t70_shop');
SELECT url FROM pg_temp.send('t70_shop');
-- a 5xx: the same page again later
SELECT pg_temp.answer('t70_shop', 503, 'busy');
SELECT state, last_status, last_error, phase, page FROM pg_temp.state('t70_shop');
UPDATE delq.delivery SET next_attempt_at = now() WHERE destination = 't70_shop';
SELECT url FROM pg_temp.send('t70_shop');
SELECT pg_temp.answer('t70_shop', 200, '{"data": [{"id": "cus_3"}], "has_more": false}');
SELECT * FROM pg_temp.state('t70_shop');
SELECT method, url FROM pg_temp.send('t70_shop');
SELECT pg_temp.answer('t70_shop', 200, '{"id": "cus_1", "deleted": true}');
SELECT url FROM pg_temp.send('t70_shop');
-- 429 with Retry-After: the same item, not before 30 seconds
SELECT pg_temp.answer('t70_shop', 429, NULL, retry_after => 30);
SELECT state, next_attempt_at > now() + interval '29 seconds' AS honours_retry_after
  FROM delq.delivery WHERE destination = 't70_shop';
UPDATE delq.delivery SET next_attempt_at = now() WHERE destination = 't70_shop';
SELECT url FROM pg_temp.send('t70_shop');
SELECT pg_temp.answer('t70_shop', 404, '{"error": {"message": "No such customer: cus_2"}}');
SELECT url FROM pg_temp.send('t70_shop');
SELECT pg_temp.answer('t70_shop', 200, '{"id": "cus_3", "deleted": true}');
SELECT * FROM pg_temp.state('t70_shop');
SELECT status FROM delq.pending WHERE subject = 'alice@example.com' AND source = 't70';
SELECT * FROM pg_temp.steps('t70_shop');

-- found none: not held, nothing erased
SELECT delq.submit('nobody@example.com', 't70', NULL, '{"t70": "shop"}') IS NOT NULL AS submitted;
SELECT url FROM pg_temp.send('t70_shop', 'nobody@example.com');
SELECT pg_temp.answer('t70_shop', 200, '{"data": [], "has_more": false}', 'nobody@example.com');
SELECT state, last_status, phase FROM pg_temp.state('t70_shop', 'nobody@example.com');

-- more pages than max_pages: fails before erasing; retry starts over
SELECT delq.submit('many@example.com', 't70', NULL, '{"t70": "shop"}') IS NOT NULL AS submitted;
SELECT url IS NOT NULL FROM pg_temp.send('t70_shop', 'many@example.com');
SELECT pg_temp.answer('t70_shop', 200, '{"data": [{"id": "a"}], "has_more": true}', 'many@example.com');
SELECT url IS NOT NULL FROM pg_temp.send('t70_shop', 'many@example.com');
SELECT pg_temp.answer('t70_shop', 200, '{"data": [{"id": "b"}], "has_more": true}', 'many@example.com');
SELECT url IS NOT NULL FROM pg_temp.send('t70_shop', 'many@example.com');
SELECT pg_temp.answer('t70_shop', 200, '{"data": [{"id": "c"}], "has_more": true}', 'many@example.com');
SELECT state, last_error, phase, page FROM pg_temp.state('t70_shop', 'many@example.com');
SELECT problem, destination, detail FROM delq.needs_attention WHERE destination = 't70_shop';
SELECT last_failure FROM delq.destination_health WHERE name = 't70_shop';

-- a fail answer names the step; the excerpt never quotes a credential or the subject
SELECT delq.submit('bob@example.com', 't70', NULL, '{"t70": "shop"}') IS NOT NULL AS submitted;
SELECT url IS NOT NULL FROM pg_temp.send('t70_shop', 'bob@example.com');
SELECT pg_temp.answer('t70_shop', 403, 'key sk_test_t70secret may not read bob@example.com', 'bob@example.com');
SELECT state, last_error FROM pg_temp.state('t70_shop', 'bob@example.com');
SELECT count(*) AS events_with_secrets FROM delq.event
 WHERE destination LIKE 't70%'
   AND (detail::text LIKE '%sk_test_t70secret%' OR detail::text LIKE '%@example.com%' OR detail::text LIKE '%cus\_%');

-- async: erase starts a job, polls until finished; the wait is a row
SELECT delq.add_destination('t70_async', 'https://async.t70.example', request => $${
    "auth":  {"basic": {"username": "{{credentials.user}}", "password": "{{credentials.password}}"}},
    "erase": {"method": "POST", "url": "/deletions", "json": {"user_ids": ["{{attributes.user_id}}"]}},
    "poll":  {"url": "/deletions/{{job_id}}", "job_id": "$.id", "interval": "1 hour",
              "finished": "$.status == \"done\"", "failed": "$.status == \"error\""}
  }$$, credentials => '{"user": "u", "password": "p"}');
SELECT delq.add_route('t70_async', '{"t70": "async"}') IS NOT NULL AS routed;
SELECT delq.submit('carol@example.com', 't70', NULL, '{"t70": "async", "user_id": "u-7"}') IS NOT NULL AS submitted;
SELECT * FROM pg_temp.send('t70_async', 'carol@example.com');
SELECT pg_temp.answer('t70_async', 200, '{"id": 991, "status": "queued"}', 'carol@example.com');
SELECT state, due_now, phase, job_id FROM pg_temp.state('t70_async', 'carol@example.com');
SELECT next_attempt_at BETWEEN now() + interval '59 minutes' AND now() + interval '61 minutes' AS next_poll_in_an_hour
  FROM delq.delivery WHERE destination = 't70_async';
UPDATE delq.delivery SET next_attempt_at = now() WHERE destination = 't70_async';
SELECT method, url, body FROM pg_temp.send('t70_async', 'carol@example.com');
SELECT pg_temp.answer('t70_async', 200, '{"id": 991, "status": "running"}', 'carol@example.com');
SELECT state, due_now, phase FROM pg_temp.state('t70_async', 'carol@example.com');
UPDATE delq.delivery SET next_attempt_at = now() WHERE destination = 't70_async';
SELECT url FROM pg_temp.send('t70_async', 'carol@example.com');
SELECT pg_temp.answer('t70_async', 200, '{"id": 991, "status": "done"}', 'carol@example.com');
SELECT state, phase FROM pg_temp.state('t70_async', 'carol@example.com');
SELECT * FROM pg_temp.steps('t70_async');

-- a job that failed fails the delivery; retry erases again
SELECT delq.submit('dan@example.com', 't70', NULL, '{"t70": "async", "user_id": "u-8"}') IS NOT NULL AS submitted;
SELECT url FROM pg_temp.send('t70_async', 'dan@example.com');
SELECT pg_temp.answer('t70_async', 201, '{"id": 992}', 'dan@example.com');
UPDATE delq.delivery dl SET next_attempt_at = now() FROM delq.pending p
 WHERE p.id = dl.request_id AND p.subject = 'dan@example.com' AND dl.destination = 't70_async';
SELECT url FROM pg_temp.send('t70_async', 'dan@example.com');
SELECT pg_temp.answer('t70_async', 200, '{"id": 992, "status": "error"}', 'dan@example.com');
SELECT state, last_error, phase, job_id FROM pg_temp.state('t70_async', 'dan@example.com');
SELECT delq.retry(p.id, 't70_async') FROM delq.pending p WHERE p.subject = 'dan@example.com';
SELECT method, url FROM pg_temp.send('t70_async', 'dan@example.com');

-- render error at send time: fails at once, names the field, no retries, no breaker
SELECT delq.submit('erin@example.com', 't70', NULL, '{"t70": "async"}') IS NOT NULL AS submitted;
SELECT consecutive_failures AS failures_before FROM delq.destination_state WHERE name = 't70_async';
SELECT * FROM pg_temp.send('t70_async', 'erin@example.com');
SELECT delq._record_step(ARRAY[dl.id], ARRAY[0], ARRAY['failed'], ARRAY[r.error], ARRAY[-1], ARRAY[NULL])
  FROM delq.delivery dl JOIN delq.pending p ON p.id = dl.request_id,
       LATERAL (SELECT 'render: erase.json[]: attributes.user_id is missing'::text AS error) r
 WHERE dl.destination = 't70_async' AND p.subject = 'erin@example.com';
SELECT state, last_error FROM pg_temp.state('t70_async', 'erin@example.com');
SELECT consecutive_failures AS failures_after FROM delq.destination_state WHERE name = 't70_async';

-- OAuth2 client credentials: a token first, cached, a new one once on 401
SELECT delq.add_destination('t70_oauth', 'https://tenant.t70.example', request => $${
    "auth":   {"oauth2": {"token_url": "/oauth/token", "client_id": "{{credentials.client_id}}",
                          "client_secret": "{{credentials.client_secret}}",
                          "params": {"audience": "https://tenant.t70.example/api/v2/"}}},
    "lookup": {"url": "/api/v2/users-by-email", "query": {"email": "{{subject}}"}, "items": "$[*].user_id"},
    "erase":  {"method": "DELETE", "url": "/api/v2/users/{{item}}"}
  }$$, credentials => '{"client_id": "cid", "client_secret": "csecret-t70"}');
SELECT delq.add_route('t70_oauth', '{"t70": "oauth"}') IS NOT NULL AS routed;
SELECT delq.submit('frank@example.com', 't70', NULL, '{"t70": "oauth"}') IS NOT NULL AS submitted;
SELECT * FROM pg_temp.send('t70_oauth', 'frank@example.com');
SELECT pg_temp.answer('t70_oauth', 200, '{"access_token": "tok-1", "token_type": "Bearer", "expires_in": 86400}', 'frank@example.com');
SELECT expires_at BETWEEN now() + interval '23 hours 58 minutes' AND now() + interval '1 day' AS cached_until_shortly_before
  FROM delq.oauth_token WHERE destination = 't70_oauth';
SELECT method, url, headers FROM pg_temp.send('t70_oauth', 'frank@example.com');
SELECT pg_temp.answer('t70_oauth', 401, '{"message": "expired"}', 'frank@example.com');
SELECT count(*) AS tokens_left FROM delq.oauth_token WHERE destination = 't70_oauth';
SELECT method, url FROM pg_temp.send('t70_oauth', 'frank@example.com');
SELECT pg_temp.answer('t70_oauth', 200, '{"access_token": "tok-2", "expires_in": 3600}', 'frank@example.com');
SELECT headers FROM pg_temp.send('t70_oauth', 'frank@example.com');
SELECT pg_temp.answer('t70_oauth', 200, '[{"user_id": "auth0|1"}]', 'frank@example.com');
SELECT url FROM pg_temp.send('t70_oauth', 'frank@example.com');
SELECT pg_temp.answer('t70_oauth', 204, NULL, 'frank@example.com');
SELECT state FROM pg_temp.state('t70_oauth', 'frank@example.com');
SELECT * FROM pg_temp.steps('t70_oauth');
-- a second 401 in a row is the answer: the delivery fails
SELECT delq.submit('gina@example.com', 't70', NULL, '{"t70": "oauth"}') IS NOT NULL AS submitted;
SELECT headers FROM pg_temp.send('t70_oauth', 'gina@example.com');
SELECT pg_temp.answer('t70_oauth', 401, '{"message": "no"}', 'gina@example.com');
SELECT url FROM pg_temp.send('t70_oauth', 'gina@example.com');
SELECT pg_temp.answer('t70_oauth', 200, '{"access_token": "tok-3", "expires_in": 3600}', 'gina@example.com');
SELECT headers FROM pg_temp.send('t70_oauth', 'gina@example.com');
SELECT pg_temp.answer('t70_oauth', 401, '{"message": "still no"}', 'gina@example.com');
SELECT state, last_status, last_error FROM pg_temp.state('t70_oauth', 'gina@example.com');

-- the operator's views never show credentials or tokens
SET ROLE delq_operator;
SELECT count(*) AS secret_rows FROM (
    SELECT to_jsonb(x)::text AS t FROM delq.destinations x
    UNION ALL SELECT to_jsonb(x)::text FROM delq.destination_health x
    UNION ALL SELECT to_jsonb(x)::text FROM delq.needs_attention x
    UNION ALL SELECT to_jsonb(x)::text FROM delq.delivery x
    UNION ALL SELECT to_jsonb(x)::text FROM delq.event x) v
 WHERE t ~ 'sk_test_t70secret|csecret-t70|tok-[123]';
SELECT count(*) FROM delq.destination;
SELECT count(*) FROM delq.oauth_token;
SELECT count(*) FROM delq.delivery_step;
RESET ROLE;

-- alter_destination: the template is checked against the new credentials
SELECT delq.alter_destination('t70_shop', credentials => '{"other": "x"}');
SELECT delq.alter_destination('t70_shop', request => 'null', credentials => '{}');
SELECT kind, credential_names FROM delq.destinations WHERE name = 't70_shop';
SELECT detail FROM delq.event WHERE kind = 'destination_altered' AND destination = 't70_shop';

-- add_connector: settings checked, base_url becomes the url, the others credentials
INSERT INTO delq.connectors (name, erases, identifier, settings, documentation, request)
VALUES ('t70_vendor', 'test records', 'subject',
        '{"base_url": {"default": "https://api.t70vendor.example"},
          "api_key": {"required": true, "secret": true, "about": "the vendor''s secret key"},
          "region": {"required": false, "default": "eu"}}',
        '{https://docs.t70vendor.example/delete}',
        '{"auth": {"bearer": "{{credentials.api_key}}"},
          "erase": {"method": "DELETE", "url": "/{{credentials.region}}/people/{{subject | lower | md5}}"}}');
SELECT pg_temp.err($c$delq.add_connector('t70_v', 'nope', '{}')$c$);
SELECT pg_temp.err($c$delq.add_connector('t70_v', 't70_vendor', '{}')$c$);
SELECT pg_temp.err($c$delq.add_connector('t70_v', 't70_vendor', '{"api_key": "k", "colour": "red"}')$c$);
SELECT pg_temp.err($c$delq.add_connector('t70_v', 't70_vendor', '{"api_key": 7}')$c$);
SELECT pg_temp.err($c$delq.add_connector('t70_v', 't70_vendor', '{"api_key": "k", "base_url": "ftp://x"}')$c$);
SELECT count(*) AS nothing_written FROM delq.destination WHERE name = 't70_v';
SELECT delq.add_connector('t70_v', 't70_vendor', '{"api_key": "vk-t70"}');
SELECT d.url, d.credentials, d.request = c.request AS template_from_catalogue
  FROM delq.destination d, delq.connectors c WHERE d.name = 't70_v' AND c.name = 't70_vendor';
SELECT delq.add_connector('t70_v2', 't70_vendor', '{"api_key": "vk-t70", "base_url": "http://127.0.0.1:9/double", "region": "us"}');
SELECT url, credentials FROM delq.destination WHERE name = 't70_v2';
SELECT kind, detail FROM delq.event WHERE destination = 't70_v2' ORDER BY id;

-- next links: relative ones on the destination's host; another host is refused
SELECT delq.add_destination('t70_link', 'https://crm.t70.example/api', request => $${
    "auth":   {"headers": {"X-Api-Key": "{{credentials.key}}"}},
    "lookup": {"url": "/people?q={{subject}}", "items": "$.results[*].key", "next": {"link": "$.links.next"}},
    "erase":  {"method": "POST", "url": "/people/{{item}}/forget", "form": {"who": "{{item}}", "why": "{{reason}}"}}
  }$$, credentials => '{"key": "k-t70link"}');
SELECT delq.add_route('t70_link', '{"t70": "link"}') IS NOT NULL AS routed;
SELECT delq.submit('hugo@example.com', 't70', 'gdpr art. 17', '{"t70": "link"}') IS NOT NULL AS submitted;
SELECT method, url, headers FROM pg_temp.send('t70_link', 'hugo@example.com');
SELECT pg_temp.answer('t70_link', 200, '{"results": [{"key": "p 1"}], "links": {"next": "/api/people?q=x&page=2"}}', 'hugo@example.com');
SELECT url FROM pg_temp.send('t70_link', 'hugo@example.com');
SELECT pg_temp.answer('t70_link', 200, '{"results": [{"key": "p2"}], "links": {"next": "https://evil.example/steal"}}', 'hugo@example.com');
SELECT state, last_error, page FROM pg_temp.state('t70_link', 'hugo@example.com');
SELECT delq.retry(p.id, 't70_link') FROM delq.pending p WHERE p.subject = 'hugo@example.com';
SELECT url FROM pg_temp.send('t70_link', 'hugo@example.com');
SELECT pg_temp.answer('t70_link', 200, '{"results": [{"key": "p 1"}], "links": {"next": null}}', 'hugo@example.com');
SELECT method, url, headers, body FROM pg_temp.send('t70_link', 'hugo@example.com');

SELECT pg_temp.answer('t70_link', 200, 'ok', 'hugo@example.com');
SELECT state, last_error FROM pg_temp.state('t70_link', 'hugo@example.com');

-- answers that do not fit the template fail, naming the step
SELECT delq.submit('leo@example.com', 't70', NULL, '{"t70": "link"}') IS NOT NULL AS submitted;
SELECT url FROM pg_temp.send('t70_link', 'leo@example.com');
SELECT pg_temp.answer('t70_link', 200, '<html>not json</html>', 'leo@example.com');
SELECT state, last_error FROM pg_temp.state('t70_link', 'leo@example.com');
SELECT delq.submit('ivy@example.com', 't70', NULL, '{"t70": "async", "user_id": "u-9"}') IS NOT NULL AS submitted;
SELECT url FROM pg_temp.send('t70_async', 'ivy@example.com');
SELECT pg_temp.answer('t70_async', 202, '{"status": "accepted"}', 'ivy@example.com');
SELECT state, last_error FROM pg_temp.state('t70_async', 'ivy@example.com');

-- a job not finished within max_time fails; its item is erased again on retry
SELECT delq.submit('kim@example.com', 't70', NULL, '{"t70": "async", "user_id": "u-10"}') IS NOT NULL AS submitted;
SELECT url FROM pg_temp.send('t70_async', 'kim@example.com');
SELECT pg_temp.answer('t70_async', 200, '{"id": 995}', 'kim@example.com');
UPDATE delq.delivery_step s SET poll_started_at = now() - interval '31 days'
  FROM delq.delivery dl JOIN delq.pending p ON p.id = dl.request_id
 WHERE s.delivery_id = dl.id AND p.subject = 'kim@example.com';
UPDATE delq.delivery dl SET next_attempt_at = now() FROM delq.pending p
 WHERE p.id = dl.request_id AND p.subject = 'kim@example.com';
SELECT url FROM pg_temp.send('t70_async', 'kim@example.com');
SELECT pg_temp.answer('t70_async', 200, '{"id": 995, "status": "running"}', 'kim@example.com');
SELECT state, last_error, phase, job_id FROM pg_temp.state('t70_async', 'kim@example.com');
