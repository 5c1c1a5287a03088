-- delq 1.0 -> 1.1, the part only an upgrade runs, before the body (every
-- src/sql/*.sql but the header, the same text a fresh install runs).
-- Here go the statements that the body cannot make idempotent: dropping an
-- object that 1.1 removed or whose signature or columns changed (so that
-- the body's CREATE OR REPLACE can create it anew).  docs/upgrading.md.

\echo Use "ALTER EXTENSION delq UPDATE TO '1.1'" to load this file. \quit

-- The body calls into the library, which must be 1.1's.  A server that
-- preloaded 1.0's library (shared_preload_libraries) keeps it until it
-- restarts, and so does a session that loaded it: stop here, changing
-- nothing, rather than create functions the old library lacks.
-- delq.library_version is src/settings.c's (1.0's library has none).
SELECT delq._load();
DO $$
BEGIN
    IF current_setting('delq.library_version', true) IS DISTINCT FROM '1.1' THEN
        RAISE EXCEPTION 'the delq library loaded in this session is version %, not 1.1',
                        coalesce(current_setting('delq.library_version', true), '1.0')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Install the delq 1.1 package, restart PostgreSQL (delq is in shared_preload_libraries) or open a new session (it is not), then run ALTER EXTENSION delq UPDATE again.';
    END IF;
END
$$;

-- 1.1 adds the delivery state 'not_held' (10_tables.sql puts the check back).
ALTER TABLE delq.delivery DROP CONSTRAINT IF EXISTS delivery_state_check;

-- 1.1 passes the error class apart from the error text (src/store.c); the
-- body creates the new signature.
DROP FUNCTION IF EXISTS delq._record(bigint[], text[], integer[], text[], integer[], boolean[]);

-- 1.1: add_destination and alter_destination take request and credentials
-- (templated HTTP destinations); _claim returns the method and render error.
DROP FUNCTION IF EXISTS delq.add_destination(text, text, jsonb, text, interval, interval, integer, integer,
                                             text, interval, interval, boolean, text, text, text);
DROP FUNCTION IF EXISTS delq.alter_destination(text, text, jsonb, text, interval, interval, integer, integer,
                                               text, interval, interval, boolean, text, text, text);
DROP FUNCTION IF EXISTS delq._merge_destination(delq.destination, text, jsonb, text, interval, interval,
                                                integer, integer, text, interval, interval, boolean,
                                                text, text, text);
DROP FUNCTION IF EXISTS delq._claim(integer);

-- redact() takes max_requests (issue 10: bounded batches)
DROP FUNCTION IF EXISTS delq.redact(interval);
