-- The audit trail: one row per state change, append-only.  It never holds
-- the subject (personal data).  prev_hash and hash chain each row to its
-- predecessor (the tamper-evident ledger, 81_ledger.sql).

CREATE TABLE IF NOT EXISTS delq.event (
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

CREATE INDEX IF NOT EXISTS event_request_idx ON delq.event (request_id, id);
GRANT SELECT ON delq.event TO delq_operator;
SELECT pg_catalog.pg_extension_config_dump('delq.event', '');
SELECT pg_catalog.pg_extension_config_dump('delq.event_id_seq', '');
-- BRIN: events are appended in time order, so a block range summary
-- serves time-range queries at a fraction of a B-tree's cost per insert
-- (three events per delivery).
CREATE INDEX IF NOT EXISTS event_at_idx ON delq.event USING brin (at);

-- Trigger function for the evidence tables (this one and the ledger's):
-- refuses UPDATE, DELETE and TRUNCATE.  Arguments: why, and what to do
-- instead.
CREATE OR REPLACE FUNCTION delq._append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '%.% is append-only: % is not allowed', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege', DETAIL = TG_ARGV[0], HINT = TG_ARGV[1];
END
$$;

CREATE OR REPLACE TRIGGER event_no_update_delete
    BEFORE UPDATE OR DELETE ON delq.event
    FOR EACH ROW EXECUTE FUNCTION delq._append_only(
        'The audit trail is evidence of what was done; no role may change it.',
        'Add a new event instead.');

CREATE OR REPLACE TRIGGER event_no_truncate
    BEFORE TRUNCATE ON delq.event
    FOR EACH STATEMENT EXECUTE FUNCTION delq._append_only(
        'The audit trail is evidence of what was done; no role may change it.',
        'Add a new event instead.');

-- Fire also under session_replication_role = replica.
ALTER TABLE delq.event ENABLE ALWAYS TRIGGER event_no_update_delete;
ALTER TABLE delq.event ENABLE ALWAYS TRIGGER event_no_truncate;

-- Record one event.  actor defaults to session_user, which inside a
-- SECURITY DEFINER function is still the role that logged in.
CREATE OR REPLACE FUNCTION delq._log(kind text, request_id uuid, destination text DEFAULT NULL,
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
