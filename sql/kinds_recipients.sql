--
-- kinds_recipients: delq.explain_routes() (where a request would go,
-- and why not elsewhere) and delq.recipients() (GDPR Art. 19: where it
-- went, with each outcome and when), for webhook, templated HTTP and pull
-- destinations, pending, archived and redacted requests; recipients agree
-- with the receipt and the archive summary.  (SQL destinations:
-- sql/kinds_sql.sql; all kinds in one request: test/t/026_fanout_kinds.pl.)
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

CREATE ROLE k42_team NOLOGIN;
SELECT delq.add_destination('t42_hook', 'https://hook.t42.example/erase');
SELECT delq.add_destination('t42_paused', 'https://paused.t42.example/erase', enabled => false);
SELECT delq.add_destination('t42_noroute', 'https://noroute.t42.example/erase');
SELECT delq.add_destination('t42_api', 'https://api.t42.example',
                            request => '{"erase": {"method": "DELETE", "url": "/users/{{request_id}}"}}');
SELECT delq.add_pull_destination('t42_manual', 'k42_team');
SELECT delq.add_route('t42_hook', '{"source": "t42", "region": "eu"}') AS hook_eu \gset
SELECT delq.add_route('t42_hook', '{"source": "t42", "tags": ["crm"]}') AS hook_crm \gset
SELECT delq.add_route('t42_paused', '{"source": "t42"}') AS paused_all \gset
SELECT delq.add_route('t42_manual', '{"reason": "gdpr-art17"}') AS manual_art17 \gset
SELECT delq.add_route('t42_api', '{"source": "t42", "tier": 3}') AS api_tier3 \gset

--
-- explain_routes: every destination, each route, planned or not and why.
--
SELECT regress.snapshot();
SELECT destination, kind, enabled, planned, route_id = :hook_eu AS hook_eu, match, explanation
  FROM delq.explain_routes('t42', 'gdpr-art17', '{"region": "eu", "tier": 2}')
 WHERE destination LIKE 't42%';
SELECT destination, planned, match, explanation
  FROM delq.explain_routes('t42', NULL, '{"region": "us", "tags": ["crm", "web"]}')
 WHERE destination LIKE 't42%';
SELECT destination, planned, explanation
  FROM delq.explain_routes('other', 'ccpa', '{}')
 WHERE destination LIKE 't42%';
SELECT regress.unchanged();
SELECT regress.bad($$SELECT * FROM delq.explain_routes(NULL)$$);
SELECT regress.bad($$SELECT * FROM delq.explain_routes('T42')$$);
SELECT regress.bad($$SELECT * FROM delq.explain_routes('t42', '')$$);
SELECT regress.bad($$SELECT * FROM delq.explain_routes('t42', NULL, '{"source": "x"}')$$);
SELECT regress.bad($$SELECT * FROM delq.explain_routes('t42', NULL, '[1]')$$);
SELECT regress.bad($$SELECT * FROM delq.explain_routes('t42', NULL, NULL)$$);

-- What explain_routes says is what planning does.
SELECT delq.submit('ann.t42@example.com', 't42', 'gdpr-art17', '{"region": "eu", "tier": 2}') AS r1 \gset
SELECT (SELECT array_agg(DISTINCT destination ORDER BY destination) FROM delq.explain_routes('t42', 'gdpr-art17', '{"region": "eu", "tier": 2}') WHERE planned)
       = (SELECT array_agg(destination ORDER BY destination) FROM delq.delivery WHERE request_id = :'r1')
       AS explained_is_planned;

--
-- recipients: pending (nothing answered yet), then each outcome.
--
SELECT destination, kind, outcome, at, state, attempts FROM delq.recipients(:'r1');
-- as the engine claims and records (src/store.c)
UPDATE delq.delivery SET state = 'sending', attempts = 1, first_attempt_at = now(), last_attempt_at = now()
 WHERE request_id = :'r1' AND destination = 't42_hook';
SELECT delq._record(ARRAY[(SELECT id FROM delq.delivery WHERE request_id = :'r1' AND destination = 't42_hook')],
                    ARRAY['confirmed'], ARRAY[200], ARRAY[''], ARRAY[''], ARRAY[-1], ARRAY[false]);
