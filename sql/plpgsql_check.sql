--
-- plpgsql_check: every PL/pgSQL function of the extension, walked from
-- pg_proc (so that a function added later is checked without being named
-- here), passes plpgsql_check (Debian's postgresql-15-plpgsql-check) with
-- its extra and security warnings on: no error, no warning.  A warning
-- that is right to keep is justified twice: a comment at the line in the
-- function, and a row of pg_temp.justified below with the reason.
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS plpgsql_check;
RESET client_min_messages;
-- the delq.* settings the functions read exist once the library is loaded
LOAD 'delq';

-- Warnings kept on purpose: (function, sqlstate, why).  None today.
CREATE TEMP TABLE justified (fn regprocedure, sqlstate text, why text NOT NULL);

-- The functions: members of the extension or of schema delq, in PL/pgSQL.
-- A trigger function is checked against a table it is a trigger of.
CREATE TEMP VIEW checked AS
SELECT p.oid::regprocedure AS fn,
       coalesce((SELECT t.tgrelid FROM pg_trigger t WHERE t.tgfoid = p.oid
                  ORDER BY t.tgrelid LIMIT 1), 0) AS relid
  FROM pg_proc p
  JOIN pg_language l ON l.oid = p.prolang AND l.lanname = 'plpgsql'
 WHERE p.pronamespace = 'delq'::regnamespace
    OR EXISTS (SELECT FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                  AND d.deptype = 'e' AND e.extname = 'delq');

CREATE FUNCTION pg_temp.findings(fn regprocedure, relid oid)
RETURNS TABLE (lineno integer, level text, sqlstate text, message text)
LANGUAGE sql AS $$
    SELECT t.lineno, t.level, t.sqlstate, t.message
      FROM plpgsql_check_function_tb(fn, relid, extra_warnings => true,
                                     security_warnings => true) t;
$$;

SELECT count(*) > 50 AS many_functions,
       count(*) FILTER (WHERE relid <> 0) > 0 AS with_triggers,
       'delq.submit(text,text,text,jsonb,text,timestamptz)'::regprocedure
           IN (SELECT fn FROM checked) AS with_submit
  FROM checked;

-- What plpgsql_check finds, less what is justified: nothing.
SELECT c.fn, f.lineno, f.level, f.sqlstate, f.message
  FROM checked c CROSS JOIN LATERAL pg_temp.findings(c.fn, c.relid) f
 WHERE NOT EXISTS (SELECT FROM justified j
                    WHERE j.fn = c.fn AND j.sqlstate IS NOT DISTINCT FROM f.sqlstate)
 ORDER BY c.fn::text, f.lineno, f.message;

-- The check can fail: with these options it reports a function written
-- wrongly on purpose (an unused variable, a type mismatch, and dynamic SQL
-- built from an argument in a SECURITY DEFINER function).
CREATE FUNCTION pg_temp.wrong(t text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
AS $$
DECLARE
    unused integer;
    n integer;
BEGIN
    EXECUTE 'SELECT count(*) FROM ' || t INTO n;
    RETURN '{}';
END
$$;
SELECT f.level, f.sqlstate, f.message
  FROM pg_temp.findings('pg_temp.wrong(text)'::regprocedure, 0) f
 ORDER BY f.lineno, f.message;
