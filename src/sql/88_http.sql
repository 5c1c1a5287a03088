-- HTTP ingress (docs/http-api.md): API tokens, the functions each route of
-- src/api.c calls, confirmation links for callback destinations, inbound
-- vendor webhooks, Prometheus metrics and the status page.  The HTTP
-- server (src/ingress.c) only moves bytes: every rule is here, and each
-- route runs one of these functions as the token's role, so the SQL
-- privileges of that role apply exactly.

-- delq_metrics may read delq.metrics() and nothing else; operators may too.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'delq_metrics') THEN
        CREATE ROLE delq_metrics NOLOGIN;
    END IF;
END
$$;

GRANT delq_metrics TO delq_operator;

-- ---------------------------------------------------------------------
-- API tokens: only a SHA-256 of each token is kept.

CREATE TABLE IF NOT EXISTS delq.api_token (
    name text PRIMARY KEY,
    role text NOT NULL,
    hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);

SELECT pg_catalog.pg_extension_config_dump('delq.api_token', '');

CREATE OR REPLACE VIEW delq.api_tokens AS
SELECT t.name, t.role, t.created_at, t.last_used_at FROM delq.api_token t;
GRANT SELECT ON delq.api_tokens TO delq_admin;

-- Whether a role may hold an API token: NULL if it may, else why not
-- ('admin', 'not_delq').  It must be able to use delq (a member of
-- delq_submitter or delq_metrics) and may not be a superuser or delq_admin:
-- the HTTP API has no admin routes, and a token is a bearer secret that
-- travels.  Checked when a token is made and at every call with it (a role
-- may be granted more later).
CREATE OR REPLACE FUNCTION delq._api_token_problem(role oid)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN r.rolsuper OR pg_catalog.pg_has_role(r.oid, 'delq_admin', 'USAGE') THEN 'admin'
                WHEN NOT (pg_catalog.pg_has_role(r.oid, 'delq_submitter', 'USAGE')
                          OR pg_catalog.pg_has_role(r.oid, 'delq_metrics', 'USAGE')) THEN 'not_delq'
           END
      FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) _api_token_problem.role;
$$;

