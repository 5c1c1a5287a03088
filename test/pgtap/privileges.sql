-- privileges.sql: every delq function, table, view and sequence, read from
-- the catalogs, against what each role may do.
--
-- The grants delq means to make are written once, in fn_spec and rel_spec
-- below.  Everything in schema delq that is not listed there must be out of
-- reach of every role, so a function, table or view added later is covered
-- without touching this file: until someone decides who may use it and
-- lists it here, the test expects that nobody can.
--
-- Each role is checked twice: in the catalogs (has_*_privilege, for the
-- NOLOGIN roles, for login members of them, and for PUBLIC) and by really
-- running the statement as a login member (SET SESSION AUTHORIZATION),
-- which must fail with 42501 insufficient_privilege.

\set ON_ERROR_STOP 1
SET client_min_messages = warning;

BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS delq;

SELECT no_plan();

-- Login roles: one member of each delq role, and one with no grants at all.
CREATE ROLE alice LOGIN IN ROLE delq_submitter;
CREATE ROLE bob LOGIN IN ROLE delq_operator;
CREATE ROLE carol LOGIN IN ROLE delq_admin;
CREATE ROLE mallory LOGIN;
-- a consumer of pull destinations (delq_consumer: outside the levels)
CREATE ROLE dave LOGIN IN ROLE delq_consumer;

-- Level 0: nothing; 1: submitter; 2: operator; 3: admin.
CREATE TEMP TABLE role_level (role name PRIMARY KEY, level integer NOT NULL, login boolean NOT NULL,
                              consumer boolean NOT NULL DEFAULT false);
INSERT INTO role_level VALUES
    ('delq_consumer', 0, false, true), ('dave', 0, true, true);
INSERT INTO role_level VALUES
    ('public', 0, false), ('mallory', 0, true),
    ('delq_submitter', 1, false), ('alice', 1, true),
    ('delq_operator', 2, false), ('bob', 2, true),
    ('delq_admin', 3, false), ('carol', 3, true);

-- The least level that may EXECUTE each function (by name, any overload).
-- consumer: also for delq_consumer (pull destinations' consumers).
CREATE TEMP TABLE fn_spec (fn name PRIMARY KEY, level integer NOT NULL,
                           consumer boolean NOT NULL DEFAULT false);
INSERT INTO fn_spec VALUES
    ('submit', 1),
    ('approve', 2), ('reject', 2), ('retry', 2), ('confirm', 2), ('archive', 2),
    ('worker_running', 2), ('dispatch', 2), ('dispatch_pass', 2), ('reset_breaker', 2), ('check_consistency', 2),
    ('add_destination', 3), ('alter_destination', 3), ('drop_destination', 3),
    ('add_route', 3), ('drop_route', 3), ('add_connector', 3), ('grant_source', 3), ('revoke_source', 3),
    ('extend', 2), ('check_deadlines', 2), ('receipt', 2), ('verify_receipt', 2),
    ('report', 2), ('was_erased', 2), ('guard', 2), ('redact', 2),
    ('ledger_checkpoint', 2), ('verify_ledger', 2),
    -- HTTP ingress (src/sql/88_http.sql)
    ('http_body', 1), ('http_member', 1), ('http_request', 1), ('http_created', 1),
    ('http_submit', 1), ('http_submit_doc', 1), ('http_list', 1),
    ('http_approve', 2), ('http_reject', 2), ('http_extend', 2), ('http_receipt', 2),
    ('status_page', 2), ('html', 2), ('html_table', 2), ('metrics', 2),
    ('add_api_token', 3), ('drop_api_token', 3), ('add_hook', 3), ('drop_hook', 3),
    ('explain_routes', 2), ('recipients', 2),
    ('add_pull_destination', 3), ('alter_pull_destination', 3),
    ('add_sql_destination', 3), ('alter_sql_destination', 3);
INSERT INTO fn_spec VALUES ('take', 99, true), ('ack', 99, true), ('nack', 99, true);

-- The least level that may SELECT each table or view.  Nobody may write
-- any of them, and nobody may use the sequences.
CREATE TEMP TABLE rel_spec (rel name PRIMARY KEY, level integer NOT NULL,
                            consumer boolean NOT NULL DEFAULT false);
INSERT INTO rel_spec VALUES
    ('requests', 1),
    ('pending', 2), ('finished', 2), ('delivery', 2), ('event', 2), ('route', 2),
    ('overdue', 2), ('needs_attention', 2), ('destinations', 2),
    ('destination_health', 2), ('destination_state', 2),
    ('at_risk', 2), ('deadline_alert', 2), ('ledger_head', 2), ('ledger_checkpoint', 2),
    ('ledger_checkpoint_head', 2), ('connectors', 2), ('source_grant', 2),
    ('hooks', 2), ('api_tokens', 3),
    ('destination', 3), ('key', 3);
INSERT INTO rel_spec VALUES ('tasks', 2, true);

-- Every function and relation of the schema, with the level it needs
-- (99: nobody) and the statement that uses it.
CREATE TEMP TABLE fn AS
SELECT p.oid, p.proname, p.oid::regprocedure::text AS signature,
       coalesce(s.level, 99) AS level, coalesce(s.consumer, false) AS consumer,
       format('%s %I.%I(%s)',
              CASE p.prokind WHEN 'p' THEN 'CALL' ELSE 'SELECT' END,
              n.nspname, p.proname,
              (SELECT coalesce(string_agg(
                          'NULL::' || CASE
                              WHEN a.t IN ('anyelement'::regtype, 'anynonarray'::regtype,
                                           'anycompatible'::regtype,
                                           'anycompatiblenonarray'::regtype) THEN 'text'
                              WHEN a.t IN ('anyarray'::regtype,
                                           'anycompatiblearray'::regtype) THEN 'text[]'
                              ELSE format_type(a.t, NULL) END,
                          ', ' ORDER BY a.ord), '')
                 FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(t, ord))) AS call
  FROM pg_proc p
  JOIN pg_namespace n ON n.oid = p.pronamespace
  LEFT JOIN fn_spec s ON s.fn = p.proname
 WHERE n.nspname = 'delq';

CREATE TEMP TABLE rel AS
SELECT c.oid, c.relname, c.relkind, coalesce(s.level, 99) AS level,
       coalesce(s.consumer, false) AS consumer,
       (SELECT quote_ident(a.attname) FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           AND a.attidentity = '' AND a.attgenerated = ''
         ORDER BY a.attnum LIMIT 1) AS plain_column
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN rel_spec s ON s.rel = c.relname
 WHERE n.nspname = 'delq' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S');

GRANT SELECT ON role_level, fn_spec, rel_spec, fn, rel TO PUBLIC;

-- The table privileges r holds on relation c, table-wide or on any column.
CREATE FUNCTION pg_temp.table_privs(r name, c oid)
RETURNS text[]
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(array_agg(p ORDER BY p), '{}')
      FROM (SELECT p FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE',
                                       'REFERENCES', 'TRIGGER']) p
             WHERE has_table_privilege(r, c, p)
            UNION
            SELECT p || ' (column)' FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'REFERENCES']) p
             WHERE has_any_column_privilege(r, c, p) AND NOT has_table_privilege(r, c, p)) x;
