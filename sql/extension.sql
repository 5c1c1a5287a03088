--
-- extension: the extension is installed at its default version with the
-- contract's tables, and the helpers of sql/include/setup.sql work.
--
-- Every file of this suite sets up what it needs (sql/include/setup.sql)
-- and runs alone or after the others.  No worker runs (test/regress.conf
-- does not preload delq), so deliveries stay where the SQL functions put
-- them.  test/README.md maps features to test files.
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

SELECT extname, extversion, nspname AS schema
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE extname = 'delq';
SELECT extversion = default_version AS default_version
  FROM pg_extension e JOIN pg_available_extensions a ON a.name = e.extname
 WHERE extname = 'delq';

-- The contract's tables exist.
SELECT c.relname
  FROM pg_class c
 WHERE c.relnamespace = 'delq'::regnamespace AND c.relkind = 'r'
   AND c.relname IN ('pending', 'finished', 'destination', 'route', 'delivery', 'event')
 ORDER BY 1;

-- The helpers work.
SELECT regress.snapshot();
SELECT regress.sqlstate('SELECT 1');
SELECT regress.sqlstate('SELECT 1/0');
SELECT regress.bad($$SELECT delq.approve('a2c4e6f8-0000-4000-8000-000000000000')$$);
-- a call that wrongly succeeds is reported with what it wrote, then undone
SELECT regress.bad($$SELECT delq.add_destination('t01', 'https://t01.example/erase')$$)
       ~ '^ok \(no error\) \| WRITTEN: .*destination (\d+)->\d+' AS reported;
SELECT regress.unchanged();
