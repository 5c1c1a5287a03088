-- roles.sql: the three delq roles, used for real by login members of them.
--
-- alice (delq_submitter) files requests and reads their status; bob
-- (delq_operator) approves, rejects, retries, confirms and archives them;
-- carol (delq_admin) manages destinations and routes; mallory has no grant.
-- Each one does what the role allows, and a sample of what it does not is
-- refused with 42501 (privileges.sql checks every object exhaustively).
-- Sessions switch with SET SESSION AUTHORIZATION, so that session_user,
-- the events' actor, is the login role.

\set ON_ERROR_STOP 1
SET client_min_messages = warning;

BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS delq;

SELECT plan(88);

SET delq.hold_period = 0;
SET delq.require_approval = off;

CREATE ROLE alice LOGIN IN ROLE delq_submitter;
CREATE ROLE bob LOGIN IN ROLE delq_operator;
CREATE ROLE carol LOGIN IN ROLE delq_admin;
CREATE ROLE mallory LOGIN;

-- Request ids, written by the role sessions.
CREATE TEMP TABLE ids (name text PRIMARY KEY, id uuid NOT NULL);
GRANT ALL ON ids TO PUBLIC;

-- ----------------------------------------------------------------------
-- The roles themselves: NOLOGIN group roles without attributes, in a chain.

SELECT has_role(r, format('role %s exists', r))
  FROM unnest(ARRAY['delq_submitter', 'delq_operator', 'delq_admin']) r;
SELECT is((SELECT ARRAY[rolcanlogin, rolsuper, rolcreaterole, rolcreatedb,
                        rolreplication, rolbypassrls]
             FROM pg_roles WHERE rolname = r),
          ARRAY[false, false, false, false, false, false],
          format('%s is NOLOGIN, not superuser, cannot create roles or databases, replicate or bypass RLS', r))
  FROM unnest(ARRAY['delq_submitter', 'delq_operator', 'delq_admin']) r;
SELECT is_member_of('delq_submitter', 'delq_operator', 'delq_operator includes delq_submitter');
SELECT is_member_of('delq_operator', 'delq_admin', 'delq_admin includes delq_operator');
SELECT ok(NOT pg_has_role('delq_submitter', 'delq_operator', 'USAGE'),
          'delq_submitter does not include delq_operator');
SELECT ok(NOT pg_has_role('delq_operator', 'delq_admin', 'USAGE'),
          'delq_operator does not include delq_admin');

-- ----------------------------------------------------------------------
-- carol, delq_admin: destinations and routes, secrets included.

SET SESSION AUTHORIZATION carol;
SELECT lives_ok($$SELECT delq.add_destination('crm', 'https://crm.example.com/erase',
                      headers => '{"Authorization": "Bearer crm-token"}',
                      secret => 'whsec_p2GvH+EFQYum2Dvi4ffgW92gAdVBUeUZbS+XLTpD2fE=')$$,
                'carol can add a destination');
SELECT lives_ok($$SELECT delq.add_route('crm', '{"system": "crm"}')$$,
                'carol can add a route');
SELECT lives_ok($$SELECT delq.alter_destination('crm', timeout => '20 seconds')$$,
                'carol can alter a destination');
SELECT lives_ok($$SELECT delq.add_destination('scratch', 'https://scratch.example.com/')$$,
                'carol can add a second destination');
SELECT lives_ok($$SELECT delq.add_route('scratch', '{"system": "scratch"}')$$,
                'carol can add a route to it');
SELECT lives_ok($$SELECT delq.drop_route((SELECT id FROM delq.route WHERE destination = 'scratch'))$$,
                'carol can drop a route');
SELECT lives_ok($$SELECT delq.drop_destination('scratch')$$,
                'carol can drop a destination');
SELECT is((SELECT secret FROM delq.destination WHERE name = 'crm'),
          'whsec_p2GvH+EFQYum2Dvi4ffgW92gAdVBUeUZbS+XLTpD2fE=',
          'carol can read a destination''s secret');
SELECT is((SELECT headers FROM delq.destination WHERE name = 'crm'),
          '{"Authorization": "Bearer crm-token"}'::jsonb,
          'carol can read a destination''s headers');