$$;

-- The SQLSTATE q raises, or NULL when it succeeds; its effects are undone.
CREATE FUNCTION pg_temp.sqlstate_of(q text)
RETURNS text
LANGUAGE plpgsql
AS $$
BEGIN
    EXECUTE q;
    RAISE EXCEPTION 'succeeded' USING ERRCODE = 'DQ000';
EXCEPTION WHEN OTHERS THEN
    RETURN nullif(SQLSTATE, 'DQ000');
END
$$;

-- ----------------------------------------------------------------------
-- The spec is not stale, and the catalog queries found what they should.

SELECT ok(EXISTS (SELECT 1 FROM fn f WHERE f.proname = s.fn),
          format('listed function delq.%s exists', s.fn))
  FROM fn_spec s ORDER BY s.fn;
SELECT ok(EXISTS (SELECT 1 FROM rel r WHERE r.relname = s.rel),
          format('listed relation delq.%s exists', s.rel))
  FROM rel_spec s ORDER BY s.rel;
SELECT ok((SELECT count(*) FROM fn WHERE proname LIKE '\_%') > 0,
          'internal functions (delq._*) were found');
SELECT ok((SELECT count(*) FROM rel WHERE relkind = 'S') > 0, 'sequences were found');

-- ----------------------------------------------------------------------
-- Schema: USAGE for the three roles (and their members), CREATE for nobody.

SELECT is(has_schema_privilege(l.role, 'delq', 'USAGE'), l.level >= 1 OR l.consumer,
          format('%s %s USAGE on schema delq', l.role,
                 CASE WHEN l.level >= 1 OR l.consumer THEN 'has' ELSE 'lacks' END))
  FROM role_level l ORDER BY l.level, l.role;
SELECT ok(NOT has_schema_privilege(l.role, 'delq', 'CREATE'),
          format('%s cannot create objects in schema delq', l.role))
  FROM role_level l ORDER BY l.level, l.role;

-- ----------------------------------------------------------------------
-- Functions in the catalogs.  Internal functions (delq._*) are for nobody.

