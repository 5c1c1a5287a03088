-- audit.sql: delq.event is append-only for everyone, a superuser included,
-- and each event names the login role that caused it (session_user), which
-- SET ROLE does not change.

\set ON_ERROR_STOP 1
SET client_min_messages = warning;

BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS delq;

SELECT plan(28);

SET delq.hold_period = 0;
SET delq.require_approval = off;

CREATE ROLE alice LOGIN IN ROLE delq_submitter;
CREATE ROLE bob LOGIN IN ROLE delq_operator;
CREATE ROLE carol LOGIN IN ROLE delq_admin;

CREATE TEMP TABLE ids (name text PRIMARY KEY, id uuid NOT NULL);
GRANT ALL ON ids TO PUBLIC;

-- ----------------------------------------------------------------------
-- The guard: two triggers, enabled.

SELECT has_trigger('delq', 'event', 'event_no_update_delete', 'delq.event has a row trigger');
SELECT has_trigger('delq', 'event', 'event_no_truncate', 'delq.event has a TRUNCATE trigger');
SELECT trigger_is('delq', 'event', 'event_no_update_delete', 'delq', '_append_only',
                  'the row trigger calls delq._append_only');
SELECT trigger_is('delq', 'event', 'event_no_truncate', 'delq', '_append_only',
                  'the TRUNCATE trigger calls delq._append_only');
SELECT is((SELECT array_agg(tgenabled::text ORDER BY tgname) FROM pg_trigger
            WHERE tgrelid = 'delq.event'::regclass AND NOT tgisinternal
              AND tgname IN ('event_no_update_delete', 'event_no_truncate')) <@ ARRAY['O', 'A'],
          true, 'both triggers are enabled');

-- ----------------------------------------------------------------------
-- Actor: the login role, even through SECURITY DEFINER functions.

SET SESSION AUTHORIZATION carol;
SELECT lives_ok($$SELECT delq.add_destination('crm', 'https://crm.example.com/erase')$$,
                'carol adds a destination');
SELECT lives_ok($$SELECT delq.add_route('crm')$$, 'carol adds a route for everything');
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION alice;
SELECT lives_ok($$INSERT INTO ids SELECT 'a1', delq.submit('jane.doe@example.com', 'shop')$$,
                'alice submits');
RESET SESSION AUTHORIZATION;

SELECT is((SELECT actor FROM delq.event
            WHERE kind = 'submitted' AND request_id = (SELECT id FROM ids WHERE name = 'a1')),
          'alice', 'the submitted event written by alice via delq.submit has actor alice');
SELECT is((SELECT actor FROM delq.event
            WHERE kind = 'queued' AND request_id = (SELECT id FROM ids WHERE name = 'a1')),
          'alice', 'so has the queued event that her submit planned');
SELECT is((SELECT actor FROM delq.event WHERE kind = 'destination_added' AND destination = 'crm'),
          'carol', 'the destination_added event has actor carol');

SET SESSION AUTHORIZATION alice;
SET ROLE delq_submitter;
SELECT lives_ok($$INSERT INTO ids SELECT 'a2', delq.submit('john.roe@example.com', 'shop')$$,
                'alice submits after SET ROLE delq_submitter');
RESET ROLE;
RESET SESSION AUTHORIZATION;
SELECT is((SELECT actor FROM delq.event
            WHERE kind = 'submitted' AND request_id = (SELECT id FROM ids WHERE name = 'a2')),
          'alice', 'SET ROLE does not change the actor: still alice');

SET SESSION AUTHORIZATION bob;
SELECT lives_ok($$SELECT delq.confirm((SELECT id FROM ids WHERE name = 'a1'), 'crm')$$,
                'bob confirms');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT actor FROM delq.event
            WHERE kind = 'confirmed' AND request_id = (SELECT id FROM ids WHERE name = 'a1')),
          'bob', 'the confirmed event has actor bob');
SELECT is((SELECT actor FROM delq.event
            WHERE kind = 'completed' AND request_id = (SELECT id FROM ids WHERE name = 'a1')),
          'bob', 'so has the completed event his confirmation caused');

-- ----------------------------------------------------------------------
-- Nobody changes the trail: the roles lack the privilege, and even a
-- superuser (this session) is stopped by the triggers.

SET SESSION AUTHORIZATION carol;
SELECT throws_ok($$UPDATE delq.event SET actor = 'nobody'$$, '42501', NULL,
                 'carol cannot update delq.event');
SELECT throws_ok($$DELETE FROM delq.event$$, '42501', NULL, 'carol cannot delete from delq.event');
SELECT throws_ok($$ALTER TABLE delq.event DISABLE TRIGGER event_no_update_delete$$, '42501', NULL,
                 'carol cannot disable the trigger');
RESET SESSION AUTHORIZATION;

CREATE TEMP TABLE before AS SELECT * FROM delq.event;

SELECT throws_ok($$UPDATE delq.event SET actor = 'nobody'$$, '42501',
                 'delq.event is append-only: UPDATE is not allowed',
                 'a superuser cannot UPDATE delq.event');
SELECT throws_ok($$DELETE FROM delq.event$$, '42501',
                 'delq.event is append-only: DELETE is not allowed',
                 'a superuser cannot DELETE from delq.event');
SELECT throws_ok($$TRUNCATE delq.event$$, '42501',
                 'delq.event is append-only: TRUNCATE is not allowed',
                 'a superuser cannot TRUNCATE delq.event');
SELECT throws_ok($$DELETE FROM delq.event WHERE id = (SELECT max(id) FROM delq.event)$$, '42501',
                 'delq.event is append-only: DELETE is not allowed',
                 'a superuser cannot delete the last event either');
SELECT throws_ok($$INSERT INTO delq.event (id, kind) OVERRIDING SYSTEM VALUE
                   SELECT id, 'x' FROM delq.event ON CONFLICT (id) DO UPDATE SET kind = 'rewritten'$$,
                 '42501', 'delq.event is append-only: UPDATE is not allowed',
                 'nor with INSERT ... ON CONFLICT DO UPDATE');
SELECT results_eq($$SELECT * FROM delq.event ORDER BY id$$,
                  $$SELECT * FROM before ORDER BY id$$,
                  'the trail is unchanged after all those attempts');
SELECT lives_ok($$INSERT INTO delq.event (kind) VALUES ('note')$$,
                'appending stays possible (for the owner)');

-- session_replication_role = replica skips ordinary triggers; the guards
-- are ENABLE ALWAYS.  A superuser can still ALTER TABLE ... DISABLE
-- TRIGGER, so this hardens rather than closes.
SET LOCAL session_replication_role = replica;
SELECT throws_ok($$UPDATE delq.event SET actor = 'nobody'$$, '42501', NULL,
                 'a superuser in replica mode cannot UPDATE delq.event');
SELECT throws_ok($$TRUNCATE delq.event$$, '42501', NULL,
                 'a superuser in replica mode cannot TRUNCATE delq.event');
SET LOCAL session_replication_role = origin;

SELECT * FROM finish();
ROLLBACK;