SELECT is((SELECT count(*)::integer FROM delq.destination), 1,
          'carol sees the destination that is left');
SELECT lives_ok($$SELECT delq.worker_running()$$, 'carol can ask whether the worker runs');
SELECT lives_ok($$INSERT INTO ids SELECT 'c1', delq.submit('carol.own@example.com', 'admin', external_id => 'c-1')$$,
                'carol can submit (delq_admin includes delq_submitter)');
RESET SESSION AUTHORIZATION;

-- ----------------------------------------------------------------------
-- alice, delq_submitter: submit and read status, nothing else.

SET SESSION AUTHORIZATION alice;
SELECT lives_ok($$INSERT INTO ids SELECT 'a1', delq.submit('jane.doe@example.com', 'shop',
                      'customer asked', '{"system": "crm"}', 'ticket-1')$$,
                'alice can submit a request');
SELECT is((SELECT status FROM delq.requests WHERE id = (SELECT id FROM ids WHERE name = 'a1')),
          'forwarding', 'alice reads its status in delq.requests');
SELECT is((SELECT deliveries FROM delq.requests WHERE id = (SELECT id FROM ids WHERE name = 'a1')),
          '{"crm": "queued"}'::jsonb, 'alice reads its deliveries in delq.requests');
SELECT is(delq.submit('jane.doe@example.com', 'shop', external_id => 'ticket-1'),
          (SELECT id FROM ids WHERE name = 'a1'),
          'alice gets the same id for the same (source, external_id)');

SELECT throws_ok($$SELECT delq.approve((SELECT id FROM ids WHERE name = 'a1'))$$, '42501', NULL,
                 'alice cannot approve');
SELECT throws_ok($$SELECT delq.reject((SELECT id FROM ids WHERE name = 'a1'), 'no')$$, '42501', NULL,
                 'alice cannot reject');
SELECT throws_ok($$SELECT delq.confirm((SELECT id FROM ids WHERE name = 'a1'), 'crm')$$, '42501', NULL,
                 'alice cannot confirm');
SELECT throws_ok($$SELECT delq.archive()$$, '42501', NULL, 'alice cannot archive');
SELECT throws_ok($$SELECT delq.add_destination('evil', 'https://evil.example.com/')$$, '42501', NULL,
                 'alice cannot add a destination');
SELECT throws_ok($$SELECT subject FROM delq.pending$$, '42501', NULL,
                 'alice cannot read delq.pending (subjects)');
SELECT throws_ok($$SELECT * FROM delq.event$$, '42501', NULL, 'alice cannot read delq.event');
SELECT throws_ok($$SELECT * FROM delq.destinations$$, '42501', NULL,
                 'alice cannot read delq.destinations');
SELECT throws_ok($$INSERT INTO delq.pending (source, subject, status, due_at)
                   VALUES ('shop', 'x', 'completed', now() + interval '1 day')$$, '42501', NULL,
                 'alice cannot insert into delq.pending');
SELECT throws_ok($$UPDATE delq.delivery SET state = 'confirmed'$$, '42501', NULL,
                 'alice cannot update delq.delivery');
SELECT throws_ok($$SELECT delq._log('forged', NULL, NULL, '{}', 'bob')$$, '42501', NULL,
                 'alice cannot call the internal delq._log');
SELECT throws_ok($$SELECT delq._plan((SELECT id FROM ids WHERE name = 'a1'))$$, '42501', NULL,
                 'alice cannot call the internal delq._plan');
-- Settings that decide whether a request waits for an operator are
-- superuser-only (PGC_SUSET), so a submitter cannot skip the approval.
SELECT throws_ok($$SET delq.require_approval = off$$, '42501', NULL,
                 'alice cannot SET delq.require_approval');
SELECT throws_ok($$SET delq.hold_period = 0$$, '42501', NULL,
                 'alice cannot SET delq.hold_period');
SELECT throws_ok($$SELECT set_config('delq.require_approval', 'off', true)$$, '42501', NULL,
                 'alice cannot set_config delq.require_approval');
