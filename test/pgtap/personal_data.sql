-- personal_data.sql: the subject (and the attributes) of a request are
-- personal data.  They live in delq.pending and delq.finished only, which
-- delq_operator may read; delq.event is append-only and can never be
-- erased, so no event may ever hold them, whatever happens to the request.
-- No view shows a subject, and no error message repeats one.
--
-- Every subject and attribute value below contains "pd-marker".

\set ON_ERROR_STOP 1
SET client_min_messages = warning;

BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS delq;

SELECT plan(30);

SET delq.hold_period = 0;
SET delq.require_approval = off;

CREATE ROLE alice LOGIN IN ROLE delq_submitter;
CREATE ROLE bob LOGIN IN ROLE delq_operator;

CREATE TEMP TABLE ids (name text PRIMARY KEY, id uuid NOT NULL);
GRANT ALL ON ids TO PUBLIC;

-- The message, detail and hint of the error q raises (NULL if none).
CREATE FUNCTION pg_temp.error_text(q text)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    m text;
    d text;
    h text;
BEGIN
    EXECUTE q;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
    RETURN concat_ws(' | ', m, d, h);
END
$$;

SELECT lives_ok($$SELECT delq.add_destination('crm', 'https://crm.example.com/erase')$$,
                'a destination');
SELECT lives_ok($$SELECT delq.add_route('crm', '{"system": "crm"}')$$, 'and its route');

-- ----------------------------------------------------------------------
-- Requests through every path: completed and archived, rejected, failed
-- for want of a route and retried, approved.

SET SESSION AUTHORIZATION alice;
SELECT lives_ok($$INSERT INTO ids SELECT 'done', delq.submit(
                      'Jane Q. Public <jane.pd-marker-1@example.org>', 'shop', 'asked by phone',
                      '{"system": "crm", "customer": "pd-marker-cust-1"}', 'pd-1')$$,
                'alice submits a request that will complete');
SELECT lives_ok($$INSERT INTO ids SELECT 'lost', delq.submit(
                      'pd-marker-2 "quoted" O''Brien', 'shop',
                      attributes => '{"system": "billing", "customer": "pd-marker-cust-2"}')$$,
                'alice submits a request no route matches');
RESET SESSION AUTHORIZATION;

SET delq.require_approval = on;
SET SESSION AUTHORIZATION alice;
SELECT lives_ok($$INSERT INTO ids SELECT 'rejected', delq.submit('pd-marker-3@example.org', 'shop',
                      attributes => '{"system": "crm"}')$$,
                'alice submits a request that will be rejected');
SELECT lives_ok($$INSERT INTO ids SELECT 'approved', delq.submit('pd-marker-4@example.org', 'shop',
                      attributes => '{"system": "crm"}')$$,
                'alice submits a request that will be approved');
RESET SESSION AUTHORIZATION;

SELECT lives_ok($$SELECT delq.add_route('crm', '{"system": "billing"}')$$,
                'the route that the lost request lacked');

SET SESSION AUTHORIZATION bob;
SELECT lives_ok($$SELECT delq.confirm((SELECT id FROM ids WHERE name = 'done'), 'crm')$$,
                'bob confirms the first');
SELECT lives_ok($$SELECT delq.reject((SELECT id FROM ids WHERE name = 'rejected'), 'not a customer')$$,
                'bob rejects one');
SELECT lives_ok($$SELECT delq.approve((SELECT id FROM ids WHERE name = 'approved'))$$,
                'bob approves one');
SELECT lives_ok($$SELECT delq.retry((SELECT id FROM ids WHERE name = 'lost'))$$,
                'bob retries the failed one');
SELECT lives_ok($$SELECT delq.archive()$$, 'bob archives');
SELECT is((SELECT count(*)::integer FROM delq.finished WHERE subject ~ 'pd-marker'), 2,
          'bob reads subjects in delq.finished (operators may)');

SELECT is((SELECT count(*)::integer FROM delq.event e WHERE e::text ~* 'pd-marker'), 0,
          'no event holds a subject or an attribute value');
SELECT ok((SELECT count(*) FROM delq.event WHERE request_id IN (SELECT id FROM ids)) >= 12,
          'while the requests did write events');
SELECT is((SELECT count(*)::integer FROM delq.needs_attention n WHERE n::text ~* 'pd-marker'), 0,
          'delq.needs_attention shows no subject');