SELECT webhook_id AS m1 FROM delq.take('t42_manual') \gset
SELECT delq.ack(:'m1', not_held => true, note => 'nothing in the paper files');
SELECT destination, kind, outcome, at IS NOT NULL AS has_at, state, attempts FROM delq.recipients(:'r1');
-- the paused destination is dropped: its delivery is cancelled and the
-- request completes
SELECT delq.drop_destination('t42_paused', cancel_deliveries => true);
SELECT status FROM delq.pending WHERE id = :'r1';
SELECT destination, kind, outcome, at IS NOT NULL AS has_at, state FROM delq.recipients(:'r1');
SELECT destination, outcome, at = (SELECT max(e.at) FROM delq.event e WHERE e.request_id = :'r1'
                                     AND e.destination = 't42_paused' AND e.kind = 'cancelled') AS at_cancel
  FROM delq.recipients(:'r1') WHERE outcome = 'cancelled';

-- A failed delivery.
SELECT delq.submit('bob.t42@example.com', 't42', NULL, '{"tags": ["crm"]}') AS r2 \gset
-- as the engine claims and records (src/store.c)
UPDATE delq.delivery SET state = 'sending', attempts = 1, first_attempt_at = now(), last_attempt_at = now()
 WHERE request_id = :'r2' AND destination = 't42_hook';
SELECT delq._record(ARRAY[(SELECT id FROM delq.delivery WHERE request_id = :'r2' AND destination = 't42_hook')],
                    ARRAY['failed'], ARRAY[400], ARRAY['HTTP 400'], ARRAY['HTTP 400: bad request'], ARRAY[-1], ARRAY[false]);
SELECT destination, kind, outcome, at IS NOT NULL AS has_at, state, attempts FROM delq.recipients(:'r2');

--
-- The receipt, the archive and recipients tell the same story: pending,
-- archived, and archived and redacted.
--
CREATE TEMP TABLE t42_story AS
SELECT 'pending' AS phase, r.* FROM delq.recipients(:'r1') r;
SELECT (SELECT jsonb_agg(jsonb_build_object('destination', d ->> 'destination', 'state', d ->> 'state',
                                            'attempts', (d ->> 'attempts')::int, 'webhook_id', d ->> 'webhook_id')
                         ORDER BY d ->> 'destination')
          FROM jsonb_array_elements(delq.receipt(:'r1') -> 'destinations') d)
       = (SELECT jsonb_agg(jsonb_build_object('destination', destination, 'state', state,
                                              'attempts', attempts, 'webhook_id', webhook_id)
                           ORDER BY destination)
            FROM delq.recipients(:'r1')) AS receipt_agrees;
SELECT delq.archive() >= 1 AS archived;
INSERT INTO t42_story SELECT 'archived', r.* FROM delq.recipients(:'r1') r;
SELECT (SELECT jsonb_agg(jsonb_build_object('destination', d ->> 'destination', 'state', d ->> 'state')
                         ORDER BY d ->> 'destination')
          FROM delq.finished f, jsonb_array_elements(f.deliveries) d WHERE f.id = :'r1')
       = (SELECT jsonb_agg(jsonb_build_object('destination', destination, 'state', state) ORDER BY destination)
            FROM delq.recipients(:'r1')) AS archive_agrees;
SELECT delq.redact('0') >= 1 AS redacted;
SELECT redacted_at IS NOT NULL AS redacted FROM delq.finished WHERE id = :'r1';
INSERT INTO t42_story SELECT 'redacted', r.* FROM delq.recipients(:'r1') r;
SELECT count(DISTINCT (destination, kind, outcome, at, state, attempts, webhook_id)) AS distinct_rows,
       count(*) AS rows
  FROM t42_story;
SELECT (delq.receipt(:'r1') -> 'destinations') = (SELECT deliveries FROM delq.finished WHERE id = :'r1')
       AS receipt_is_archive;

SELECT regress.snapshot();
SELECT regress.bad('SELECT * FROM delq.recipients(NULL)');
SELECT regress.bad($$SELECT * FROM delq.recipients('00000000-0000-4000-8000-000000000000')$$);