SELECT throws_ok($$SET delq.default_deadline = '1y'$$, '42501', NULL,
                 'alice cannot SET delq.default_deadline');
RESET SESSION AUTHORIZATION;

-- Requests that wait for an operator.
SET delq.require_approval = on;
SET SESSION AUTHORIZATION alice;
SELECT lives_ok($$INSERT INTO ids SELECT 'a2', delq.submit('john.roe@example.com', 'shop',
                      attributes => '{"system": "crm"}')$$, 'alice submits a held request');
SELECT lives_ok($$INSERT INTO ids SELECT 'a3', delq.submit('max.mustermann@example.com', 'shop',
                      attributes => '{"system": "crm"}')$$, 'alice submits another held request');
SELECT lives_ok($$INSERT INTO ids SELECT 'a4', delq.submit('erika.musterfrau@example.com', 'shop',
                      attributes => '{"system": "billing"}')$$, 'alice submits a request no route matches');
SELECT is((SELECT status FROM delq.requests WHERE id = (SELECT id FROM ids WHERE name = 'a2')),
          'held', 'with delq.require_approval, alice''s request is held');
RESET SESSION AUTHORIZATION;

-- ----------------------------------------------------------------------
-- bob, delq_operator: act on requests, read everything but secrets.

SET SESSION AUTHORIZATION bob;
SELECT lives_ok($$SELECT delq.approve((SELECT id FROM ids WHERE name = 'a2'))$$,
                'bob can approve');
SELECT is((SELECT status FROM delq.pending WHERE id = (SELECT id FROM ids WHERE name = 'a2')),
          'forwarding', 'the approved request is forwarding');
SELECT lives_ok($$SELECT delq.reject((SELECT id FROM ids WHERE name = 'a3'), 'duplicate of ticket-1')$$,
                'bob can reject');
SELECT is((SELECT status FROM delq.pending WHERE id = (SELECT id FROM ids WHERE name = 'a3')),
          'rejected', 'the rejected request is rejected');
SELECT lives_ok($$SELECT delq.approve((SELECT id FROM ids WHERE name = 'a4'))$$,
                'bob approves the request no route matches');
SELECT is((SELECT status FROM delq.pending WHERE id = (SELECT id FROM ids WHERE name = 'a4')),
          'failed', 'it fails for want of a route');
SELECT is((SELECT count(*)::integer FROM delq.needs_attention
            WHERE request_id = (SELECT id FROM ids WHERE name = 'a4')), 1,
          'bob sees it in delq.needs_attention');
SELECT throws_ok($$SELECT delq.add_route('crm', '{"system": "billing"}')$$, '42501', NULL,
                 'bob cannot add the missing route');
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION carol;
SELECT lives_ok($$SELECT delq.add_route('crm', '{"system": "billing"}')$$,
                'carol adds the missing route');
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION bob;
SELECT is(delq.retry((SELECT id FROM ids WHERE name = 'a4')), 1,
          'bob can retry: the failed request is planned again');
SELECT is(delq.confirm((SELECT id FROM ids WHERE name = 'a1'), 'crm'), true,
          'bob can confirm a delivery');
SELECT is((SELECT status FROM delq.pending WHERE id = (SELECT id FROM ids WHERE name = 'a1')),
          'completed', 'the confirmed request is completed');
SELECT is(delq.archive(), 2::bigint, 'bob can archive (the completed and the rejected request)');
SELECT is((SELECT count(*)::integer FROM delq.finished
            WHERE id IN (SELECT id FROM ids WHERE name IN ('a1', 'a3'))), 2,
          'bob reads them in delq.finished');
SELECT lives_ok($$SELECT delq.worker_running()$$, 'bob can ask whether the worker runs');
SELECT lives_ok($$INSERT INTO ids SELECT 'b1', delq.submit('bob.own@example.com', 'ops')$$,
                'bob can submit (delq_operator includes delq_submitter)');
SELECT lives_ok($$SELECT * FROM delq.pending, delq.delivery, delq.event, delq.route
                    LIMIT 1$$, 'bob can read pending, delivery, event and route');