SELECT is(has_function_privilege(l.role, f.oid, 'EXECUTE'), (l.level >= f.level OR (l.consumer AND f.consumer)),
          format('%s %s EXECUTE on %s', l.role,
                 CASE WHEN (l.level >= f.level OR (l.consumer AND f.consumer)) THEN 'has' ELSE 'lacks' END, f.signature))
  FROM fn f CROSS JOIN role_level l
 ORDER BY f.signature, l.level, l.role;

SELECT ok(f.level = 99, format('internal function %s is listed for nobody', f.signature))
  FROM fn f WHERE f.proname LIKE '\_%' ORDER BY f.signature;

-- ----------------------------------------------------------------------
-- Tables, views and sequences in the catalogs: SELECT where listed,
-- nothing else anywhere (no INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES,
-- TRIGGER, not even on one column).

SELECT is(pg_temp.table_privs(l.role, r.oid),
          CASE WHEN (l.level >= r.level OR (l.consumer AND r.consumer)) THEN ARRAY['SELECT'] ELSE '{}'::text[] END,
          format('%s holds exactly %s on delq.%s', l.role,
                 CASE WHEN (l.level >= r.level OR (l.consumer AND r.consumer)) THEN 'SELECT' ELSE 'no privilege' END, r.relname))
  FROM rel r CROSS JOIN role_level l
 WHERE r.relkind <> 'S'
 ORDER BY r.relname, l.level, l.role;

SELECT ok(NOT has_sequence_privilege(l.role, r.oid, 'USAGE, SELECT, UPDATE'),
          format('%s holds no privilege on sequence delq.%s', l.role, r.relname))
  FROM rel r CROSS JOIN role_level l
 WHERE r.relkind = 'S'
 ORDER BY r.relname, l.level, l.role;

-- ----------------------------------------------------------------------
-- SECURITY DEFINER functions run as the extension's owner (a superuser):
-- each must pin search_path so that no caller's schema can capture a name.

SELECT ok((SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'delq'::regnamespace
            AND p.prosecdef) > 0, 'delq has SECURITY DEFINER functions');
SELECT is((SELECT c FROM unnest(p.proconfig) c WHERE c LIKE 'search\_path=%'),
          'search_path=pg_catalog, pg_temp',
          format('SECURITY DEFINER %s sets search_path=pg_catalog, pg_temp',
                 p.oid::regprocedure))
  FROM pg_proc p
 WHERE p.pronamespace = 'delq'::regnamespace AND p.prosecdef
 ORDER BY p.oid::regprocedure::text;
SELECT ok(NOT has_function_privilege('public', p.oid, 'EXECUTE'),
          format('PUBLIC cannot execute SECURITY DEFINER %s', p.oid::regprocedure))
  FROM pg_proc p
 WHERE p.pronamespace = 'delq'::regnamespace AND p.prosecdef
 ORDER BY p.oid::regprocedure::text;

-- ----------------------------------------------------------------------
-- The same, for real, as each login role.  A function the role may use
-- must not fail on privileges (called with NULLs, it fails validation
-- instead and changes nothing); every other function must fail with 42501.
-- Then every relation it may not read, every write to every table, and
-- every sequence.

CREATE TEMP TABLE attempt (
    ord serial,
    role name NOT NULL,
    allowed boolean NOT NULL,
    sql text NOT NULL,
    description text NOT NULL
);
GRANT SELECT ON attempt TO PUBLIC;

INSERT INTO attempt (role, allowed, sql, description)
SELECT l.role, (l.level >= f.level OR (l.consumer AND f.consumer)), f.call,
       format('%s %s call %s', l.role,
              CASE WHEN (l.level >= f.level OR (l.consumer AND f.consumer)) THEN 'may' ELSE 'may not' END, f.signature)
  FROM role_level l CROSS JOIN fn f
 WHERE l.login
 ORDER BY l.role, f.signature;

INSERT INTO attempt (role, allowed, sql, description)
SELECT l.role, (l.level >= r.level OR (l.consumer AND r.consumer)),
       format('SELECT * FROM delq.%I LIMIT 1', r.relname),
       format('%s %s read delq.%s', l.role,
              CASE WHEN (l.level >= r.level OR (l.consumer AND r.consumer)) THEN 'may' ELSE 'may not' END, r.relname)
  FROM role_level l CROSS JOIN rel r
 WHERE l.login AND r.relkind <> 'S'
 ORDER BY l.role, r.relname;

