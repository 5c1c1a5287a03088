-- Request templates of templated HTTP destinations (docs/connectors.md):
-- the one parser of placeholders, the checks run when a template is added,
-- and the rendering run when a step is sent (src/sql/72_steps.sql).  The
-- checks and the rendering share _tpl_parse and _tpl_names, so what is
-- accepted is what can be rendered.

-- A string cut into literal text and placeholders: one row per literal,
-- with the placeholder that follows it (name NULL after the last one).
CREATE OR REPLACE FUNCTION delq._tpl_parse(s text)
RETURNS TABLE (lit text, name text, filters text[])
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT l.piece, m.x[1],
           array_remove(regexp_split_to_array(regexp_replace(m.x[2], '\s', '', 'g'), '\|'), '')
      FROM unnest(regexp_split_to_array(s, '\{\{\s*([^{}|\s]+)\s*((?:\|\s*[^{}|\s]*\s*)*)\}\}'))
           WITH ORDINALITY AS l(piece, n)
      LEFT JOIN regexp_matches(s, '\{\{\s*([^{}|\s]+)\s*((?:\|\s*[^{}|\s]*\s*)*)\}\}', 'g')
           WITH ORDINALITY AS m(x, n) ON m.n = l.n
     ORDER BY l.n
$$;

-- Placeholders that are one name without a key; the others take a key
-- (attributes.<key>, credentials.<key>) or may (item, item.<key>).
CREATE OR REPLACE FUNCTION delq._tpl_names()
RETURNS text[]
LANGUAGE sql IMMUTABLE
RETURN ARRAY['subject', 'request_id', 'webhook_id', 'source', 'reason', 'external_id',
             'due_at', 'submitted_at', 'job_id', 'token'];

CREATE OR REPLACE FUNCTION delq._tpl_filters()
RETURNS text[]
LANGUAGE sql IMMUTABLE
RETURN ARRAY['lower', 'upper', 'trim', 'md5', 'sha256', 'base64', 'urlencode'];

-- Check every placeholder of one string.  allowed: the names usable where
-- the string is (item, job_id and token only in some steps).
CREATE OR REPLACE FUNCTION delq._tpl_check_text(s text, at text, allowed text[], credentials jsonb)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    head text;
    f text;
BEGIN
    IF s !~ '\{\{|\}\}' THEN
        RETURN;
    END IF;
    FOR r IN SELECT * FROM delq._tpl_parse(s) LOOP
        IF r.lit ~ '\{\{|\}\}' THEN
            PERFORM delq._invalid(at, 'has a malformed placeholder',
                                  'Write placeholders as {{name}} or {{name | transformation}}; see docs/connectors.md.');
        END IF;
        CONTINUE WHEN r.name IS NULL;
        head := split_part(r.name, '.', 1);
        IF NOT (head = ANY (allowed))
           OR (head = ANY (delq._tpl_names()) AND r.name <> head)
           OR (head IN ('attributes', 'credentials') AND r.name !~ '^[a-z]+\.[^.]+')
           OR (r.name ~ '\.\.|\.$') THEN
            PERFORM delq._invalid(at, format('has an unknown placeholder {{%s}}', left(r.name, 100)),
                                  format('Usable here: %s; see docs/connectors.md.',
                                         array_to_string(ARRAY(SELECT CASE WHEN a IN ('attributes', 'credentials')
                                                                           THEN a || '.<key>' ELSE a END
                                                                 FROM unnest(allowed) a), ', ')));
        END IF;
        IF head = 'credentials' AND NOT coalesce(credentials ? substr(r.name, 13), false) THEN
            PERFORM delq._invalid(at, format('uses {{%s}}, which the credentials do not have', left(r.name, 100)),
                                  'Pass credentials => ''{"key": "..."}'' with every key the template uses.');
        END IF;
        FOREACH f IN ARRAY r.filters LOOP
            IF NOT (f = ANY (delq._tpl_filters())) THEN
                PERFORM delq._invalid(at, format('has an unknown transformation %s', quote_literal(left(f, 100))),
                                      format('Transformations: %s.', array_to_string(delq._tpl_filters(), ', ')));
            END IF;
        END LOOP;
    END LOOP;
