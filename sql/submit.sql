--
-- submit: delq.submit(), holding, approval and routing.
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

-- A setting made before the library is loaded (a placeholder, as from
-- ALTER DATABASE ... SET) takes effect once delq loads.
SET delq.default_deadline = '7d';
SELECT delq.add_destination('t02_all', 'https://all.t02.example/erase');
SELECT delq.add_route('t02_all') AS route_all \gset
SELECT delq.submit('ann.t02@example.com', 't02') AS r_week \gset
SHOW delq.default_deadline;
SELECT due_at = submitted_at + interval '7 days' AS due_in_seven_days
  FROM delq.pending WHERE id = :'r_week';
RESET delq.default_deadline;

-- A plain submit: forwarding at once, one queued delivery per matching
-- destination, due in delq.default_deadline (30 days).
SHOW delq.default_deadline;
SELECT delq.submit('bob.t02@example.com', 't02', 'gdpr', '{"plan": "pro"}') AS r1 \gset
SELECT source, external_id, subject, reason, attributes, status, rejected,
       rejection_reason, completed_at, failure_reason, hold_until,
       due_at = submitted_at + interval '30 days' AS due_in_thirty_days
  FROM delq.pending WHERE id = :'r1';
SELECT destination, state, attempts, webhook_id ~ '^msg_[0-9a-f]{32}$' AS webhook_id_ok,
       due_at = (SELECT due_at FROM delq.pending WHERE id = :'r1') AS due_copied,
       last_status, last_error, confirmed_at
  FROM delq.delivery WHERE request_id = :'r1';
SELECT kind, destination, detail, actor = session_user AS by_session_user
  FROM delq.event WHERE request_id = :'r1' ORDER BY id;

-- An explicit deadline is kept as given; at most 365 days ahead, and
-- finite (a far deadline would never be at risk, overdue or late).
SELECT date_trunc('second', now()) + interval '300 days' AS due300 \gset
SELECT delq.submit('cy.t02@example.com', 't02', due_at => :'due300') AS r_due \gset
SELECT due_at = :'due300' AS due_as_given FROM delq.pending WHERE id = :'r_due';
SELECT regress.snapshot();
SELECT regress.bad($$SELECT delq.submit('cy.t02@example.com', 't02', due_at => 'infinity')$$);
SELECT regress.bad($$SELECT delq.submit('cy.t02@example.com', 't02', due_at => now() + interval '366 days')$$)
       ~ '^22023: due_at is too far ahead \(.*\) \| nothing written$' AS after_365_days_refused;

--
-- Idempotency on (source, external_id): the first request wins and a
-- repeat for the same subject creates nothing, whatever else it passes;
-- a repeat for another subject is refused (23505), so that no one can
-- take a key that another submitter's request will use.
--
SELECT delq.submit('dee.t02@example.com', 't02', external_id => 'T02-1') AS k1 \gset
SELECT count(*) AS keys FROM delq.request_key WHERE source = 't02' AND external_id = 'T02-1';
SELECT regress.snapshot();
SELECT delq.submit('dee.t02@example.com', 't02', external_id => 'T02-1') = :'k1' AS same_id;
SELECT regress.unchanged();
SELECT delq.submit('dee.t02@example.com', 't02', 'ccpa', '{"plan": "free"}', 'T02-1',
                   now() + interval '1 day') = :'k1' AS same_id;
SELECT regress.unchanged();
SELECT regress.bad($$SELECT delq.submit('other.t02@example.com', 't02', external_id => 'T02-1')$$);
SELECT regress.bad($$SELECT delq.submit('DEE.t02@example.com', 't02', external_id => 'T02-1')$$);
SELECT subject, reason, attributes FROM delq.pending WHERE id = :'k1';
-- The same external_id from another source is another request.
SELECT delq.submit('dee.t02@example.com', 't02b', external_id => 'T02-1') <> :'k1' AS new_id;
SELECT count(*) AS keys FROM delq.request_key WHERE external_id = 'T02-1';
-- Without external_id every call is a new request.
SELECT count(DISTINCT delq.submit('eve.t02@example.com', 't02')) AS distinct_ids
  FROM generate_series(1, 3);
