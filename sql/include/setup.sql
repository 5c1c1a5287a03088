\set ECHO none
-- sql/include/setup.sql: what every file of the regress suite needs, so
-- that each runs alone (make installcheck REGRESS=name) as well as after
-- the others in the same database: the extension and the helpers of schema
-- regress.  Each file starts with "\i sql/include/setup.sql" (pg_regress
-- runs psql in the top directory).  Idempotent, and silent so that the
-- expected output is the same either way.  test/README.md.
SET client_min_messages = warning;

CREATE EXTENSION IF NOT EXISTS delq;
CREATE SCHEMA IF NOT EXISTS regress;

-- Run one statement; return 'ok', or its SQLSTATE and message with uuids
-- masked, flagged when the error has no hint (every error says what is
-- allowed: docs/sql-api.md).
CREATE OR REPLACE FUNCTION regress.sqlstate(sql text)
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
CREATE OR REPLACE FUNCTION regress.fingerprint()
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

CREATE TABLE IF NOT EXISTS regress.baseline (snapshot jsonb NOT NULL);

-- Remember the current state of the delq tables.
CREATE OR REPLACE FUNCTION regress.snapshot()
RETURNS void
LANGUAGE sql
AS $$
    DELETE FROM regress.baseline;
    INSERT INTO regress.baseline SELECT regress.fingerprint();
$$;

-- 'nothing written' if the delq tables are as at the last snapshot, else
-- which tables changed and their row counts then and now.
CREATE OR REPLACE FUNCTION regress.unchanged()
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
CREATE OR REPLACE FUNCTION regress.bad(sql text)
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

-- regress.sqlstate with webhook ids and the times after "since" masked;
-- usable by the roles a test switches to (SET ROLE), as it reads no delq
-- table.
CREATE OR REPLACE FUNCTION regress.st(sql text)
RETURNS text
LANGUAGE sql
AS $$
    SELECT regexp_replace(regexp_replace(regress.sqlstate(sql), 'msg_[0-9a-f]{32}', 'msg_<id>', 'g'),
                          'since .*$', 'since <time>');
$$;
GRANT USAGE ON SCHEMA regress TO PUBLIC;

RESET client_min_messages;
\set ECHO all
