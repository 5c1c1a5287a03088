-- Tables.  Nobody writes them directly: every change goes through the
-- SECURITY DEFINER functions, which validate it and log an event.
--
-- Each table is followed by its grants (roles: 05_roles.sql; PUBLIC gets
-- nothing, 90_security.sql) and its pg_extension_config_dump call: pg_dump
-- must keep the queue and its history, and leaves extension tables out of
-- dumps otherwise.

-- Live requests.
CREATE TABLE IF NOT EXISTS delq.pending (
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
CREATE INDEX IF NOT EXISTS pending_finished_idx ON delq.pending ((coalesce(completed_at, rejected_at)))
    WHERE status IN ('completed', 'rejected');
CREATE INDEX IF NOT EXISTS pending_held_idx ON delq.pending (hold_until) WHERE status = 'held';
CREATE INDEX IF NOT EXISTS pending_due_idx ON delq.pending (due_at)
    WHERE status IN ('held', 'forwarding', 'failed');

GRANT SELECT ON delq.pending TO delq_operator;
SELECT pg_catalog.pg_extension_config_dump('delq.pending', '');

-- Archived requests: self-contained proof of what was done and when.
CREATE TABLE IF NOT EXISTS delq.finished (
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

CREATE INDEX IF NOT EXISTS finished_finished_at_idx ON delq.finished (finished_at);

GRANT SELECT ON delq.finished TO delq_operator;
SELECT pg_catalog.pg_extension_config_dump('delq.finished', '');

-- (source, external_id) of every request ever submitted, pending or
-- finished: the one place idempotency is decided, so that a concurrent
-- archive() cannot open a window for a duplicate.
CREATE TABLE IF NOT EXISTS delq.request_key (
    source text NOT NULL,
    external_id text NOT NULL,
    request_id uuid NOT NULL UNIQUE,
    PRIMARY KEY (source, external_id)
);

SELECT pg_catalog.pg_extension_config_dump('delq.request_key', '');

-- Systems that receive requests.
CREATE TABLE IF NOT EXISTS delq.destination (
    name text PRIMARY KEY,
    url text NOT NULL,
    headers jsonb NOT NULL DEFAULT '{}',
    secret text,
    -- twins: DELQ_HTTP_DEFAULT_TIMEOUT_MS and _CONNECT_MS (src/httpclient.h)
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

-- 1.1: the kind of destination (docs/sql-api.md, table delq.destination): 'webhook'
-- (delq's signed POST), 'http' (a templated call of the system's own API),
-- 'sql' (a function in this database, 51_sql_destinations.sql) or 'pull'
-- (consumers take the work, 52_pull.sql).  Only HTTP kinds have a url.
ALTER TABLE delq.destination ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'webhook'
    CHECK (kind IN ('webhook', 'http', 'sql', 'pull'));
ALTER TABLE delq.destination ALTER COLUMN url DROP NOT NULL;
-- sql: the function (its regprocedure text, resolved at each call so that
-- a dump and restore keeps it) and the role it runs as
ALTER TABLE delq.destination ADD COLUMN IF NOT EXISTS sql_function text;
ALTER TABLE delq.destination ADD COLUMN IF NOT EXISTS run_as text;
-- pull: the role whose members take and acknowledge, and for how long a
-- taken delivery is theirs
ALTER TABLE delq.destination ADD COLUMN IF NOT EXISTS consumer text;
ALTER TABLE delq.destination ADD COLUMN IF NOT EXISTS lease_ms bigint;
-- 1.1: templated HTTP destinations (docs/connectors.md).  request NULL: a
-- webhook destination.  credentials are secrets, like secret.
ALTER TABLE delq.destination ADD COLUMN IF NOT EXISTS request jsonb;
ALTER TABLE delq.destination ADD COLUMN IF NOT EXISTS credentials jsonb;
-- 1.1: secret rotation.  After alter_destination(secret => ...), the
-- previous secret signs too (a second signature) until previous_secret_until
-- (delq.secret_overlap), so receivers can switch without a gap.
ALTER TABLE delq.destination ADD COLUMN IF NOT EXISTS previous_secret text;
ALTER TABLE delq.destination ADD COLUMN IF NOT EXISTS previous_secret_until timestamptz;

-- secrets and header values: delq_admin only (operators read delq.destinations)
GRANT SELECT ON delq.destination TO delq_admin;
SELECT pg_catalog.pg_extension_config_dump('delq.destination', '');

-- Which requests go where: a request matches when its routing document
-- (attributes plus "source" and "reason") contains match.
CREATE TABLE IF NOT EXISTS delq.route (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination text NOT NULL REFERENCES delq.destination (name) ON DELETE CASCADE,
    match jsonb NOT NULL DEFAULT '{}' CHECK (pg_catalog.jsonb_typeof(match) = 'object'),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE INDEX IF NOT EXISTS route_destination_idx ON delq.route (destination);

GRANT SELECT ON delq.route TO delq_operator;
SELECT pg_catalog.pg_extension_config_dump('delq.route', '');
SELECT pg_catalog.pg_extension_config_dump('delq.route_id_seq', '');

-- One row per (request, destination).  No foreign key to destination:
-- a dropped destination's history stays readable.
CREATE TABLE IF NOT EXISTS delq.delivery (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id uuid NOT NULL REFERENCES delq.pending (id) ON DELETE CASCADE,
    destination text NOT NULL,
    -- the states are checked by delivery_state_check, below
    state text NOT NULL DEFAULT 'queued',
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
    -- when the delivery was done: confirmed, or answered not_held
    confirmed_at timestamptz,
    -- 'msg_' and a random UUID: unique without an index, which every
    -- state change of the delivery would have to update
    webhook_id text NOT NULL,
    UNIQUE (request_id, destination)
);

-- 1.1: who took a delivery of a pull destination (delq.take); NULL for
-- every other kind, so that only taken deliveries enter the index by
-- which ack() and nack() find them.
ALTER TABLE delq.delivery ADD COLUMN IF NOT EXISTS leased_by text;
CREATE INDEX IF NOT EXISTS delivery_leased_idx ON delq.delivery (webhook_id)
    WHERE leased_by IS NOT NULL;

GRANT SELECT ON delq.delivery TO delq_operator;
SELECT pg_catalog.pg_extension_config_dump('delq.delivery', '');
SELECT pg_catalog.pg_extension_config_dump('delq.delivery_id_seq', '');

-- The delivery states (docs/sql-api.md, "Delivery states").  A constraint
-- of its own, not a column CHECK inside CREATE TABLE: 1.1 added
-- 'not_held', so an upgrade drops 1.0's constraint
-- (src/sql/upgrade/1.0--1.1-before.sql) and this puts the new one back.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_constraint c
                    WHERE c.conrelid = 'delq.delivery'::pg_catalog.regclass
                      AND c.conname = 'delivery_state_check') THEN
        ALTER TABLE delq.delivery ADD CONSTRAINT delivery_state_check
            CHECK (state IN ('queued', 'sending', 'awaiting_confirmation',
                             'confirmed', 'not_held', 'failed', 'cancelled'));
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS delivery_claim_idx ON delq.delivery (destination, due_at, next_attempt_at)
    WHERE state = 'queued';
-- In flight per destination (the claim's concurrency cap) and by lease;
-- and the states an operator acts on.  Not (destination, state) over every
-- row: each state change of a delivery in the hot path (queued, sending,
-- confirmed) would insert into it.
CREATE INDEX IF NOT EXISTS delivery_sending_idx ON delq.delivery (destination, lease_until)
    WHERE state = 'sending';
CREATE INDEX IF NOT EXISTS delivery_destination_idx ON delq.delivery (destination, state)
    WHERE state NOT IN ('queued', 'sending', 'confirmed');