SELECT lives_ok($$SELECT * FROM delq.finished, delq.overdue, delq.needs_attention,
                    delq.destinations, delq.requests LIMIT 1$$,
                'bob can read finished, overdue, needs_attention, destinations and requests');
SELECT is((SELECT signed FROM delq.destinations WHERE name = 'crm'), true,
          'bob sees that crm is signed');

SELECT throws_ok($$SELECT secret FROM delq.destination$$, '42501', NULL,
                 'bob cannot read secrets in delq.destination');
SELECT throws_ok($$SELECT name FROM delq.destination$$, '42501', NULL,
                 'bob cannot read any column of delq.destination');
SELECT throws_ok($$SELECT delq.add_destination('evil', 'https://evil.example.com/')$$, '42501', NULL,
                 'bob cannot add a destination');
SELECT throws_ok($$SELECT delq.alter_destination('crm', url => 'https://evil.example.com/')$$, '42501', NULL,
                 'bob cannot redirect a destination');
SELECT throws_ok($$SELECT delq.drop_destination('crm', true)$$, '42501', NULL,
                 'bob cannot drop a destination');
SELECT throws_ok($$SELECT delq.drop_route((SELECT min(id) FROM delq.route))$$, '42501', NULL,
                 'bob cannot drop a route');
SELECT throws_ok($$UPDATE delq.pending SET status = 'completed'$$, '42501', NULL,
                 'bob cannot update delq.pending');
SELECT throws_ok($$DELETE FROM delq.finished$$, '42501', NULL,
                 'bob cannot delete from delq.finished');
SELECT throws_ok($$INSERT INTO delq.event (kind) VALUES ('forged')$$, '42501', NULL,
                 'bob cannot insert into delq.event');
SELECT throws_ok($$SELECT delq._release_held(10)$$, '42501', NULL,
                 'bob cannot call the internal delq._release_held');
RESET SESSION AUTHORIZATION;

-- carol, too, writes no table directly.
SET SESSION AUTHORIZATION carol;
SELECT throws_ok($$UPDATE delq.destination SET url = 'https://evil.example.com/'$$, '42501', NULL,
                 'carol cannot update delq.destination directly');
SELECT throws_ok($$INSERT INTO delq.route (destination) VALUES ('crm')$$, '42501', NULL,
                 'carol cannot insert into delq.route directly');
RESET SESSION AUTHORIZATION;

-- ----------------------------------------------------------------------
-- mallory, no grant: nothing at all.

SET SESSION AUTHORIZATION mallory;
SELECT throws_ok($$SELECT delq.submit('x@example.com', 'shop')$$, '42501', NULL,
                 'mallory cannot submit');
SELECT throws_ok($$SELECT * FROM delq.requests$$, '42501', NULL,
                 'mallory cannot read delq.requests');
SELECT throws_ok($$SELECT delq.worker_running()$$, '42501', NULL,
                 'mallory cannot call delq.worker_running');
RESET SESSION AUTHORIZATION;

-- ----------------------------------------------------------------------
-- Roles are cluster-wide: DROP EXTENSION leaves them, with their members,
-- and a new CREATE EXTENSION adopts them and grants again.

DROP EXTENSION delq;
SELECT has_role(r, format('%s survives DROP EXTENSION', r))
  FROM unnest(ARRAY['delq_submitter', 'delq_operator', 'delq_admin']) r;
SELECT is_member_of('delq_admin', 'carol', 'carol is still a member of delq_admin');
SELECT lives_ok('CREATE EXTENSION delq', 'CREATE EXTENSION adopts the existing roles');
SELECT ok(has_function_privilege('delq_submitter',
                                 'delq.submit(text, text, text, jsonb, text, timestamptz)',
                                 'EXECUTE'),
          'the new extension grants submit to delq_submitter again');
SELECT ok(has_function_privilege('carol',
                                 'delq.add_route(text, jsonb)', 'EXECUTE'),
          'so existing members regain their rights');
SELECT ok(NOT has_function_privilege('public',
                                     'delq.submit(text, text, text, jsonb, text, timestamptz)',
                                     'EXECUTE'),
          'and PUBLIC still gets nothing');

SELECT * FROM finish();
ROLLBACK;
