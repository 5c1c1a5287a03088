--
-- privacy_report: delq.report() (CCPA regs §7101, §7102), and who may
-- call the privacy functions.
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

SELECT delq.add_destination('p54_a', 'https://a.p54.example/erase');
SELECT delq.add_destination('p54_b', 'https://b.p54.example/erase');
SELECT delq.add_route('p54_a', '{"source": "p54"}') IS NOT NULL AS routed_a;
SELECT delq.add_route('p54_b', '{"source": "p54"}') IS NOT NULL AS routed_b;

-- Requests of a past year (time travel for the test: a superuser rewrites
-- the times, so no other file's request falls into 2020).
CREATE TEMP TABLE p54 (label text PRIMARY KEY, id uuid NOT NULL);
INSERT INTO p54 VALUES
    ('r1', delq.submit('r1.p54@example.com', 'p54')),
    ('r2', delq.submit('r2.p54@example.com', 'p54')),
    ('r3', delq.submit('r3.p54@example.com', 'p54')),
    ('r4', delq.submit('r4.p54@example.com', 'p54')),
    ('r5', delq.submit('r5.p54@example.com', 'p54'));
SELECT delq.confirm(t.id, d) FROM p54 t, unnest(ARRAY['p54_a', 'p54_b']) d
 WHERE t.label IN ('r1', 'r2', 'r5') ORDER BY t.label, d;
SELECT delq.reject((SELECT id FROM p54 WHERE label = 'r3'), 'not a customer');
UPDATE delq.delivery SET state = 'failed', attempts = 3, last_status = 404
 WHERE request_id = (SELECT id FROM p54 WHERE label = 'r4') AND destination = 'p54_b';

--   label  submitted   due         done                  p54_a confirmed  p54_b confirmed
--   r1     2020-01-10  2020-02-09  completed 2020-01-20  2020-01-12       2020-01-20
--   r2     2020-02-01  2020-03-02  completed 2020-03-15  2020-02-05       2020-03-15 (late)
--   r3     2020-03-01  2020-03-31  rejected  2020-03-04  cancelled        cancelled
--   r4     2020-12-20  2021-01-19  open                  queued           failed
--   r5     2019-12-20  2020-01-19  completed 2020-01-05  2020-01-02       2020-01-05
CREATE TEMP TABLE p54_times (label text, submitted timestamptz, due timestamptz, done timestamptz,
                             a_confirmed timestamptz, b_confirmed timestamptz);
INSERT INTO p54_times VALUES
    ('r1', '2020-01-10 12:00+00', '2020-02-09 12:00+00', '2020-01-20 12:00+00', '2020-01-12 12:00+00', '2020-01-20 12:00+00'),
    ('r2', '2020-02-01 12:00+00', '2020-03-02 12:00+00', '2020-03-15 12:00+00', '2020-02-05 12:00+00', '2020-03-15 12:00+00'),
    ('r3', '2020-03-01 12:00+00', '2020-03-31 12:00+00', '2020-03-04 12:00+00', NULL, NULL),
    ('r4', '2020-12-20 12:00+00', '2021-01-19 12:00+00', NULL, NULL, NULL),
    ('r5', '2019-12-20 12:00+00', '2020-01-19 12:00+00', '2020-01-05 12:00+00', '2020-01-02 12:00+00', '2020-01-05 12:00+00');
UPDATE delq.pending p
   SET submitted_at = x.submitted, due_at = x.due,
       completed_at = CASE WHEN p.status = 'completed' THEN x.done END,
       rejected_at = CASE WHEN p.status = 'rejected' THEN x.done END
  FROM p54 t JOIN p54_times x USING (label) WHERE p.id = t.id;
UPDATE delq.delivery dl
   SET due_at = x.due,
       confirmed_at = CASE dl.destination WHEN 'p54_a' THEN x.a_confirmed ELSE x.b_confirmed END
  FROM p54 t JOIN p54_times x USING (label) WHERE dl.request_id = t.id;
-- r1, r3 and r5 are archived (the report reads their delivery summary);
-- r2 stays pending, completed
UPDATE delq.pending SET completed_at = now() WHERE id = (SELECT id FROM p54 WHERE label = 'r2');
SELECT delq.archive('1 day') > 0 AS archived;
UPDATE delq.pending SET completed_at = '2020-03-15 12:00+00' WHERE id = (SELECT id FROM p54 WHERE label = 'r2');
SELECT t.label, coalesce(p.status, f.status) AS status, f.id IS NOT NULL AS archived
  FROM p54 t LEFT JOIN delq.pending p USING (id) LEFT JOIN delq.finished f USING (id)
 ORDER BY t.label;

--
-- 2020: received r1-r4; completed r1, r2, r5 (10, 43 and 16 days);
-- rejected r3 (3 days); overdue r2.
--
SELECT jsonb_pretty(delq.report('2020-01-01 00:00+00', '2021-01-01 00:00+00')) AS report;
-- the first quarter
SELECT delq.report('2020-01-01 00:00+00', '2020-04-01 00:00+00') -> 'requests' AS q1;
-- a period without requests
SELECT delq.report('2010-01-01 00:00+00', '2011-01-01 00:00+00') AS empty;

SELECT regress.snapshot();
SELECT regress.bad($$SELECT delq.report(NULL, now())$$);
SELECT regress.bad($$SELECT delq.report(now(), NULL)$$);
SELECT regress.bad($$SELECT delq.report(now(), now() - interval '1 day')$$);
SELECT regress.bad($$SELECT delq.report(now(), now())$$);

--
-- Who may call what: delq_operator everything here; delq_submitter and
-- others nothing; the keys only delq_admin.
--
SELECT f.fn, r.role, has_function_privilege(r.role, f.fn, 'EXECUTE') AS may
  FROM (VALUES ('delq.extend(uuid,interval,text)'), ('delq.check_deadlines(integer)'),
               ('delq.receipt(uuid)'), ('delq.verify_receipt(jsonb)'),
               ('delq.report(timestamptz,timestamptz)'), ('delq.was_erased(text,text)'),
               ('delq.redact(interval,integer)'), ('delq.ledger_checkpoint(interval)'),
               ('delq.verify_ledger()'), ('delq.guard()'),
               ('delq._hmac_sha256(bytea,bytea)'), ('delq._subject_hash(text)'),
               ('delq._secret(text)')) AS f(fn),
       (VALUES ('public'), ('delq_submitter'), ('delq_operator')) AS r(role)
 WHERE r.role <> 'public' OR has_function_privilege('public', f.fn, 'EXECUTE')
 ORDER BY f.fn, r.role;
SELECT t.rel, r.role, has_table_privilege(r.role, t.rel, 'SELECT') AS may_read,
       has_table_privilege(r.role, t.rel, 'INSERT, UPDATE, DELETE, TRUNCATE') AS may_write
  FROM (VALUES ('delq.at_risk'), ('delq.key'), ('delq.ledger_head'), ('delq.ledger_checkpoint'),
               ('delq.ledger_checkpoint_head'), ('delq.deadline_alert')) AS t(rel),
       (VALUES ('delq_submitter'), ('delq_operator'), ('delq_admin')) AS r(role)
 ORDER BY t.rel, r.role;

-- And by running them as login members.
CREATE FUNCTION pg_temp.try(sql text)
RETURNS text
LANGUAGE plpgsql
AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
CREATE ROLE p54_operator LOGIN IN ROLE delq_operator;
CREATE ROLE p54_submitter LOGIN IN ROLE delq_submitter;
CREATE ROLE p54_admin LOGIN IN ROLE delq_admin;
SET SESSION AUTHORIZATION p54_operator;
SELECT count(*) >= 0 AS verified FROM delq.verify_ledger();
SELECT delq.verify_receipt(delq.receipt((SELECT id FROM delq.finished WHERE source = 'p54' LIMIT 1))) AS receipt;
SELECT delq.was_erased('r1.p54@example.com') AS erased;
SELECT (delq.report('2020-01-01', '2021-01-01') #> '{requests,received}') AS received;
SELECT delq.check_deadlines() >= 0 AS checked, delq.redact() >= 0 AS redacted;
SELECT count(*) >= 0 AS at_risk FROM delq.at_risk;
SELECT pg_temp.try($$SELECT count(*) FROM delq.key$$) AS key;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION p54_submitter;
SELECT pg_temp.try($$SELECT delq.was_erased('r1.p54@example.com')$$) AS was_erased;
SELECT pg_temp.try($$SELECT delq.receipt('a2c4e6f8-0000-4000-8000-000000000054')$$) AS receipt;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION p54_admin;
SELECT array_agg(name ORDER BY name) AS keys FROM delq.key;
RESET SESSION AUTHORIZATION;
DROP ROLE p54_operator, p54_submitter, p54_admin;
