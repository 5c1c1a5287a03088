-- The connector catalogue (docs/connectors.md): ready-made templates for
-- vendors' deletion APIs, and add_connector(), which makes a templated
-- destination from one.  The rows are the connectors/ definitions.

CREATE TABLE IF NOT EXISTS delq.connectors (
    name text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    -- what it erases, in one sentence
    erases text NOT NULL,
    -- what identifies the person, and what happens when it is absent
    identifier text NOT NULL,
    -- setting name -> {"required": bool, "secret": bool, "default": text, "about": text};
    -- base_url always among them
    settings jsonb NOT NULL CHECK (jsonb_typeof(settings) = 'object' AND settings ? 'base_url'),
    -- the vendor documentation the template follows
    documentation text[] NOT NULL,
    -- the request document (docs/connectors.md)
    request jsonb NOT NULL CHECK (jsonb_typeof(request) = 'object')
);

-- no secrets in it (settings are declared, not given)
GRANT SELECT ON delq.connectors TO delq_operator;

-- Create the templated destination name from connector, with settings:
-- base_url becomes its url, every other setting a credential.
CREATE OR REPLACE FUNCTION delq.add_connector(name text, connector text, settings jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- settings hold the system's keys: a failing call's statement stays out of
-- the server log (docs/security.md, "Secrets")
SET log_min_error_statement = panic
AS $$
DECLARE
    c delq.connectors;
    k text;
    v jsonb;
    given jsonb;
    base text;
    credentials jsonb := '{}'::jsonb;
BEGIN
    PERFORM delq._check_name('name', name);
    PERFORM delq._not_null('connector', connector);
    PERFORM delq._check_object('settings', settings, 16384);
    SELECT * INTO c FROM delq.connectors x WHERE x.name = connector;
    IF c.name IS NULL THEN
        RAISE EXCEPTION 'connector % does not exist', quote_literal(left(connector, 100))
            USING ERRCODE = 'undefined_object',
                  HINT = 'See delq.connectors for the names.';
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(settings) LOOP
        IF NOT c.settings ? k THEN
            PERFORM delq._invalid('settings', format('has %s, which connector %s does not take', quote_literal(left(k, 100)), c.name),
                                  format('Settings of %s: %s.', c.name,
                                         array_to_string(ARRAY(SELECT jsonb_object_keys(c.settings) ORDER BY 1), ', ')));
        END IF;
        IF jsonb_typeof(v) <> 'string' THEN
            PERFORM delq._invalid('settings', format('%s must be a string', k), 'Settings are strings.');
        END IF;
    END LOOP;
    base := rtrim(coalesce(settings ->> 'base_url', c.settings -> 'base_url' ->> 'default'), '/');
    FOR k, v IN SELECT * FROM jsonb_each(c.settings) LOOP
        given := settings -> k;
        -- a default may derive from the base URL (auth0's audience is
        -- {{base_url}}/api/v2/); without a base URL that error comes below
        IF given IS NULL AND v ? 'default'
           AND (strpos(v ->> 'default', '{{base_url}}') OPERATOR(pg_catalog.=) 0 OR base IS NOT NULL) THEN
            given := to_jsonb(replace(v ->> 'default', '{{base_url}}', base));
        END IF;
        IF given IS NULL THEN
            IF coalesce((v ->> 'required')::boolean, false) THEN
                PERFORM delq._invalid('settings', format('lacks %s, which connector %s needs', k, c.name),
                                      coalesce(v ->> 'about', format('Pass settings => ''{"%s": "..."}''.', k)));
            END IF;
            CONTINUE;
        END IF;
        IF k <> 'base_url' THEN
            credentials := credentials || jsonb_build_object(k, given);
        END IF;
    END LOOP;
    PERFORM delq.add_destination(name, coalesce(settings ->> 'base_url', c.settings -> 'base_url' ->> 'default'),
                                 request => c.request,
                                 credentials => nullif(credentials, '{}'));
    PERFORM delq._log('connector_added', NULL, name,
                      jsonb_build_object('connector', c.name,
                                         'settings', ARRAY(SELECT jsonb_object_keys(settings) ORDER BY 1)));
END
$$;
