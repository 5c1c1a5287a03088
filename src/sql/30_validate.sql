-- Argument checks shared by the API functions.  Each raises the SQLSTATE
-- of docs/sql-api.md (the table of SQLSTATEs) with a message that names the argument and a hint that
-- says what is allowed.  Limits are documented in docs/sql-api.md.

CREATE OR REPLACE FUNCTION delq._not_null(arg text, val anyelement)
RETURNS anyelement
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF val IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', arg
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = format('Pass a value for %s.', arg);
    END IF;
    RETURN val;
END
$$;

-- Raise 22023.  VOLATILE: raising is its effect, and the planner evaluates
-- an IMMUTABLE call with constant arguments while it plans (so a branch
-- never taken would raise; sql/plpgsql_check.sql found it).
CREATE OR REPLACE FUNCTION delq._invalid(arg text, problem text, hint text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- what a caller passed never brings a line break into the server log
    RAISE EXCEPTION '% %', arg, regexp_replace(problem, '[[:cntrl:]]', '?', 'g')
        USING ERRCODE = 'invalid_parameter_value', HINT = hint;
END
$$;

-- Free text: required or not, at most max_chars characters, no control
-- characters (newline and tab allowed when multiline).
CREATE OR REPLACE FUNCTION delq._check_text(arg text, val text, max_chars integer,
                                 required boolean, multiline boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF val IS NULL THEN
        IF required THEN
            PERFORM delq._not_null(arg, val);
        END IF;
        RETURN NULL;
    END IF;
    IF btrim(val, E' \t\r\n') = '' THEN
        PERFORM delq._invalid(arg, 'must not be empty or blank',
                              format('Pass a non-blank %s, or NULL where allowed.', arg));
    END IF;
    IF length(val) > max_chars THEN
        PERFORM delq._invalid(arg, format('is too long (%s characters)', length(val)),
                              format('%s may have at most %s characters.', arg, max_chars));
    END IF;
    IF (multiline AND val ~ '[\x01-\x08\x0b-\x1f\x7f]')
       OR (NOT multiline AND val ~ '[[:cntrl:]]') THEN
        PERFORM delq._invalid(arg, 'contains control characters',
                              CASE WHEN multiline
                                   THEN format('%s may contain newlines and tabs but no other control characters.', arg)
                                   ELSE format('%s must be printable text without control characters.', arg) END);
    END IF;
    RETURN val;
END
$$;

-- Source system names: lower-case words such as "shop", "crm.eu", "app-2".
CREATE OR REPLACE FUNCTION delq._check_source(val text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq._not_null('source', val);
    IF val !~ '^[a-z][a-z0-9_.-]{0,62}$' THEN
        PERFORM delq._invalid('source', format('%s is not a valid source name', quote_literal(val)),
                              'A source is 1 to 63 characters: a lower-case letter, then lower-case letters, digits, "_", "." or "-".');
    END IF;
    RETURN val;
END
$$;

-- Destination names are plain SQL-style identifiers.
CREATE OR REPLACE FUNCTION delq._check_name(arg text, val text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq._not_null(arg, val);
    IF val !~ '^[a-z_][a-z0-9_]{0,62}$' THEN
        PERFORM delq._invalid(arg, format('%s is not a plain identifier', quote_literal(val)),
                              'Use 1 to 63 lower-case letters, digits and "_", starting with a letter or "_".');
    END IF;
    RETURN val;
END
$$;

-- A JSON object of at most max_bytes bytes (as text).
CREATE OR REPLACE FUNCTION delq._check_object(arg text, val jsonb, max_bytes integer)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq._not_null(arg, val);
    IF jsonb_typeof(val) <> 'object' THEN
        PERFORM delq._invalid(arg, format('must be a JSON object, not %s', jsonb_typeof(val)),
                              format('Pass an object such as ''{"key": "value"}'' (''{}'' for none).'));
    END IF;
    IF octet_length(val::text) > max_bytes THEN
        PERFORM delq._invalid(arg, format('is too large (%s bytes)', octet_length(val::text)),
                              format('%s may have at most %s bytes as JSON text.', arg, max_bytes));
    END IF;
    RETURN val;
END
$$;

-- How deeply objects and arrays nest in val (a scalar: 0), counted up to
-- stop at most.  plpgsql, not sql: a sql function with a SET clause is
-- planned again on every call (about 0.25 ms a submit); this plan is kept.
CREATE OR REPLACE FUNCTION delq._json_depth(val jsonb, stop integer)
RETURNS integer
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (
    WITH RECURSIVE level(v, depth) AS (
        SELECT val, 1 WHERE jsonb_typeof(val) IN ('object', 'array')
        UNION ALL
        SELECT c.v, l.depth + 1
          FROM level l
         CROSS JOIN LATERAL (
                SELECT e.value FROM jsonb_each(CASE WHEN jsonb_typeof(l.v) = 'object' THEN l.v ELSE '{}' END) e
                UNION ALL
                SELECT a.value FROM jsonb_array_elements(CASE WHEN jsonb_typeof(l.v) = 'array' THEN l.v ELSE '[]' END) a
              ) c(v)
         WHERE l.depth < stop AND jsonb_typeof(c.v) IN ('object', 'array')
    )
    SELECT coalesce(max(depth), 0) FROM level);
END
$$;

CREATE OR REPLACE FUNCTION delq._check_attributes(val jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq._check_object('attributes', val, 16384);
    IF val ?| ARRAY['source', 'reason'] THEN
        PERFORM delq._invalid('attributes', 'must not contain the keys "source" or "reason"',
                              'Routing adds "source" and "reason" from the arguments of the same name; rename the attribute.');
    END IF;
    -- receivers' JSON parsers limit nesting (Rails: 100); delq allows 32
    -- levels of objects and arrays, the attributes object being the first
    -- (each level opens with "{" or "["; with at most 32 of them in the
    -- text, strings included, the walk is not needed)
    IF length(val::text) - length(translate(val::text, '{[', '')) > 32
       AND delq._json_depth(val, 33) > 32 THEN
        PERFORM delq._invalid('attributes', 'are nested too deeply',
                              'Attributes may nest objects and arrays 32 levels deep at most (the attributes object counts as one).');
    END IF;
    RETURN val;
END
$$;

-- http or https URL with a host, no user information, no spaces.
CREATE OR REPLACE FUNCTION delq._check_url(val text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq._not_null('url', val);
    IF length(val) > 2048
       OR val !~* '^https?://(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9.-]*[a-z0-9])?)(:[0-9]{1,5})?([/?][^[:space:][:cntrl:]#]*)?$' THEN
        PERFORM delq._invalid('url', format('%s is not an http or https URL with a host', quote_literal(left(val, 100))),
                              'Use http://host[:port]/path or https://host[:port]/path, at most 2048 characters, without credentials or fragment; put credentials in headers.');
    END IF;
    IF coalesce(substring(val from '(?i)^https?://(?:\[[^]]*\]|[^:/?]*):([0-9]+)')::integer, 1) NOT BETWEEN 1 AND 65535 THEN
        PERFORM delq._invalid('url', 'has a port outside 1..65535', 'Use a TCP port between 1 and 65535.');
    END IF;
    RETURN val;
END
$$;

-- The header names delq sets itself, lower case, for a webhook or (false)
-- a templated request: src/httpclient.c and src/webhook.c hold them.
CREATE OR REPLACE FUNCTION delq._reserved_headers(webhook boolean)
RETURNS text[]
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'delq_reserved_headers';

-- A header name a destination gives (arg names the argument): a token of 1
-- to 100 characters that delq does not set itself (_reserved_headers).
-- For webhooks (_check_headers) and templated requests (55_templates.sql).
CREATE OR REPLACE FUNCTION delq._check_header_name(arg text, name text, webhook boolean)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF name !~ '^[!#$%&''*+.^_`|~0-9A-Za-z-]{1,100}$' THEN
        PERFORM delq._invalid(arg, format('has an invalid header name %s', quote_literal(left(name, 100))),
                              'Header names are 1 to 100 token characters (letters, digits, "-", ...).');
    END IF;
    IF lower(name) = ANY (delq._reserved_headers(webhook)) THEN
        PERFORM delq._invalid(arg, format('may not set %s', name),
                              format('delq sets these headers itself: %s.',
                                     array_to_string(delq._reserved_headers(webhook), ', ')));
    END IF;
END
$$;

-- Extra HTTP headers: an object of "Name": "value" strings.  The headers
-- delq sets itself cannot be overridden (_check_header_name).
CREATE OR REPLACE FUNCTION delq._check_headers(val jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    v jsonb;
BEGIN
    PERFORM delq._check_object('headers', val, 16384);
    FOR k, v IN SELECT * FROM jsonb_each(val) LOOP
        PERFORM delq._check_header_name('headers', k, true);
        IF jsonb_typeof(v) <> 'string' OR length(v #>> '{}') > 4096 OR (v #>> '{}') ~ '[[:cntrl:]]' THEN
            PERFORM delq._invalid('headers', format('has an invalid value for %s', k),
                                  'Header values are strings of at most 4096 characters without control characters.');
        END IF;
    END LOOP;
    RETURN val;
END
$$;

-- Whether the worker can sign with a secret: src/signing.c, the one home of
-- the secret format (whsec_<padded base64 of 24..64 bytes>).
-- Not STRICT: the planner would fold a call with NULL without checking
-- the privilege to call it (test/pgtap/privileges.sql).
CREATE OR REPLACE FUNCTION delq._secret_valid(secret text)
RETURNS boolean
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'delq_secret_valid';

-- Signing secrets as Standard Webhooks writes them (_secret_valid).
CREATE OR REPLACE FUNCTION delq._check_secret(val text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF val IS NULL THEN
        RETURN NULL;
    END IF;
    IF NOT delq._secret_valid(val) THEN
        PERFORM delq._invalid('secret', 'is not a valid signing secret',
                              'Use "whsec_" followed by the base64 of 24 to 64 random bytes, e.g. ''whsec_'' || encode(gen_random_bytes(32), ''base64'') with pgcrypto.');
    END IF;
    RETURN val;
END
$$;

-- An interval between lo and hi, returned in milliseconds.
CREATE OR REPLACE FUNCTION delq._check_duration(arg text, val interval, lo interval, hi interval)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq._not_null(arg, val);
    IF val < lo OR val > hi THEN
        PERFORM delq._invalid(arg, format('is out of range (%s)', val),
                              format('%s must be between %s and %s.', arg, lo, hi));
    END IF;
    RETURN (extract(epoch FROM val) * 1000)::bigint;
END
$$;

-- An interval that must not be negative (NULL passes: callers decide
-- whether NULL means a default); hint says what to pass instead.
CREATE OR REPLACE FUNCTION delq._check_not_negative(arg text, val interval, hint text)
RETURNS interval
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF val < interval '0' THEN
        PERFORM delq._invalid(arg, 'must not be negative', hint);
    END IF;
    RETURN val;
END
$$;

CREATE OR REPLACE FUNCTION delq._check_range(arg text, val integer, lo integer, hi integer)
RETURNS integer
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF val IS NOT NULL AND val NOT BETWEEN lo AND hi THEN
        PERFORM delq._invalid(arg, format('is out of range (%s)', val),
                              format('%s must be between %s and %s.', arg, lo, hi));
    END IF;
    RETURN val;
END
$$;

-- A file path for TLS material: absolute, no control characters.
-- A TLS file of a destination: an absolute path inside delq.tls_dir (a
-- superuser setting; empty: no file allowed), without "..", so that an
-- admin cannot make the server read its own key or any other file.  The
-- worker checks the resolved path again before each send (src/forward.c).
CREATE OR REPLACE FUNCTION delq._check_path(arg text, val text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dir text;
BEGIN
    IF val IS NULL THEN
        RETURN NULL;
    END IF;
    IF val !~ '^/' OR val ~ '[[:cntrl:]]' OR length(val) > 1024 THEN
        PERFORM delq._invalid(arg, 'must be an absolute file path',
                              format('Pass the absolute path of a PEM file readable by the server, or NULL.'));
    END IF;
    PERFORM delq._load();
    dir := rtrim(current_setting('delq.tls_dir', true), '/');
    IF coalesce(dir, '') = '' THEN
        PERFORM delq._invalid(arg, 'names a file, but delq.tls_dir is not set',
                              'A superuser sets delq.tls_dir to the directory that holds the destinations'' TLS files; then pass a path inside it.');
    END IF;
    IF left(val, length(dir) + 1) <> dir || '/' OR val ~ '(^|/)\.\.?(/|$)' THEN
        PERFORM delq._invalid(arg, format('is not a file in delq.tls_dir (%s)', dir),
                              'Put the PEM file in the directory named by delq.tls_dir, and pass its path there (no "." or ".." components).');
    END IF;
    RETURN val;
END
$$;