-- A new token for role, returned once (delq._api_token_problem says which
-- roles may hold one).
CREATE OR REPLACE FUNCTION delq.add_api_token(name text, role text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r pg_catalog.pg_roles;
    token text;
BEGIN
    PERFORM delq._check_name('name', add_api_token.name);
    PERFORM delq._not_null('role', add_api_token.role);
    SELECT * INTO r FROM pg_catalog.pg_roles x WHERE x.rolname = add_api_token.role;
    IF r.oid IS NULL THEN
        RAISE EXCEPTION 'role % does not exist', quote_ident(add_api_token.role)
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create the role first, e.g. CREATE ROLE app NOLOGIN IN ROLE delq_submitter.';
    END IF;
    IF delq._api_token_problem(r.oid) = 'admin' THEN
        PERFORM delq._invalid('role', format('%s may not hold an API token', quote_ident(r.rolname)),
                              'Give tokens to roles with delq_submitter, delq_operator or delq_metrics, never to superusers or delq_admin.');
    END IF;
    IF delq._api_token_problem(r.oid) = 'not_delq' THEN
        PERFORM delq._invalid('role', format('%s is not a delq role', quote_ident(r.rolname)),
                              'GRANT delq_submitter, delq_operator or delq_metrics to the role (with INHERIT) first.');
    END IF;
    IF EXISTS (SELECT 1 FROM delq.api_token t WHERE t.name = add_api_token.name) THEN
        RAISE EXCEPTION 'API token % already exists', add_api_token.name
            USING ERRCODE = 'unique_violation',
                  HINT = 'Drop it with delq.drop_api_token() first, or choose another name.';
    END IF;
    token := 'delq_' || encode(delq._random_key(), 'hex');
    INSERT INTO delq.api_token (name, role, hash)
    VALUES (add_api_token.name, r.rolname, sha256(convert_to(token, 'UTF8')));
    RETURN token;
END
$$;

CREATE OR REPLACE FUNCTION delq.drop_api_token(name text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq._not_null('name', drop_api_token.name);
    DELETE FROM delq.api_token t WHERE t.name = drop_api_token.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'API token % does not exist', drop_api_token.name
            USING ERRCODE = 'undefined_object',
                  HINT = 'See delq.api_tokens for the names.';
    END IF;
END
$$;

-- The role of the token whose SHA-256 is hash, or NULL (unknown token, or
-- a role that is gone or may no longer hold a token: became a superuser,
-- was granted delq_admin, lost its delq roles).  Called by the HTTP worker
-- before it takes that role; last_used_at is written at most once a minute.
CREATE OR REPLACE FUNCTION delq._api_token_role(hash bytea)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t delq.api_token;
BEGIN
    SELECT * INTO t FROM delq.api_token x WHERE x.hash = _api_token_role.hash;
    IF t.name IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                                      WHERE r.rolname = t.role
                                        AND delq._api_token_problem(r.oid) IS NULL) THEN
        RETURN NULL;
    END IF;
    IF t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute' THEN
        UPDATE delq.api_token x SET last_used_at = now() WHERE x.name = t.name;
    END IF;
    RETURN t.role;
END
$$;

-- ---------------------------------------------------------------------
-- Request bodies: a JSON object with known members (allowed; NULL: any)
-- of the right types.  SECURITY DEFINER to raise through delq._invalid(),
-- which the roles the routes run as cannot call, and to keep a failing
-- statement, which holds the body and so the subject, out of the server
-- log (docs/security.md, "Personal data"): a route function called over
-- SQL fails only in these, in delq.submit() or on an id.
-- Class 22 errors, which src/api.c answers with 400.

CREATE OR REPLACE FUNCTION delq.http_body(body text, allowed text[])
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
AS $$
DECLARE
    doc jsonb;
    extra text;
BEGIN
    IF body IS NULL OR btrim(body, E' \t\r\n') = '' THEN
        RETURN '{}'::jsonb;
    END IF;
    BEGIN
        doc := body::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
        -- the parser's own error has the body in its context, which the
        -- server log would show for a call over SQL: not the subject
        RAISE EXCEPTION 'body is not valid JSON (%)', SQLERRM
            USING ERRCODE = 'invalid_text_representation',
                  HINT = 'Send a JSON object such as {"subject": "...", "source": "..."}.';
    END;
    IF jsonb_typeof(doc) <> 'object' THEN
        PERFORM delq._invalid('body', format('must be a JSON object, not %s', jsonb_typeof(doc)),
                              'Send an object such as {"subject": "...", "source": "..."}.');
    END IF;
    SELECT string_agg(k, ', ' ORDER BY k) INTO extra
      FROM jsonb_object_keys(doc) k WHERE allowed IS NOT NULL AND k <> ALL (allowed);
    IF extra IS NOT NULL THEN
        PERFORM delq._invalid('body', format('has unknown members (%s)', extra),
                              format('Allowed members: %s.', array_to_string(allowed, ', ')));
    END IF;
    RETURN doc;
END
$$;

-- Member key of doc as text: absent or null gives NULL; another JSON type
-- than want ('string', 'object', 'boolean') is an error.  want
-- 'timestamptz' or 'interval': a string holding a value of that type,
-- returned as its text (which casts back without error).
CREATE OR REPLACE FUNCTION delq.http_member(doc jsonb, key text, want text)
RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
AS $$
DECLARE
    t text := jsonb_typeof(doc -> key);
    json_type text := CASE WHEN want IN ('timestamptz', 'interval') THEN 'string' ELSE want END;
BEGIN
    IF t IS NULL OR t = 'null' THEN
        RETURN NULL;
    END IF;
    IF t <> json_type THEN
        PERFORM delq._invalid(key, format('must be a JSON %s, not %s', json_type, t),
                              format('Send %s as a JSON %s.', key, json_type));
    END IF;
    RETURN CASE want WHEN 'string' THEN doc ->> key
                     WHEN 'timestamptz' THEN ((doc ->> key)::timestamptz)::text
                     WHEN 'interval' THEN ((doc ->> key)::interval)::text
                     ELSE (doc -> key)::text END;
END
$$;

-- The body of POST /v1/requests, its members checked and the
-- Idempotency-Key header taken as external_id.  Apart from delq.submit()
-- every error of a submit is raised here, where the failing statement
-- (with the subject) stays out of the server log.
CREATE OR REPLACE FUNCTION delq.http_submit_doc(body text, idempotency_key text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
AS $$
DECLARE
    doc jsonb := delq.http_body(body, ARRAY['subject', 'source', 'reason', 'attributes',
                                               'external_id', 'due_at']);
    ext text := delq.http_member(doc, 'external_id', 'string');
BEGIN
    IF idempotency_key IS NOT NULL THEN
        IF ext IS NOT NULL AND ext <> idempotency_key THEN
            PERFORM delq._invalid('external_id', 'differs from the Idempotency-Key header',
                                  'Send one of them, or the same value in both.');
        END IF;
        ext := idempotency_key;
    END IF;
    RETURN jsonb_build_object(
        'subject', delq.http_member(doc, 'subject', 'string'),
        'source', delq.http_member(doc, 'source', 'string'),
        'reason', delq.http_member(doc, 'reason', 'string'),
        'attributes', coalesce(delq.http_member(doc, 'attributes', 'object')::jsonb, '{}'),
        'external_id', ext,
        'due_at', delq.http_member(doc, 'due_at', 'timestamptz'));
END
$$;

-- ---------------------------------------------------------------------
-- The routes.  SECURITY INVOKER: each runs as the token's role and calls
-- the SQL API, whose own grants decide (42501 is answered with 403).

-- One request as the API shows it; the subject only to roles that may
-- read delq.pending (operators).
CREATE OR REPLACE FUNCTION delq.http_request(id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rid uuid := id::uuid;
    doc jsonb;
BEGIN
    SELECT jsonb_build_object('id', r.id, 'source', r.source, 'external_id', r.external_id,
                              'status', r.status, 'submitted_at', r.submitted_at,
                              'due_at', r.due_at, 'completed_at', r.completed_at,
                              'rejected_at', r.rejected_at, 'failure_reason', r.failure_reason,
                              'finished_at', r.finished_at, 'deliveries', r.deliveries)
      INTO doc
      FROM delq.requests r WHERE r.id = rid;
    IF doc IS NULL THEN
        RAISE EXCEPTION 'request % does not exist', rid
            USING ERRCODE = 'undefined_object',
                  HINT = 'Pass the id that POST /v1/requests returned.';
    END IF;
    IF has_table_privilege('delq.pending', 'SELECT') THEN
        doc := doc || jsonb_build_object('subject',
                   coalesce((SELECT p.subject FROM delq.pending p WHERE p.id = rid),
                            (SELECT f.subject FROM delq.finished f WHERE f.id = rid)));
    END IF;
    RETURN doc;
END
$$;

-- Whether the current transaction created request id (a first submit, 201)
-- or submit() returned an earlier one (a replay, 200).
CREATE OR REPLACE FUNCTION delq.http_created(id uuid)
RETURNS boolean
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM delq.pending p
                    WHERE p.id OPERATOR(pg_catalog.=) http_created.id
                      AND p.xmin OPERATOR(pg_catalog.=) pg_current_xact_id()::xid);
$$;

-- POST /v1/requests.  An Idempotency-Key header stands for external_id.
CREATE OR REPLACE FUNCTION delq.http_submit(body text, idempotency_key text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    doc jsonb := delq.http_submit_doc(body, idempotency_key);
    id uuid;
BEGIN
    id := delq.submit(doc ->> 'subject', doc ->> 'source', doc ->> 'reason',
                      doc -> 'attributes', doc ->> 'external_id',
                      (doc ->> 'due_at')::timestamptz);
    RETURN jsonb_build_object('created', delq.http_created(id),
                              'request', delq.http_request(id::text));
END
$$;

-- GET /v1/requests: newest first, keyset pagination on (submitted_at, id).
CREATE OR REPLACE FUNCTION delq.http_list(status text, source text, max_items text, after text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lim integer := coalesce(max_items::integer, 50);
    cursor_at timestamptz;
    cursor_id uuid := after::uuid;
    ids uuid[];
BEGIN
    IF lim NOT BETWEEN 1 AND 500 THEN
        RAISE EXCEPTION 'limit is out of range (%)', lim
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass a limit from 1 to 500.';
    END IF;
    IF cursor_id IS NOT NULL THEN
        SELECT r.submitted_at INTO cursor_at FROM delq.requests r WHERE r.id = cursor_id;
        IF cursor_at IS NULL THEN
            RAISE EXCEPTION 'after % is not a request id', cursor_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Pass the "next" value of the previous page.';
        END IF;
    END IF;
    SELECT array_agg(x.id ORDER BY x.submitted_at DESC, x.id DESC) INTO ids
      FROM (SELECT r.id, r.submitted_at FROM delq.requests r
             WHERE (http_list.status IS NULL OR r.status = http_list.status)
               AND (http_list.source IS NULL OR r.source = http_list.source)
               AND (cursor_id IS NULL OR (r.submitted_at, r.id) < (cursor_at, cursor_id))
             ORDER BY r.submitted_at DESC, r.id DESC
             LIMIT lim) x;
    RETURN jsonb_build_object(
        'items', coalesce((SELECT jsonb_agg(delq.http_request(i::text) ORDER BY o)
                             FROM unnest(ids) WITH ORDINALITY u(i, o)), '[]'),
        'next', CASE WHEN cardinality(ids) = lim THEN ids[lim] END);
END
$$;

CREATE OR REPLACE FUNCTION delq.http_approve(id text, body text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq.http_body(body, '{}');
    PERFORM delq.approve(id::uuid);
    RETURN delq.http_request(id);
END
$$;

CREATE OR REPLACE FUNCTION delq.http_reject(id text, body text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    doc jsonb := delq.http_body(body, ARRAY['reason']);
BEGIN
    PERFORM delq.reject(id::uuid, delq.http_member(doc, 'reason', 'string'));
    RETURN delq.http_request(id);
END
$$;

CREATE OR REPLACE FUNCTION delq.http_extend(id text, body text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    doc jsonb := delq.http_body(body, ARRAY['by', 'reason']);
BEGIN
    PERFORM delq.extend(id::uuid, delq.http_member(doc, 'by', 'interval')::interval,
                        delq.http_member(doc, 'reason', 'string'));
    RETURN delq.http_request(id);
END
$$;

CREATE OR REPLACE FUNCTION delq.http_receipt(id text)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT delq.receipt(id::uuid);
$$;

-- ---------------------------------------------------------------------
-- Confirmation links (their token and URL: 69_confirm_link.sql).

INSERT INTO delq.key (name, secret)
SELECT 'confirm', delq._random_key()
 WHERE NOT EXISTS (SELECT FROM delq.key WHERE key.name = 'confirm');

CREATE INDEX IF NOT EXISTS delivery_webhook_id_idx ON delq.delivery (webhook_id);

-- Equal, in time that does not depend on where two secrets differ: the
-- HMACs of both are compared, not the strings.
CREATE OR REPLACE FUNCTION delq._same_secret(a text, b text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a IS NOT NULL AND b IS NOT NULL
       AND delq._hmac_sha256(delq._secret('confirm'), convert_to('cmp:' || a, 'UTF8'))
           = delq._hmac_sha256(delq._secret('confirm'), convert_to('cmp:' || b, 'UTF8'));
$$;

-- POST /v1/confirm/{token}, run by the HTTP worker without an API token.
-- A repeat answers {"changed": false}; a link of a rejected or archived
-- request is refused (55000); a forged link is unknown (42704), before its
-- body is even parsed: nobody without a link makes the server do more.
CREATE OR REPLACE FUNCTION delq._http_confirm(token text, body text)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wid text := substring(token from '^(.*)\.[^.]*$');
    doc jsonb;
    outcome text;
    d delq.delivery;
    changed boolean;
BEGIN
    IF wid IS NULL OR NOT delq._same_secret(token, delq._confirm_token(wid)) THEN
        RAISE EXCEPTION 'this confirmation link is not valid'
            USING ERRCODE = 'undefined_object',
                  HINT = 'Use the confirm_url of the webhook body exactly as received.';
    END IF;
    doc := delq.http_body(body, ARRAY['outcome']);
    outcome := coalesce(delq.http_member(doc, 'outcome', 'string'), 'confirmed');
    IF outcome NOT IN ('confirmed', 'not_held') THEN
        PERFORM delq._invalid('outcome', format('%s is not an outcome', quote_literal(outcome)),
                              'Send "confirmed" (the data was erased) or "not_held" (there was none).');
    END IF;
    SELECT * INTO d FROM delq.delivery dl WHERE dl.webhook_id = wid;
    IF d.id IS NULL THEN
        RAISE EXCEPTION 'the request of this confirmation link is finished'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Archived requests need no confirmation.';
    END IF;
    -- lock order: the request, then its delivery (as delq.confirm)
    PERFORM delq._request(d.request_id, true);
    SELECT * INTO d FROM delq.delivery dl WHERE dl.id = d.id FOR UPDATE;
    changed := delq._confirm_delivery(d, outcome, 'confirm_url');
    RETURN jsonb_build_object('request_id', d.request_id, 'destination', d.destination,
                              'outcome', outcome, 'changed', changed);
END
$$;

-- ---------------------------------------------------------------------
-- Inbound vendor webhooks: POST /v1/hooks/{name} becomes a submit.
--
-- kind 'standard_webhooks' (https://www.standardwebhooks.com/): headers
-- webhook-id, webhook-timestamp (within 5 minutes), webhook-signature
-- "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>" (a space-separated
-- list); secret whsec_<base64 key>.  mapping: {"source": "...",
-- "subject": "<jsonpath>", "reason": "...", "attributes": {"key":
-- "<jsonpath>"}}; subject is required.
--
-- kind 'shopify' (shopify.dev, "Privacy law compliance" and "Deliver
-- webhooks through HTTPS"): X-Shopify-Hmac-Sha256 = base64 HMAC-SHA256 of
-- the raw body keyed with the app's client secret; X-Shopify-Topic
-- customers/redact (subject: customer.email, else phone, else
-- "shopify-customer:<id>") or shop/redact (subject: shop_domain);
-- customers/data_request and other topics are acknowledged and ignored.
-- mapping may set "source" (default the hook name) and "reason".
--
-- A replay (same webhook-id, or X-Shopify-Event-Id, the external_id of
-- the submit) returns the first request and creates nothing.

CREATE TABLE IF NOT EXISTS delq.hook (
    name text PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('standard_webhooks', 'shopify')),
    secret text NOT NULL,
    mapping jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);

SELECT pg_catalog.pg_extension_config_dump('delq.hook', '');

CREATE OR REPLACE VIEW delq.hooks AS
SELECT h.name, h.kind, h.mapping, h.created_at FROM delq.hook h;
GRANT SELECT ON delq.hooks TO delq_operator;

CREATE OR REPLACE FUNCTION delq.add_hook(name text, kind text, secret text, mapping jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- a failing call must not write its statement, with the secret, into the
-- server log (docs/security.md, "Secrets")
SET log_min_error_statement = panic
AS $$
DECLARE
    m jsonb := coalesce(mapping, '{}');
    k text;
BEGIN
    PERFORM delq._check_name('name', add_hook.name);
    PERFORM delq._not_null('kind', kind);
    PERFORM delq._not_null('secret', secret);
    PERFORM delq._check_object('mapping', m, 4096);
    IF kind NOT IN ('standard_webhooks', 'shopify') THEN
        PERFORM delq._invalid('kind', format('%s is not a hook kind', quote_literal(kind)),
                              'Use ''standard_webhooks'' or ''shopify''.');
    END IF;
    IF kind = 'standard_webhooks' THEN
        PERFORM delq._check_secret(secret);
    ELSIF length(secret) < 16 THEN
        PERFORM delq._invalid('secret', 'is too short',
                              'Pass the app''s client secret from the Shopify Partner Dashboard.');
    END IF;
    SELECT string_agg(x, ', ') INTO k FROM jsonb_object_keys(m) x
     WHERE x NOT IN ('source', 'subject', 'reason', 'attributes');
    IF k IS NOT NULL THEN
        PERFORM delq._invalid('mapping', format('has unknown keys (%s)', k),
                              'Allowed keys: source, subject, reason, attributes.');
    END IF;
    IF kind = 'standard_webhooks' AND jsonb_typeof(m -> 'subject') IS DISTINCT FROM 'string' THEN
        PERFORM delq._invalid('mapping', 'has no "subject" path',
                              'Say where the subject is, e.g. {"subject": "$.data.email"}.');
    END IF;
    IF m ? 'subject' THEN
        PERFORM (m ->> 'subject')::jsonpath;
    END IF;
    IF m ? 'attributes' THEN
        PERFORM delq._check_object('mapping.attributes', m -> 'attributes', 4096);
        PERFORM (v)::jsonpath FROM jsonb_each_text(m -> 'attributes') a(k2, v);
    END IF;
    PERFORM delq._check_source(coalesce(m ->> 'source', replace(add_hook.name, '_', '-')));
    IF EXISTS (SELECT 1 FROM delq.hook h WHERE h.name = add_hook.name) THEN
        RAISE EXCEPTION 'hook % already exists', add_hook.name
            USING ERRCODE = 'unique_violation',
                  HINT = 'Drop it with delq.drop_hook() first, or choose another name.';
    END IF;
    INSERT INTO delq.hook (name, kind, secret, mapping)
    VALUES (add_hook.name, add_hook.kind, add_hook.secret, m);
END
$$;

CREATE OR REPLACE FUNCTION delq.drop_hook(name text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq._not_null('name', drop_hook.name);
    DELETE FROM delq.hook h WHERE h.name = drop_hook.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'hook % does not exist', drop_hook.name
            USING ERRCODE = 'undefined_object', HINT = 'See delq.hooks for the names.';
    END IF;
END
$$;

-- Raised for a delivery that does not carry a valid signature: 401.
-- VOLATILE, as delq._invalid (30_validate.sql) and for the same reason.
CREATE OR REPLACE FUNCTION delq._hook_unsigned(why text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'webhook signature is not valid: %', why
        USING ERRCODE = 'invalid_authorization_specification',
              HINT = 'Sign the raw body with the hook''s secret as the sender''s documentation says.';
END
$$;

-- Whether signature is valid for a hook; raises 28000 when not.
CREATE OR REPLACE FUNCTION delq._hook_verify(h delq.hook, headers jsonb, body bytea)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wid text := headers ->> 'webhook-id';
    ts text := headers ->> 'webhook-timestamp';
    expected text;
BEGIN
    IF h.kind = 'shopify' THEN
        expected := encode(delq._hmac_sha256(convert_to(h.secret, 'UTF8'), body), 'base64');
        IF NOT delq._same_secret(headers ->> 'x-shopify-hmac-sha256', expected) THEN
            PERFORM delq._hook_unsigned('X-Shopify-Hmac-Sha256 does not match the body');
        END IF;
        RETURN;
    END IF;
    IF wid IS NULL OR ts IS NULL OR ts !~ '^[0-9]{1,12}$' THEN
        PERFORM delq._hook_unsigned('webhook-id or webhook-timestamp is missing');
    END IF;
    IF abs(extract(epoch FROM now()) - ts::bigint) > 300 THEN
        PERFORM delq._hook_unsigned('webhook-timestamp is more than 5 minutes away');
    END IF;
    expected := 'v1,' || encode(delq._hmac_sha256(decode(substr(h.secret, 7), 'base64'),
                                                  convert_to(wid || '.' || ts || '.', 'UTF8') || body),
                                'base64');
    IF NOT EXISTS (SELECT 1 FROM regexp_split_to_table(coalesce(headers ->> 'webhook-signature', ''), ' ') s
                    WHERE delq._same_secret(s, expected)) THEN
        PERFORM delq._hook_unsigned('no webhook-signature matches');
    END IF;
END
$$;

-- POST /v1/hooks/{name}, run by the HTTP worker without an API token (the
-- signature authenticates).  Header names are lower case.
CREATE OR REPLACE FUNCTION delq._hook_receive(name text, headers jsonb, body bytea)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h delq.hook;
    doc jsonb;
    topic text := headers ->> 'x-shopify-topic';
    subject_path text;
    attrs jsonb := '{}'::jsonb;
    id uuid;
BEGIN
    SELECT * INTO h FROM delq.hook x WHERE x.name = _hook_receive.name;
    IF h.name IS NULL THEN
        RAISE EXCEPTION 'hook % does not exist', _hook_receive.name
            USING ERRCODE = 'undefined_object', HINT = 'See delq.hooks for the names.';
    END IF;
    PERFORM delq._hook_verify(h, headers, body);
    doc := delq.http_body(convert_from(body, 'UTF8'), NULL);

    IF h.kind = 'shopify' THEN
        IF topic = 'customers/redact' THEN
            subject_path := '$.customer.email';
            attrs := jsonb_build_object('shop_domain', doc -> 'shop_domain', 'shop_id', doc -> 'shop_id',
                                        'customer_id', doc #> '{customer,id}',
                                        'orders_to_redact', doc -> 'orders_to_redact');
        ELSIF topic = 'shop/redact' THEN
            subject_path := '$.shop_domain';
            attrs := jsonb_build_object('shop_domain', doc -> 'shop_domain', 'shop_id', doc -> 'shop_id');
        ELSE
            RETURN jsonb_build_object('ignored', true, 'topic', topic);
        END IF;
        attrs := jsonb_strip_nulls(attrs || jsonb_build_object('topic', topic));
    ELSE
        subject_path := h.mapping ->> 'subject';
        SELECT coalesce(jsonb_object_agg(a.k, jsonb_path_query_first(doc, a.v::jsonpath))
                            FILTER (WHERE jsonb_path_query_first(doc, a.v::jsonpath) IS NOT NULL), '{}')
          INTO attrs
          FROM jsonb_each_text(coalesce(h.mapping -> 'attributes', '{}')) a(k, v);
    END IF;

    id := delq.submit(
        CASE WHEN h.kind = 'shopify' AND topic = 'customers/redact'
             THEN coalesce(doc #>> '{customer,email}', doc #>> '{customer,phone}',
                           'shopify-customer:' || (doc #>> '{customer,id}'))
             ELSE jsonb_path_query_first(doc, subject_path::jsonpath) #>> '{}' END,
        coalesce(h.mapping ->> 'source', replace(h.name, '_', '-')),
        coalesce(h.mapping ->> 'reason', topic, 'webhook'),
        attrs,
        -- the replay key: Shopify marks duplicates of one event with the
        -- same X-Shopify-Event-Id (older deliveries: X-Shopify-Webhook-Id);
        -- a Standard Webhooks sender signs its webhook-id
        CASE WHEN h.kind = 'shopify'
             THEN coalesce(headers ->> 'x-shopify-event-id', headers ->> 'x-shopify-webhook-id')
             ELSE headers ->> 'webhook-id' END);
    RETURN jsonb_build_object('created', delq.http_created(id),
                              'request', delq.http_request(id::text));
END
$$;

-- ---------------------------------------------------------------------
-- GET /metrics: the Prometheus text exposition format, version 0.0.4
-- (https://prometheus.io/docs/instrumenting/exposition_formats/).  The
-- HTTP worker appends its own counters (calls by route and code).

CREATE OR REPLACE FUNCTION delq._prom_label(val text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT '"' || replace(replace(replace(val, E'\\', E'\\\\'), '"', E'\\"'), E'\n', E'\\n') || '"';
$$;

CREATE OR REPLACE FUNCTION delq.metrics()
RETURNS text
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(line, E'\n' ORDER BY ord, line) || E'\n' FROM (
        SELECT 1 AS ord, '# HELP delq_requests Requests by status (pending and archived).' AS line
        UNION ALL SELECT 2, '# TYPE delq_requests gauge'
        UNION ALL
        SELECT 3, format('delq_requests{status=%s,archived="false"} %s', delq._prom_label(s), count(p.id))
          FROM unnest(ARRAY['held', 'forwarding', 'completed', 'rejected', 'failed']) s
          LEFT JOIN delq.pending p ON p.status = s GROUP BY s
        UNION ALL
        SELECT 3, format('delq_requests{status=%s,archived="true"} %s', delq._prom_label(f.status), count(*))
          FROM delq.finished f GROUP BY f.status
        UNION ALL SELECT 10, '# HELP delq_deliveries Deliveries by destination and state.'
        UNION ALL SELECT 11, '# TYPE delq_deliveries gauge'
        UNION ALL
        SELECT 12, format('delq_deliveries{destination=%s,state=%s} %s',
                          delq._prom_label(dl.destination), delq._prom_label(dl.state), count(*))
          FROM delq.delivery dl GROUP BY dl.destination, dl.state
        UNION ALL SELECT 20, '# HELP delq_oldest_queued_seconds Age of the oldest queued delivery per destination.'
        UNION ALL SELECT 21, '# TYPE delq_oldest_queued_seconds gauge'
        UNION ALL
        SELECT 22, format('delq_oldest_queued_seconds{destination=%s} %s', delq._prom_label(d.name),
                          coalesce(round(extract(epoch FROM now() - (
                              SELECT min(p.submitted_at) FROM delq.delivery dl
                                JOIN delq.pending p ON p.id = dl.request_id
                               WHERE dl.destination = d.name AND dl.state = 'queued')))::bigint, 0))
          FROM delq.destination d
        UNION ALL SELECT 30, '# HELP delq_breaker_open Whether a destination''s circuit breaker is open.'
        UNION ALL SELECT 31, '# TYPE delq_breaker_open gauge'
        UNION ALL
        SELECT 32, format('delq_breaker_open{destination=%s} %s', delq._prom_label(d.name),
                          CASE WHEN s.breaker_until IS NOT NULL THEN 1 ELSE 0 END)
          FROM delq.destination d LEFT JOIN delq.destination_state s ON s.name = d.name
        UNION ALL SELECT 40, '# HELP delq_overdue_requests Unfinished requests past their deadline.'
        UNION ALL SELECT 41, '# TYPE delq_overdue_requests gauge'
        UNION ALL SELECT 42, format('delq_overdue_requests %s', (SELECT count(*) FROM delq.overdue))
        UNION ALL SELECT 43, '# HELP delq_at_risk_requests Unfinished requests within delq.warn_before of their deadline.'
        UNION ALL SELECT 44, '# TYPE delq_at_risk_requests gauge'
        UNION ALL SELECT 45, format('delq_at_risk_requests %s', (SELECT count(*) FROM delq.at_risk))
        UNION ALL SELECT 50, '# HELP delq_worker_up Whether the forwarding worker runs.'
        UNION ALL SELECT 51, '# TYPE delq_worker_up gauge'
        UNION ALL SELECT 52, format('delq_worker_up %s', CASE WHEN delq.worker_running() THEN 1 ELSE 0 END)
    ) x;
$$;

-- ---------------------------------------------------------------------
-- GET /: the status page for a DPO, plain HTML without scripts.
-- SECURITY INVOKER: it shows what the operator's role may read.

CREATE OR REPLACE FUNCTION delq.html(val anyelement)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT replace(replace(replace(replace(replace(coalesce(val::text, ''), '&', '&amp;'),
                   '<', '&lt;'), '>', '&gt;'), '"', '&quot;'), '''', '&#39;');
$$;

-- An HTML table: head cells, then rows of already escaped cells.
CREATE OR REPLACE FUNCTION delq.html_table(caption text, head text[], rows text[], empty text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('<h2>%s</h2>', delq.html(caption)) ||
           CASE WHEN cardinality(rows) = 0 OR rows IS NULL
                THEN format('<p class="none">%s</p>', delq.html(empty))
                ELSE '<table><thead><tr>' ||
                     (SELECT string_agg('<th>' || delq.html(h) || '</th>', '') FROM unnest(head) h) ||
                     '</tr></thead><tbody>' || array_to_string(rows, '') || '</tbody></table>' END;
$$;

CREATE OR REPLACE FUNCTION delq.status_page()
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cell text := '<td>%s</td>';
BEGIN
    RETURN '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        || '<meta name="viewport" content="width=device-width, initial-scale=1">'
        || '<title>delq status</title><style>'
        || 'body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:70em}'
        || 'table{border-collapse:collapse;margin-bottom:1em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}'
        || 'th{background:#f0f0f0}.bad{color:#a00;font-weight:bold}.none{color:#666}'
        || '</style></head><body><h1>delq status</h1>'
        || format('<p>As of %s. Forwarding worker: %s.</p>', delq.html(date_trunc('second', now())),
                  CASE WHEN delq.worker_running() THEN 'running' ELSE '<span class="bad">not running</span>' END)
        || delq.html_table('Open requests by status', ARRAY['status', 'requests'],
               ARRAY(SELECT format('<tr>' || cell || cell || '</tr>', delq.html(s), count(p.id))
                       FROM unnest(ARRAY['held', 'forwarding', 'failed']) WITH ORDINALITY u(s, o)
                       LEFT JOIN delq.pending p ON p.status = s
                      GROUP BY s, o ORDER BY o),
               'No open requests.')
        || delq.html_table('Overdue', ARRAY['request', 'source', 'status', 'due', 'overdue by'],
               ARRAY(SELECT format('<tr>' || cell || cell || cell || cell || '<td class="bad">%s</td></tr>',
                                   delq.html(o.id), delq.html(o.source), delq.html(o.status),
                                   delq.html(date_trunc('second', o.due_at)),
                                   delq.html(date_trunc('second', o.overdue_by)))
                       FROM delq.overdue o ORDER BY o.due_at LIMIT 50),
               'Nothing is overdue.')
        || delq.html_table('At risk', ARRAY['request', 'source', 'status', 'due'],
               ARRAY(SELECT format('<tr>' || cell || cell || cell || cell || '</tr>',
                                   delq.html(a.id), delq.html(a.source), delq.html(a.status),
                                   delq.html(date_trunc('second', a.due_at)))
                       FROM delq.at_risk a ORDER BY a.due_at LIMIT 50),
               'Nothing is at risk.')
        || delq.html_table('Destinations', ARRAY['destination', 'queued', 'awaiting', 'confirmed', 'failed', 'breaker'],
               ARRAY(SELECT format('<tr>' || cell || cell || cell || cell || cell || cell || '</tr>',
                                   delq.html(h.name), h.queued, h.awaiting, h.confirmed, h.failed,
                                   CASE WHEN s.breaker_until IS NOT NULL THEN '<span class="bad">open</span>' ELSE 'closed' END)
                       FROM delq.destination_health h
                       LEFT JOIN delq.destination_state s ON s.name = h.name
                      ORDER BY h.name),
               'No destinations.')
        || delq.html_table('Last failures', ARRAY['request', 'destination', 'problem', 'detail', 'since'],
               ARRAY(SELECT format('<tr>' || cell || cell || cell || cell || cell || '</tr>',
                                   delq.html(n.request_id), delq.html(n.destination),
                                   delq.html(n.problem), delq.html(n.detail),
                                   delq.html(date_trunc('second', n.since)))
                       FROM delq.needs_attention n ORDER BY n.since DESC NULLS LAST LIMIT 20),
               'No failures.')
        || '</body></html>';
END
$$;

-- ---------------------------------------------------------------------
-- Grants: to the roles of the SQL API each route function calls (which
-- checks the caller's privileges again).

GRANT EXECUTE ON FUNCTION
    delq.http_body(text, text[]), delq.http_member(jsonb, text, text),
    delq.http_submit_doc(text, text),
    delq.http_request(text), delq.http_created(uuid), delq.http_submit(text, text),
    delq.http_list(text, text, text, text)
    TO delq_submitter;
GRANT EXECUTE ON FUNCTION
    delq.http_approve(text, text), delq.http_reject(text, text), delq.http_extend(text, text),
    delq.http_receipt(text), delq.status_page(), delq.html_table(text, text[], text[], text),
    delq.html(anyelement)
    TO delq_operator;
GRANT EXECUTE ON FUNCTION delq.metrics() TO delq_metrics;
GRANT USAGE ON SCHEMA delq TO delq_metrics;
GRANT EXECUTE ON FUNCTION delq.add_api_token(text, text), delq.drop_api_token(text),
    delq.add_hook(text, text, text, jsonb), delq.drop_hook(text)
    TO delq_admin;
