--
-- redact_batches: delq.redact() works in bounded batches (max_requests),
-- so a large backlog is never one long transaction (issue 10); the worker
-- calls it again at once while batches come back full (src/upkeep.c).
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

LOAD 'delq';
SELECT delq.add_destination('rb_a', 'https://a.rb.example/erase');
SELECT delq.add_route('rb_a', '{"source": "rb"}') IS NOT NULL AS routed;
CREATE TEMP TABLE rb AS
SELECT delq.submit('user' || g || '.rb@example.com', 'rb') AS id FROM generate_series(1, 5) g;
SELECT count(delq.confirm(id, 'rb_a')) AS confirmed FROM rb;
SELECT delq.archive() >= 5 AS archived;
-- time travel: these five finished long ago, before anything another file
-- of the suite (sharing the database) archived
UPDATE delq.finished SET completed_at = completed_at - interval '200 years'
 WHERE id IN (SELECT id FROM rb);

-- five due: batches of two, two, one, then nothing
SELECT delq.redact('199 years', 2) AS first;
SELECT delq.redact('199 years', 2) AS second;
SELECT delq.redact('199 years', 2) AS third;
SELECT delq.redact('199 years', 2) AS nothing_left;
SELECT count(*) FILTER (WHERE f.redacted_at IS NOT NULL) AS redacted
  FROM rb JOIN delq.finished f USING (id);
SELECT count(*) AS redacted_events FROM delq.event e
 WHERE e.kind = 'redacted' AND e.request_id IN (SELECT id FROM rb);

-- bounds
SELECT regress.sqlstate($$SELECT delq.redact('0', 0)$$) AS zero;
SELECT regress.sqlstate($$SELECT delq.redact('0', NULL)$$) AS null_max;
SELECT regress.sqlstate($$SELECT delq.redact('0', 1000001)$$) AS too_many;
