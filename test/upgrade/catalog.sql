-- test/upgrade/catalog.sql: everything the delq extension defines, one line
-- per fact, in an order and a form that do not depend on OIDs or on the
-- order in which objects were created.  test/t/060_upgrade.pl compares its
-- output for a fresh install and for 1.0 updated to the current version:
-- they must be the same database (docs/upgrading.md).
\pset format unaligned
\pset tuples_only on
\pset footer off
SET search_path = pg_catalog;

WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'delq'),
member AS (
    SELECT d.classid, d.objid
      FROM pg_depend d, ext
     WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
),
rel AS (
    SELECT c.* FROM pg_class c JOIN member m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
),
facts(f) AS (
    -- every member object, by its description
    SELECT 'member ' || pg_describe_object(m.classid, m.objid, 0) FROM member m
    UNION ALL
    -- functions, procedures, aggregates: definition, owner, privileges, settings
    SELECT 'function ' || p.oid::regprocedure::text || E'\n' ||
           CASE WHEN p.prokind = 'a' THEN 'aggregate' ELSE pg_get_functiondef(p.oid) END ||
           E'\n owner ' || pg_get_userbyid(p.proowner) ||
           E'\n acl ' || coalesce(array_to_string(ARRAY(SELECT x::text FROM unnest(p.proacl) x ORDER BY 1), ','), '(default)') ||
           E'\n config ' || coalesce(array_to_string(p.proconfig, ','), '')
      FROM pg_proc p JOIN member m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
    UNION ALL
    SELECT 'aggregate ' || a.aggfnoid::regprocedure::text || ' sfunc ' || a.aggtransfn::regproc::text ||
           ' final ' || a.aggfinalfn::regproc::text || ' stype ' || format_type(a.aggtranstype, NULL) ||
           ' init ' || coalesce(a.agginitval, '(null)')
      FROM pg_aggregate a JOIN member m ON m.classid = 'pg_proc'::regclass AND m.objid = a.aggfnoid
    UNION ALL
    -- relations: kind, owner, privileges, options
    SELECT 'relation ' || c.oid::regclass::text || ' kind ' || c.relkind::text ||
           ' owner ' || pg_get_userbyid(c.relowner) ||
           ' acl ' || coalesce(array_to_string(ARRAY(SELECT x::text FROM unnest(c.relacl) x ORDER BY 1), ','), '(default)') ||
           ' options ' || coalesce(array_to_string(c.reloptions, ','), '') ||
           ' persistence ' || c.relpersistence::text
      FROM rel c
    UNION ALL
    -- columns, in order
    SELECT 'column ' || c.oid::regclass::text || ' ' || a.attnum || ' ' || quote_ident(a.attname) || ' ' ||
           format_type(a.atttypid, a.atttypmod) ||
           CASE WHEN a.attnotnull THEN ' not null' ELSE '' END ||
           coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '') ||
           CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END ||
           CASE WHEN a.attgenerated <> '' THEN ' generated ' || a.attgenerated::text ELSE '' END ||
           coalesce(' collation ' || nullif(a.attcollation, 0)::regcollation::text, '') ||
           coalesce(' acl ' || array_to_string(a.attacl, ','), '')
      FROM rel c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
     WHERE c.relkind IN ('r', 'v', 'p', 'm')
    UNION ALL
    SELECT 'constraint ' || con.conrelid::regclass::text || ' ' || con.conname || ' ' || pg_get_constraintdef(con.oid)
      FROM pg_constraint con JOIN rel c ON con.conrelid = c.oid
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
      FROM pg_index i JOIN rel c ON i.indrelid = c.oid
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' enabled ' || t.tgenabled::text
      FROM pg_trigger t JOIN rel c ON t.tgrelid = c.oid WHERE NOT t.tgisinternal
    UNION ALL
    SELECT 'policy ' || pol.polrelid::regclass::text || ' ' || pol.polname || ' ' || pol.polcmd::text ||
           ' ' || coalesce(pg_get_expr(pol.polqual, pol.polrelid), '') || ' ' || coalesce(pg_get_expr(pol.polwithcheck, pol.polrelid), '')
      FROM pg_policy pol JOIN rel c ON pol.polrelid = c.oid
    UNION ALL
    SELECT 'rls ' || c.oid::regclass::text || ' ' || c.relrowsecurity || ' ' || c.relforcerowsecurity
      FROM rel c WHERE c.relkind IN ('r', 'p')
    UNION ALL
    SELECT 'view ' || c.oid::regclass::text || E'\n' || pg_get_viewdef(c.oid)
      FROM rel c WHERE c.relkind IN ('v', 'm')
    UNION ALL
    SELECT 'sequence ' || s.seqrelid::regclass::text || ' ' || format_type(s.seqtypid, NULL) || ' ' || s.seqstart ||
           ' ' || s.seqincrement || ' ' || s.seqmax || ' ' || s.seqmin || ' ' || s.seqcache || ' ' || s.seqcycle
      FROM pg_sequence s JOIN rel c ON s.seqrelid = c.oid
    UNION ALL
    SELECT 'type ' || t.oid::regtype::text || ' ' || t.typtype::text || ' owner ' || pg_get_userbyid(t.typowner)
      FROM pg_type t JOIN member m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
    UNION ALL
    SELECT 'enum ' || e.enumtypid::regtype::text || ' ' || e.enumlabel || ' ' || e.enumsortorder
      FROM pg_enum e JOIN member m ON m.classid = 'pg_type'::regclass AND m.objid = e.enumtypid
    UNION ALL
    -- what pg_dump keeps of the extension's tables (pg_extension_config_dump)
    SELECT 'config_dump ' || x.tbl::regclass::text || ' ' || coalesce(x.cond, '(null)')
      FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS x(tbl, cond)
     WHERE e.extname = 'delq'
    UNION ALL
    SELECT 'extension ' || e.extname || ' owner ' || pg_get_userbyid(e.extowner) || ' schema ' ||
           e.extnamespace::regnamespace::text || ' relocatable ' || e.extrelocatable
      FROM pg_extension e WHERE e.extname = 'delq'
    UNION ALL
    SELECT 'schema ' || n.nspname || ' owner ' || pg_get_userbyid(n.nspowner) || ' acl ' ||
           coalesce(array_to_string(ARRAY(SELECT x::text FROM unnest(n.nspacl) x ORDER BY 1), ','), '(default)')
      FROM pg_namespace n WHERE n.nspname = 'delq'
    UNION ALL
    -- the roles the extension creates and how they nest
    SELECT 'role ' || r.rolname || ' login ' || r.rolcanlogin || ' super ' || r.rolsuper ||
           ' member of ' || coalesce((SELECT string_agg(g.rolname, ',' ORDER BY g.rolname)
                                        FROM pg_auth_members am JOIN pg_roles g ON g.oid = am.roleid
                                       WHERE am.member = r.oid), '')
      FROM pg_roles r WHERE r.rolname LIKE 'delq\_%'
    UNION ALL
    -- initial rows of the extension's own tables that are not user data
    SELECT 'key ' || k.name || ' ' || count(*) FROM delq.key k GROUP BY k.name
    UNION ALL
    SELECT 'comment ' || pg_describe_object(d.classoid, d.objoid, d.objsubid) || ' ' || d.description
      FROM pg_description d JOIN member m ON m.classid = d.classoid AND m.objid = d.objoid
)
SELECT f FROM facts ORDER BY f;
