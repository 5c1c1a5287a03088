-- The three roles, created if absent (they are cluster-wide and outlive the
-- extension).  Privileges are granted in 90_security.sql and by the files
-- that define the objects.

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['delq_submitter', 'delq_operator', 'delq_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;

GRANT delq_submitter TO delq_operator;
GRANT delq_operator TO delq_admin;

