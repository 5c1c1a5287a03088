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
CREATE OR REPLACE FUNCTION delq._ledger_chain(request_id uuid, destination text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN request_id IS NOT NULL THEN 'request:' || request_id::text
            WHEN destination IS NOT NULL THEN 'destination:' || destination
            ELSE 'admin' END;

-- The prev_hash of a chain's first event (and 'checkpoint' of the first
-- checkpoint's).
CREATE OR REPLACE FUNCTION delq._ledger_genesis(chain text)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.sha256(pg_catalog.convert_to('delq ledger genesis ' || chain, 'UTF8'));

-- The hash of an event: SHA-256 of a JSON array of every column but hash,
-- in a form that no setting changes (time as integer microseconds since
-- the epoch; jsonb's canonical text; UTF-8).  A column added to delq.event
-- later is not covered until it is added here.
CREATE OR REPLACE FUNCTION delq._event_hash(e delq.event)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.jsonb_build_array(
           e.id, (EXTRACT(epoch FROM e.at) * 1000000)::bigint, e.actor, e.request_id,
           e.destination, e.kind, e.detail, pg_catalog.encode(e.prev_hash, 'hex'))::text, 'UTF8'));

-- Where each chain ends: its number of events, last event and hash.
-- checkpointed is the number of events the last checkpoint that covered
-- the chain saw.
CREATE TABLE IF NOT EXISTS delq.ledger_head (
    chain text PRIMARY KEY,
    events bigint NOT NULL,
    last_id bigint NOT NULL,
    -- the hash before the last event (that event's prev_hash)
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL,
    checkpointed bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 80);
GRANT SELECT ON delq.ledger_head TO delq_operator;
SELECT pg_catalog.pg_extension_config_dump('delq.ledger_head', '');
-- No index but the key: every event updates its head, and an index on a
-- column it changes (events > checkpointed, say) would make each of those
-- updates write new index entries instead of a HOT update.  The hourly
-- checkpoint reads the table through.

-- Checkpoints: a chain of their own, each over the heads that moved since
-- the one before.  Append-only.
CREATE SEQUENCE IF NOT EXISTS delq.ledger_checkpoint_id_seq;
SELECT pg_catalog.pg_extension_config_dump('delq.ledger_checkpoint_id_seq', '');

CREATE TABLE IF NOT EXISTS delq.ledger_checkpoint (
    id bigint PRIMARY KEY,
    at timestamptz NOT NULL,
    actor text NOT NULL,
    chains bigint NOT NULL,
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL
);
GRANT SELECT ON delq.ledger_checkpoint TO delq_operator;
SELECT pg_catalog.pg_extension_config_dump('delq.ledger_checkpoint', '');

CREATE TABLE IF NOT EXISTS delq.ledger_checkpoint_head (
    checkpoint_id bigint NOT NULL,
    chain text NOT NULL,
    events bigint NOT NULL,
    last_id bigint NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (checkpoint_id, chain)
);

CREATE INDEX IF NOT EXISTS ledger_checkpoint_head_chain_idx ON delq.ledger_checkpoint_head (chain, checkpoint_id);
GRANT SELECT ON delq.ledger_checkpoint_head TO delq_operator;
SELECT pg_catalog.pg_extension_config_dump('delq.ledger_checkpoint_head', '');

-- Both checkpoint tables are append-only, like delq.event (also for
-- replica sessions).
CREATE OR REPLACE TRIGGER ledger_checkpoint_no_update_delete
    BEFORE UPDATE OR DELETE ON delq.ledger_checkpoint
    FOR EACH ROW EXECUTE FUNCTION delq._append_only(
        'Ledger checkpoints are evidence; no role may change them.',
        'Take a new checkpoint with delq.ledger_checkpoint() instead.');
CREATE OR REPLACE TRIGGER ledger_checkpoint_no_truncate
    BEFORE TRUNCATE ON delq.ledger_checkpoint
    FOR EACH STATEMENT EXECUTE FUNCTION delq._append_only(
        'Ledger checkpoints are evidence; no role may change them.',
        'Take a new checkpoint with delq.ledger_checkpoint() instead.');
ALTER TABLE delq.ledger_checkpoint ENABLE ALWAYS TRIGGER ledger_checkpoint_no_update_delete;
ALTER TABLE delq.ledger_checkpoint ENABLE ALWAYS TRIGGER ledger_checkpoint_no_truncate;

CREATE OR REPLACE TRIGGER ledger_checkpoint_head_no_update_delete
    BEFORE UPDATE OR DELETE ON delq.ledger_checkpoint_head
    FOR EACH ROW EXECUTE FUNCTION delq._append_only(
        'Ledger checkpoints are evidence; no role may change them.',
        'Take a new checkpoint with delq.ledger_checkpoint() instead.');
CREATE OR REPLACE TRIGGER ledger_checkpoint_head_no_truncate
    BEFORE TRUNCATE ON delq.ledger_checkpoint_head
    FOR EACH STATEMENT EXECUTE FUNCTION delq._append_only(
        'Ledger checkpoints are evidence; no role may change them.',
        'Take a new checkpoint with delq.ledger_checkpoint() instead.');
ALTER TABLE delq.ledger_checkpoint_head ENABLE ALWAYS TRIGGER ledger_checkpoint_head_no_update_delete;
ALTER TABLE delq.ledger_checkpoint_head ENABLE ALWAYS TRIGGER ledger_checkpoint_head_no_truncate;

-- The hash of an event from the canonical text before its previous hash
-- (built by the trigger) and that hash: the same bytes _event_hash() reads
-- (src/ledger.c).
CREATE OR REPLACE FUNCTION delq._ledger_link(prefix bytea, prev bytea)
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
CREATE OR REPLACE FUNCTION delq._ledger_seal()
RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'delq_ledger_seal';

-- "zz_": BEFORE triggers fire in name order, and the hash must cover the
-- row as it will be stored, so this one fires last.  ALWAYS: also under
-- session_replication_role = replica, like the append-only triggers.
CREATE OR REPLACE TRIGGER zz_ledger_seal
    BEFORE INSERT ON delq.event
    FOR EACH ROW EXECUTE FUNCTION delq._ledger_seal();
ALTER TABLE delq.event ENABLE ALWAYS TRIGGER zz_ledger_seal;

-- Fold lines into one SHA-256, in order: state = sha256(state || line).
CREATE OR REPLACE FUNCTION delq._sha256_step(state bytea, line text)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.sha256(state || pg_catalog.convert_to(line, 'UTF8'));

CREATE OR REPLACE AGGREGATE delq._sha256_fold(text) (
    SFUNC = delq._sha256_step,
    STYPE = bytea,
    INITCOND = ''
);

-- The hash of a checkpoint: its own columns and the fold of its heads in
-- chain order (byte order, whatever the database's collation).
CREATE OR REPLACE FUNCTION delq._checkpoint_hash(cp delq.ledger_checkpoint)
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
CREATE OR REPLACE FUNCTION delq.ledger_checkpoint(min_interval interval DEFAULT '0')
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
CREATE OR REPLACE FUNCTION delq.verify_ledger()
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

GRANT EXECUTE ON FUNCTION delq.ledger_checkpoint(interval), delq.verify_ledger() TO delq_operator;
