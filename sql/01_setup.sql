--
-- 01_setup: create the extension and the helpers the other files use.
--
-- Every file of this suite runs in its own session of the same database,
-- in file-name order.  No worker runs (test/regress.conf does not preload
-- delq), so deliveries stay where the SQL functions put them.
--
\set SHOW_CONTEXT never
\set VERBOSITY default

CREATE EXTENSION delq;
SELECT extname, extversion, nspname AS schema
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE extname = 'delq';

-- The contract's tables exist.
SELECT c.relname
  FROM pg_class c
 WHERE c.relnamespace = 'delq'::regnamespace AND c.relkind = 'r'
   AND c.relname IN ('pending', 'finished', 'destination', 'route', 'delivery', 'event')
 ORDER BY 1;

-- Helpers for the bad-input cases, in schema regress (pg_temp would not
-- survive the end of this session).
CREATE SCHEMA regress;

-- Run one statement; return 'ok', or its SQLSTATE and message with uuids
-- masked, flagged when the error has no hint (DESIGN.md: every error says
-- what is allowed).
CREATE FUNCTION regress.sqlstate(sql text)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    st text;
    msg text;
    hint text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                            hint = PG_EXCEPTION_HINT;
    RETURN st || ': '
        || regexp_replace(msg, '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}',
                          '<id>', 'g')
        || CASE WHEN coalesce(hint, '') = '' THEN ' (no hint)' ELSE '' END;
END
$$;

-- Row count and checksum of every table of schema delq, to prove that a
-- failed call wrote nothing (no insert, update or delete anywhere).
CREATE FUNCTION regress.fingerprint()
RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    t text;
    n bigint;
    h text;
    result jsonb := '{}';
BEGIN
    FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'delq' ORDER BY 1 LOOP
        EXECUTE format('SELECT count(*), md5(coalesce(string_agg(x::text, ''|'' ORDER BY x::text), ''''))
                          FROM delq.%I x', t)
           INTO n, h;
        result := result || jsonb_build_object(t, jsonb_build_object('rows', n, 'md5', h));
    END LOOP;
    RETURN result;
END
$$;

CREATE TABLE regress.baseline (snapshot jsonb NOT NULL);

-- Remember the current state of the delq tables.
CREATE FUNCTION regress.snapshot()
RETURNS void
LANGUAGE sql
AS $$
    DELETE FROM regress.baseline;
    INSERT INTO regress.baseline SELECT regress.fingerprint();
$$;

-- 'nothing written' if the delq tables are as at the last snapshot, else
-- which tables changed and their row counts then and now.
CREATE FUNCTION regress.unchanged()
RETURNS text
LANGUAGE sql
AS $$
    SELECT coalesce('WRITTEN: ' || string_agg(format('%s %s->%s', n.key,
                                                     o.value -> 'rows', n.value -> 'rows'),
                                              ', ' ORDER BY n.key),
                    'nothing written')
      FROM jsonb_each(regress.fingerprint()) n
      FULL JOIN jsonb_each((SELECT snapshot FROM regress.baseline)) o USING (key)
     WHERE n.value IS DISTINCT FROM o.value;
$$;

-- A call that must fail: its SQLSTATE and message, then whether the delq
-- tables are still as at the last snapshot.  Should the call succeed, the
-- result says so and lists what it wrote, and its writes are undone so
-- that the following cases are not affected.
CREATE FUNCTION regress.bad(sql text)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    outcome text;
    st text;
    msg text;
    hint text;
BEGIN
    BEGIN
        EXECUTE sql;
        outcome := 'ok (no error) | ' || regress.unchanged();
        RAISE EXCEPTION 'undo' USING ERRCODE = 'RB001';
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                                hint = PG_EXCEPTION_HINT;
        IF st = 'RB001' THEN
            RETURN outcome;
        END IF;
    END;
    RETURN st || ': '
        || regexp_replace(msg, '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}',
                          '<id>', 'g')
        || CASE WHEN coalesce(hint, '') = '' THEN ' (no hint)' ELSE '' END
        || ' | ' || regress.unchanged();
END
$$;

-- The helpers work.
SELECT regress.snapshot();
SELECT regress.sqlstate('SELECT 1');
SELECT regress.sqlstate('SELECT 1/0');
SELECT regress.bad($$SELECT delq.approve('a2c4e6f8-0000-4000-8000-000000000000')$$);
-- a call that wrongly succeeds is reported with what it wrote, then undone
SELECT regress.bad($$SELECT delq.add_destination('t01', 'https://t01.example/erase')$$)
       LIKE 'ok (no error) | WRITTEN: %destination 0->1%' AS reported;
SELECT regress.unchanged();
