--
-- privacy_deadlines: deadlines.  Earliest deadline first under backlog,
-- delq.extend() (GDPR Art. 12(3): once, at most two further months, with
-- reasons, before the deadline passes), the views at_risk and overdue,
-- and the alerts of delq.check_deadlines().  The NOTIFY payloads are
-- checked by test/t/050_privacy_alerts.pl.
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

SELECT delq.add_destination('p50_a', 'https://a.p50.example/erase', concurrency => 2);
SELECT delq.add_route('p50_a', '{"source": "p50"}') IS NOT NULL AS routed;

-- The setting and its default (defined when the library loads).
LOAD 'delq';
SHOW delq.warn_before;

-- Requests of other files that are at risk already are alerted first, so
-- that the counts below are this file's own.
SELECT delq.check_deadlines() >= 0 AS drained;

CREATE TEMP TABLE p50 (label text PRIMARY KEY, id uuid NOT NULL);
-- submitted in an order that is not the order of their deadlines
INSERT INTO p50 VALUES
    ('d20', delq.submit('d20.p50@example.com', 'p50', due_at => now() + interval '20 days')),
    ('d3', delq.submit('d3.p50@example.com', 'p50', due_at => now() + interval '3 days')),
    ('d30', delq.submit('d30.p50@example.com', 'p50')),
    ('d10', delq.submit('d10.p50@example.com', 'p50', due_at => now() + interval '10 days'));

--
-- Earliest deadline first.  p50_a takes two at a time (concurrency 2):
-- the claim picks the two requests due soonest, in deadline order.  Rolled
-- back, so nothing is sent.
--
BEGIN;
SELECT t.label FROM delq._claim(1000) WITH ORDINALITY c JOIN p50 t ON t.id = c.request_id
 ORDER BY c.ordinality;
ROLLBACK;

--
-- At risk: unfinished, due within delq.warn_before (7 days).
--
SELECT t.label, a.status, a.due_in > interval '2 days' AND a.due_in <= interval '3 days' AS due_in_3_days,
       a.deliveries
  FROM delq.at_risk a JOIN p50 t USING (id) ORDER BY t.label;
SELECT array_agg(a.attname ORDER BY a.attnum) AS at_risk_columns
  FROM pg_attribute a WHERE a.attrelid = 'delq.at_risk'::regclass AND a.attnum > 0;
SELECT array_agg(a.attname ORDER BY a.attnum) AS overdue_columns
  FROM pg_attribute a WHERE a.attrelid = 'delq.overdue'::regclass AND a.attnum > 0;

-- The setting moves the window.
SET delq.warn_before = '15d';
SELECT t.label FROM delq.at_risk a JOIN p50 t USING (id) ORDER BY a.due_at;
RESET delq.warn_before;

--
-- Alerts: each request once per level and deadline.
--
SELECT delq.check_deadlines() AS alerted;
SELECT delq.check_deadlines() AS alerted_again;
SELECT t.label, e.kind, e.actor, e.detail - 'due_at' AS detail,
       (e.detail ->> 'due_at')::timestamptz = p.due_at AS names_the_deadline
  FROM delq.event e JOIN p50 t ON t.id = e.request_id JOIN delq.pending p ON p.id = e.request_id
 WHERE e.kind IN ('at_risk', 'overdue') ORDER BY e.id;

-- 'late' is at risk, then overdue: two alerts.  (Time travel for the
-- test: a superuser moves the deadline into the past.)
INSERT INTO p50 VALUES ('late', delq.submit('late.p50@example.com', 'p50', due_at => now() + interval '1 hour'));
SELECT delq.check_deadlines() AS alerted;
UPDATE delq.pending SET due_at = now() - interval '1 hour' WHERE id = (SELECT id FROM p50 WHERE label = 'late');
UPDATE delq.delivery SET due_at = now() - interval '1 hour' WHERE request_id = (SELECT id FROM p50 WHERE label = 'late');
SELECT t.label, o.status, o.overdue_by > interval '0' AS overdue
  FROM delq.overdue o JOIN p50 t USING (id);
SELECT count(*) AS late_at_risk FROM delq.at_risk WHERE id = (SELECT id FROM p50 WHERE label = 'late');
SELECT delq.check_deadlines() AS alerted;
SELECT delq.check_deadlines() AS alerted_again;
SELECT e.kind, e.detail ->> 'status' AS status FROM delq.event e
 WHERE e.request_id = (SELECT id FROM p50 WHERE label = 'late') AND e.kind IN ('at_risk', 'overdue')
 ORDER BY e.id;
SELECT t.label, a.level FROM delq.deadline_alert a JOIN p50 t ON t.id = a.request_id ORDER BY t.label;

-- max_alerts caps one call; the rest follow in the next, earliest first.
SET delq.warn_before = '25d';
SELECT delq.check_deadlines(1) AS alerted;
SELECT t.label FROM delq.deadline_alert a JOIN p50 t ON t.id = a.request_id
 WHERE a.level = 'at_risk' ORDER BY a.due_at;
