--
-- security_definer: every SECURITY DEFINER function of the extension,
-- walked from pg_proc (so a function added later is checked without being
-- named here), must not be able to reach code of an ordinary role
-- (issue 9; docs/security.md, "Name resolution").  Each query below lists
-- the functions that break one rule, and must list none.  The dynamic
-- counterpart, the same functions called under planted shadows, is
-- test/t/070_security_search_path.pl.
--
\set SHOW_CONTEXT never
\set VERBOSITY terse
\i sql/include/setup.sql

-- The SQL text of a function with comments and string literals blanked,
-- so that words in them are not taken for names.
CREATE FUNCTION pg_temp.code(src text)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT regexp_replace(regexp_replace(regexp_replace(regexp_replace(src,
               '/\*.*?\*/', ' ', 'g'),
               '--[^\n]*', ' ', 'g'),
               '''([^'']|'''')*''', '''''', 'g'),
               '\$([a-zA-Z_]*)\$.*?\$\1\$', '''''', 'g');
$$;

-- Every function of the extension; the definer ones are checked for their
-- settings and types, and the code of all (the internal functions run
-- inside the definer ones, with their rights) for unqualified names.
CREATE TEMP VIEW fns AS
SELECT p.oid, p.oid::regprocedure::text AS fn, p.prosecdef, l.lanname AS lang, p.proconfig,
       p.prorettype, coalesce(p.proallargtypes, p.proargtypes::oid[]) AS argtypes,
       CASE WHEN l.lanname IN ('sql', 'plpgsql') AND p.prosqlbody IS NULL
            THEN pg_temp.code(p.prosrc) END AS code
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
 WHERE p.pronamespace = 'delq'::regnamespace;
CREATE TEMP VIEW definer AS SELECT * FROM fns WHERE prosecdef;

-- Names of the extension's own objects, which the code must qualify.
CREATE TEMP VIEW delq_names AS
SELECT c.relname::text AS name, 'relation' AS what FROM pg_class c
 WHERE c.relnamespace = 'delq'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p', 'f', 'S')
UNION
SELECT t.typname::text, 'type' FROM pg_type t
 WHERE t.typnamespace = 'delq'::regnamespace AND t.typtype NOT IN ('b', 'c')
UNION
SELECT p.proname::text, 'function' FROM pg_proc p
 WHERE p.pronamespace = 'delq'::regnamespace;

SELECT count(*) > 20 AS walked_definer_functions FROM definer;

-- 1. search_path pinned: pg_catalog first (built-ins win over any schema
--    of a caller's), pg_temp last (else it is searched first for tables).
CREATE TEMP VIEW unpinned AS
SELECT fn AS without_pinned_search_path FROM definer
 WHERE NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (proconfig), false);
SELECT * FROM unpinned ORDER BY 1;

-- 2. Written in SQL or PL/pgSQL (C definer functions would need a review
--    of their own), never a trigger: a definer trigger reads rows of any
--    table it is attached to, and converting them runs the casts and
--    output functions of their types (what delq.guard() did in 1.0).
CREATE TEMP VIEW other_kind AS
SELECT fn AS not_sql_or_a_trigger, lang, format_type(prorettype, NULL) AS returns FROM definer
 WHERE lang NOT IN ('sql', 'plpgsql')
    OR prorettype IN ('trigger'::regtype, 'event_trigger'::regtype);
SELECT * FROM other_kind ORDER BY 1;

-- 3. Arguments and results only of built-in types and delq's own: a
--    polymorphic or record argument, or a type of another schema, brings
--    a caller's type, and with it its casts, operators and functions.
CREATE TEMP VIEW foreign_types AS
SELECT d.fn AS foreign_or_pseudo_type, format_type(t.oid, NULL) AS type
  FROM definer d
 CROSS JOIN LATERAL unnest(d.argtypes || d.prorettype) a(typ)
  JOIN pg_type t0 ON t0.oid = a.typ
  JOIN pg_type t ON t.oid = CASE WHEN t0.typelem <> 0 AND t0.typlen = -1 THEN t0.typelem ELSE t0.oid END
 WHERE t.typnamespace NOT IN ('pg_catalog'::regnamespace, 'delq'::regnamespace)
    OR (t.typtype = 'p' AND NOT (a.typ = d.prorettype AND t.oid IN ('void'::regtype, 'record'::regtype)));
SELECT * FROM foreign_types ORDER BY 1, 2;

-- 4. In every function of the extension (the internal ones run inside
--    the definer ones, with their rights), every name of delq's own
--    objects is written with its schema: under
--    search_path = pg_catalog, pg_temp an unqualified table, view or type
--    name that is not a built-in is looked up in the caller's pg_temp.
CREATE TEMP VIEW unqualified AS
SELECT d.fn AS unqualified_delq_name, n.what, n.name
  FROM fns d
  JOIN delq_names n
    ON d.code ~* ('(^|[^.a-z0-9_"])(from|join|update|insert\s+into|merge\s+into|table|only)\s+' || n.name || '\M\s*($|[^.(a-z0-9_])')
       OR d.code ~* ('::\s*' || n.name || '\M\s*($|[^.a-z0-9_])')
       OR (n.what = 'function' AND d.code ~* ('(^|[^.a-z0-9_"])' || n.name || '\s*\('))
 WHERE NOT (n.what = 'relation' AND d.code ~* ('\m' || n.name || '\s+as\s+(not\s+)?(materialized\s+)?\('));
SELECT * FROM unqualified ORDER BY 1, 2, 3;

-- 5. A function that takes a secret (a signing secret, headers, a token,
--    credentials, settings that may hold them, a password, a client or API
--    key: by its argument's name)
--    or a subject (also inside a request body or a JSON doc of one, as the
--    HTTP API's) keeps its failing statement, which holds them, out of
--    the server log.
CREATE TEMP VIEW logs_statement AS
SELECT d.fn AS logs_failing_statement, a.arg
  FROM definer d
  JOIN pg_proc p ON p.oid = d.oid
 CROSS JOIN LATERAL unnest(p.proargnames) a(arg)
 WHERE a.arg ~* '(^|_)(secrets?|headers?|tokens?|credentials?|password|passphrase|settings|subject|body|doc)($|_)|_key$'
   AND NOT coalesce('log_min_error_statement=panic' = ANY (d.proconfig), false);
SELECT * FROM logs_statement ORDER BY 1, 2;

-- The same checks catch what they are meant to: a function written
-- wrongly on purpose, in every way at once, is listed by each.
CREATE FUNCTION delq.sec61_bad(x anyelement, token text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
AS $$
BEGIN
    PERFORM count(*) FROM pending WHERE id = x::text::uuid;
    PERFORM _secret('subject');
END
$$;
SELECT * FROM unpinned WHERE without_pinned_search_path LIKE '%sec61%';
SELECT * FROM foreign_types WHERE foreign_or_pseudo_type LIKE '%sec61%';
SELECT * FROM unqualified WHERE unqualified_delq_name LIKE '%sec61%' ORDER BY 1, 2, 3;
SELECT * FROM logs_statement WHERE logs_failing_statement LIKE '%sec61%';
DROP FUNCTION delq.sec61_bad(anyelement, text);
CREATE FUNCTION delq.sec61_bad()
RETURNS trigger
LANGUAGE c SECURITY DEFINER
AS '$libdir/delq', 'delq_guard';
SELECT * FROM other_kind WHERE not_sql_or_a_trigger LIKE '%sec61%';
DROP FUNCTION delq.sec61_bad();
