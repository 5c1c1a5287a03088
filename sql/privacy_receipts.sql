--
-- privacy_receipts: delq.receipt() gives a signed account of one
-- request (its subject only as a keyed hash) that delq.verify_receipt()
-- checks; any edit makes it fail.
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

SELECT delq.add_destination('p52_a', 'https://a.p52.example/erase');
SELECT delq.add_destination('p52_b', 'https://b.p52.example/erase', confirm => 'callback');
SELECT delq.add_route('p52_a', '{"source": "p52"}') IS NOT NULL AS routed_a;
SELECT delq.add_route('p52_b', '{"source": "p52"}') IS NOT NULL AS routed_b;

SELECT delq.submit('ann.p52@example.com', 'p52', 'gdpr', '{"customer": "c-52", "plan": "pro"}', 'P52-1') AS r \gset
-- p52_a answered 503, then 200 (what the worker would record)
UPDATE delq.delivery SET attempts = 2, last_status = 200, first_attempt_at = now(),
                         last_attempt_at = now()
 WHERE request_id = :'r' AND destination = 'p52_a';
SELECT delq.confirm(:'r', 'p52_a');

-- The keys exist, 32 random bytes each, one per purpose.
SELECT name, octet_length(secret) AS bytes FROM delq.key ORDER BY name;
SELECT count(DISTINCT secret) AS distinct_secrets FROM delq.key;

--
-- A receipt of a pending request.
--
SELECT delq.receipt(:'r') AS receipt \gset
SELECT array_agg(k ORDER BY k) AS top_keys FROM jsonb_object_keys(:'receipt'::jsonb) k;
SELECT r -> 'type' AS type, r -> 'version' AS version,
       (r ->> 'issued_at')::timestamptz <= now() AS issued,
       r #> '{signature,alg}' AS alg, r #> '{signature,key}' AS key,
       r #>> '{signature,value}' ~ '^[0-9a-f]{64}$' AS hex_mac
  FROM (SELECT :'receipt'::jsonb AS r) x;
-- the request, with the subject only as a keyed hash
SELECT (r -> 'request') - 'id' - 'submitted_at' - 'due_at' - 'subject_hash' AS request,
       r #>> '{request,id}' = :'r' AS right_request,
       r #>> '{request,subject_hash}' ~ '^hmac:[0-9a-f]{64}$' AS keyed_hash,
       r #>> '{request,subject_hash}' = delq._subject_hash('ann.p52@example.com') AS hash_of_the_subject,
       strpos(r::text, 'ann.p52') AS subject_anywhere
  FROM (SELECT :'receipt'::jsonb AS r) x;
-- each destination's outcome
SELECT d ->> 'destination' AS destination, d ->> 'state' AS state, d -> 'attempts' AS attempts,
       d -> 'last_status' AS last_status, d ->> 'confirmed_at' IS NOT NULL AS has_confirmed_at,
       d ->> 'webhook_id' = dl.webhook_id AS webhook_id
  FROM jsonb_array_elements(:'receipt'::jsonb -> 'destinations') d
  JOIN delq.delivery dl ON dl.request_id = :'r' AND dl.destination = d ->> 'destination'
 ORDER BY 1;
-- the timeline, each event with its ledger hash
SELECT t ->> 'kind' AS kind, t ->> 'destination' AS destination, t -> 'detail' AS detail,
       t ->> 'hash' = encode(e.hash, 'hex') AS ledger_hash
  FROM jsonb_array_elements(:'receipt'::jsonb -> 'timeline') t
  JOIN delq.event e ON e.id = (t ->> 'id')::bigint
 ORDER BY e.id;
-- ... which follow each other from the chain's genesis hash
SELECT bool_and(CASE WHEN x.n = 1
                     THEN x.t ->> 'prev_hash' = encode(delq._ledger_genesis('request:' || :'r'), 'hex')
                     ELSE x.t ->> 'prev_hash' = x.before END) AS chained
  FROM (SELECT t, n, lag(t ->> 'hash') OVER (ORDER BY n) AS before
          FROM jsonb_array_elements(:'receipt'::jsonb -> 'timeline') WITH ORDINALITY AS y(t, n)) x;
