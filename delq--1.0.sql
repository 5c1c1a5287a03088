-- delq 1.0: a queue for personal-data deletion requests.
-- This script is assembled from src/sql/*.sql by the Makefile.

\echo Use "CREATE EXTENSION delq" to load this file. \quit
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

-- Tables.  Nobody writes them directly: every change goes through the
-- SECURITY DEFINER functions, which validate it and log an event.

-- Live requests.
CREATE TABLE delq.pending (
    id uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    source text NOT NULL,
    external_id text,
    subject text NOT NULL,
    reason text,
    attributes jsonb NOT NULL DEFAULT '{}',
    status text NOT NULL
        CHECK (status IN ('held', 'forwarding', 'completed', 'rejected', 'failed')),
    submitted_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    due_at timestamptz NOT NULL,
    -- held until this time; NULL while held means "awaiting approval"
    hold_until timestamptz,
    rejected boolean NOT NULL DEFAULT false,
    rejection_reason text,
    rejected_at timestamptz,
    completed_at timestamptz,
    -- why the request is failed (no route, a delivery failed permanently)
    failure_reason text
);

-- What archive() moves.  No index on status over every row: each status
-- change of a request would insert into it.
CREATE INDEX pending_finished_idx ON delq.pending ((coalesce(completed_at, rejected_at)))
    WHERE status IN ('completed', 'rejected');
CREATE INDEX pending_held_idx ON delq.pending (hold_until) WHERE status = 'held';
CREATE INDEX pending_due_idx ON delq.pending (due_at)
    WHERE status IN ('held', 'forwarding', 'failed');

-- Archived requests: self-contained proof of what was done and when.
CREATE TABLE delq.finished (
    id uuid PRIMARY KEY,
    source text NOT NULL,
    external_id text,
    subject text NOT NULL,
    reason text,
    attributes jsonb NOT NULL,
    status text NOT NULL CHECK (status IN ('completed', 'rejected')),
    submitted_at timestamptz NOT NULL,
    due_at timestamptz NOT NULL,
    hold_until timestamptz,
    rejected boolean NOT NULL,
    rejection_reason text,
    rejected_at timestamptz,
    completed_at timestamptz,
    failure_reason text,
    finished_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- one object per destination: state, attempts, last_status,
    -- first_attempt_at, last_attempt_at, confirmed_at, webhook_id
    deliveries jsonb NOT NULL DEFAULT '[]'
);

CREATE INDEX finished_finished_at_idx ON delq.finished (finished_at);

-- (source, external_id) of every request ever submitted, pending or
-- finished: the one place idempotency is decided, so that a concurrent
-- archive() cannot open a window for a duplicate.
CREATE TABLE delq.request_key (
    source text NOT NULL,
    external_id text NOT NULL,
    request_id uuid NOT NULL UNIQUE,
    PRIMARY KEY (source, external_id)
);

-- Systems that receive requests.
CREATE TABLE delq.destination (
    name text PRIMARY KEY,
    url text NOT NULL,
    headers jsonb NOT NULL DEFAULT '{}',
    secret text,
    timeout_ms integer NOT NULL DEFAULT 30000,
    connect_timeout_ms integer NOT NULL DEFAULT 10000,
    max_attempts integer,
    concurrency integer NOT NULL DEFAULT 16,
    confirm text NOT NULL DEFAULT 'response' CHECK (confirm IN ('response', 'callback')),
    retry_base_ms bigint,
    retry_max_ms bigint,
    ca_file text,
    client_cert text,
    client_key text,
    enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- Which requests go where: a request matches when its routing document
-- (attributes plus "source" and "reason") contains match.
CREATE TABLE delq.route (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination text NOT NULL REFERENCES delq.destination (name) ON DELETE CASCADE,
    match jsonb NOT NULL DEFAULT '{}' CHECK (pg_catalog.jsonb_typeof(match) = 'object'),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE INDEX route_destination_idx ON delq.route (destination);

-- One row per (request, destination).  No foreign key to destination:
-- a dropped destination's history stays readable.
CREATE TABLE delq.delivery (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id uuid NOT NULL REFERENCES delq.pending (id) ON DELETE CASCADE,
    destination text NOT NULL,
    state text NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'sending', 'awaiting_confirmation',
                         'confirmed', 'failed', 'cancelled')),
    -- copied from the request so that the claim can order by deadline
    due_at timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    -- attempts at the last delq.retry(): max_attempts counts from here
    attempts_base integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    first_attempt_at timestamptz,
    last_attempt_at timestamptz,
    lease_until timestamptz,
    last_status integer,
    last_error text,
    confirmed_at timestamptz,
    -- 'msg_' and a random UUID: unique without an index, which every
    -- state change of the delivery would have to update
    webhook_id text NOT NULL,
    UNIQUE (request_id, destination)
);

CREATE INDEX delivery_claim_idx ON delq.delivery (due_at, next_attempt_at)
    WHERE state = 'queued';
-- In flight per destination (the claim's concurrency cap) and by lease;
-- and the states an operator acts on.  Not (destination, state) over every
-- row: each state change of a delivery in the hot path (queued, sending,
-- confirmed) would insert into it.
CREATE INDEX delivery_sending_idx ON delq.delivery (destination, lease_until)
    WHERE state = 'sending';
CREATE INDEX delivery_destination_idx ON delq.delivery (destination, state)
    WHERE state NOT IN ('queued', 'sending', 'confirmed');
-- The audit trail: one row per state change, append-only.  It never holds
-- the subject (personal data).  prev_hash and hash chain each row to its
-- predecessor (the tamper-evident ledger, 81_ledger.sql).

CREATE TABLE delq.event (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    actor text NOT NULL DEFAULT session_user,
    request_id uuid,
    destination text,
    kind text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}',
    prev_hash bytea,
    hash bytea
);

CREATE INDEX event_request_idx ON delq.event (request_id, id);
-- BRIN: events are appended in time order, so a block range summary
-- serves time-range queries at a fraction of a B-tree's cost per insert
-- (three events per delivery).
CREATE INDEX event_at_idx ON delq.event USING brin (at);

-- Trigger function for the evidence tables (this one and the ledger's):
-- refuses UPDATE, DELETE and TRUNCATE.  Arguments: why, and what to do
-- instead.
CREATE FUNCTION delq._append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '%.% is append-only: % is not allowed', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege', DETAIL = TG_ARGV[0], HINT = TG_ARGV[1];
END
$$;

CREATE TRIGGER event_no_update_delete
    BEFORE UPDATE OR DELETE ON delq.event
    FOR EACH ROW EXECUTE FUNCTION delq._append_only(
        'The audit trail is evidence of what was done; no role may change it.',
        'Add a new event instead.');

CREATE TRIGGER event_no_truncate
    BEFORE TRUNCATE ON delq.event
    FOR EACH STATEMENT EXECUTE FUNCTION delq._append_only(
        'The audit trail is evidence of what was done; no role may change it.',
        'Add a new event instead.');

-- Fire also under session_replication_role = replica.
ALTER TABLE delq.event ENABLE ALWAYS TRIGGER event_no_update_delete;
ALTER TABLE delq.event ENABLE ALWAYS TRIGGER event_no_truncate;

-- Record one event.  actor defaults to session_user, which inside a
-- SECURITY DEFINER function is still the role that logged in.
CREATE FUNCTION delq._log(kind text, request_id uuid, destination text DEFAULT NULL,
                          detail jsonb DEFAULT '{}', actor text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- plpgsql, not sql: the INSERT's plan is kept across calls
    INSERT INTO delq.event (kind, request_id, destination, detail, actor)
    VALUES (_log.kind, _log.request_id, _log.destination, coalesce(_log.detail, '{}'),
            coalesce(_log.actor, session_user));
END
$$;
-- Argument checks shared by the API functions.  Each raises the SQLSTATE
-- of DESIGN.md with a message that names the argument and a hint that
-- says what is allowed.  Limits are documented in docs/sql-api.md.

CREATE FUNCTION delq._not_null(arg text, val anyelement)
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

CREATE FUNCTION delq._invalid(arg text, problem text, hint text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '% %', arg, problem
        USING ERRCODE = 'invalid_parameter_value', HINT = hint;
END
$$;

-- Free text: required or not, at most max_chars characters, no control
-- characters (newline and tab allowed when multiline).
CREATE FUNCTION delq._check_text(arg text, val text, max_chars integer,
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
CREATE FUNCTION delq._check_source(val text)
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
CREATE FUNCTION delq._check_name(arg text, val text)
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
CREATE FUNCTION delq._check_object(arg text, val jsonb, max_bytes integer)
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

CREATE FUNCTION delq._check_attributes(val jsonb)
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
    RETURN val;
END
$$;

-- http or https URL with a host, no user information, no spaces.
CREATE FUNCTION delq._check_url(val text)
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

-- Extra HTTP headers: an object of "Name": "value" strings.  The headers
-- delq sets itself cannot be overridden.
CREATE FUNCTION delq._check_headers(val jsonb)
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
        IF k !~ '^[!#$%&''*+.^_`|~0-9A-Za-z-]{1,100}$' THEN
            PERFORM delq._invalid('headers', format('has an invalid header name %s', quote_literal(left(k, 100))),
                                  'Header names are 1 to 100 token characters (letters, digits, "-", ...).');
        END IF;
        IF lower(k) IN ('content-type', 'content-length', 'host', 'user-agent', 'idempotency-key',
                        'webhook-id', 'webhook-timestamp', 'webhook-signature', 'transfer-encoding',
                        'connection', 'expect') THEN
            PERFORM delq._invalid('headers', format('may not set %s', k),
                                  'delq sets Content-Type, User-Agent, Idempotency-Key and the webhook-* headers itself.');
        END IF;
        IF jsonb_typeof(v) <> 'string' OR length(v #>> '{}') > 4096 OR (v #>> '{}') ~ '[[:cntrl:]]' THEN
            PERFORM delq._invalid('headers', format('has an invalid value for %s', k),
                                  'Header values are strings of at most 4096 characters without control characters.');
        END IF;
    END LOOP;
    RETURN val;
END
$$;

-- Signing secrets as Standard Webhooks writes them: whsec_<base64 of 24..64 bytes>.
CREATE FUNCTION delq._check_secret(val text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keylen integer;
BEGIN
    IF val IS NULL THEN
        RETURN NULL;
    END IF;
    IF val ~ '^whsec_[A-Za-z0-9+/]+={0,2}$' AND length(val) % 4 = 2 THEN
        keylen := length(decode(substr(val, 7), 'base64'));
    END IF;
    IF keylen IS NULL OR keylen NOT BETWEEN 24 AND 64 THEN
        PERFORM delq._invalid('secret', 'is not a valid signing secret',
                              'Use "whsec_" followed by the base64 of 24 to 64 random bytes, e.g. ''whsec_'' || encode(gen_random_bytes(32), ''base64'') with pgcrypto.');
    END IF;
    RETURN val;
END
$$;

-- An interval between lo and hi, returned in milliseconds.
CREATE FUNCTION delq._check_duration(arg text, val interval, lo interval, hi interval)
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
CREATE FUNCTION delq._check_not_negative(arg text, val interval, hint text)
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

CREATE FUNCTION delq._check_range(arg text, val integer, lo integer, hi integer)
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
CREATE FUNCTION delq._check_path(arg text, val text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF val IS NOT NULL AND (val !~ '^/' OR val ~ '[[:cntrl:]]' OR length(val) > 1024) THEN
        PERFORM delq._invalid(arg, 'must be an absolute file path',
                              format('Pass the absolute path of a PEM file readable by the server, or NULL.'));
    END IF;
    RETURN val;
END
$$;
-- Internal helpers of the request life cycle: settings, planning and the
-- request status that follows from its deliveries.  Not granted to anyone.

CREATE FUNCTION delq._load()
RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'delq_load';

CREATE FUNCTION delq._wake_on_commit()
RETURNS void
LANGUAGE c
AS 'MODULE_PATHNAME', 'delq_wake_on_commit';

CREATE FUNCTION delq.worker_running()
RETURNS boolean
LANGUAGE c
AS 'MODULE_PATHNAME', 'delq_worker_running';

-- A duration setting (delq.hold_period, ...) as an interval.
CREATE FUNCTION delq._setting_interval(name text)
RETURNS interval
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq._load();
    RETURN current_setting(name)::interval;
END
$$;

-- The request or a clear 42704 error.  Locks the row when lock is true.
CREATE FUNCTION delq._request(request_id uuid, lock boolean)
RETURNS delq.pending
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r delq.pending;
BEGIN
    PERFORM delq._not_null('id', request_id);
    IF lock THEN
        SELECT * INTO r FROM delq.pending p WHERE p.id = _request.request_id FOR UPDATE;
    ELSE
        SELECT * INTO r FROM delq.pending p WHERE p.id = _request.request_id;
    END IF;
    IF r.id IS NULL THEN
        IF EXISTS (SELECT 1 FROM delq.finished f WHERE f.id = _request.request_id) THEN
            RAISE EXCEPTION 'request % is archived', request_id
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Archived requests are final; see delq.finished.';
        END IF;
        RAISE EXCEPTION 'request % does not exist', request_id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Pass the id that delq.submit() returned.';
    END IF;
    RETURN r;
END
$$;

CREATE FUNCTION delq._wrong_state(request_id uuid, status text, allowed text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'request % is %', request_id, status
        USING ERRCODE = 'object_not_in_prerequisite_state', HINT = allowed;
END
$$;

-- The document routes are matched against.
CREATE FUNCTION delq._routing_document(r delq.pending)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.attributes || jsonb_build_object('source', r.source)
           || CASE WHEN r.reason IS NULL THEN '{}'::jsonb
                   ELSE jsonb_build_object('reason', r.reason) END;
$$;

-- Plan one delivery per destination with a matching route; a request that
-- matches nothing fails so that an operator sees it.  Returns the number
-- of deliveries planned.  The caller holds the request's row lock.
CREATE FUNCTION delq._plan(request_id uuid, actor text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r delq.pending;
    doc jsonb;
    planned integer;
BEGIN
    SELECT * INTO r FROM delq.pending p WHERE p.id = _plan.request_id;
    doc := delq._routing_document(r);

    WITH new AS (
        INSERT INTO delq.delivery (request_id, destination, due_at, webhook_id)
        SELECT r.id, d.name, r.due_at,
               'msg_' || replace(gen_random_uuid()::text, '-', '')
          FROM delq.destination d
         WHERE EXISTS (SELECT 1 FROM delq.route rt
                        WHERE rt.destination = d.name AND doc @> rt.match)
         ORDER BY d.name
        -- a delivery cancelled by drop_destination is revived, with its
        -- webhook id, when the destination is back
        ON CONFLICT ON CONSTRAINT delivery_request_id_destination_key DO UPDATE
            SET state = 'queued', next_attempt_at = now(), attempts_base = delivery.attempts,
                lease_until = NULL
            WHERE delivery.state = 'cancelled'
        RETURNING delivery.destination
    )
    INSERT INTO delq.event (kind, request_id, destination, actor)
    SELECT 'queued', r.id, new.destination, coalesce(actor, session_user) FROM new;
    GET DIAGNOSTICS planned = ROW_COUNT;

    IF NOT EXISTS (SELECT 1 FROM delq.delivery dl
                    WHERE dl.request_id = r.id AND dl.state <> 'cancelled') THEN
        UPDATE delq.pending p SET status = 'failed', failure_reason = 'no route matched'
         WHERE p.id = r.id;
        PERFORM delq._log('no_route', r.id, NULL,
                          jsonb_build_object('status', 'failed', 'routing_keys',
                                             (SELECT jsonb_agg(k) FROM jsonb_object_keys(doc) k)),
                          actor);
    ELSIF r.status <> 'forwarding' THEN
        UPDATE delq.pending p SET status = 'forwarding', failure_reason = NULL
         WHERE p.id = r.id;
        -- re-planned next to deliveries that are already done
        PERFORM delq._refresh_status(ARRAY[r.id], actor);
    END IF;
    RETURN planned;
END
$$;

-- What an archived request keeps of one delivery (delq.finished.deliveries),
-- and what a receipt shows of it.  A SQL-standard body: inlined.
CREATE FUNCTION delq._delivery_summary(dl delq.delivery)
RETURNS jsonb
LANGUAGE sql STABLE
RETURN pg_catalog.jsonb_build_object(
    'destination', dl.destination, 'state', dl.state,
    'attempts', dl.attempts, 'last_status', dl.last_status,
    'first_attempt_at', dl.first_attempt_at,
    'last_attempt_at', dl.last_attempt_at,
    'confirmed_at', dl.confirmed_at, 'webhook_id', dl.webhook_id);

-- Derive each request's status from its deliveries: failed if any failed,
-- completed when all are confirmed (or cancelled, with one confirmed),
-- forwarding otherwise.  Logs every change.  Held and rejected requests
-- are left alone.
CREATE FUNCTION delq._refresh_status(request_ids uuid[], actor text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- plpgsql, not sql: the plan is kept instead of made on every call
    WITH derived AS (
        SELECT dl.request_id,
               CASE WHEN bool_or(dl.state = 'failed') THEN 'failed'
                    WHEN bool_and(dl.state IN ('confirmed', 'cancelled'))
                         AND bool_or(dl.state = 'confirmed') THEN 'completed'
                    WHEN bool_and(dl.state = 'cancelled') THEN 'failed'
                    ELSE 'forwarding' END AS status,
               CASE WHEN bool_or(dl.state = 'failed')
                    THEN 'delivery failed: ' || string_agg(dl.destination, ', ' ORDER BY dl.destination)
                                                FILTER (WHERE dl.state = 'failed')
                    WHEN bool_and(dl.state = 'cancelled') THEN 'every delivery was cancelled'
               END AS failure_reason
          FROM delq.delivery dl
         WHERE dl.request_id = ANY (_refresh_status.request_ids)
         GROUP BY dl.request_id
    ), changed AS (
        UPDATE delq.pending p
           SET status = d.status,
               failure_reason = d.failure_reason,
               completed_at = CASE WHEN d.status = 'completed' THEN now() END
          FROM derived d
         WHERE p.id = d.request_id
           AND p.status NOT IN ('held', 'rejected')
           AND (p.status <> d.status OR p.failure_reason IS DISTINCT FROM d.failure_reason)
        RETURNING p.id, p.status, p.failure_reason
    )
    INSERT INTO delq.event (kind, request_id, detail, actor)
    SELECT c.status, c.id,
           jsonb_strip_nulls(jsonb_build_object('status', c.status, 'failure_reason', c.failure_reason)),
           coalesce(_refresh_status.actor, session_user)
      FROM changed c
     ORDER BY c.id;
END
$$;

-- Release held requests whose hold period is over (the worker and
-- delq.dispatch() call this), the earliest hold end first: that order is
-- pending_held_idx's, so a call reads only the requests it releases
-- (ordered by due_at, a plan may read every open request instead).
-- Returns how many were released.
CREATE FUNCTION delq._release_held(max_requests integer)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rid uuid;
    released integer := 0;
BEGIN
    FOR rid IN
        SELECT p.id FROM delq.pending p
         WHERE p.status = 'held' AND p.hold_until <= now()
         ORDER BY p.hold_until
         LIMIT max_requests
         FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM delq._log('released', rid, NULL, '{"by": "hold_period"}', 'delq');
        PERFORM delq._plan(rid, 'delq');
        released := released + 1;
    END LOOP;
    RETURN released;
END
$$;
-- The request API: submit, approve, reject, retry, confirm, archive.

CREATE FUNCTION delq.submit(subject text, source text, reason text DEFAULT NULL,
                            attributes jsonb DEFAULT '{}', external_id text DEFAULT NULL,
                            due_at timestamptz DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- a failed call must not write the subject into the server log
SET log_min_error_statement = panic
AS $$
DECLARE
    new_id uuid := gen_random_uuid();
    existing uuid;
    hold interval;
    held boolean;
BEGIN
    PERFORM delq._check_text('subject', subject, 1000, true);
    PERFORM delq._check_source(source);
    PERFORM delq._check_text('reason', reason, 1000, false, true);
    PERFORM delq._check_attributes(attributes);
    PERFORM delq._check_text('external_id', external_id, 255, false);
    IF due_at IS NOT NULL AND due_at <= now() THEN
        PERFORM delq._invalid('due_at', format('is in the past (%s)', due_at),
                              'Pass a future time, or NULL for now() + delq.default_deadline.');
    END IF;

    -- Idempotency: the first (source, external_id) wins, pending or finished;
    -- a concurrent duplicate waits here for the first one's transaction.
    IF external_id IS NOT NULL THEN
        INSERT INTO delq.request_key AS k (source, external_id, request_id)
        VALUES (submit.source, submit.external_id, new_id)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            SELECT k.request_id INTO existing FROM delq.request_key k
             WHERE k.source = submit.source AND k.external_id = submit.external_id;
            RETURN existing;
        END IF;
    END IF;

    hold := delq._setting_interval('delq.hold_period');
    held := current_setting('delq.require_approval')::boolean OR hold > interval '0';

    INSERT INTO delq.pending (id, source, external_id, subject, reason, attributes,
                              status, due_at, hold_until)
    VALUES (new_id, submit.source, submit.external_id, submit.subject, submit.reason,
            submit.attributes,
            CASE WHEN held THEN 'held' ELSE 'forwarding' END,
            coalesce(submit.due_at, now() + delq._setting_interval('delq.default_deadline')),
            CASE WHEN held AND NOT current_setting('delq.require_approval')::boolean
                 THEN now() + hold END);

    PERFORM delq._log('submitted', new_id, NULL,
                      jsonb_build_object('source', submit.source,
                                         'status', CASE WHEN held THEN 'held' ELSE 'forwarding' END));
    IF NOT held THEN
        PERFORM delq._plan(new_id);
    END IF;
    -- also when held: the worker then learns when the hold ends
    PERFORM delq._wake_on_commit();
    RETURN new_id;
END
$$;

CREATE FUNCTION delq.approve(id uuid)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r delq.pending := delq._request(id, true);
BEGIN
    IF r.status <> 'held' THEN
        PERFORM delq._wrong_state(r.id, r.status, 'Only held requests can be approved.');
    END IF;
    PERFORM delq._log('approved', r.id);
    PERFORM delq._plan(r.id);
    PERFORM delq._wake_on_commit();
END
$$;

CREATE FUNCTION delq.reject(id uuid, reason text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r delq.pending;
    sent text;
BEGIN
    PERFORM delq._check_text('reason', reason, 1000, true, true);
    r := delq._request(id, true);
    IF r.status IN ('completed', 'rejected') THEN
        PERFORM delq._wrong_state(r.id, r.status, 'Only requests that are held, forwarding or failed, and not yet sent anywhere, can be rejected.');
    END IF;

    -- The worker commits its claim (attempts + 1) before sending, so once
    -- these rows are locked, attempts tells whether anything left.
    PERFORM 1 FROM delq.delivery d WHERE d.request_id = r.id FOR UPDATE;
    SELECT string_agg(dl.destination, ', ' ORDER BY dl.destination) INTO sent
      FROM delq.delivery dl
     WHERE dl.request_id = r.id
       AND (dl.attempts > 0 OR dl.state IN ('sending', 'awaiting_confirmation', 'confirmed'));
    IF sent IS NOT NULL THEN
        RAISE EXCEPTION 'request % has already been sent to %', r.id, sent
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'A request that a destination may have received cannot be rejected.',
                  HINT = 'Ask the destination to disregard it, or let it complete.';
    END IF;

    WITH cancelled AS (
        UPDATE delq.delivery d SET state = 'cancelled', next_attempt_at = now()
         WHERE d.request_id = r.id AND d.state IN ('queued', 'failed')
        RETURNING d.destination
    )
    INSERT INTO delq.event (kind, request_id, destination, detail)
    SELECT 'cancelled', r.id, c.destination, '{"because": "rejected"}' FROM cancelled c;

    UPDATE delq.pending p
       SET status = 'rejected', rejected = true, rejection_reason = reject.reason,
           rejected_at = now()
     WHERE p.id = r.id;
    PERFORM delq._log('rejected', r.id, NULL, jsonb_build_object('reason', reject.reason));
END
$$;

CREATE FUNCTION delq.retry(id uuid, destination text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r delq.pending := delq._request(id, true);
    n integer;
BEGIN
    IF r.status <> 'failed' THEN
        PERFORM delq._wrong_state(r.id, r.status, 'Only failed requests can be retried.');
    END IF;
    IF destination IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM delq.delivery d WHERE d.request_id = r.id AND d.destination = retry.destination) THEN
        RAISE EXCEPTION 'request % has no delivery to destination %', r.id, destination
            USING ERRCODE = 'undefined_object',
                  HINT = 'See delq.delivery for the destinations of this request, or pass NULL for all.';
    END IF;

    -- Nothing failed to requeue (no route matched, or every delivery was
    -- cancelled): plan again with today's routes.
    IF destination IS NULL AND NOT EXISTS (
        SELECT 1 FROM delq.delivery d WHERE d.request_id = r.id AND d.state <> 'cancelled') THEN
        PERFORM delq._log('retried', r.id, NULL, '{"replanned": true}');
        n := delq._plan(r.id);
        PERFORM delq._wake_on_commit();
        RETURN n;
    END IF;

    WITH requeued AS (
        UPDATE delq.delivery d
           SET state = 'queued', next_attempt_at = now(), attempts_base = d.attempts,
               lease_until = NULL
         WHERE d.request_id = r.id AND d.state = 'failed'
           AND (retry.destination IS NULL OR d.destination = retry.destination)
        RETURNING d.destination, d.attempts
    )
    INSERT INTO delq.event (kind, request_id, destination, detail)
    SELECT 'retried', r.id, q.destination, jsonb_build_object('attempts_so_far', q.attempts)
      FROM requeued q;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        RAISE EXCEPTION 'request % has no failed delivery%', r.id,
                        coalesce(' to ' || destination, '')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Only failed deliveries can be retried; see delq.needs_attention.';
    END IF;
    PERFORM delq._refresh_status(ARRAY[r.id]);
    PERFORM delq._wake_on_commit();
    RETURN n;
END
$$;

-- Confirmation of a delivery: the callback of a destination in 'callback'
-- mode, or an operator recording that a system erased the data by other
-- means.  Confirming twice is harmless and returns false.
CREATE FUNCTION delq.confirm(id uuid, destination text)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r delq.pending;
    d delq.delivery;
BEGIN
    PERFORM delq._not_null('destination', destination);
    r := delq._request(id, true);
    SELECT * INTO d FROM delq.delivery dl
     WHERE dl.request_id = r.id AND dl.destination = confirm.destination FOR UPDATE;
    IF d.id IS NULL THEN
        RAISE EXCEPTION 'request % has no delivery to destination %', r.id, destination
            USING ERRCODE = 'undefined_object',
                  HINT = 'See delq.delivery for the destinations of this request.';
    END IF;
    IF d.state = 'confirmed' THEN
        RETURN false;
    END IF;
    IF d.state = 'cancelled' THEN
        RAISE EXCEPTION 'delivery of request % to % is cancelled', r.id, destination
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Cancelled deliveries (of rejected requests) cannot be confirmed.';
    END IF;

    UPDATE delq.delivery dl
       SET state = 'confirmed', confirmed_at = now(), lease_until = NULL
     WHERE dl.id = d.id;
    PERFORM delq._log('confirmed', r.id, d.destination,
                      jsonb_build_object('via', 'delq.confirm', 'previous_state', d.state));
    PERFORM delq._refresh_status(ARRAY[r.id]);
    RETURN true;
END
$$;

-- Move completed and rejected requests, with a summary of their
-- deliveries, to delq.finished.
CREATE FUNCTION delq.archive(older_than interval DEFAULT '0')
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    moved bigint;
BEGIN
    PERFORM delq._not_null('older_than', older_than);
    PERFORM delq._check_not_negative('older_than', older_than,
                                     'Pass how long a request must have been finished, e.g. ''30 days'', or ''0'' for all.');

    WITH victims AS (
        SELECT p.id FROM delq.pending p
         WHERE p.status IN ('completed', 'rejected')
           AND coalesce(p.completed_at, p.rejected_at) <= now() - older_than
         FOR UPDATE
    ), summary AS (
        SELECT dl.request_id,
               jsonb_agg(delq._delivery_summary(dl) ORDER BY dl.destination) AS deliveries
          FROM delq.delivery dl
         WHERE dl.request_id IN (SELECT v.id FROM victims v)
         GROUP BY dl.request_id
    ), gone AS (
        DELETE FROM delq.pending p USING victims v WHERE p.id = v.id
        RETURNING p.*
    ), kept AS (
        INSERT INTO delq.finished
            (id, source, external_id, subject, reason, attributes, status, submitted_at,
             due_at, hold_until, rejected, rejection_reason, rejected_at, completed_at,
             failure_reason, deliveries)
        SELECT g.id, g.source, g.external_id, g.subject, g.reason, g.attributes, g.status,
               g.submitted_at, g.due_at, g.hold_until, g.rejected, g.rejection_reason,
               g.rejected_at, g.completed_at, g.failure_reason,
               coalesce(s.deliveries, '[]')
          FROM gone g LEFT JOIN summary s ON s.request_id = g.id
        RETURNING finished.id, finished.status
    )
    INSERT INTO delq.event (kind, request_id, detail)
    SELECT 'archived', k.id, jsonb_build_object('status', k.status) FROM kept k ORDER BY k.id;
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END
$$;
-- Destinations (the systems that hold personal data) and routes (which
-- requests go to which destination).  Only delq_admin manages them.

CREATE FUNCTION delq._destination(name text, lock boolean)
RETURNS delq.destination
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d delq.destination;
BEGIN
    PERFORM delq._not_null('destination', name);
    IF lock THEN
        SELECT * INTO d FROM delq.destination t WHERE t.name = _destination.name FOR UPDATE;
    ELSE
        SELECT * INTO d FROM delq.destination t WHERE t.name = _destination.name;
    END IF;
    IF d.name IS NULL THEN
        RAISE EXCEPTION 'destination % does not exist', quote_literal(name)
            USING ERRCODE = 'undefined_object',
                  HINT = 'See delq.destinations for the names; add one with delq.add_destination().';
    END IF;
    RETURN d;
END
$$;

-- Apply options to a destination row and check the result; shared by
-- add_destination (on a fresh row) and alter_destination (on the stored
-- one).  NULL keeps a value; '' (secret, TLS paths), 0 (max_attempts) and
-- '0' (retry_base, retry_max) return to the default.
CREATE FUNCTION delq._merge_destination(d delq.destination, url text, headers jsonb,
                                        secret text, timeout interval,
                                        connect_timeout interval, max_attempts integer,
                                        concurrency integer, confirm text,
                                        retry_base interval, retry_max interval,
                                        enabled boolean, ca_file text, client_cert text,
                                        client_key text)
RETURNS delq.destination
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    d.url := delq._check_url(coalesce(url, d.url));
    d.headers := delq._check_headers(coalesce(headers, d.headers));
    d.secret := delq._check_secret(CASE WHEN secret = '' THEN NULL ELSE coalesce(secret, d.secret) END);
    IF timeout IS NOT NULL THEN
        d.timeout_ms := delq._check_duration('timeout', timeout, '100 milliseconds', '10 minutes');
    END IF;
    PERFORM delq._not_null('timeout', d.timeout_ms);
    IF connect_timeout IS NOT NULL THEN
        d.connect_timeout_ms := delq._check_duration('connect_timeout', connect_timeout,
                                                     '100 milliseconds', '5 minutes');
    END IF;
    PERFORM delq._not_null('connect_timeout', d.connect_timeout_ms);
    d.max_attempts := delq._check_range('max_attempts',
        CASE WHEN max_attempts = 0 THEN NULL ELSE coalesce(max_attempts, d.max_attempts) END, 1, 1000);
    d.concurrency := delq._check_range('concurrency',
        delq._not_null('concurrency', coalesce(concurrency, d.concurrency)), 1, 10000);
    d.confirm := delq._not_null('confirm', coalesce(confirm, d.confirm));
    IF d.confirm NOT IN ('response', 'callback') THEN
        PERFORM delq._invalid('confirm', format('%s is not a confirm mode', quote_literal(d.confirm)),
                              'Use ''response'' (a 2xx answer confirms) or ''callback'' (2xx accepts; delq.confirm() confirms).');
    END IF;
    IF retry_base = interval '0' THEN
        d.retry_base_ms := NULL;
    ELSIF retry_base IS NOT NULL THEN
        d.retry_base_ms := delq._check_duration('retry_base', retry_base, '1 millisecond', '1 day');
    END IF;
    IF retry_max = interval '0' THEN
        d.retry_max_ms := NULL;
    ELSIF retry_max IS NOT NULL THEN
        d.retry_max_ms := delq._check_duration('retry_max', retry_max, '1 second', '30 days');
    END IF;
    IF d.retry_base_ms > d.retry_max_ms THEN
        PERFORM delq._invalid('retry_base', 'is longer than retry_max', 'retry_base must not exceed retry_max.');
    END IF;
    d.enabled := delq._not_null('enabled', coalesce(enabled, d.enabled));
    d.ca_file := delq._check_path('ca_file', CASE WHEN ca_file = '' THEN NULL ELSE coalesce(ca_file, d.ca_file) END);
    d.client_cert := delq._check_path('client_cert',
        CASE WHEN client_cert = '' THEN NULL ELSE coalesce(client_cert, d.client_cert) END);
    d.client_key := delq._check_path('client_key',
        CASE WHEN client_key = '' THEN NULL ELSE coalesce(client_key, d.client_key) END);
    IF (d.client_cert IS NULL) <> (d.client_key IS NULL) THEN
        PERFORM delq._invalid('client_cert', 'and client_key must be given together',
                              'Pass both the client certificate and its key, or neither.');
    END IF;
    d.updated_at := now();
    RETURN d;
END
$$;

CREATE FUNCTION delq.add_destination(name text, url text,
                                     headers jsonb DEFAULT '{}',
                                     secret text DEFAULT NULL,
                                     timeout interval DEFAULT '30 seconds',
                                     connect_timeout interval DEFAULT '10 seconds',
                                     max_attempts integer DEFAULT NULL,
                                     concurrency integer DEFAULT 16,
                                     confirm text DEFAULT 'response',
                                     retry_base interval DEFAULT NULL,
                                     retry_max interval DEFAULT NULL,
                                     enabled boolean DEFAULT true,
                                     ca_file text DEFAULT NULL,
                                     client_cert text DEFAULT NULL,
                                     client_key text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d delq.destination;
BEGIN
    d.name := delq._check_name('name', name);
    d.created_at := now();
    -- What alter_destination reads as "back to the default" ('' and 0) is
    -- a mistake here (an empty secret would silently send unsigned).
    PERFORM delq._not_null('headers', headers);
    PERFORM delq._check_secret(secret);
    PERFORM delq._check_range('max_attempts', max_attempts, 1, 1000);
    IF retry_base = interval '0' THEN
        PERFORM delq._check_duration('retry_base', retry_base, '1 millisecond', '1 day');
    END IF;
    IF retry_max = interval '0' THEN
        PERFORM delq._check_duration('retry_max', retry_max, '1 second', '30 days');
    END IF;
    PERFORM delq._check_path('ca_file', ca_file), delq._check_path('client_cert', client_cert),
            delq._check_path('client_key', client_key);
    d := delq._merge_destination(d, url, headers, secret, timeout, connect_timeout,
                                 max_attempts, concurrency, confirm, retry_base, retry_max,
                                 enabled, ca_file, client_cert, client_key);

    IF EXISTS (SELECT 1 FROM delq.destination t WHERE t.name = d.name) THEN
        RAISE EXCEPTION 'destination % already exists', quote_literal(d.name)
            USING ERRCODE = 'unique_violation',
                  HINT = 'Change it with delq.alter_destination(), or choose another name.';
    END IF;
    INSERT INTO delq.destination SELECT d.*;
    PERFORM delq._log('destination_added', NULL, d.name,
                      jsonb_build_object('url', d.url, 'confirm', d.confirm, 'enabled', d.enabled,
                                         'signed', d.secret IS NOT NULL));
EXCEPTION
    WHEN unique_violation THEN
        -- a concurrent add of the same name won
        RAISE EXCEPTION 'destination % already exists', quote_literal(add_destination.name)
            USING ERRCODE = 'unique_violation',
                  HINT = 'Change it with delq.alter_destination(), or choose another name.';
END
$$;

-- Change a destination: NULL leaves a setting as it is; see
-- _merge_destination for the values that return to a default.
CREATE FUNCTION delq.alter_destination(name text,
                                       url text DEFAULT NULL,
                                       headers jsonb DEFAULT NULL,
                                       secret text DEFAULT NULL,
                                       timeout interval DEFAULT NULL,
                                       connect_timeout interval DEFAULT NULL,
                                       max_attempts integer DEFAULT NULL,
                                       concurrency integer DEFAULT NULL,
                                       confirm text DEFAULT NULL,
                                       retry_base interval DEFAULT NULL,
                                       retry_max interval DEFAULT NULL,
                                       enabled boolean DEFAULT NULL,
                                       ca_file text DEFAULT NULL,
                                       client_cert text DEFAULT NULL,
                                       client_key text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old delq.destination := delq._destination(name, true);
    d delq.destination;
    changed text[];
BEGIN
    d := delq._merge_destination(old, url, headers, secret, timeout, connect_timeout,
                                 max_attempts, concurrency, confirm, retry_base, retry_max,
                                 enabled, ca_file, client_cert, client_key);

    -- names of changed settings only: values may be secrets
    SELECT array_agg(n.key ORDER BY n.key) INTO changed
      FROM jsonb_each(to_jsonb(d)) n JOIN jsonb_each(to_jsonb(old)) o USING (key)
     WHERE n.value IS DISTINCT FROM o.value AND n.key <> 'updated_at';

    UPDATE delq.destination t SET
        url = d.url, headers = d.headers, secret = d.secret, timeout_ms = d.timeout_ms,
        connect_timeout_ms = d.connect_timeout_ms, max_attempts = d.max_attempts,
        concurrency = d.concurrency, confirm = d.confirm, retry_base_ms = d.retry_base_ms,
        retry_max_ms = d.retry_max_ms, enabled = d.enabled, ca_file = d.ca_file,
        client_cert = d.client_cert, client_key = d.client_key, updated_at = d.updated_at
     WHERE t.name = d.name;
    PERFORM delq._log('destination_altered', NULL, d.name,
                      jsonb_build_object('changed', coalesce(changed, '{}')));
    IF enabled THEN
        PERFORM delq._wake_on_commit();
    END IF;
END
$$;

-- Drop a destination and its routes.  Refused while it has open
-- deliveries, unless cancel_deliveries is true.
CREATE FUNCTION delq.drop_destination(name text, cancel_deliveries boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d delq.destination := delq._destination(name, true);
    open_count bigint;
    touched uuid[];
BEGIN
    PERFORM delq._not_null('cancel_deliveries', cancel_deliveries);
    SELECT count(*) INTO open_count FROM delq.delivery dl
     WHERE dl.destination = d.name AND dl.state IN ('queued', 'sending', 'awaiting_confirmation', 'failed');
    IF open_count > 0 AND NOT cancel_deliveries THEN
        RAISE EXCEPTION 'destination % has % open deliveries', quote_literal(d.name), open_count
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Pause it with delq.alter_destination(name, enabled => false), or pass cancel_deliveries => true to cancel them.';
    END IF;
    IF open_count > 0 THEN
        -- lock order: requests, then deliveries, as everywhere else
        PERFORM 1 FROM delq.pending p
         WHERE p.id IN (SELECT dl.request_id FROM delq.delivery dl
                         WHERE dl.destination = d.name
                           AND dl.state IN ('queued', 'sending', 'awaiting_confirmation', 'failed'))
         ORDER BY p.id
           FOR UPDATE OF p;
        -- a delivery in flight may still arrive; its answer is then ignored
        WITH cancelled AS (
            UPDATE delq.delivery dl SET state = 'cancelled', lease_until = NULL
             WHERE dl.destination = d.name
               AND dl.state IN ('queued', 'sending', 'awaiting_confirmation', 'failed')
            RETURNING dl.request_id
        ), logged AS (
            INSERT INTO delq.event (kind, request_id, destination, detail)
            SELECT 'cancelled', c.request_id, d.name, '{"because": "destination dropped"}'
              FROM cancelled c
             ORDER BY c.request_id
            RETURNING request_id
        )
        SELECT array_agg(request_id) INTO touched FROM logged;
        PERFORM delq._refresh_status(touched);
    END IF;
    DELETE FROM delq.destination t WHERE t.name = d.name;
    PERFORM delq._log('destination_dropped', NULL, d.name,
                      jsonb_build_object('cancelled_deliveries', open_count));
END
$$;

CREATE FUNCTION delq.add_route(destination text, match jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d delq.destination := delq._destination(destination, true);
    new_id bigint;
BEGIN
    PERFORM delq._check_object('match', match, 16384);
    IF EXISTS (SELECT 1 FROM delq.route r WHERE r.destination = d.name AND r.match = add_route.match) THEN
        RAISE EXCEPTION 'destination % already has a route matching %', quote_literal(d.name), match
            USING ERRCODE = 'unique_violation',
                  HINT = 'See delq.route; a route is needed only once.';
    END IF;
    INSERT INTO delq.route (destination, match) VALUES (d.name, add_route.match)
    RETURNING id INTO new_id;
    PERFORM delq._log('route_added', NULL, d.name,
                      jsonb_build_object('route_id', new_id, 'match', match));
    RETURN new_id;
END
$$;

CREATE FUNCTION delq.drop_route(id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r delq.route;
BEGIN
    PERFORM delq._not_null('id', id);
    DELETE FROM delq.route rt WHERE rt.id = drop_route.id RETURNING * INTO r;
    IF r.id IS NULL THEN
        RAISE EXCEPTION 'route % does not exist', id
            USING ERRCODE = 'undefined_object',
                  HINT = 'See delq.route for the ids.';
    END IF;
    PERFORM delq._log('route_dropped', NULL, r.destination,
                      jsonb_build_object('route_id', r.id, 'match', r.match));
END
$$;
-- Views for operators (and, for delq.requests, submitters).  None of them
-- shows a subject or a destination's secrets.

-- One row per request, pending and finished together, with the state of
-- each of its deliveries.
CREATE VIEW delq.requests AS
SELECT p.id, p.source, p.external_id, p.status, p.submitted_at, p.due_at,
       p.completed_at, p.rejected_at, p.failure_reason, NULL::timestamptz AS finished_at,
       coalesce((SELECT jsonb_object_agg(dl.destination, dl.state ORDER BY dl.destination)
                   FROM delq.delivery dl WHERE dl.request_id = p.id), '{}') AS deliveries
  FROM delq.pending p
UNION ALL
SELECT f.id, f.source, f.external_id, f.status, f.submitted_at, f.due_at,
       f.completed_at, f.rejected_at, f.failure_reason, f.finished_at,
       coalesce((SELECT jsonb_object_agg(e ->> 'destination', e ->> 'state')
                   FROM jsonb_array_elements(f.deliveries) e), '{}')
  FROM delq.finished f;

-- Requests past their deadline that are not completed or rejected.
CREATE VIEW delq.overdue AS
SELECT p.id, p.source, p.external_id, p.status, p.submitted_at, p.due_at,
       now() - p.due_at AS overdue_by,
       coalesce((SELECT jsonb_object_agg(dl.destination, dl.state ORDER BY dl.destination)
                   FROM delq.delivery dl WHERE dl.request_id = p.id), '{}') AS deliveries
  FROM delq.pending p
 WHERE p.status IN ('held', 'forwarding', 'failed')
   AND p.due_at < now();

-- What an operator must act on: failed requests (no route, or a delivery
-- failed permanently) and each failed delivery.
CREATE VIEW delq.needs_attention AS
SELECT p.id AS request_id, NULL::text AS destination, 'request failed'::text AS problem,
       p.failure_reason AS detail, NULL::integer AS last_status, p.due_at,
       (SELECT max(e.at) FROM delq.event e WHERE e.request_id = p.id) AS since
  FROM delq.pending p
 WHERE p.status = 'failed'
UNION ALL
SELECT dl.request_id, dl.destination, 'delivery failed', dl.last_error, dl.last_status,
       dl.due_at, dl.last_attempt_at
  FROM delq.delivery dl
 WHERE dl.state = 'failed';

-- Destinations without their secrets: header names only, whether signed.
CREATE VIEW delq.destinations AS
SELECT d.name, d.url, d.enabled, d.confirm,
       ARRAY(SELECT jsonb_object_keys(d.headers) ORDER BY 1) AS header_names,
       d.secret IS NOT NULL AS signed,
       d.timeout_ms, d.connect_timeout_ms, d.max_attempts, d.concurrency,
       d.retry_base_ms, d.retry_max_ms, d.ca_file, d.client_cert,
       d.created_at, d.updated_at
  FROM delq.destination d;
-- Forwarding: what the worker and delq.dispatch() run, through the C code
-- in src/store.c.  Claims commit before any byte is sent (a crash can only
-- resend, never drop); outcomes are recorded in batches.

-- Per-destination health, kept apart from the configuration so that the
-- worker's updates never contend with alter_destination().
CREATE TABLE delq.destination_state (
    name text PRIMARY KEY REFERENCES delq.destination (name) ON DELETE CASCADE,
    consecutive_failures integer NOT NULL DEFAULT 0,
    -- circuit breaker: open while set; one probe at a time once it passed
    breaker_until timestamptz,
    breaker_opens integer NOT NULL DEFAULT 0,
    last_success_at timestamptz,
    last_failure_at timestamptz,
    last_failure text
);

SELECT pg_catalog.pg_extension_config_dump('delq.destination_state', '');

DROP INDEX delq.delivery_claim_idx;
CREATE INDEX delivery_claim_idx ON delq.delivery (destination, due_at, next_attempt_at)
    WHERE state = 'queued';
-- the next retry of each destination (_next_due)
CREATE INDEX delivery_next_attempt_idx ON delq.delivery (destination, next_attempt_at)
    WHERE state = 'queued';

-- The HTTP body a destination receives (DESIGN.md).  A SQL-standard body
-- (RETURN ...): parsed once at CREATE EXTENSION, so it needs no SET
-- search_path, and _claim() inlines it instead of calling it per row.
CREATE FUNCTION delq._webhook_body(r delq.pending, webhook_id text, confirm text)
RETURNS text
LANGUAGE sql STABLE
RETURN pg_catalog.jsonb_build_object(
        'type', 'erasure.requested',
        'id', webhook_id,
        'request_id', r.id,
        'subject', r.subject,
        'source', r.source,
        'reason', r.reason,
        'attributes', r.attributes,
        'external_id', r.external_id,
        'submitted_at', r.submitted_at,
        'due_at', r.due_at,
        'confirmation', confirm)::text;

-- Claim up to max_rows due deliveries, earliest deadline first, keeping
-- each destination under its concurrency cap and holding back destinations
-- whose circuit breaker is open (one probe once its cool-down passed).
-- The ids are picked first, so that the update and the joins that follow
-- are planned for a batch (index lookups), not for the whole queue.
CREATE FUNCTION delq._claim(max_rows integer)
RETURNS TABLE (delivery_id bigint, request_id uuid, destination text, webhook_id text,
               url text, headers text[], secret text, timeout_ms integer,
               connect_timeout_ms integer, ca_file text, client_cert text,
               client_key text, body text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- cached generic plans are costed for the whole queue; compiling them
-- costs ten times what they run (docs/performance.md)
SET jit = off
AS $$
DECLARE
    ids bigint[];
BEGIN
    ids := ARRAY(
        SELECT c.id
          FROM (SELECT d.name,
                       CASE WHEN s.breaker_until IS NULL THEN d.concurrency
                            WHEN s.breaker_until <= now() THEN 1
                            ELSE 0 END
                       - (SELECT count(*) FROM delq.delivery x
                           WHERE x.destination = d.name AND x.state = 'sending')::integer AS free
                  FROM delq.destination d
                  LEFT JOIN delq.destination_state s ON s.name = d.name
                 WHERE d.enabled) room,
               LATERAL (SELECT dl.id, dl.due_at, dl.next_attempt_at
                          FROM delq.delivery dl
                         WHERE dl.destination = room.name AND dl.state = 'queued'
                           AND dl.next_attempt_at <= now()
                         ORDER BY dl.due_at, dl.next_attempt_at
                         LIMIT least(room.free, max_rows)
                           FOR UPDATE SKIP LOCKED) c
         WHERE room.free > 0
         ORDER BY c.due_at, c.next_attempt_at
         LIMIT max_rows);
    IF cardinality(ids) = 0 THEN
        RETURN;
    END IF;

    RETURN QUERY
    WITH claimed AS (
        UPDATE delq.delivery dl
           SET state = 'sending', attempts = dl.attempts + 1,
               first_attempt_at = coalesce(dl.first_attempt_at, now()),
               last_attempt_at = now(),
               lease_until = now() + make_interval(secs => 60 + 2 * t.timeout_ms / 1000.0)
          FROM delq.destination t
         WHERE dl.id = ANY (ids) AND t.name = dl.destination
        RETURNING dl.*
    ), logged AS (
        INSERT INTO delq.event (kind, request_id, destination, detail, actor)
        SELECT 'sending', c.request_id, c.destination,
               jsonb_build_object('attempt', c.attempts), 'delq'
          FROM claimed c
         ORDER BY c.request_id
    )
    SELECT c.id, c.request_id, c.destination, c.webhook_id, t.url,
           ARRAY(SELECT h.key || ': ' || h.value FROM jsonb_each_text(t.headers) h ORDER BY h.key),
           t.secret, t.timeout_ms, t.connect_timeout_ms, t.ca_file, t.client_cert,
           t.client_key, delq._webhook_body(p, c.webhook_id, t.confirm)
      FROM claimed c
      JOIN delq.destination t ON t.name = c.destination
      JOIN delq.pending p ON p.id = c.request_id
     ORDER BY c.due_at, c.next_attempt_at;
END
$$;

-- Record a batch of outcomes ('confirmed', 'retry', 'failed'), one per
-- delivery id, with HTTP status, error text, Retry-After seconds (-1: none)
-- and whether the answer was 410 Gone.  Only rows still 'sending' change:
-- a delivery confirmed by callback or cancelled meanwhile stays as it is.
CREATE FUNCTION delq._record(ids bigint[], outcomes text[], statuses integer[],
                             errors text[], retry_after integer[], gone boolean[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    base_ms double precision := extract(epoch FROM current_setting('delq.retry_base')::interval) * 1000;
    max_ms double precision := extract(epoch FROM current_setting('delq.retry_max')::interval) * 1000;
    default_attempts integer := current_setting('delq.max_attempts')::integer;
    threshold integer := current_setting('delq.breaker_threshold')::integer;
    cooldown interval := current_setting('delq.breaker_cooldown')::interval;
    touched uuid[];
BEGIN
    -- Lock order: request, then its deliveries, as reject() and confirm()
    -- do, so that recording never deadlocks with an operator.
    PERFORM 1 FROM delq.pending p
     WHERE p.id IN (SELECT dl.request_id FROM delq.delivery dl WHERE dl.id = ANY (ids))
     ORDER BY p.id
       FOR UPDATE OF p;

    WITH o AS (
        SELECT dl.id, dl.request_id, dl.destination, dl.attempts, dl.attempts_base,
               o.outcome, nullif(o.status, 0) AS status, nullif(o.error, '') AS error,
               -- what events and health keep: never the answer's body, which
               -- may quote personal data
               CASE WHEN o.error LIKE 'HTTP %' THEN split_part(o.error, ':', 1)
                    ELSE nullif(o.error, '') END AS error_class,
               o.retry_after, t.confirm,
               coalesce(t.max_attempts, default_attempts) AS max_attempts,
               coalesce(t.retry_base_ms, base_ms) AS base_ms,
               coalesce(t.retry_max_ms, max_ms) AS max_ms
          FROM unnest(ids, outcomes, statuses, errors, retry_after, gone)
               AS o(id, outcome, status, error, retry_after, gone)
          JOIN delq.delivery dl ON dl.id = o.id
          JOIN delq.destination t ON t.name = dl.destination
         WHERE dl.id = ANY (ids) AND dl.state = 'sending'
           FOR UPDATE OF dl
    ), decided AS (
        SELECT o.*,
               CASE WHEN o.outcome = 'confirmed' AND o.confirm = 'callback' THEN 'awaiting_confirmation'
                    WHEN o.outcome = 'confirmed' THEN 'confirmed'
                    WHEN o.outcome = 'retry' AND o.attempts - o.attempts_base < o.max_attempts THEN 'queued'
                    ELSE 'failed' END AS state,
               -- full jitter on a capped exponential; Retry-After (capped) when given
               CASE WHEN o.retry_after >= 0
                    THEN least(o.retry_after * 1000.0, o.max_ms)
                    ELSE random() * least(o.max_ms,
                                           o.base_ms * power(2, least(o.attempts - o.attempts_base - 1, 40)))
               END AS delay_ms
          FROM o
    ), updated AS (
        UPDATE delq.delivery dl
           SET state = d.state,
               last_status = d.status,
               last_error = CASE WHEN d.outcome = 'confirmed' THEN NULL ELSE d.error END,
               confirmed_at = CASE WHEN d.state = 'confirmed' THEN now() END,
               next_attempt_at = CASE WHEN d.state = 'queued'
                                      THEN now() + make_interval(secs => d.delay_ms / 1000.0)
                                      ELSE dl.next_attempt_at END,
               lease_until = NULL
          FROM decided d
         WHERE dl.id = d.id
        RETURNING dl.request_id, dl.destination, dl.state, dl.attempts, dl.next_attempt_at,
                  d.status, d.error_class, d.outcome
    ), logged AS (
        INSERT INTO delq.event (kind, request_id, destination, detail, actor)
        SELECT CASE u.state WHEN 'queued' THEN 'retry_scheduled' ELSE u.state END,
               u.request_id, u.destination,
               jsonb_strip_nulls(jsonb_build_object(
                   'attempt', u.attempts, 'status', u.status,
                   'error', CASE WHEN u.outcome <> 'confirmed' THEN u.error_class END,
                   'next_attempt_at', CASE WHEN u.state = 'queued' THEN u.next_attempt_at END)),
               'delq'
          FROM updated u
         ORDER BY u.request_id
        RETURNING request_id
    )
    SELECT array_agg(DISTINCT request_id) INTO touched FROM logged;

    -- destination health and the circuit breaker
    INSERT INTO delq.destination_state AS s (name, consecutive_failures, breaker_until,
                                             breaker_opens, last_success_at,
                                             last_failure_at, last_failure)
    SELECT g.destination, g.failures_after, g.open_until,
           CASE WHEN g.open_until IS NOT NULL THEN 1 ELSE 0 END,
           g.last_success_at, g.last_failure_at, g.last_failure
      FROM (
        SELECT dl.destination,
               CASE WHEN bool_or(o.outcome = 'confirmed') THEN 0 ELSE count(*) END AS failures_after,
               CASE WHEN NOT bool_or(o.outcome = 'confirmed')
                         AND (bool_or(o.gone) OR count(*) >= threshold)
                    THEN now() + cooldown END AS open_until,
               CASE WHEN bool_or(o.outcome = 'confirmed') THEN now() END AS last_success_at,
               CASE WHEN bool_or(o.outcome <> 'confirmed') THEN now() END AS last_failure_at,
               (array_agg(CASE WHEN o.error LIKE 'HTTP %' THEN split_part(o.error, ':', 1) ELSE o.error END
                          ORDER BY o.id DESC) FILTER (WHERE o.outcome <> 'confirmed'))[1] AS last_failure
          FROM unnest(ids, outcomes, errors, gone) AS o(id, outcome, error, gone)
          JOIN delq.delivery dl ON dl.id = o.id
         WHERE dl.id = ANY (ids)
         GROUP BY dl.destination
      ) g
    ON CONFLICT (name) DO UPDATE SET
        consecutive_failures = CASE WHEN excluded.last_success_at IS NOT NULL THEN 0
                                    ELSE s.consecutive_failures + excluded.consecutive_failures END,
        breaker_until = CASE
            WHEN excluded.last_success_at IS NOT NULL THEN NULL
            WHEN excluded.breaker_until IS NOT NULL
                 OR s.consecutive_failures + excluded.consecutive_failures >= threshold
            THEN now() + cooldown * power(2, least(s.breaker_opens, 10))
            ELSE s.breaker_until END,
        breaker_opens = CASE
            WHEN excluded.last_success_at IS NOT NULL THEN 0
            WHEN excluded.breaker_until IS NOT NULL
                 OR s.consecutive_failures + excluded.consecutive_failures >= threshold
            THEN s.breaker_opens + 1
            ELSE s.breaker_opens END,
        last_success_at = coalesce(excluded.last_success_at, s.last_success_at),
        last_failure_at = coalesce(excluded.last_failure_at, s.last_failure_at),
        last_failure = coalesce(excluded.last_failure, s.last_failure);

    IF touched IS NOT NULL THEN
        PERFORM delq._refresh_status(touched, 'delq');
    END IF;
    RETURN coalesce(array_length(ids, 1), 0);
END
$$;

-- Deliveries left 'sending' by a worker that died (all of them at worker
-- start, else those whose lease expired) go back to the queue.
CREATE FUNCTION delq._requeue_stale(all_sending boolean)
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    WITH requeued AS (
        UPDATE delq.delivery dl
           SET state = 'queued', next_attempt_at = now(), lease_until = NULL
         WHERE dl.state = 'sending' AND (all_sending OR dl.lease_until < now())
        RETURNING dl.request_id, dl.destination, dl.attempts
    ), logged AS (
        INSERT INTO delq.event (kind, request_id, destination, detail, actor)
        SELECT 'requeued', q.request_id, q.destination,
               jsonb_build_object('attempt', q.attempts,
                                  'because', CASE WHEN all_sending THEN 'worker restarted'
                                                  ELSE 'lease expired' END),
               'delq'
          FROM requeued q
         ORDER BY q.request_id
        RETURNING 1
    )
    SELECT count(*)::integer FROM logged;
$$;

-- When the next piece of work the worker could act on falls due: a retry
-- of an enabled destination with room (or when its breaker lets a probe
-- through), a held request.  A destination at its concurrency cap gets
-- room when a transfer ends, which wakes the worker anyway.  NULL when
-- nothing is scheduled.
CREATE FUNCTION delq._next_due()
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- PL/pgSQL keeps the plan; the worker asks after every turn
    RETURN (
        SELECT min(t) FROM (
            SELECT greatest(q.next_attempt_at, s.breaker_until)
              FROM delq.destination d
              LEFT JOIN delq.destination_state s ON s.name = d.name
             CROSS JOIN LATERAL (SELECT dl.next_attempt_at FROM delq.delivery dl
                                  WHERE dl.destination = d.name AND dl.state = 'queued'
                                  ORDER BY dl.next_attempt_at LIMIT 1) q
             WHERE d.enabled
               AND (SELECT count(*) FROM delq.delivery x
                     WHERE x.destination = d.name AND x.state = 'sending')
                   < CASE WHEN s.breaker_until IS NULL THEN d.concurrency ELSE 1 END
            UNION ALL
            -- the first hold to end, from pending_held_idx in hold_until
            -- order (min() let a plan made on small tables read every open
            -- request through pending_due_idx, on every call)
            (SELECT p.hold_until FROM delq.pending p
              WHERE p.status = 'held' AND p.hold_until IS NOT NULL
              ORDER BY p.hold_until LIMIT 1)
        ) due(t));
END
$$;

CREATE FUNCTION delq._dispatch(max_deliveries integer)
RETURNS integer
LANGUAGE c
AS 'MODULE_PATHNAME', 'delq_dispatch';

-- One forwarding pass in the calling session: release held requests,
-- requeue expired leases, send up to max_deliveries due deliveries, wait
-- for their answers and record them.  For installations without the
-- worker (pg_cron: SELECT delq.dispatch()).
CREATE FUNCTION delq.dispatch(max_deliveries integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq._not_null('max_deliveries', max_deliveries);
    PERFORM delq._check_range('max_deliveries', max_deliveries, 1, 1000000);
    RETURN delq._dispatch(max_deliveries);
END
$$;

-- Per destination: what is queued, in flight, waiting, done, failed, and
-- whether its circuit breaker is open.
CREATE VIEW delq.destination_health AS
SELECT d.name, d.enabled,
       count(dl.id) FILTER (WHERE dl.state = 'queued') AS queued,
       count(dl.id) FILTER (WHERE dl.state = 'sending') AS sending,
       count(dl.id) FILTER (WHERE dl.state = 'awaiting_confirmation') AS awaiting,
       count(dl.id) FILTER (WHERE dl.state = 'confirmed') AS confirmed,
       count(dl.id) FILTER (WHERE dl.state = 'failed') AS failed,
       coalesce(s.consecutive_failures, 0) AS consecutive_failures,
       CASE WHEN s.breaker_until IS NULL THEN 'closed'
            WHEN s.breaker_until > now() THEN 'open'
            ELSE 'probing' END AS breaker,
       s.breaker_until,
       s.last_success_at, s.last_failure_at, s.last_failure
  FROM delq.destination d
  LEFT JOIN delq.destination_state s ON s.name = d.name
  LEFT JOIN delq.delivery dl ON dl.destination = d.name
 GROUP BY d.name, d.enabled, s.name;
-- Privacy: the keys, keyed hashes of subjects, and minimisation of the
-- deletion record itself (GDPR Art. 5(1)(c)/(e)): once a finished request
-- is older than delq.subject_retention, delq.redact() replaces its subject
-- by a keyed hash that still answers delq.was_erased() (the suppression
-- check of CCPA regs §7022(e)) and delq.guard() (a trigger that warns or
-- refuses when an application re-creates an erased subject).
-- The ledger is in 81_ledger.sql, deadlines in 82_deadlines.sql, receipts
-- and reports in 83_receipts.sql.  See docs/privacy.md.

-- ---------------------------------------------------------------------
-- Keys

-- HMAC-SHA-256 in C (src/hmac.c): core SQL has sha256() but no keyed MAC.
-- NULL in, NULL out; not declared STRICT so that a call with NULL
-- constants is still checked for EXECUTE (see src/hmac.c).
CREATE FUNCTION delq._hmac_sha256(key bytea, data bytea)
RETURNS bytea
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'delq_hmac_sha256';

-- 32 random bytes without pgcrypto: gen_random_uuid() draws 122 bits from
-- pg_strong_random(); four of them, hashed, give a full 256-bit key.
CREATE FUNCTION delq._random_key()
RETURNS bytea
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT sha256(decode(string_agg(replace(gen_random_uuid()::text, '-', ''), ''), 'hex'))
      FROM generate_series(1, 4);
$$;

-- Secret keys: 'receipt' signs receipts, 'subject' makes the keyed hashes
-- of subjects and redacted attributes.  Only delq_admin may read them.
-- The earliest key of a name is the one in use.  That is what makes
-- pg_dump/pg_restore keep the original keys: CREATE EXTENSION makes new
-- ones, then the restored (older) rows take precedence, where a unique
-- name would have made the restore fail and left the new keys in use
-- (every receipt and every hashed subject would then stop matching).
CREATE TABLE delq.key (
    name text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_.]{0,62}$'),
    secret bytea NOT NULL CHECK (octet_length(secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    PRIMARY KEY (name, created_at)
);

INSERT INTO delq.key (name, secret)
SELECT k, delq._random_key() FROM unnest(ARRAY['receipt', 'subject']) k;

SELECT pg_catalog.pg_extension_config_dump('delq.key', '');

-- The key in use for name; a missing key is an error, never replaced
-- silently by a new one (old hashes and receipts would stop matching).
CREATE FUNCTION delq._secret(name text)
RETURNS bytea
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k bytea;
BEGIN
    SELECT x.secret INTO k FROM delq.key x WHERE x.name = _secret.name
     ORDER BY x.created_at LIMIT 1;
    IF k IS NULL THEN
        RAISE EXCEPTION 'delq key % is missing', quote_literal(name)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Restore table delq.key from a backup: receipts and hashed subjects depend on it.';
    END IF;
    RETURN k;
END
$$;

-- The keyed hash that stands in for a subject (or an attribute value):
-- 'hmac:' and the hex HMAC-SHA-256 under the 'subject' key.
CREATE FUNCTION delq._subject_hash(subject text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'hmac:' || encode(delq._hmac_sha256(delq._secret('subject'), convert_to(subject, 'UTF8')), 'hex');
$$;

-- ---------------------------------------------------------------------
-- Scrubbing: occurrences of a subject in free text become '[subject]'.
-- Subjects shorter than 4 characters are left alone (they would match
-- inside unrelated words and numbers), and so are keys ending in "_at"
-- (timestamps).

CREATE FUNCTION delq._scrub_text(val text, subject text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN val IS NULL OR subject IS NULL OR length(subject) < 4 THEN val
                ELSE replace(val, subject, '[subject]') END;
$$;

CREATE FUNCTION delq._scrub_value(val jsonb, subject text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    CASE jsonb_typeof(val)
    WHEN 'string' THEN
        RETURN to_jsonb(delq._scrub_text(val #>> '{}', subject));
    WHEN 'object' THEN
        RETURN (SELECT coalesce(jsonb_object_agg(e.key, CASE WHEN e.key LIKE '%\_at' THEN e.value
                                                             ELSE delq._scrub_value(e.value, subject) END),
                                '{}')
                  FROM jsonb_each(val) e);
    WHEN 'array' THEN
        RETURN (SELECT coalesce(jsonb_agg(delq._scrub_value(e.value, subject) ORDER BY e.n), '[]')
                  FROM jsonb_array_elements(val) WITH ORDINALITY e(value, n));
    ELSE
        RETURN val;
    END CASE;
END
$$;

CREATE FUNCTION delq._scrub(val jsonb, subject text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- cheap test first: the subject as it appears inside JSON text
    SELECT CASE WHEN val IS NULL OR subject IS NULL OR length(subject) < 4
                     OR strpos(val::text, substr(to_jsonb(subject)::text, 2,
                                                 length(to_jsonb(subject)::text) - 2)) = 0
                THEN val
                ELSE delq._scrub_value(val, subject) END;
$$;

-- ---------------------------------------------------------------------
-- Minimisation

ALTER TABLE delq.finished ADD COLUMN redacted_at timestamptz;

-- redact() finds what is due without reading what it already did.
CREATE INDEX finished_unredacted_idx
    ON delq.finished ((coalesce(completed_at, rejected_at, finished_at)))
    WHERE redacted_at IS NULL;
-- was_erased() and guard(): by subject or its keyed hash.
CREATE INDEX finished_subject_idx ON delq.finished (subject);
CREATE INDEX pending_completed_subject_idx ON delq.pending (subject)
    WHERE status = 'completed';

-- The attribute keys of delq.redact_attributes, trimmed, without blanks.
CREATE FUNCTION delq._redact_keys()
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq._load();
    RETURN ARRAY(SELECT DISTINCT btrim(k)
                   FROM unnest(string_to_array(current_setting('delq.redact_attributes'), ',')) k
                  WHERE btrim(k) <> ''
                  ORDER BY 1);
END
$$;

-- attributes with the values of the listed keys replaced by keyed hashes
-- (of the string, or of the JSON text of any other value).
CREATE FUNCTION delq._redact_attributes(attributes jsonb, keys text[])
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(jsonb_object_agg(e.key,
                        CASE WHEN e.key = ANY (keys) AND jsonb_typeof(e.value) <> 'null'
                             THEN to_jsonb(delq._subject_hash(CASE jsonb_typeof(e.value)
                                                                  WHEN 'string' THEN e.value #>> '{}'
                                                                  ELSE e.value::text END))
                             ELSE e.value END),
                    '{}')
      FROM jsonb_each(attributes) e;
$$;

-- Replace the subject of finished requests that have been finished for
-- at least older_than (default: delq.subject_retention) by its keyed hash;
-- also the attributes named in delq.redact_attributes, and any copy of
-- the subject in the reasons and the delivery summary.  Logs a 'redacted'
-- event per request.  Cheap when nothing is due, so the worker can call
-- it on every housekeeping round.
CREATE FUNCTION delq.redact(older_than interval DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    keep interval := coalesce(older_than, delq._setting_interval('delq.subject_retention'));
    keys text[] := delq._redact_keys();
    n bigint;
BEGIN
    PERFORM delq._check_not_negative('older_than', keep,
                                     'Pass how long a finished request keeps its subject, e.g. ''30 days'', or NULL for delq.subject_retention.');

    WITH victims AS (
        SELECT f.id FROM delq.finished f
         WHERE f.redacted_at IS NULL
           AND coalesce(f.completed_at, f.rejected_at, f.finished_at) <= now() - keep
         ORDER BY f.id
           FOR UPDATE SKIP LOCKED
    ), done AS (
        UPDATE delq.finished f
           SET subject = delq._subject_hash(f.subject),
               attributes = delq._redact_attributes(f.attributes, keys),
               reason = delq._scrub_text(f.reason, f.subject),
               rejection_reason = delq._scrub_text(f.rejection_reason, f.subject),
               failure_reason = delq._scrub_text(f.failure_reason, f.subject),
               deliveries = delq._scrub(f.deliveries, f.subject),
               redacted_at = now()
          FROM victims v
         WHERE f.id = v.id
        RETURNING f.id, ARRAY(SELECT k FROM unnest(keys) k WHERE f.attributes ? k ORDER BY k) AS redacted_keys
    )
    INSERT INTO delq.event (kind, request_id, detail)
    SELECT 'redacted', d.id,
           jsonb_build_object('subject', 'keyed hash', 'attributes', to_jsonb(d.redacted_keys))
      FROM done d
     ORDER BY d.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- True when a completed request covers value (as a subject, in clear or as
-- its keyed hash), optionally only requests of source.
CREATE FUNCTION delq._erased(val text, source text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM delq.finished f
                    WHERE f.subject IN (val, h.hash)
                      AND f.subject = CASE WHEN f.redacted_at IS NULL THEN val ELSE h.hash END
                      AND f.status = 'completed'
                      AND (_erased.source IS NULL OR f.source = _erased.source))
        OR EXISTS (SELECT 1 FROM delq.pending p
                    WHERE p.subject = val AND p.status = 'completed'
                      AND (_erased.source IS NULL OR p.source = _erased.source))
      FROM (SELECT delq._subject_hash(val) AS hash) h;
$$;

-- Whether the data of subject has been erased: a completed request for it
-- exists, archived or not, redacted or not.  Pending, failed and rejected
-- requests do not count.  Errors never repeat the subject, and the failing
-- statement (which holds it) is kept out of the server log.
CREATE FUNCTION delq.was_erased(subject text, source text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
AS $$
BEGIN
    PERFORM delq._not_null('subject', subject);
    IF source IS NOT NULL THEN
        PERFORM delq._check_source(source);
    END IF;
    RETURN delq._erased(subject, source);
END
$$;

-- Trigger for application tables: warn about, or refuse, a row whose
-- column holds a subject whose data was erased.
--
--   CREATE TRIGGER users_delq_guard BEFORE INSERT OR UPDATE OF email ON app.users
--       FOR EACH ROW EXECUTE FUNCTION delq.guard('email', 'refuse');
--
-- Arguments: the column, 'refuse' (default) or 'warn', and optionally a
-- source to consider only that source's requests.  Refusal raises
-- check_violation (23514) with constraint name delq_erased_subject: the
-- row breaks a rule about its values, and drivers map class 23 to their
-- integrity error.  Neither message nor log holds the value.
CREATE FUNCTION delq.guard()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
AS $$
DECLARE
    col text := TG_ARGV[0];
    mode text := coalesce(TG_ARGV[1], 'refuse');
    src text := TG_ARGV[2];
    val jsonb;
BEGIN
    IF TG_WHEN <> 'BEFORE' OR TG_LEVEL <> 'ROW' OR TG_OP NOT IN ('INSERT', 'UPDATE')
       OR TG_NARGS NOT BETWEEN 1 AND 3 OR mode NOT IN ('refuse', 'warn') THEN
        RAISE EXCEPTION 'delq.guard() on %.% is attached wrongly', TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use CREATE TRIGGER ... BEFORE INSERT OR UPDATE ON t FOR EACH ROW EXECUTE FUNCTION delq.guard(''column'', ''refuse'' or ''warn'' [, ''source'']).';
    END IF;
    IF NOT to_jsonb(NEW) ? col THEN
        RAISE EXCEPTION 'delq.guard(): table %.% has no column %', TG_TABLE_SCHEMA, TG_TABLE_NAME, quote_ident(col)
            USING ERRCODE = 'undefined_column',
                  HINT = 'Pass the name of the column that holds the subject as the first trigger argument.';
    END IF;
    val := to_jsonb(NEW) -> col;
    IF jsonb_typeof(val) = 'null'
       OR (TG_OP = 'UPDATE' AND val = to_jsonb(OLD) -> col) THEN
        RETURN NEW;
    END IF;
    IF delq._erased(CASE WHEN jsonb_typeof(val) = 'string' THEN val #>> '{}' ELSE val::text END, src) THEN
        IF mode = 'refuse' THEN
            RAISE EXCEPTION 'column % of %.% holds the subject of a completed deletion request',
                            quote_ident(col), TG_TABLE_SCHEMA, TG_TABLE_NAME
                USING ERRCODE = 'check_violation', CONSTRAINT = 'delq_erased_subject',
                      SCHEMA = TG_TABLE_SCHEMA, TABLE = TG_TABLE_NAME, COLUMN = col,
                      DETAIL = 'The data of this person was erased at their request; delq keeps a keyed hash so that it stays erased.',
                      HINT = 'Do not re-create the person''s data from an old source.  If the person signed up again, use delq.guard(..., ''warn'') on this table.';
        END IF;
        RAISE WARNING 'column % of %.% holds the subject of a completed deletion request',
                      quote_ident(col), TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING DETAIL = 'The data of this person was erased at their request.',
                  HINT = 'Check that the row does not restore erased data.';
    END IF;
    RETURN NEW;
END
$$;

GRANT EXECUTE ON FUNCTION delq.redact(interval), delq.was_erased(text, text), delq.guard()
    TO delq_operator;
GRANT SELECT ON delq.key TO delq_admin;
-- The tamper-evident ledger.  Every row of delq.event carries
--     hash = sha256(canonical form of the row, prev_hash included)
-- where prev_hash is the hash of the event before it in its chain: one
-- chain per request ('request:<id>'), one per destination for the admin
-- events that have no request ('destination:<name>'), and 'admin' for the
-- rest.  Chains keep submits from queueing behind one lock: a chain's head
-- row in delq.ledger_head is locked (FOR UPDATE) only by writers of that
-- chain.  delq.ledger_checkpoint() seals the heads that moved since the
-- previous checkpoint into a chain of checkpoints; delq.verify_ledger()
-- reports every event changed, removed or inserted behind the ledger's
-- back, a superuser's included.  See docs/privacy.md.

-- The chain of an event.  The SQL-standard bodies (RETURN ...) of these
-- three helpers are parsed once, at CREATE EXTENSION, so they need no
-- SET search_path, and stay inlinable: verify_ledger() calls them per row.
CREATE FUNCTION delq._ledger_chain(request_id uuid, destination text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN request_id IS NOT NULL THEN 'request:' || request_id::text
            WHEN destination IS NOT NULL THEN 'destination:' || destination
            ELSE 'admin' END;

-- The prev_hash of a chain's first event (and 'checkpoint' of the first
-- checkpoint's).
CREATE FUNCTION delq._ledger_genesis(chain text)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.sha256(pg_catalog.convert_to('delq ledger genesis ' || chain, 'UTF8'));

-- The hash of an event: SHA-256 of a JSON array of every column but hash,
-- in a form that no setting changes (time as integer microseconds since
-- the epoch; jsonb's canonical text; UTF-8).  A column added to delq.event
-- later is not covered until it is added here.
CREATE FUNCTION delq._event_hash(e delq.event)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.jsonb_build_array(
           e.id, (EXTRACT(epoch FROM e.at) * 1000000)::bigint, e.actor, e.request_id,
           e.destination, e.kind, e.detail, pg_catalog.encode(e.prev_hash, 'hex'))::text, 'UTF8'));

-- Where each chain ends: its number of events, last event and hash.
-- checkpointed is the number of events the last checkpoint that covered
-- the chain saw.
CREATE TABLE delq.ledger_head (
    chain text PRIMARY KEY,
    events bigint NOT NULL,
    last_id bigint NOT NULL,
    -- the hash before the last event (that event's prev_hash)
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL,
    checkpointed bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 80);
-- No index but the key: every event updates its head, and an index on a
-- column it changes (events > checkpointed, say) would make each of those
-- updates write new index entries instead of a HOT update.  The hourly
-- checkpoint reads the table through.

-- Checkpoints: a chain of their own, each over the heads that moved since
-- the one before.  Append-only.
CREATE SEQUENCE delq.ledger_checkpoint_id_seq;

CREATE TABLE delq.ledger_checkpoint (
    id bigint PRIMARY KEY,
    at timestamptz NOT NULL,
    actor text NOT NULL,
    chains bigint NOT NULL,
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL
);

CREATE TABLE delq.ledger_checkpoint_head (
    checkpoint_id bigint NOT NULL,
    chain text NOT NULL,
    events bigint NOT NULL,
    last_id bigint NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (checkpoint_id, chain)
);

CREATE INDEX ledger_checkpoint_head_chain_idx ON delq.ledger_checkpoint_head (chain, checkpoint_id);

-- Both checkpoint tables are append-only, like delq.event (also for
-- replica sessions): <table>_no_update_delete and <table>_no_truncate.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['ledger_checkpoint', 'ledger_checkpoint_head'] LOOP
        EXECUTE format('CREATE TRIGGER %1$I BEFORE UPDATE OR DELETE ON delq.%3$I
                            FOR EACH ROW EXECUTE FUNCTION delq._append_only(%4$L, %5$L);
                        CREATE TRIGGER %2$I BEFORE TRUNCATE ON delq.%3$I
                            FOR EACH STATEMENT EXECUTE FUNCTION delq._append_only(%4$L, %5$L);
                        ALTER TABLE delq.%3$I ENABLE ALWAYS TRIGGER %1$I;
                        ALTER TABLE delq.%3$I ENABLE ALWAYS TRIGGER %2$I;',
                       t || '_no_update_delete', t || '_no_truncate', t,
                       'Ledger checkpoints are evidence; no role may change them.',
                       'Take a new checkpoint with delq.ledger_checkpoint() instead.');
    END LOOP;
END
$$;

-- The hash of an event from the canonical text before its previous hash
-- (built by the trigger) and that hash: the same bytes _event_hash() reads
-- (src/ledger.c).
CREATE FUNCTION delq._ledger_link(prefix bytea, prev bytea)
RETURNS bytea
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'delq_ledger_link';

-- Chain a new event to the head of its chain (src/ledger.c): one UPDATE
-- of the head locks it, moves it and computes the hash.  Also removes any
-- copy of the request's subject from the detail (delq.event can never be
-- erased, so the subject must never get in).
--
-- An event that arrives with a hash (pg_restore, logical replication) is
-- kept as it is: its chain came with it, and verify_ledger() checks it
-- like any other.  Nobody but a superuser can insert into delq.event
-- directly, and a superuser could disable this trigger anyway.
--
-- Lock order: the head's UPDATE takes ROW EXCLUSIVE on ledger_head before
-- the head row, so that delq.ledger_checkpoint() (SHARE ROW EXCLUSIVE)
-- waits for writers that are under way instead of deadlocking with them.
--
-- Not SECURITY DEFINER: only delq's own SECURITY DEFINER functions, the
-- worker (a superuser or the owner) and superusers can insert into
-- delq.event, and they may write ledger_head anyway; its statements name
-- every object and operator with its schema, so no search_path matters.
-- (A SET search_path would cost a configuration change per event.)
CREATE FUNCTION delq._ledger_seal()
RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'delq_ledger_seal';

-- "zz_": BEFORE triggers fire in name order, and the hash must cover the
-- row as it will be stored, so this one fires last.  ALWAYS: also under
-- session_replication_role = replica, like the append-only triggers.
CREATE TRIGGER zz_ledger_seal
    BEFORE INSERT ON delq.event
    FOR EACH ROW EXECUTE FUNCTION delq._ledger_seal();
ALTER TABLE delq.event ENABLE ALWAYS TRIGGER zz_ledger_seal;

-- Fold lines into one SHA-256, in order: state = sha256(state || line).
CREATE FUNCTION delq._sha256_step(state bytea, line text)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.sha256(state || pg_catalog.convert_to(line, 'UTF8'));

CREATE AGGREGATE delq._sha256_fold(text) (
    SFUNC = delq._sha256_step,
    STYPE = bytea,
    INITCOND = ''
);

-- The hash of a checkpoint: its own columns and the fold of its heads in
-- chain order (byte order, whatever the database's collation).
CREATE FUNCTION delq._checkpoint_hash(cp delq.ledger_checkpoint)
RETURNS bytea
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT sha256(convert_to(jsonb_build_array(
               cp.id, (extract(epoch FROM cp.at) * 1000000)::bigint, cp.actor, cp.chains,
               encode(cp.prev_hash, 'hex'),
               encode((SELECT delq._sha256_fold(jsonb_build_array(k.chain, k.events, k.last_id,
                                                                  encode(k.hash, 'hex'))::text
                                                ORDER BY k.chain COLLATE "C")
                         FROM delq.ledger_checkpoint_head k
                        WHERE k.checkpoint_id = cp.id), 'hex'))::text, 'UTF8'));
$$;

-- Seal the chain heads that moved since the last checkpoint.  Returns the
-- new checkpoint; nothing when the last one is younger than min_interval
-- (so the worker or pg_cron may call it often).  Keep the returned hash
-- outside the database (a ticket, a mail, a log): a superuser who rewrote
-- the whole ledger would have to rewrite that too.
CREATE FUNCTION delq.ledger_checkpoint(min_interval interval DEFAULT '0')
RETURNS TABLE (checkpoint_id bigint, at timestamptz, chains bigint, hash text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cp delq.ledger_checkpoint;
    n bigint;
BEGIN
    PERFORM delq._not_null('min_interval', min_interval);
    PERFORM delq._check_not_negative('min_interval', min_interval,
                                     'Pass ''0'' to always take a checkpoint, or e.g. ''1 hour'' to skip when the last one is younger.');
    IF min_interval > interval '0' AND EXISTS (
        SELECT 1 FROM delq.ledger_checkpoint c WHERE c.at > clock_timestamp() - min_interval) THEN
        RETURN;
    END IF;

    -- Wait for event writers under way, keep new ones out until commit:
    -- every head read below is committed and stays the chain's end.
    LOCK TABLE delq.ledger_head IN SHARE ROW EXCLUSIVE MODE;

    cp.id := nextval('delq.ledger_checkpoint_id_seq');
    cp.at := clock_timestamp();
    cp.actor := session_user;
    SELECT coalesce((SELECT c.hash FROM delq.ledger_checkpoint c ORDER BY c.id DESC LIMIT 1),
                    delq._ledger_genesis('checkpoint'))
      INTO cp.prev_hash;

    -- one pass over ledger_head (it has no index for what moved)
    WITH moved AS (
        UPDATE delq.ledger_head h SET checkpointed = h.events
         WHERE h.events > h.checkpointed
        RETURNING h.chain, h.events, h.last_id, h.hash
    )
    INSERT INTO delq.ledger_checkpoint_head (checkpoint_id, chain, events, last_id, hash)
    SELECT cp.id, m.chain, m.events, m.last_id, m.hash FROM moved m;
    GET DIAGNOSTICS n = ROW_COUNT;
    cp.chains := n;

    cp.hash := delq._checkpoint_hash(cp);
    INSERT INTO delq.ledger_checkpoint SELECT cp.*;
    RETURN QUERY SELECT cp.id, cp.at, cp.chains, encode(cp.hash, 'hex');
END
$$;

-- Everything wrong with the ledger; no row means intact.
--   unsealed             an event without hash (written with the trigger disabled)
--   changed              an event whose content no longer matches its hash
--   missing_predecessor  the event before this one is gone (or was rewritten)
--   fork                 several events follow the same one (one was inserted)
--   after_head           an event chained after the chain's recorded end
--   no_head              events of a chain the ledger never started
--   count_mismatch       the chain holds more or fewer events than its head says
--   head_missing         the chain's last event is gone
--   head_mismatch        the chain's last event is not the one the head recorded
--   checkpoint_mismatch  an event a checkpoint sealed is gone or rewritten
--   checkpoint_changed   a checkpoint does not match its hash
--   checkpoint_chain     a checkpoint does not follow the one before it
CREATE FUNCTION delq.verify_ledger()
RETURNS TABLE (problem text, event_id bigint, chain text, detail text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    WITH e AS MATERIALIZED (
        SELECT ev.id, ev.prev_hash, ev.hash,
               delq._ledger_chain(ev.request_id, ev.destination) AS chain,
               delq._event_hash(ev) AS computed
          FROM delq.event ev
    ), counted AS (
        SELECT e.chain, count(*) AS n FROM e GROUP BY e.chain
    ), cp AS (
        SELECT c.id, c.hash, c.prev_hash, delq._checkpoint_hash(c) AS computed,
               lag(c.hash) OVER (ORDER BY c.id) AS before
          FROM delq.ledger_checkpoint c
    ), found AS (
        SELECT 'unsealed' AS problem, e.id, e.chain,
               'the event has no hash: it was written with the ledger trigger disabled' AS detail
          FROM e WHERE e.hash IS NULL OR e.prev_hash IS NULL
        UNION ALL
        SELECT 'changed', e.id, e.chain, 'the event''s content does not match its hash'
          FROM e WHERE e.hash <> e.computed
        UNION ALL
        SELECT 'missing_predecessor', e.id, e.chain,
               'the event before it in the chain is missing or was rewritten'
          FROM e
         WHERE e.prev_hash <> delq._ledger_genesis(e.chain)
           AND NOT EXISTS (SELECT 1 FROM e p WHERE p.chain = e.chain AND p.hash = e.prev_hash
                                                AND p.id <> e.id)
        UNION ALL
        SELECT 'fork', e.id, e.chain,
               format('%s events follow the same predecessor: all but one were inserted', f.n)
          FROM e
          JOIN (SELECT e2.chain, e2.prev_hash, count(*) AS n FROM e e2
                 WHERE e2.prev_hash IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1) f
            ON f.chain = e.chain AND f.prev_hash = e.prev_hash
        UNION ALL
        SELECT 'after_head', e.id, e.chain,
               'the event follows the chain''s recorded last event: it was appended behind the ledger''s back'
          FROM e JOIN delq.ledger_head h ON h.chain = e.chain AND e.prev_hash = h.hash
        UNION ALL
        SELECT 'no_head', NULL::bigint, c.chain,
               format('%s events in a chain the ledger never started', c.n)
          FROM counted c
         WHERE NOT EXISTS (SELECT 1 FROM delq.ledger_head h WHERE h.chain = c.chain)
        UNION ALL
        SELECT 'count_mismatch', h.last_id, h.chain,
               format('the head records %s events, the table holds %s', h.events, coalesce(c.n, 0))
          FROM delq.ledger_head h LEFT JOIN counted c ON c.chain = h.chain
         WHERE c.n IS DISTINCT FROM h.events
        UNION ALL
        SELECT CASE WHEN t.id IS NULL THEN 'head_missing' ELSE 'head_mismatch' END,
               h.last_id, h.chain,
               CASE WHEN t.id IS NULL THEN 'the chain''s last event is missing'
                    ELSE 'the chain''s last event is not the one its head recorded' END
          FROM delq.ledger_head h LEFT JOIN e t ON t.id = h.last_id
         WHERE t.id IS NULL OR t.chain <> h.chain OR t.hash IS DISTINCT FROM h.hash
        UNION ALL
        SELECT 'checkpoint_mismatch', k.last_id, k.chain,
               format('a checkpoint sealed the chain at %s events ending with this event, which is %s',
                      k.events, CASE WHEN t.id IS NULL THEN 'missing' ELSE 'not the same any more' END)
          FROM delq.ledger_checkpoint_head k LEFT JOIN e t ON t.id = k.last_id
         WHERE t.id IS NULL OR t.chain <> k.chain OR t.hash IS DISTINCT FROM k.hash
        UNION ALL
        SELECT 'checkpoint_changed', NULL::bigint, 'checkpoint',
               format('checkpoint %s does not match its hash', c.id)
          FROM cp c WHERE c.computed <> c.hash
        UNION ALL
        SELECT 'checkpoint_chain', NULL::bigint, 'checkpoint',
               format('checkpoint %s does not follow the checkpoint before it', c.id)
          FROM cp c WHERE c.prev_hash <> coalesce(c.before, delq._ledger_genesis('checkpoint'))
    )
    SELECT f.problem, f.id, f.chain, f.detail FROM found f
     ORDER BY f.chain COLLATE "C", f.id, f.problem;
END
$$;

SELECT pg_catalog.pg_extension_config_dump('delq.ledger_head', '');
SELECT pg_catalog.pg_extension_config_dump('delq.ledger_checkpoint', '');
SELECT pg_catalog.pg_extension_config_dump('delq.ledger_checkpoint_head', '');
SELECT pg_catalog.pg_extension_config_dump('delq.ledger_checkpoint_id_seq', '');

GRANT EXECUTE ON FUNCTION delq.ledger_checkpoint(interval), delq.verify_ledger() TO delq_operator;
GRANT SELECT ON delq.ledger_head, delq.ledger_checkpoint, delq.ledger_checkpoint_head TO delq_operator;
-- Deadlines: extensions (GDPR Art. 12(3): at most two further months,
-- once, with reasons, decided within the first period), the at-risk view,
-- and alerts on channel delq_alerts when a request becomes at risk or
-- overdue.  Earliest deadline first is the claim order (delq._claim).
-- See docs/privacy.md.

-- Extend the deadline of an unfinished request, once, by at most two
-- months, before the deadline passes.  Moves its deliveries' deadlines
-- too (the claim orders by them).  Returns the new deadline.
CREATE FUNCTION delq.extend(id uuid, by interval, reason text)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- the interval as the event records it, whatever the caller's style
SET IntervalStyle = postgres
AS $$
DECLARE
    r delq.pending;
    new_due timestamptz;
BEGIN
    PERFORM delq._not_null('id', extend.id);
    PERFORM delq._not_null('by', extend.by);
    IF extend.by <= interval '0' OR extend.by > interval '2 months' THEN
        PERFORM delq._invalid('by', format('is out of range (%s)', extend.by),
                              'GDPR Art. 12(3) allows two further months at most: pass an interval greater than 0 and at most ''2 months''.');
    END IF;
    PERFORM delq._check_text('reason', extend.reason, 1000, true, true);

    r := delq._request(extend.id, true);
    IF r.status NOT IN ('held', 'forwarding', 'failed') THEN
        PERFORM delq._wrong_state(r.id, r.status, 'Only requests that are not completed or rejected can be extended.');
    END IF;
    IF EXISTS (SELECT 1 FROM delq.event e WHERE e.request_id = r.id AND e.kind = 'extended') THEN
        RAISE EXCEPTION 'request % has already been extended', r.id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Its deadline is %s.', r.due_at),
                  HINT = 'GDPR Art. 12(3) allows one extension of at most two further months in total.';
    END IF;
    IF r.due_at <= now() THEN
        RAISE EXCEPTION 'the deadline of request % has passed', r.id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('It was due at %s.', r.due_at),
                  HINT = 'An extension must be decided, and the person told why, within the original period (GDPR Art. 12(3)).';
    END IF;

    new_due := r.due_at + extend.by;
    UPDATE delq.pending p SET due_at = new_due WHERE p.id = r.id;
    UPDATE delq.delivery dl SET due_at = new_due WHERE dl.request_id = r.id;
    PERFORM delq._log('extended', r.id, NULL,
                      jsonb_build_object('by', extend.by::text, 'reason', extend.reason,
                                         'previous_due_at', r.due_at, 'due_at', new_due));
    RETURN new_due;
END
$$;

-- Unfinished requests whose deadline is less than delq.warn_before away.
-- Those past it are in delq.overdue (same first columns).  The setting is
-- read with pg_catalog functions only (a view runs with the caller's
-- EXECUTE rights): the library may not be loaded in the session yet, so
-- the fallback is the C default.
CREATE VIEW delq.at_risk AS
SELECT p.id, p.source, p.external_id, p.status, p.submitted_at, p.due_at,
       p.due_at - now() AS due_in,
       coalesce((SELECT jsonb_object_agg(dl.destination, dl.state ORDER BY dl.destination)
                   FROM delq.delivery dl WHERE dl.request_id = p.id), '{}') AS deliveries
  FROM delq.pending p
 WHERE p.status IN ('held', 'forwarding', 'failed')
   AND p.due_at >= now()
   AND p.due_at < now() + coalesce(nullif(pg_catalog.current_setting('delq.warn_before', true), ''),
                                   '7d')::interval;

-- Which deadline of each request was alerted, and at which level; the
-- 'at_risk' and 'overdue' events are the permanent record.
CREATE TABLE delq.deadline_alert (
    request_id uuid PRIMARY KEY REFERENCES delq.pending (id) ON DELETE CASCADE,
    level text NOT NULL CHECK (level IN ('at_risk', 'overdue')),
    due_at timestamptz NOT NULL,
    alerted_at timestamptz NOT NULL
);

SELECT pg_catalog.pg_extension_config_dump('delq.deadline_alert', '');

-- Find requests that became at risk or overdue since they were last
-- alerted (once per level and deadline: an extended request can become
-- at risk again), log an 'at_risk' or 'overdue' event for each and
-- NOTIFY delq_alerts with a JSON payload without the subject (any role
-- may LISTEN to any channel).  At most max_alerts per call, earliest
-- deadline first.  Returns how many it alerted.  The worker calls it on
-- every housekeeping round; pg_cron can too.
CREATE FUNCTION delq.check_deadlines(max_alerts integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    warn interval := delq._setting_interval('delq.warn_before');
    a record;
    payload jsonb;
    n integer := 0;
BEGIN
    PERFORM delq._not_null('max_alerts', max_alerts);
    PERFORM delq._check_range('max_alerts', max_alerts, 1, 1000000);

    FOR a IN
        WITH candidate AS (
            SELECT p.id, p.source, p.status, p.due_at,
                   CASE WHEN p.due_at < now() THEN 'overdue' ELSE 'at_risk' END AS level
              FROM delq.pending p
              LEFT JOIN delq.deadline_alert al ON al.request_id = p.id
             WHERE p.status IN ('held', 'forwarding', 'failed')
               AND p.due_at < now() + warn
               AND (al.request_id IS NULL OR al.due_at <> p.due_at
                    OR (al.level = 'at_risk' AND p.due_at < now()))
             ORDER BY p.due_at, p.id
             LIMIT max_alerts
               FOR KEY SHARE OF p SKIP LOCKED
        ), alerted AS (
            INSERT INTO delq.deadline_alert AS al (request_id, level, due_at, alerted_at)
            SELECT c.id, c.level, c.due_at, now() FROM candidate c
            ON CONFLICT (request_id) DO UPDATE
               SET level = excluded.level, due_at = excluded.due_at, alerted_at = excluded.alerted_at
             WHERE al.due_at <> excluded.due_at
                OR (al.level = 'at_risk' AND excluded.level = 'overdue')
            RETURNING al.request_id
        )
        SELECT c.* FROM candidate c JOIN alerted x ON x.request_id = c.id
         ORDER BY c.due_at, c.id
    LOOP
        payload := jsonb_build_object(
            'alert', a.level, 'request_id', a.id, 'source', a.source, 'status', a.status,
            'due_at', a.due_at,
            'unconfirmed', (SELECT coalesce(jsonb_agg(dl.destination ORDER BY dl.destination), '[]')
                              FROM delq.delivery dl
                             WHERE dl.request_id = a.id
                               AND dl.state NOT IN ('confirmed', 'cancelled')));
        IF octet_length(payload::text) > 7000 THEN
            -- NOTIFY payloads are limited to 8000 bytes
            payload := jsonb_set(payload, '{unconfirmed}', to_jsonb(jsonb_array_length(payload -> 'unconfirmed')));
        END IF;
        PERFORM delq._log(a.level, a.id, NULL, payload - 'alert' - 'request_id', 'delq');
        PERFORM pg_notify('delq_alerts', payload::text);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;

GRANT EXECUTE ON FUNCTION delq.extend(uuid, interval, text), delq.check_deadlines(integer)
    TO delq_operator;
GRANT SELECT ON delq.at_risk, delq.deadline_alert TO delq_operator;
-- Proof and reporting: a signed receipt per request (GDPR Art. 5(2),
-- CCPA regs §7101), and the yearly metrics of CCPA regs §7102.
-- See docs/privacy.md.

-- What each destination did for a request: from the delivery rows while
-- it is pending, the archived summary (the same objects, archive() wrote
-- them) once it is finished.
CREATE FUNCTION delq._receipt_deliveries(request_id uuid)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(
        (SELECT jsonb_agg(delq._delivery_summary(dl) ORDER BY dl.destination)
           FROM delq.delivery dl WHERE dl.request_id = _receipt_deliveries.request_id),
        (SELECT f.deliveries FROM delq.finished f WHERE f.id = _receipt_deliveries.request_id),
        '[]');
$$;

-- The signature object of a receipt body.
CREATE FUNCTION delq._receipt_signature(body jsonb, key_name text)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'alg', 'HMAC-SHA256', 'key', key_name,
        'value', encode(delq._hmac_sha256(delq._secret(key_name), convert_to(body::text, 'UTF8')), 'hex'));
$$;

-- A signed account of one request: the request (its subject, and the
-- attributes named in delq.redact_attributes, only as keyed hashes), every event with its ledger hash, each destination's
-- outcome, and where the request's ledger chain ends (with the last
-- checkpoint that sealed it).  delq.verify_receipt() tells whether a
-- receipt is unchanged.
CREATE FUNCTION delq.receipt(id uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    request jsonb;
    chain_name text := delq._ledger_chain(receipt.id, NULL);
    body jsonb;
BEGIN
    PERFORM delq._not_null('id', receipt.id);

    SELECT jsonb_build_object(
               'id', p.id, 'source', p.source, 'external_id', p.external_id,
               'subject_hash', delq._subject_hash(p.subject), 'reason', p.reason,
               'attributes', delq._redact_attributes(p.attributes, delq._redact_keys()),
               'status', p.status,
               'submitted_at', p.submitted_at, 'due_at', p.due_at,
               'completed_at', p.completed_at, 'rejected_at', p.rejected_at,
               'rejection_reason', p.rejection_reason, 'failure_reason', p.failure_reason,
               'archived', false)
      INTO request
      FROM delq.pending p WHERE p.id = receipt.id;
    IF request IS NULL THEN
        SELECT jsonb_build_object(
                   'id', f.id, 'source', f.source, 'external_id', f.external_id,
                   'subject_hash', CASE WHEN f.redacted_at IS NULL THEN delq._subject_hash(f.subject)
                                        ELSE f.subject END,
                   'reason', f.reason,
                   'attributes', CASE WHEN f.redacted_at IS NULL
                                      THEN delq._redact_attributes(f.attributes, delq._redact_keys())
                                      ELSE f.attributes END,
                   'status', f.status,
                   'submitted_at', f.submitted_at, 'due_at', f.due_at,
                   'completed_at', f.completed_at, 'rejected_at', f.rejected_at,
                   'rejection_reason', f.rejection_reason, 'failure_reason', f.failure_reason,
                   'archived', true, 'finished_at', f.finished_at, 'redacted_at', f.redacted_at)
          INTO request
          FROM delq.finished f WHERE f.id = receipt.id;
    END IF;
    IF request IS NULL THEN
        RAISE EXCEPTION 'request % does not exist', receipt.id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Pass the id that delq.submit() returned.';
    END IF;

    body := jsonb_build_object(
        'type', 'delq.receipt',
        'version', 1,
        'issued_at', now(),
        'request', request,
        'destinations', delq._receipt_deliveries(receipt.id),
        'timeline', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                          'id', e.id, 'at', e.at, 'kind', e.kind, 'actor', e.actor,
                                          'destination', e.destination, 'detail', e.detail,
                                          'prev_hash', encode(e.prev_hash, 'hex'),
                                          'hash', encode(e.hash, 'hex'))
                                          ORDER BY e.id)
                                FROM delq.event e WHERE e.request_id = receipt.id), '[]'),
        'ledger', jsonb_build_object(
            'chain', chain_name,
            'events', (SELECT h.events FROM delq.ledger_head h WHERE h.chain = chain_name),
            'head', (SELECT encode(h.hash, 'hex') FROM delq.ledger_head h WHERE h.chain = chain_name),
            'checkpoint', (SELECT jsonb_build_object('id', c.id, 'at', c.at, 'events', k.events,
                                                     'hash', encode(c.hash, 'hex'))
                             FROM delq.ledger_checkpoint_head k
                             JOIN delq.ledger_checkpoint c ON c.id = k.checkpoint_id
                            WHERE k.chain = chain_name
                            ORDER BY k.checkpoint_id DESC LIMIT 1)));
    RETURN body || jsonb_build_object('signature', delq._receipt_signature(body, 'receipt'));
END
$$;

-- Whether receipt is exactly as delq.receipt() signed it: any change to
-- any part of it (but the order of keys or spaces, which jsonb does not
-- keep) makes it false.
CREATE FUNCTION delq.verify_receipt(receipt jsonb)
RETURNS boolean
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sig jsonb;
BEGIN
    PERFORM delq._not_null('receipt', receipt);
    IF jsonb_typeof(receipt) <> 'object' THEN
        PERFORM delq._invalid('receipt', format('must be a JSON object, not %s', jsonb_typeof(receipt)),
                              'Pass the whole object that delq.receipt() returned.');
    END IF;
    sig := receipt -> 'signature';
    IF jsonb_typeof(sig) IS DISTINCT FROM 'object'
       OR sig ->> 'alg' IS DISTINCT FROM 'HMAC-SHA256'
       OR sig ->> 'key' IS DISTINCT FROM 'receipt'
       OR coalesce(sig ->> 'value', '') !~ '^[0-9a-f]{64}$' THEN
        RETURN false;
    END IF;
    -- compare digests, not the values, so the time taken tells nothing
    RETURN sha256(convert_to(delq._receipt_signature(receipt - 'signature', 'receipt') ->> 'value', 'UTF8'))
           = sha256(convert_to(sig ->> 'value', 'UTF8'));
END
$$;

-- Every request, pending or finished, with the times that count.
CREATE FUNCTION delq._report_requests()
RETURNS TABLE (id uuid, status text, submitted_at timestamptz, due_at timestamptz,
               completed_at timestamptz, rejected_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.id, p.status, p.submitted_at, p.due_at, p.completed_at, p.rejected_at
      FROM delq.pending p
    UNION ALL
    SELECT f.id, f.status, f.submitted_at, f.due_at, f.completed_at, f.rejected_at
      FROM delq.finished f;
$$;

-- Every delivery, pending or archived, with its request's times.
CREATE FUNCTION delq._report_deliveries()
RETURNS TABLE (destination text, state text, submitted_at timestamptz, due_at timestamptz,
               rejected_at timestamptz, confirmed_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT dl.destination, dl.state, p.submitted_at, p.due_at, p.rejected_at, dl.confirmed_at
      FROM delq.delivery dl JOIN delq.pending p ON p.id = dl.request_id
    UNION ALL
    SELECT d ->> 'destination', d ->> 'state', f.submitted_at, f.due_at, f.rejected_at,
           (d ->> 'confirmed_at')::timestamptz
      FROM delq.finished f, jsonb_array_elements(f.deliveries) d;
$$;

-- Median and mean of a set of durations, in days (2 decimals).
CREATE FUNCTION delq._days(durations interval[])
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
               'median', round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d))
                                / 86400)::numeric, 2),
               'mean', round(avg(extract(epoch FROM d)) / 86400, 2))
      FROM unnest(durations) d;
$$;

-- Metrics for [from_time, to_time), for the records of CCPA regs §7101
-- and the yearly disclosure of §7102: requests received, completed,
-- rejected (denied) and overdue (deadline in the period and missed), the
-- median and mean days to complete and to respond (complete or deny), and
-- per destination the same for its deliveries.
CREATE FUNCTION delq.report(from_time timestamptz, to_time timestamptz)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    upto timestamptz;
    requests jsonb;
    destinations jsonb;
BEGIN
    PERFORM delq._not_null('from_time', from_time);
    PERFORM delq._not_null('to_time', to_time);
    IF from_time >= to_time THEN
        PERFORM delq._invalid('to_time', 'must be later than from_time',
                              'Pass a period such as (''2025-01-01'', ''2026-01-01''): from_time is included, to_time is not.');
    END IF;
    -- deadlines still ahead are not missed yet
    upto := least(to_time, now());

    SELECT jsonb_build_object(
               'received', count(*) FILTER (WHERE r.submitted_at >= from_time AND r.submitted_at < to_time),
               'completed', count(*) FILTER (WHERE r.completed_at >= from_time AND r.completed_at < to_time),
               'rejected', count(*) FILTER (WHERE r.rejected_at >= from_time AND r.rejected_at < to_time),
               'overdue', count(*) FILTER (WHERE r.due_at >= from_time AND r.due_at < upto
                                             AND coalesce(r.completed_at, r.rejected_at, 'infinity') > r.due_at),
               'days_to_complete', delq._days(array_agg(r.completed_at - r.submitted_at)
                                       FILTER (WHERE r.completed_at >= from_time AND r.completed_at < to_time)),
               'days_to_respond', delq._days(array_agg(coalesce(r.completed_at, r.rejected_at) - r.submitted_at)
                                      FILTER (WHERE coalesce(r.completed_at, r.rejected_at) >= from_time
                                                AND coalesce(r.completed_at, r.rejected_at) < to_time)))
      INTO requests
      FROM delq._report_requests() r;

    SELECT coalesce(jsonb_agg(x.o ORDER BY x.destination), '[]') INTO destinations
      FROM (SELECT d.destination,
                   jsonb_build_object(
                       'destination', d.destination,
                       'received', count(*) FILTER (WHERE d.submitted_at >= from_time AND d.submitted_at < to_time),
                       'confirmed', count(*) FILTER (WHERE d.confirmed_at >= from_time AND d.confirmed_at < to_time),
                       'cancelled', count(*) FILTER (WHERE d.state = 'cancelled'
                                                       AND d.rejected_at >= from_time AND d.rejected_at < to_time),
                       'failed', count(*) FILTER (WHERE d.state = 'failed'
                                                    AND d.submitted_at >= from_time AND d.submitted_at < to_time),
                       'overdue', count(*) FILTER (WHERE d.state <> 'cancelled'
                                                     AND d.due_at >= from_time AND d.due_at < upto
                                                     AND coalesce(d.confirmed_at, 'infinity') > d.due_at),
                       'days_to_confirm', delq._days(array_agg(d.confirmed_at - d.submitted_at)
                                              FILTER (WHERE d.confirmed_at >= from_time AND d.confirmed_at < to_time))) AS o
              FROM delq._report_deliveries() d
             GROUP BY d.destination
            HAVING count(*) FILTER (WHERE (d.submitted_at >= from_time AND d.submitted_at < to_time)
                                       OR (d.confirmed_at >= from_time AND d.confirmed_at < to_time)
                                       OR (d.due_at >= from_time AND d.due_at < to_time)) > 0) x;

    RETURN jsonb_build_object('from', from_time, 'to', to_time,
                              'requests', requests, 'destinations', destinations);
END
$$;

GRANT EXECUTE ON FUNCTION delq.receipt(uuid), delq.verify_receipt(jsonb),
                          delq.report(timestamptz, timestamptz)
    TO delq_operator;
-- Roles and privileges.  PUBLIC gets nothing.  Each role includes the one
-- below it: delq_admin > delq_operator > delq_submitter.

REVOKE ALL ON SCHEMA delq FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA delq FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA delq FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA delq FROM PUBLIC;

GRANT USAGE ON SCHEMA delq TO delq_submitter;

-- submitters: file requests and read their status
GRANT EXECUTE ON FUNCTION delq.submit(text, text, text, jsonb, text, timestamptz) TO delq_submitter;
GRANT SELECT ON delq.requests TO delq_submitter;

-- operators: act on requests and read everything but secrets
GRANT EXECUTE ON FUNCTION delq.approve(uuid) TO delq_operator;
GRANT EXECUTE ON FUNCTION delq.reject(uuid, text) TO delq_operator;
GRANT EXECUTE ON FUNCTION delq.retry(uuid, text) TO delq_operator;
GRANT EXECUTE ON FUNCTION delq.confirm(uuid, text) TO delq_operator;
GRANT EXECUTE ON FUNCTION delq.archive(interval) TO delq_operator;
GRANT EXECUTE ON FUNCTION delq.worker_running() TO delq_operator;
GRANT EXECUTE ON FUNCTION delq.dispatch(integer) TO delq_operator;
GRANT SELECT ON delq.pending, delq.finished, delq.delivery, delq.event, delq.route,
                delq.overdue, delq.needs_attention, delq.destinations,
                delq.destination_health, delq.destination_state
    TO delq_operator;

-- admins: destinations and routes, including their secrets
GRANT EXECUTE ON FUNCTION
    delq.add_destination(text, text, jsonb, text, interval, interval, integer, integer,
                         text, interval, interval, boolean, text, text, text),
    delq.alter_destination(text, text, jsonb, text, interval, interval, integer, integer,
                           text, interval, interval, boolean, text, text, text),
    delq.drop_destination(text, boolean),
    delq.add_route(text, jsonb),
    delq.drop_route(bigint)
    TO delq_admin;
GRANT SELECT ON delq.destination TO delq_admin;

-- pg_dump must keep the queue and its history: extension tables are
-- otherwise left out of dumps.
SELECT pg_catalog.pg_extension_config_dump('delq.pending', '');
SELECT pg_catalog.pg_extension_config_dump('delq.finished', '');
SELECT pg_catalog.pg_extension_config_dump('delq.request_key', '');
SELECT pg_catalog.pg_extension_config_dump('delq.destination', '');
SELECT pg_catalog.pg_extension_config_dump('delq.route', '');
SELECT pg_catalog.pg_extension_config_dump('delq.delivery', '');
SELECT pg_catalog.pg_extension_config_dump('delq.event', '');
SELECT pg_catalog.pg_extension_config_dump('delq.route_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('delq.delivery_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('delq.event_id_seq', '');