SELECT count(*) AS requests FROM delq.pending WHERE subject = 'eve.t02@example.com';

--
-- delq.hold_period keeps a request held (rejectable) before it is
-- forwarded; approve() releases it at once and plans its deliveries.
--
SET delq.hold_period = '1h';
SELECT delq.submit('fay.t02@example.com', 't02') AS h1 \gset
SELECT status, hold_until = submitted_at + interval '1 hour' AS held_for_an_hour
  FROM delq.pending WHERE id = :'h1';
SELECT count(*) AS deliveries FROM delq.delivery WHERE request_id = :'h1';
SELECT delq._release_held(100) AS released;
SELECT status FROM delq.pending WHERE id = :'h1';
SELECT delq.approve(:'h1');
SELECT status FROM delq.pending WHERE id = :'h1';
SELECT destination, state FROM delq.delivery WHERE request_id = :'h1';
SELECT kind, destination, detail FROM delq.event WHERE request_id = :'h1' ORDER BY id;
RESET delq.hold_period;

-- delq.require_approval keeps a request held until approve(), whatever
-- the hold period.
SET delq.require_approval = on;
SELECT delq.submit('gus.t02@example.com', 't02') AS h2 \gset
SELECT status, hold_until FROM delq.pending WHERE id = :'h2';
SET delq.hold_period = '1s';
SELECT delq.submit('hal.t02@example.com', 't02') AS h3 \gset
RESET delq.require_approval;
SELECT delq.submit('ida.t02@example.com', 't02') AS h4 \gset
RESET delq.hold_period;
SELECT status, hold_until IS NULL AS awaiting_approval FROM delq.pending WHERE id = :'h3';
SELECT status, hold_until = submitted_at + interval '1 second' AS held_for_a_second
  FROM delq.pending WHERE id = :'h4';
-- Once the hold period is over, a release pass (worker or dispatch)
-- forwards h4 but not the requests that await approval.
SELECT pg_sleep(1.2);
SELECT delq._release_held(100) AS released;
SELECT id = :'h4' AS is_h4, status FROM delq.pending
 WHERE id IN (:'h2', :'h3', :'h4') ORDER BY status, id = :'h4';
SELECT kind, detail, actor FROM delq.event
 WHERE request_id = :'h4' AND kind = 'released';
SELECT delq.approve(:'h2');
SELECT delq.approve(:'h3');
SELECT count(*) FILTER (WHERE status = 'forwarding') AS forwarding,
       count(*) FILTER (WHERE d.n = 1) AS with_one_delivery
  FROM delq.pending p,
       LATERAL (SELECT count(*) AS n FROM delq.delivery dl WHERE dl.request_id = p.id) d
 WHERE p.id IN (:'h2', :'h3', :'h4');
SELECT kind, actor = session_user AS by_session_user FROM delq.event
 WHERE request_id = :'h2' ORDER BY id;

--
-- Routing: a request goes to each destination with a route whose match
-- its routing document (attributes plus source and reason) contains.
--
SELECT delq.drop_route(:route_all);
SELECT delq.add_destination('t02_eu', 'https://eu.t02.example/erase');
SELECT delq.add_destination('t02_us', 'https://us.t02.example/erase');
SELECT delq.add_destination('t02_ccpa', 'https://ccpa.t02.example/erase');
SELECT delq.add_destination('t02_shop', 'https://shop.t02.example/erase');
SELECT count(*) AS routes FROM (VALUES
    (delq.add_route('t02_eu', '{"region": "eu"}')),
    (delq.add_route('t02_us', '{"region": "us"}')),
    (delq.add_route('t02_us', '{"tags": ["crm"]}')),
    (delq.add_route('t02_ccpa', '{"reason": "ccpa"}')),
    (delq.add_route('t02_shop', '{"source": "t02shop"}')),
    (delq.add_route('t02_eu', '{"source": "t02shop", "tier": "gold"}'))) r(id);

