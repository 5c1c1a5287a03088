-- The roles, created if absent (they are cluster-wide and outlive the
-- extension).  delq_consumer (1.1) stands apart from the other three: the
-- consumers of pull destinations get it (52_pull.sql), and with it only
-- take, ack, nack and the view delq.tasks, filtered to their own work.
-- Privileges are granted in 90_security.sql and by the files that define
-- the objects.

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['delq_submitter', 'delq_operator', 'delq_admin', 'delq_consumer'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;

GRANT delq_submitter TO delq_operator;
GRANT delq_operator TO delq_admin;

