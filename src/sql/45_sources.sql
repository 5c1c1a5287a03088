-- Sources bound to roles: which roles may submit requests for a source
-- (docs/security.md, "Sources").  A source names the application whose
-- data a request covers; it chooses the routes that match and scopes the
-- idempotency key (source, external_id).  Without bindings any submitter
-- could claim another application's source and its keys.
--
-- While delq.source_grant is empty (a single-application installation,
-- and every installation upgraded from 1.0), any delq_submitter may use
-- any source, as in 1.0.  Once it holds a row, every submit() needs a row
-- for its source naming a role that the calling role is a member of; a
-- source without a row is then refused too.

CREATE TABLE IF NOT EXISTS delq.source_grant (
    source text NOT NULL,
    role name NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (source, role)
);

SELECT pg_catalog.pg_extension_config_dump('delq.source_grant', '');

-- The role a call is made for: the SET ROLE of the session, else its login
-- role.  (current_user inside a SECURITY DEFINER function is the owner.)
CREATE OR REPLACE FUNCTION delq._caller()
RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(nullif(current_setting('role'), 'none'), session_user)::name;
$$;

-- Refuses (42501) a submit for source by a role it is not bound to.
CREATE OR REPLACE FUNCTION delq._check_source_grant(source text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM delq.source_grant)
       AND NOT EXISTS (SELECT 1 FROM delq.source_grant g JOIN pg_roles r ON r.rolname = g.role
                        WHERE g.source = _check_source_grant.source
                          AND pg_has_role(delq._caller(), r.oid, 'MEMBER')) THEN
        RAISE EXCEPTION 'role % may not submit requests for source %',
                        quote_ident(delq._caller()), quote_literal(source)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Sources are bound to roles: a delq_admin runs delq.grant_source(source, role) (see table delq.source_grant).';
    END IF;
END
$$;

-- A role name that exists (42704 otherwise).
CREATE OR REPLACE FUNCTION delq._check_role(val text)
RETURNS name
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq._not_null('role', val);
    IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = val) THEN
        RAISE EXCEPTION 'role % does not exist', quote_ident(left(val, 63))
            USING ERRCODE = 'undefined_object',
                  HINT = 'Pass the name of an existing role, as in pg_roles.rolname.';
    END IF;
    RETURN val::name;
END
$$;

-- Let members of role submit requests for source.  Idempotent.
CREATE OR REPLACE FUNCTION delq.grant_source(source text, role text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq._check_source(source);
    INSERT INTO delq.source_grant AS g (source, role)
    VALUES (grant_source.source, delq._check_role(grant_source.role))
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        PERFORM delq._log('source_granted', NULL, NULL,
                          jsonb_build_object('source', source, 'role', role));
    END IF;
END
$$;

-- Take the binding back.  Removing the last binding of all lets every
-- submitter use every source again (see above).
CREATE OR REPLACE FUNCTION delq.revoke_source(source text, role text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq._check_source(source);
    PERFORM delq._not_null('role', role);
    DELETE FROM delq.source_grant g
     WHERE g.source = revoke_source.source AND g.role = revoke_source.role;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'source % is not granted to role %', quote_literal(source), quote_ident(left(role, 63))
            USING ERRCODE = 'undefined_object',
                  HINT = 'See table delq.source_grant for the bindings.';
    END IF;
    PERFORM delq._log('source_revoked', NULL, NULL,
                      jsonb_build_object('source', source, 'role', role));
END
$$;

REVOKE ALL ON delq.source_grant FROM PUBLIC;
GRANT SELECT ON delq.source_grant TO delq_operator;
GRANT EXECUTE ON FUNCTION delq.grant_source(text, text), delq.revoke_source(text, text)
    TO delq_admin;