-- where the request's chain ends
SELECT r #>> '{ledger,chain}' = 'request:' || :'r' AS chain,
       (r #>> '{ledger,events}')::bigint = h.events AS events,
       r #>> '{ledger,head}' = encode(h.hash, 'hex') AS head,
       r #> '{ledger,checkpoint}' AS checkpoint
  FROM (SELECT :'receipt'::jsonb AS r) x, delq.ledger_head h
 WHERE h.chain = 'request:' || :'r';

--
-- Verification.
--
SELECT delq.verify_receipt(:'receipt') AS intact;
-- as text and back (key order and spacing are not part of it)
SELECT delq.verify_receipt(jsonb_pretty(:'receipt'::jsonb)::jsonb) AS reformatted;
-- any edit fails
SELECT edit, delq.verify_receipt(r) AS verifies
  FROM (VALUES
    ('status', jsonb_set(:'receipt'::jsonb, '{request,status}', '"completed"')),
    ('subject hash', jsonb_set(:'receipt'::jsonb, '{request,subject_hash}', to_jsonb(delq._subject_hash('bob@example.com')))),
    ('attempts', jsonb_set(:'receipt'::jsonb, '{destinations,0,attempts}', '1')),
    ('timestamp', jsonb_set(:'receipt'::jsonb, '{issued_at}', to_jsonb(now() - interval '1 day'))),
    ('event removed', jsonb_set(:'receipt'::jsonb, '{timeline}', (:'receipt'::jsonb -> 'timeline') - 1)),
    ('key added', :'receipt'::jsonb || '{"note": "ok"}'),
    ('signature', jsonb_set(:'receipt'::jsonb, '{signature,value}', to_jsonb(repeat('0', 64)))),
    ('signature key', jsonb_set(:'receipt'::jsonb, '{signature,key}', '"subject"')),
    ('signature alg', jsonb_set(:'receipt'::jsonb, '{signature,alg}', '"none"')),
    ('no signature', :'receipt'::jsonb - 'signature'),
    ('signature not an object', jsonb_set(:'receipt'::jsonb, '{signature}', '"x"')),
    ('empty object', '{}'::jsonb)
  ) AS v(edit, r);
-- the MAC is HMAC-SHA-256 with the receipt key over the rest, as jsonb text
SELECT :'receipt'::jsonb #>> '{signature,value}'
       = encode(delq._hmac_sha256((SELECT secret FROM delq.key WHERE name = 'receipt'),
                                  convert_to((:'receipt'::jsonb - 'signature')::text, 'UTF8')), 'hex')
       AS documented_mac;
-- HMAC-SHA-256 itself (RFC 4231, test case 2)
SELECT encode(delq._hmac_sha256('Jefe', 'what do ya want for nothing?'), 'hex') AS rfc4231;
SELECT delq._hmac_sha256(NULL, 'x') IS NULL AS null_key, delq._hmac_sha256('k', NULL) IS NULL AS null_data;

--
-- Attributes listed in delq.redact_attributes appear as keyed hashes.
--
SET delq.redact_attributes = 'customer';
SELECT delq.receipt(:'r') #> '{request,attributes}' = jsonb_build_object(
           'plan', 'pro', 'customer', delq._subject_hash('c-52')) AS customer_hashed;
RESET delq.redact_attributes;

--
-- After a checkpoint the receipt names it; once archived, the outcomes
-- come from the archive.
--
SELECT chains > 0 AS checkpointed FROM delq.ledger_checkpoint();
SELECT delq.confirm(:'r', 'p52_b');
SELECT delq.archive() > 0 AS archived;
SELECT delq.receipt(:'r') AS receipt \gset
SELECT r #>> '{request,status}' AS status, r #> '{request,archived}' AS archived,
       r #>> '{request,finished_at}' IS NOT NULL AS has_finished_at,
       r #>> '{request,subject_hash}' = delq._subject_hash('ann.p52@example.com') AS hash_of_the_subject,
       (r #>> '{ledger,checkpoint,events}')::int < (r #>> '{ledger,events}')::int AS checkpoint_is_older,
       r #>> '{ledger,checkpoint,hash}' = (SELECT encode(c.hash, 'hex') FROM delq.ledger_checkpoint c
                                            ORDER BY c.id DESC LIMIT 1) AS last_checkpoint
  FROM (SELECT :'receipt'::jsonb AS r) x;
SELECT d ->> 'destination' AS destination, d ->> 'state' AS state, d -> 'attempts' AS attempts,
       d -> 'last_status' AS last_status, d ->> 'confirmed_at' IS NOT NULL AS has_confirmed_at
  FROM jsonb_array_elements(:'receipt'::jsonb -> 'destinations') d ORDER BY 1;
SELECT array_agg(t ->> 'kind' ORDER BY (t ->> 'id')::bigint) AS timeline
  FROM jsonb_array_elements(:'receipt'::jsonb -> 'timeline') t;
SELECT delq.verify_receipt(:'receipt') AS intact;

--
-- Bad arguments.
--
SELECT regress.snapshot();
SELECT regress.bad($$SELECT delq.receipt(NULL)$$);
SELECT regress.bad($$SELECT delq.receipt('a2c4e6f8-0000-4000-8000-000000000052')$$);
SELECT regress.bad($$SELECT delq.verify_receipt(NULL)$$);
SELECT regress.bad($$SELECT delq.verify_receipt('[1, 2]')$$);
SELECT regress.bad($$SELECT delq.verify_receipt('"receipt"')$$);