INSERT INTO attempt (role, allowed, sql, description)
SELECT l.role, false, format(w.sql, r.relname, r.plain_column),
       format('%s may not %s delq.%s', l.role, w.verb, r.relname)
  FROM role_level l CROSS JOIN rel r
 CROSS JOIN (VALUES ('INSERT into', 'INSERT INTO delq.%I DEFAULT VALUES'),
                    ('UPDATE', 'UPDATE delq.%I SET %2$s = %2$s'),
                    ('DELETE from', 'DELETE FROM delq.%I'),
                    ('TRUNCATE', 'TRUNCATE delq.%I')) AS w(verb, sql)
 WHERE l.login AND r.relkind IN ('r', 'p')
 ORDER BY l.role, r.relname, w.verb;

INSERT INTO attempt (role, allowed, sql, description)
SELECT l.role, false, format(w.sql, r.relname),
       format('%s may not %s sequence delq.%s', l.role, w.verb, r.relname)
  FROM role_level l CROSS JOIN rel r
 CROSS JOIN (VALUES ('advance', 'SELECT nextval(''delq.%I'')'),
                    ('set', 'SELECT setval(''delq.%I'', 1000000)'),
                    ('read', 'SELECT last_value FROM delq.%I')) AS w(verb, sql)
 WHERE l.login AND r.relkind = 'S'
 ORDER BY l.role, r.relname, w.verb;

SET SESSION AUTHORIZATION alice;
SELECT CASE WHEN a.allowed
            THEN isnt(pg_temp.sqlstate_of(a.sql), '42501', a.description)
            ELSE throws_ok(a.sql, '42501', NULL, a.description) END
  FROM attempt a WHERE a.role = session_user ORDER BY a.ord;
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION bob;
SELECT CASE WHEN a.allowed
            THEN isnt(pg_temp.sqlstate_of(a.sql), '42501', a.description)
            ELSE throws_ok(a.sql, '42501', NULL, a.description) END
  FROM attempt a WHERE a.role = session_user ORDER BY a.ord;
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION carol;
SELECT CASE WHEN a.allowed
            THEN isnt(pg_temp.sqlstate_of(a.sql), '42501', a.description)
            ELSE throws_ok(a.sql, '42501', NULL, a.description) END
  FROM attempt a WHERE a.role = session_user ORDER BY a.ord;
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION dave;
SELECT CASE WHEN a.allowed
            THEN isnt(pg_temp.sqlstate_of(a.sql), '42501', a.description)
            ELSE throws_ok(a.sql, '42501', NULL, a.description) END
  FROM attempt a WHERE a.role = session_user ORDER BY a.ord;
RESET SESSION AUTHORIZATION;

SET SESSION AUTHORIZATION mallory;
SELECT CASE WHEN a.allowed
            THEN isnt(pg_temp.sqlstate_of(a.sql), '42501', a.description)
            ELSE throws_ok(a.sql, '42501', NULL, a.description) END
  FROM attempt a WHERE a.role = session_user ORDER BY a.ord;
RESET SESSION AUTHORIZATION;

-- PUBLIC itself (no login role stands for it): a role with no grants
-- reaches nothing, checked above as mallory; PUBLIC holds no privilege on
-- anything in the schema.
SELECT is((SELECT count(*)::integer FROM pg_class c, aclexplode(c.relacl) x
            WHERE c.relnamespace = 'delq'::regnamespace AND x.grantee = 0), 0,
          'no relation in delq has a grant to PUBLIC');
SELECT is((SELECT count(*)::integer FROM pg_proc p, aclexplode(p.proacl) x
            WHERE p.pronamespace = 'delq'::regnamespace AND x.grantee = 0), 0,
          'no function in delq has a grant to PUBLIC');
SELECT ok((SELECT bool_and(p.proacl IS NOT NULL) FROM pg_proc p
            WHERE p.pronamespace = 'delq'::regnamespace),
          'no function in delq has default privileges (which include EXECUTE for PUBLIC)');

-- delq_metrics (for Prometheus tokens of the HTTP API) reaches
-- delq.metrics() and nothing else; operators are members of it.
SELECT ok(has_function_privilege('delq_metrics', 'delq.metrics()', 'EXECUTE'),
          'delq_metrics may execute delq.metrics()');
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY 1) FROM pg_proc p
            WHERE p.pronamespace = 'delq'::regnamespace
              AND has_function_privilege('delq_metrics', p.oid, 'EXECUTE')),
          ARRAY['delq.metrics()'], 'delq_metrics may execute nothing else');
SELECT is((SELECT count(*)::integer FROM pg_class c
            WHERE c.relnamespace = 'delq'::regnamespace
              AND has_table_privilege('delq_metrics', c.oid, 'SELECT')), 0,
          'delq_metrics may read no relation');

SELECT * FROM finish();
ROLLBACK;