END
$$;

-- Check every string (values and keys) of a JSON value.
CREATE OR REPLACE FUNCTION delq._tpl_check_json(j jsonb, at text, allowed text[], credentials jsonb)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    v jsonb;
BEGIN
    CASE jsonb_typeof(j)
        WHEN 'string' THEN
            PERFORM delq._tpl_check_text(j #>> '{}', at, allowed, credentials);
        WHEN 'object' THEN
            FOR k, v IN SELECT * FROM jsonb_each(j) LOOP
                PERFORM delq._tpl_check_text(k, at, allowed, credentials);
                PERFORM delq._tpl_check_json(v, at || '.' || k, allowed, credentials);
            END LOOP;
        WHEN 'array' THEN
            FOR v IN SELECT * FROM jsonb_array_elements(j) LOOP
                PERFORM delq._tpl_check_json(v, at || '[]', allowed, credentials);
            END LOOP;
        ELSE
            NULL;
    END CASE;
END
$$;

-- An object whose values are strings (query, form, headers).
CREATE OR REPLACE FUNCTION delq._tpl_check_strings(j jsonb, at text, allowed text[], credentials jsonb,
                                                   header_names boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    v jsonb;
BEGIN
    IF j IS NULL THEN
        RETURN;
    END IF;
    IF jsonb_typeof(j) <> 'object' THEN
        PERFORM delq._invalid(at, 'must be a JSON object of strings', 'Pass {"name": "value", ...}.');
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(j) LOOP
        IF jsonb_typeof(v) <> 'string' THEN
            PERFORM delq._invalid(at || '.' || k, 'must be a string', 'Values here are strings (placeholders allowed).');
        END IF;
        IF header_names THEN
            PERFORM delq._check_header_name(at, k, false);
            IF (v #>> '{}') ~ '[[:cntrl:]]' THEN
                PERFORM delq._invalid(at || '.' || k, 'contains control characters',
                                      'Header values must not contain control characters.');
            END IF;
        ELSE
            PERFORM delq._tpl_check_text(k, at, allowed, credentials);
        END IF;
        PERFORM delq._tpl_check_text(v #>> '{}', at || '.' || k, allowed, credentials);
    END LOOP;
END
$$;

-- A URL template: literal http(s)://host or a path relative to base_url
-- before the first placeholder.
CREATE OR REPLACE FUNCTION delq._tpl_check_url(u jsonb, at text, allowed text[], credentials jsonb,
                                               base_url text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fixed text;
BEGIN
    IF u IS NULL OR jsonb_typeof(u) <> 'string' THEN
        PERFORM delq._invalid(at, 'must be a URL string',
                              'Give "url": "https://host/path" or "/path" (relative to the destination''s url).');
    END IF;
    PERFORM delq._tpl_check_text(u #>> '{}', at, allowed, credentials);
    fixed := split_part(u #>> '{}', '{{', 1);
    IF fixed LIKE '/%' THEN
        fixed := rtrim(base_url, '/') || fixed;
    END IF;
    -- the host must be literal: a placeholder may follow only its end
    IF fixed !~* '^https?://(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9.-]*[a-z0-9])?)(:[0-9]{1,5})?[/?]'
       AND NOT (fixed = u #>> '{}'
                AND fixed ~* '^https?://(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9.-]*[a-z0-9])?)(:[0-9]{1,5})?$') THEN
        PERFORM delq._invalid(at, format('is not an http or https URL once its fixed part %s is rendered',
                                         quote_literal(left(fixed, 100))),
                              'Begin the URL with literal text: https://host/..., http://host/... or /... (relative to the destination''s url).');
    END IF;
    IF fixed ~ '[[:space:][:cntrl:]#]' THEN
        PERFORM delq._invalid(at, 'contains white space or a fragment', 'Write placeholders for variable parts.');
    END IF;
END
$$;

-- A JSON path or predicate, parsed as PostgreSQL's jsonpath.
CREATE OR REPLACE FUNCTION delq._tpl_check_path(p jsonb, at text, required boolean)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p IS NULL THEN
        IF required THEN
            PERFORM delq._invalid(at, 'is missing', 'Give a JSON path such as "$.data[*].id".');
        END IF;
        RETURN;
    END IF;
    IF jsonb_typeof(p) <> 'string' THEN
        PERFORM delq._invalid(at, 'must be a JSON path string', 'Give a JSON path such as "$.data[*].id".');
    END IF;
    BEGIN
        PERFORM (p #>> '{}')::jsonpath;
    EXCEPTION WHEN syntax_error OR invalid_text_representation THEN
        PERFORM delq._invalid(at, format('is not a valid JSON path: %s', quote_literal(left(p #>> '{}', 200))),
                              'Use PostgreSQL''s SQL/JSON path language, e.g. "$.data[*].id" or "$.status == \"done\"".');
    END;
END
$$;

-- An interval given as a string, within [lo, hi].
CREATE OR REPLACE FUNCTION delq._tpl_interval(v jsonb, at text, dflt interval, lo interval, hi interval)
RETURNS interval
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i interval;
BEGIN
    IF v IS NULL THEN
        RETURN dflt;
    END IF;
    BEGIN
        i := (v #>> '{}')::interval;
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR invalid_parameter_value
                   OR interval_field_overflow THEN
        i := NULL;
    END;
    IF jsonb_typeof(v) <> 'string' OR i IS NULL OR i NOT BETWEEN lo AND hi THEN
        PERFORM delq._invalid(at, format('must be an interval between %s and %s seconds',
                                         extract(epoch FROM lo)::bigint, extract(epoch FROM hi)::bigint),
                              'Give a string such as "30 seconds" or "1 hour".');
    END IF;
    RETURN i;
END
$$;

-- answers: {"done"|"not_held"|"retry"|"fail": [code or "Nxx", ...]}
CREATE OR REPLACE FUNCTION delq._tpl_check_answers(a jsonb, at text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    v jsonb;
    e jsonb;
    seen text[] := '{}'::text[];
BEGIN
    IF a IS NULL THEN
        RETURN;
    END IF;
    IF jsonb_typeof(a) <> 'object' THEN
        PERFORM delq._invalid(at, 'must be a JSON object', 'Give {"done": [...], "not_held": [404], ...}.');
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(a) LOOP
        IF k NOT IN ('done', 'not_held', 'retry', 'fail') THEN
            PERFORM delq._invalid(at, format('has an unknown class %s', quote_literal(left(k, 100))),
                                  'Classes are done, not_held, retry and fail.');
        END IF;
        IF jsonb_typeof(v) <> 'array' THEN
            PERFORM delq._invalid(at || '.' || k, 'must be an array', 'Give a list such as [404, "5xx"].');
        END IF;
        FOR e IN SELECT * FROM jsonb_array_elements(v) LOOP
            IF NOT ((jsonb_typeof(e) = 'number' AND (e #>> '{}') ~ '^[1-5][0-9][0-9]$')
                    OR (jsonb_typeof(e) = 'string' AND (e #>> '{}') ~ '^[1-5]xx$')) THEN
                PERFORM delq._invalid(at || '.' || k, format('has %s, which is not a status code or class', left(e::text, 100)),
                                      'Give status codes 100 to 599 or classes "1xx" to "5xx".');
            END IF;
            IF (e #>> '{}') = ANY (seen) THEN
                PERFORM delq._invalid(at, format('lists %s in two places', e #>> '{}'),
                                      'Each status code or class belongs to one class.');
            END IF;
            seen := seen || (e #>> '{}');
        END LOOP;
    END LOOP;
END
$$;

-- One step object.  kind: lookup, erase or poll.
CREATE OR REPLACE FUNCTION delq._tpl_check_step(s jsonb, kind text, allowed text[], credentials jsonb,
                                                base_url text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    at text := 'request.' || kind;
    keys text[] := ARRAY['method', 'url', 'query', 'headers', 'json', 'form', 'answers'];
    k text;
BEGIN
    IF jsonb_typeof(s) IS DISTINCT FROM 'object' THEN
        PERFORM delq._invalid(at, 'must be a JSON object', 'A step is {"method": ..., "url": ..., ...}; see docs/connectors.md.');
    END IF;
    keys := keys || CASE kind WHEN 'lookup' THEN ARRAY['items', 'next', 'max_pages']
                              WHEN 'poll' THEN ARRAY['job_id', 'interval', 'max_time', 'finished', 'failed']
                              ELSE '{}'::text[] END;
    FOR k IN SELECT jsonb_object_keys(s) LOOP
        IF NOT (k = ANY (keys)) THEN
            PERFORM delq._invalid(at, format('has an unknown key %s', quote_literal(left(k, 100))),
                                  format('A %s step has the keys %s.', kind, array_to_string(keys, ', ')));
        END IF;
    END LOOP;
    IF s ? 'method' AND (jsonb_typeof(s -> 'method') <> 'string'
                         OR NOT ((s ->> 'method') = ANY (ARRAY['GET', 'POST', 'PUT', 'PATCH', 'DELETE']))) THEN
        PERFORM delq._invalid(at || '.method', format('is not a method: %s', left((s -> 'method')::text, 100)),
                              'Use GET, POST, PUT, PATCH or DELETE.');
    END IF;
    PERFORM delq._tpl_check_url(s -> 'url', at || '.url', allowed, credentials, base_url);
    PERFORM delq._tpl_check_strings(s -> 'query', at || '.query', allowed, credentials);
    PERFORM delq._tpl_check_strings(s -> 'headers', at || '.headers', allowed, credentials, true);
    PERFORM delq._tpl_check_strings(s -> 'form', at || '.form', allowed, credentials);
    IF s ? 'json' AND s ? 'form' THEN
        PERFORM delq._invalid(at, 'has both json and form', 'A step has one body: json, form, or none.');
    END IF;
    IF s ? 'json' THEN
        PERFORM delq._tpl_check_json(s -> 'json', at || '.json', allowed, credentials);
    END IF;
    PERFORM delq._tpl_check_answers(s -> 'answers', at || '.answers');
    IF kind = 'lookup' THEN
        PERFORM delq._tpl_check_path(s -> 'items', at || '.items', true);
        IF s ? 'next' THEN
            IF jsonb_typeof(s -> 'next') <> 'object'
               OR (s -> 'next') - ARRAY['cursor', 'param', 'link', 'while'] <> '{}'
               OR ((s -> 'next') ? 'cursor') = ((s -> 'next') ? 'link')
               OR ((s -> 'next') ? 'cursor') <> ((s -> 'next') ? 'param')
               OR jsonb_typeof(s -> 'next' -> 'param') NOT IN ('string') THEN
                PERFORM delq._invalid(at || '.next', 'must be {"cursor": path, "param": name} or {"link": path}',
                                      'Optionally with "while": predicate; see docs/connectors.md.');
            END IF;
            PERFORM delq._tpl_check_path(s -> 'next' -> 'cursor', at || '.next.cursor', false);
            PERFORM delq._tpl_check_path(s -> 'next' -> 'link', at || '.next.link', false);
            PERFORM delq._tpl_check_path(s -> 'next' -> 'while', at || '.next.while', false);
        END IF;
        IF s ? 'max_pages' AND (jsonb_typeof(s -> 'max_pages') <> 'number'
                                OR (s ->> 'max_pages') !~ '^[0-9]+$'
                                OR (s ->> 'max_pages')::numeric NOT BETWEEN 1 AND 100) THEN
            PERFORM delq._invalid(at || '.max_pages', 'must be an integer between 1 and 100', 'The default is 10.');
        END IF;
    ELSIF kind = 'poll' THEN
        PERFORM delq._tpl_check_path(s -> 'job_id', at || '.job_id', true);
        PERFORM delq._tpl_check_path(s -> 'finished', at || '.finished', true);
        PERFORM delq._tpl_check_path(s -> 'failed', at || '.failed', false);
        PERFORM delq._tpl_interval(s -> 'interval', at || '.interval', '1 minute', '1 second', '1 day');
        PERFORM delq._tpl_interval(s -> 'max_time', at || '.max_time', '30 days', '1 minute', '400 days');
    END IF;
END
$$;

-- The auth object.
CREATE OR REPLACE FUNCTION delq._tpl_check_auth(a jsonb, credentials jsonb, base_url text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    at text := 'request.auth';
    plain text[] := ARRAY['attributes', 'credentials'];
    o jsonb;
BEGIN
    IF a IS NULL THEN
        RETURN;
    END IF;
    IF jsonb_typeof(a) <> 'object' OR (SELECT count(*) FROM jsonb_object_keys(a)) <> 1
       OR NOT (a ?| ARRAY['bearer', 'basic', 'headers', 'oauth2']) THEN
        PERFORM delq._invalid(at, 'must be one of {"bearer": ...}, {"basic": {...}}, {"headers": {...}}, {"oauth2": {...}}',
                              'See docs/connectors.md, Authentication.');
    END IF;
    IF a ? 'bearer' THEN
        IF jsonb_typeof(a -> 'bearer') <> 'string' THEN
            PERFORM delq._invalid(at || '.bearer', 'must be a string', 'Give "{{credentials.api_key}}" or similar.');
        END IF;
        PERFORM delq._tpl_check_text(a ->> 'bearer', at || '.bearer', plain, credentials);
    ELSIF a ? 'basic' THEN
        IF jsonb_typeof(a -> 'basic') <> 'object' OR (a -> 'basic') - ARRAY['username', 'password'] <> '{}'
           OR NOT (a -> 'basic') ? 'username' THEN
            PERFORM delq._invalid(at || '.basic', 'must be {"username": ..., "password": ...}', 'password may be "".');
        END IF;
        PERFORM delq._tpl_check_strings(a -> 'basic', at || '.basic', plain, credentials);
    ELSIF a ? 'headers' THEN
        PERFORM delq._tpl_check_strings(a -> 'headers', at || '.headers', plain, credentials, true);
    ELSE
        o := a -> 'oauth2';
        IF jsonb_typeof(o) <> 'object'
           OR o - ARRAY['token_url', 'client_id', 'client_secret', 'client_auth', 'scope', 'params'] <> '{}'
           OR NOT o ?& ARRAY['token_url', 'client_id', 'client_secret'] THEN
            PERFORM delq._invalid(at || '.oauth2', 'must have token_url, client_id, client_secret and no other keys than client_auth, scope, params',
                                  'See docs/connectors.md, Authentication.');
        END IF;
        IF coalesce(o ->> 'client_auth', 'body') NOT IN ('body', 'basic') THEN
            PERFORM delq._invalid(at || '.oauth2.client_auth', 'must be "body" or "basic"', 'The default is "body".');
        END IF;
        PERFORM delq._tpl_check_url(o -> 'token_url', at || '.oauth2.token_url', plain, credentials, base_url);
        PERFORM delq._tpl_check_strings(o - ARRAY['token_url', 'params'], at || '.oauth2', plain, credentials);
        PERFORM delq._tpl_check_strings(o -> 'params', at || '.oauth2.params', plain, credentials);
    END IF;
END
$$;

-- The whole request document, against the credentials it will have and
-- the destination's url (the base of relative URLs).  Raises 22023 naming
-- the key path; returns the document.
CREATE OR REPLACE FUNCTION delq._check_request(request jsonb, credentials jsonb, base_url text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    common text[] := ARRAY['subject', 'request_id', 'webhook_id', 'source', 'reason', 'external_id',
                           'due_at', 'submitted_at', 'attributes', 'credentials'];
    step_names text[];
BEGIN
    IF request IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM delq._check_object('request', request, 65536);
    FOR k IN SELECT jsonb_object_keys(request) LOOP
        IF k NOT IN ('auth', 'headers', 'lookup', 'erase', 'poll') THEN
            PERFORM delq._invalid('request', format('has an unknown key %s', quote_literal(left(k, 100))),
                                  'The keys are auth, headers, lookup, erase and poll; see docs/connectors.md.');
        END IF;
    END LOOP;
    IF NOT request ? 'erase' THEN
        PERFORM delq._invalid('request', 'has no erase step', 'Every template has "erase": {...}.');
    END IF;
    PERFORM delq._tpl_check_auth(request -> 'auth', credentials, base_url);
    PERFORM delq._tpl_check_strings(request -> 'headers', 'request.headers', common, credentials, true);
    IF request ? 'lookup' THEN
        PERFORM delq._tpl_check_step(request -> 'lookup', 'lookup', common, credentials, base_url);
    END IF;
    step_names := common || CASE WHEN request ? 'lookup' THEN ARRAY['item'] ELSE '{}'::text[] END;
    PERFORM delq._tpl_check_step(request -> 'erase', 'erase', step_names, credentials, base_url);
    IF request ? 'poll' THEN
        PERFORM delq._tpl_check_step(request -> 'poll', 'poll', step_names || 'job_id'::text, credentials, base_url);
    END IF;
    RETURN request;
END
$$;

-- Credentials: an object of strings, at most 16 kB.
CREATE OR REPLACE FUNCTION delq._check_credentials(val jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF val IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM delq._check_object('credentials', val, 16384);
    IF EXISTS (SELECT 1 FROM jsonb_each(val) e WHERE jsonb_typeof(e.value) <> 'string') THEN
        PERFORM delq._invalid('credentials', 'must have only string values',
                              'Pass {"api_key": "..."}; numbers and objects are not credentials.');
    END IF;
    RETURN val;
END
$$;

-- ---------------------------------------------------------------------
-- Rendering.  Render errors raise SQLSTATE DQ001 (internal, caught by
-- _step_request: the delivery then fails for good); the message names the
-- key path and the placeholder, never a value.

CREATE OR REPLACE FUNCTION delq._urlencode(s text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(string_agg(CASE WHEN b BETWEEN 48 AND 57 OR b BETWEEN 65 AND 90 OR b BETWEEN 97 AND 122
                                         OR b IN (45, 46, 95, 126)
                                    THEN chr(b)
                                    ELSE '%' || upper(lpad(to_hex(b), 2, '0')) END, '' ORDER BY i), '')
      FROM (SELECT get_byte(x, i) AS b, i
              FROM convert_to(s, 'UTF8') x, generate_series(0, octet_length(x) - 1) i) bytes
$$;

CREATE OR REPLACE FUNCTION delq._tpl_filter(v text, f text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE f
        WHEN 'lower' THEN lower(v)
        WHEN 'upper' THEN upper(v)
        WHEN 'trim' THEN btrim(v)
        WHEN 'md5' THEN md5(convert_to(v, 'UTF8'))
        WHEN 'sha256' THEN encode(sha256(convert_to(v, 'UTF8')), 'hex')
        WHEN 'base64' THEN translate(encode(convert_to(v, 'UTF8'), 'base64'), E'\n', '')
        WHEN 'urlencode' THEN delq._urlencode(v)
    END
$$;

-- The value of a placeholder name in the context document.
CREATE OR REPLACE FUNCTION delq._tpl_value(name text, ctx jsonb, at text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v jsonb := ctx #> string_to_array(name, '.');
BEGIN
    IF v IS NULL OR v = 'null'::jsonb THEN
        RAISE EXCEPTION 'render: %: % is missing', at, name
            USING ERRCODE = 'DQ001';
    END IF;
    RETURN v;
END
$$;

-- Render one string.  esc: 'url' (URL-encode values), 'form' (the same),
-- 'header' (no CR or LF), 'text' (as is).
CREATE OR REPLACE FUNCTION delq._tpl_text(s text, ctx jsonb, at text, esc text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    v jsonb;
    t text;
    f text;
    result text := '';
BEGIN
    IF s !~ '\{\{' THEN
        t := s;
        IF esc = 'form' THEN
            t := delq._urlencode(t);
        END IF;
        RETURN t;
    END IF;
    FOR r IN SELECT * FROM delq._tpl_parse(s) LOOP
        result := result || CASE WHEN esc = 'form' THEN delq._urlencode(r.lit) ELSE r.lit END;
        CONTINUE WHEN r.name IS NULL;
        v := delq._tpl_value(r.name, ctx, at);
        t := CASE jsonb_typeof(v) WHEN 'string' THEN v #>> '{}' ELSE v::text END;
        FOREACH f IN ARRAY r.filters LOOP
            t := delq._tpl_filter(t, f);
        END LOOP;
        IF esc IN ('url', 'form') AND r.filters[cardinality(r.filters)] IS DISTINCT FROM 'urlencode' THEN
            t := delq._urlencode(t);
        ELSIF esc = 'header' AND t ~ '[\r\n\x01-\x08\x0b\x0c\x0e-\x1f\x7f]' THEN
            RAISE EXCEPTION 'render: %: the value of % has a line break or control character', at, r.name
                USING ERRCODE = 'DQ001';
        END IF;
        result := result || t;
    END LOOP;
    RETURN result;
END
$$;

-- Render a JSON body: strings (and keys) rendered; a string that is one
-- bare placeholder keeps its value's JSON type.
CREATE OR REPLACE FUNCTION delq._tpl_json(j jsonb, ctx jsonb, at text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m text[];
BEGIN
    CASE jsonb_typeof(j)
        WHEN 'string' THEN
            m := regexp_match(j #>> '{}', '^\{\{\s*([^{}|\s]+)\s*\}\}$');
            IF m IS NOT NULL THEN
                RETURN delq._tpl_value(m[1], ctx, at);
            END IF;
            RETURN to_jsonb(delq._tpl_text(j #>> '{}', ctx, at, 'text'));
        WHEN 'object' THEN
            RETURN coalesce((SELECT jsonb_object_agg(delq._tpl_text(e.key, ctx, at, 'text'),
                                                     delq._tpl_json(e.value, ctx, at || '.' || e.key))
                               FROM jsonb_each(j) e), '{}');
        WHEN 'array' THEN
            RETURN coalesce((SELECT jsonb_agg(delq._tpl_json(e.value, ctx, at || '[]') ORDER BY e.n)
                               FROM jsonb_array_elements(j) WITH ORDINALITY e(value, n)), '[]');
        ELSE
            RETURN j;
    END CASE;
END
$$;

-- key=value&... of an object of strings, form-encoded.
CREATE OR REPLACE FUNCTION delq._tpl_form(j jsonb, ctx jsonb, at text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(delq._tpl_text(e.key, ctx, at, 'form') || '='
                      || delq._tpl_text(e.value #>> '{}', ctx, at || '.' || e.key, 'form'), '&' ORDER BY e.key)
      FROM jsonb_each(j) e
$$;

-- "Name: value" lines of an object of header templates.
CREATE OR REPLACE FUNCTION delq._tpl_headers(j jsonb, ctx jsonb, at text)
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(e.key || ': ' || delq._tpl_text(e.value #>> '{}', ctx, at || '.' || e.key, 'header')
                              ORDER BY e.key), '{}')
      FROM jsonb_each(coalesce(j, '{}')) e
$$;

-- An absolute URL from a step's url template (relative to base_url when
-- it starts with "/"), with its query object appended.
CREATE OR REPLACE FUNCTION delq._tpl_url(u text, query jsonb, base_url text, ctx jsonb, at text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result text := delq._tpl_text(u, ctx, at || '.url', 'url');
    q text;
BEGIN
    IF result LIKE '/%' THEN
        result := rtrim(base_url, '/') || result;
    END IF;
    IF query IS NOT NULL AND query <> '{}' THEN
        q := delq._tpl_form(query, ctx, at || '.query');
        result := result || CASE WHEN result LIKE '%?%' THEN '&' ELSE '?' END || q;
    END IF;
    RETURN result;
END
$$;