SELECT is((SELECT count(*)::integer FROM delq.overdue o WHERE o::text ~* 'pd-marker'), 0,
          'delq.overdue shows no subject');
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION alice;
SELECT is((SELECT count(*)::integer FROM delq.requests r
            WHERE r.id IN (SELECT id FROM ids) AND r::text ~* 'pd-marker'), 0,
          'delq.requests, which submitters read, shows no subject');
RESET SESSION AUTHORIZATION;

-- ----------------------------------------------------------------------
-- By construction: no view has a subject column, nor has the trail.

SELECT is((SELECT array_agg(c.relname::text ORDER BY c.relname)
             FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
            WHERE c.relnamespace = 'delq'::regnamespace AND c.relkind IN ('v', 'm')
              AND a.attname = 'subject' AND NOT a.attisdropped), NULL,
          'no view in delq has a subject column');
SELECT hasnt_column('delq', 'event', 'subject', 'delq.event has no subject column');

-- ----------------------------------------------------------------------
-- Refused submissions do not repeat the subject in the error (which a
-- client may log), whatever the argument at fault.

SET SESSION AUTHORIZATION alice;
SELECT unalike(pg_temp.error_text(format('SELECT delq.submit(%L, %L)',
                                         'pd-marker-' || repeat('x', 1000), 'shop')),
               '%pd-marker%', 'a too long subject is not echoed');
SELECT unalike(pg_temp.error_text(format('SELECT delq.submit(%L, %L)',
                                         E'pd-marker-5\x01@example.org', 'shop')),
               '%pd-marker%', 'a subject with control characters is not echoed');
SELECT unalike(pg_temp.error_text($$SELECT delq.submit('pd-marker-6@example.org', 'Not A Source')$$),
               '%pd-marker%', 'the subject is not echoed when the source is invalid');
SELECT unalike(pg_temp.error_text($$SELECT delq.submit('pd-marker-7@example.org', 'shop',
                                      attributes => '{"source": "x"}')$$),
               '%pd-marker%', 'the subject is not echoed when the attributes are invalid');
SELECT unalike(pg_temp.error_text($$SELECT delq.submit('pd-marker-8@example.org', 'shop',
                                      due_at => now() - interval '1 day')$$),
               '%pd-marker%', 'the subject is not echoed when due_at is in the past');
SELECT unalike(pg_temp.error_text($$SELECT delq.submit('pd-marker-9@example.org', 'shop',
                                      reason => repeat('r', 1001))$$),
               '%pd-marker%', 'the subject is not echoed when the reason is too long');
RESET SESSION AUTHORIZATION;

-- ----------------------------------------------------------------------
-- A destination may answer an erasure with an error page that repeats
-- what it was sent ("404: no customer jane@example.org").  The worker
-- records that answer; the subject in it must not reach delq.event.

SET delq.require_approval = off;
SET SESSION AUTHORIZATION alice;
SELECT lives_ok($$INSERT INTO ids SELECT 'echoed', delq.submit('pd-marker-10@example.org', 'shop',
                      attributes => '{"system": "crm"}')$$,
                'alice submits a request the destination will refuse');
RESET SESSION AUTHORIZATION;

-- What the worker does: claim (attempts + 1, 'sending'), send, record.
UPDATE delq.delivery SET state = 'sending', attempts = attempts + 1,
                         first_attempt_at = now(), last_attempt_at = now()
 WHERE request_id = (SELECT id FROM ids WHERE name = 'echoed');
SELECT lives_ok($$SELECT delq._record(
                      ARRAY[(SELECT id FROM delq.delivery
                              WHERE request_id = (SELECT id FROM ids WHERE name = 'echoed'))],
                      ARRAY['failed'], ARRAY[404], ARRAY['HTTP 404'],
                      ARRAY['HTTP 404: {"error": "no customer pd-marker-10@example.org"}'],
                      ARRAY[-1], ARRAY[false])$$,
                'the worker records the answer "HTTP 404" with the body that echoes the subject');
SET SESSION AUTHORIZATION bob;
SELECT is((SELECT state FROM delq.delivery
            WHERE request_id = (SELECT id FROM ids WHERE name = 'echoed')), 'failed',
          'the refused delivery failed');
SELECT is((SELECT count(*)::integer FROM delq.event e WHERE e::text ~* 'pd-marker'), 0,
          'no event holds the subject that a destination echoed in its error answer');
RESET SESSION AUTHORIZATION;

SELECT * FROM finish();
ROLLBACK;