CREATE TEMP TABLE routed AS
SELECT label, delq.submit(label || '.t02@example.com', source, reason, attributes::jsonb) AS id
  FROM (VALUES
    ('eu',         't02',     NULL,   '{"region": "eu"}'),
    ('us',         't02',     'gdpr', '{"region": "us", "tier": "gold"}'),
    ('ccpa',       't02',     'ccpa', '{"region": "us"}'),
    ('ccpa-only',  't02',     'ccpa', '{}'),
    ('shop',       't02shop', NULL,   '{}'),
    ('shop-gold',  't02shop', NULL,   '{"tier": "gold"}'),
    ('shop-silver','t02shop', NULL,   '{"tier": "silver"}'),
    ('tags',       't02',     NULL,   '{"tags": ["ads", "crm"]}'),
    ('tag-other',  't02',     NULL,   '{"tags": ["ads"]}'),
    ('case',       't02',     NULL,   '{"region": "EU"}'),
    ('nested',     't02',     NULL,   '{"meta": {"region": "eu"}}'),
    ('nothing',    't02',     NULL,   '{}')
  ) v(label, source, reason, attributes);
SELECT r.label, p.status, p.failure_reason,
       (SELECT coalesce(array_agg(dl.destination ORDER BY dl.destination), '{}')
          FROM delq.delivery dl WHERE dl.request_id = r.id) AS destinations
  FROM routed r JOIN delq.pending p USING (id)
 ORDER BY r.label;

-- No route matched: failed, with the reason, visible to operators; the
-- audit trail names the routing keys but not their values.
SELECT kind, detail FROM delq.event
 WHERE request_id = (SELECT id FROM routed WHERE label = 'nested') ORDER BY id;
SELECT r.label, n.destination, n.problem, n.detail
  FROM delq.needs_attention n JOIN routed r ON r.id = n.request_id
 ORDER BY r.label;

-- After a route is added, delq.retry() plans the request again.
SELECT delq.add_route('t02_eu', '{"region": "EU"}') AS route_upper \gset
SELECT delq.retry(id) AS planned FROM routed WHERE label = 'case';
SELECT p.status, p.failure_reason, dl.destination, dl.state
  FROM routed r JOIN delq.pending p USING (id)
  LEFT JOIN delq.delivery dl ON dl.request_id = p.id
 WHERE r.label = 'case';
SELECT kind, destination, detail FROM delq.event
 WHERE request_id = (SELECT id FROM routed WHERE label = 'case') ORDER BY id;
-- Still nothing matches: retry plans nothing and the request stays failed.
SELECT delq.retry(id) AS planned FROM routed WHERE label = 'nothing';
SELECT status, failure_reason FROM delq.pending
 WHERE id = (SELECT id FROM routed WHERE label = 'nothing');

-- '{}' matches everything.
SELECT delq.add_destination('t02_every', 'https://every.t02.example/erase');
SELECT delq.add_route('t02_every', '{}') AS route_every \gset
SELECT delq.retry(id) AS planned FROM routed WHERE label = 'nothing';
SELECT delq.submit('jo.t02@example.com', 't02shop', 'ccpa', '{"region": "us"}') AS r_all \gset
SELECT array_agg(destination ORDER BY destination) AS destinations
  FROM delq.delivery WHERE request_id = :'r_all';

-- Leave none of this file's routes behind.
SELECT count(*) AS dropped FROM (SELECT delq.drop_route(id) FROM delq.route WHERE destination LIKE 't02\_%') d;
SELECT count(*) AS routes FROM delq.route WHERE destination LIKE 't02\_%';