SELECT delq.check_deadlines() AS alerted;
RESET delq.warn_before;

--
-- extend(): once, by at most two months, before the deadline.
--
SELECT delq.extend((SELECT id FROM p50 WHERE label = 'd3'), '2 months',
                   'complex: the data is spread over eleven systems') AS new_due \gset
SELECT :'new_due'::timestamptz = due_at AS returns_the_new_deadline
  FROM delq.pending WHERE id = (SELECT id FROM p50 WHERE label = 'd3');
SELECT e.kind, e.detail ->> 'by' AS by, e.detail ->> 'reason' AS reason,
       (e.detail ->> 'previous_due_at')::timestamptz + interval '2 months'
           = (e.detail ->> 'due_at')::timestamptz AS moved_two_months
  FROM delq.event e
 WHERE e.request_id = (SELECT id FROM p50 WHERE label = 'd3') AND e.kind = 'extended';
-- the deliveries follow (the claim orders by them)
SELECT t.label, p.due_at = d.due_at AS delivery_follows
  FROM p50 t JOIN delq.pending p USING (id) JOIN delq.delivery d ON d.request_id = p.id
 WHERE t.label <> 'late'
 ORDER BY p.due_at;
-- d3 is no longer at risk, and no longer claimed first: the overdue
-- request is, then d10
SELECT t.label FROM delq.at_risk a JOIN p50 t USING (id);
BEGIN;
SELECT t.label FROM delq._claim(1000) WITH ORDINALITY c JOIN p50 t ON t.id = c.request_id
 ORDER BY c.ordinality;
ROLLBACK;

-- An extended request that becomes at risk again is alerted again, for
-- its new deadline.
INSERT INTO p50 VALUES ('again', delq.submit('again.p50@example.com', 'p50', due_at => now() + interval '2 days'));
SELECT delq.check_deadlines() AS alerted;
SELECT delq.extend((SELECT id FROM p50 WHERE label = 'again'), '1 day', 'a system is being restored from backup')
       IS NOT NULL AS extended;
SELECT delq.check_deadlines() AS alerted;
SELECT count(*) AS at_risk_alerts FROM delq.event
 WHERE request_id = (SELECT id FROM p50 WHERE label = 'again') AND kind = 'at_risk';

-- What extend() refuses.
SELECT delq.submit('done.p50@example.com', 'p50') AS done \gset
SELECT delq.confirm(:'done', 'p50_a');
SELECT regress.snapshot();
SELECT regress.bad($$SELECT delq.extend(NULL, '1 month', 'x')$$);
SELECT regress.bad($$SELECT delq.extend((SELECT id FROM p50 WHERE label = 'd10'), NULL, 'x')$$);
SELECT regress.bad($$SELECT delq.extend((SELECT id FROM p50 WHERE label = 'd10'), '1 month', NULL)$$);
SELECT regress.bad($$SELECT delq.extend((SELECT id FROM p50 WHERE label = 'd10'), '1 month', ' ')$$);
SELECT regress.bad($$SELECT delq.extend((SELECT id FROM p50 WHERE label = 'd10'), '0', 'x')$$);
SELECT regress.bad($$SELECT delq.extend((SELECT id FROM p50 WHERE label = 'd10'), '-1 day', 'x')$$);
SELECT regress.bad($$SELECT delq.extend((SELECT id FROM p50 WHERE label = 'd10'), '2 months 1 day', 'x')$$);
SELECT regress.bad($$SELECT delq.extend((SELECT id FROM p50 WHERE label = 'd10'), '61 days', 'x')$$);
SELECT regress.bad($$SELECT delq.extend('a2c4e6f8-0000-4000-8000-000000000050', '1 month', 'x')$$);
-- twice
SELECT regress.bad($$SELECT delq.extend((SELECT id FROM p50 WHERE label = 'd3'), '1 day', 'x')$$);
-- after the deadline
SELECT regress.bad($$SELECT delq.extend((SELECT id FROM p50 WHERE label = 'late'), '1 month', 'x')$$);
-- finished
SELECT regress.bad($$SELECT delq.extend('$$ || :'done' || $$', '1 month', 'x')$$);
SELECT regress.bad($$SELECT delq.check_deadlines(NULL)$$);
SELECT regress.bad($$SELECT delq.check_deadlines(0)$$);
-- exactly two months is allowed
SELECT delq.extend((SELECT id FROM p50 WHERE label = 'd10'), '2 months', 'many requests this month')
       IS NOT NULL AS extended;

-- No alert and no event holds a subject.
SELECT count(*) AS events_with_a_subject FROM delq.event e
 WHERE e.request_id IN (SELECT id FROM p50) AND e.detail::text LIKE '%p50@example.com%';
