--
-- privacy_ledger: the tamper-evident ledger.  Every event is chained
-- by SHA-256 to the one before it in its chain (one chain per request),
-- checkpoints seal the chain heads, and delq.verify_ledger() finds every
-- change, removal, insertion and reordering, also by a superuser who
-- disabled the triggers.  Each tampering runs in a transaction that is
-- rolled back.
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

SELECT delq.add_destination('p51_a', 'https://a.p51.example/erase');
SELECT delq.add_destination('p51_b', 'https://b.p51.example/erase');
SELECT delq.add_route('p51_a', '{"source": "p51"}') IS NOT NULL AS routed_a;
SELECT delq.add_route('p51_b', '{"source": "p51"}') IS NOT NULL AS routed_b;

-- A request with a few events: submitted, queued x2, confirmed x2, completed.
SELECT delq.submit('ann.p51@example.com', 'p51', 'gdpr') AS r \gset
SELECT delq.confirm(:'r', 'p51_a'), delq.confirm(:'r', 'p51_b');
SELECT 'request:' || :'r' AS chain \gset
SELECT set_config('p51.id', :'r', false) IS NOT NULL AS remembered;

CREATE TEMP TABLE p51_ev AS
SELECT CASE WHEN e.destination IS NULL THEN e.kind ELSE e.kind || ' ' || e.destination END AS label,
       e.id
  FROM delq.event e WHERE e.request_id = :'r';
SELECT label FROM p51_ev ORDER BY id;

-- Labels for the problems verify_ledger() reports.
CREATE FUNCTION pg_temp.problems()
RETURNS TABLE (problem text, event text, chain text, detail text)
LANGUAGE sql
AS $$
    SELECT v.problem,
           coalesce((SELECT l.label FROM p51_ev l WHERE l.id = v.event_id),
                    CASE WHEN v.event_id IS NULL THEN NULL ELSE 'another event' END),
           CASE WHEN v.chain = 'request:' || current_setting('p51.id') THEN 'the request''s'
                ELSE v.chain END,
           v.detail
      FROM delq.verify_ledger() v;
$$;

--
-- The chain as stored.
--
-- the sealing trigger fires last, always (also for replica sessions)
SELECT tgname, tgenabled FROM pg_trigger
 WHERE tgrelid = 'delq.event'::regclass AND NOT tgisinternal ORDER BY tgname;
-- every event of this database is sealed, and its hash is the hash of its content
SELECT count(*) FILTER (WHERE hash IS NULL OR prev_hash IS NULL) AS unsealed,
       count(*) FILTER (WHERE hash <> delq._event_hash(e)) AS mismatched,
       count(*) > 0 AS some
  FROM delq.event e;
-- the request's events form one chain from the genesis hash to the head
SELECT l.label,
       CASE WHEN e.prev_hash = delq._ledger_genesis(:'chain') THEN 'genesis'
            ELSE (SELECT l2.label FROM p51_ev l2 JOIN delq.event p ON p.id = l2.id
                   WHERE p.hash = e.prev_hash) END AS follows,
       octet_length(e.hash) AS hash_bytes
  FROM p51_ev l JOIN delq.event e USING (id) ORDER BY e.id;
SELECT h.events, h.hash = (SELECT e.hash FROM delq.event e WHERE e.id = h.last_id) AS head_is_last,
       (SELECT l.label FROM p51_ev l WHERE l.id = h.last_id) AS last
  FROM delq.ledger_head h WHERE h.chain = :'chain';
-- admin events of a destination chain on their own
SELECT e.kind, h.chain, h.events
  FROM delq.ledger_head h JOIN delq.event e ON e.id = h.last_id
 WHERE h.chain IN ('destination:p51_a', 'destination:p51_b') ORDER BY h.chain;
-- the canonical form: every column but hash, in a form no setting changes
SET TimeZone = 'Pacific/Chatham';
SET DateStyle = 'SQL, DMY';
SELECT count(*) FILTER (WHERE hash <> delq._event_hash(e)) AS mismatched_in_another_time_zone
  FROM delq.event e;
RESET TimeZone;
RESET DateStyle;

-- intact
SELECT * FROM pg_temp.problems();

--
-- Checkpoints.
--
SELECT chains > 0 AS sealed_some, length(hash) AS hex_digits FROM delq.ledger_checkpoint();
-- nothing moved since: an empty checkpoint, chained to the one before
SELECT chains FROM delq.ledger_checkpoint();
SELECT c.prev_hash = lag(c.hash) OVER (ORDER BY c.id) AS chained
  FROM delq.ledger_checkpoint c ORDER BY c.id DESC LIMIT 1;
-- min_interval: skipped while the last one is younger
SELECT count(*) AS taken FROM delq.ledger_checkpoint('1 hour');
SELECT count(*) FROM delq.ledger_head WHERE events > checkpointed;
SELECT k.events, k.hash = h.hash AS sealed_head
  FROM delq.ledger_checkpoint_head k JOIN delq.ledger_head h USING (chain)
 WHERE k.chain = :'chain';
SELECT * FROM pg_temp.problems();
SELECT regress.snapshot();
SELECT regress.bad($$SELECT * FROM delq.ledger_checkpoint(NULL)$$);
SELECT regress.bad($$SELECT * FROM delq.ledger_checkpoint('-1 hour')$$);

-- Checkpoints are append-only.
SELECT regress.sqlstate($$UPDATE delq.ledger_checkpoint SET actor = 'x'$$);
SELECT regress.sqlstate($$DELETE FROM delq.ledger_checkpoint_head$$);
SELECT regress.sqlstate($$TRUNCATE delq.ledger_checkpoint$$);

--
-- Tampering, by a superuser with the triggers disabled.
--

-- 1. A changed detail.
BEGIN;
ALTER TABLE delq.event DISABLE TRIGGER ALL;
UPDATE delq.event SET detail = '{"via": "phone"}' WHERE id = (SELECT id FROM p51_ev WHERE label = 'confirmed p51_b');
SELECT * FROM pg_temp.problems();
ROLLBACK;

-- 2. A changed actor, and the hash recomputed for the new content: the
--    next event no longer follows it.
BEGIN;
ALTER TABLE delq.event DISABLE TRIGGER ALL;
UPDATE delq.event SET actor = 'someone_else' WHERE id = (SELECT id FROM p51_ev WHERE label = 'queued p51_a');
UPDATE delq.event e SET hash = delq._event_hash(e) WHERE id = (SELECT id FROM p51_ev WHERE label = 'queued p51_a');
SELECT * FROM pg_temp.problems();
ROLLBACK;

-- 3. A middle event deleted.
BEGIN;
ALTER TABLE delq.event DISABLE TRIGGER ALL;
DELETE FROM delq.event WHERE id = (SELECT id FROM p51_ev WHERE label = 'confirmed p51_a');
SELECT * FROM pg_temp.problems();
ROLLBACK;

-- 4. The last event deleted: the head says so ...
BEGIN;
ALTER TABLE delq.event DISABLE TRIGGER ALL;
DELETE FROM delq.event WHERE id = (SELECT id FROM p51_ev WHERE label = 'completed');
SELECT * FROM pg_temp.problems();
-- ... and with the head rewound too, the checkpoint does.
UPDATE delq.ledger_head h SET events = h.events - 1, last_id = e.id, hash = e.hash
  FROM delq.event e
 WHERE h.chain = :'chain' AND e.id = (SELECT id FROM p51_ev WHERE label = 'confirmed p51_b');
SELECT * FROM pg_temp.problems();
ROLLBACK;

-- 5. A forged event inserted without the trigger.
BEGIN;
ALTER TABLE delq.event DISABLE TRIGGER ALL;
INSERT INTO delq.event (request_id, destination, kind, detail)
VALUES (:'r', 'p51_a', 'confirmed', '{"via": "forged"}');
INSERT INTO p51_ev SELECT 'forged', id FROM delq.event WHERE detail ->> 'via' = 'forged';
SELECT * FROM pg_temp.problems();
ROLLBACK;

-- 6. A forged event inserted in the middle, with a correct hash (whoever
--    forges it knows the algorithm).
BEGIN;
ALTER TABLE delq.event DISABLE TRIGGER ALL;
INSERT INTO delq.event (request_id, destination, kind, detail, prev_hash)
SELECT :'r', 'p51_a', 'cancelled', '{"via": "forged"}', e.hash
  FROM delq.event e WHERE e.id = (SELECT id FROM p51_ev WHERE label = 'submitted');
UPDATE delq.event e SET hash = delq._event_hash(e) WHERE detail ->> 'via' = 'forged';
INSERT INTO p51_ev SELECT 'forged', id FROM delq.event WHERE detail ->> 'via' = 'forged';
SELECT * FROM pg_temp.problems();
ROLLBACK;

-- 7. A forged event appended after the last one, with a correct hash,
--    the head left alone.
BEGIN;
ALTER TABLE delq.event DISABLE TRIGGER ALL;
INSERT INTO delq.event (request_id, kind, detail, prev_hash)
SELECT :'r', 'rejected', '{"via": "forged"}', h.hash FROM delq.ledger_head h WHERE h.chain = :'chain';
UPDATE delq.event e SET hash = delq._event_hash(e) WHERE detail ->> 'via' = 'forged';
INSERT INTO p51_ev SELECT 'forged', id FROM delq.event WHERE detail ->> 'via' = 'forged';
SELECT * FROM pg_temp.problems();
ROLLBACK;

-- 8. Reordered: two events swap times.
BEGIN;
ALTER TABLE delq.event DISABLE TRIGGER ALL;
UPDATE delq.event e SET at = o.at
  FROM delq.event o
 WHERE (e.id, o.id) IN (((SELECT id FROM p51_ev WHERE label = 'queued p51_a'),
                         (SELECT id FROM p51_ev WHERE label = 'confirmed p51_a')),
                        ((SELECT id FROM p51_ev WHERE label = 'confirmed p51_a'),
                         (SELECT id FROM p51_ev WHERE label = 'queued p51_a')));
SELECT * FROM pg_temp.problems();
ROLLBACK;

-- 9. Reordered thoroughly: two events swap contents, and every hash of
--    the chain and its head are recomputed.  Only the checkpoint, which
--    sealed the old chain, tells.
BEGIN;
ALTER TABLE delq.event DISABLE TRIGGER ALL;
UPDATE delq.event e SET kind = o.kind, destination = o.destination, detail = o.detail
  FROM delq.event o
 WHERE (e.id, o.id) IN (((SELECT id FROM p51_ev WHERE label = 'queued p51_b'),
                         (SELECT id FROM p51_ev WHERE label = 'confirmed p51_b')),
                        ((SELECT id FROM p51_ev WHERE label = 'confirmed p51_b'),
                         (SELECT id FROM p51_ev WHERE label = 'queued p51_b')));
DO $$
DECLARE
    c text := 'request:' || current_setting('p51.id');
    prev bytea := delq._ledger_genesis(c);
    ev bigint;
BEGIN
    FOR ev IN SELECT e.id FROM delq.event e WHERE e.request_id = current_setting('p51.id')::uuid ORDER BY e.id LOOP
        UPDATE delq.event e SET prev_hash = prev WHERE e.id = ev;
        UPDATE delq.event e SET hash = delq._event_hash(e) WHERE e.id = ev RETURNING e.hash INTO prev;
    END LOOP;
    UPDATE delq.ledger_head h SET hash = prev WHERE h.chain = c;
END
$$;
SELECT * FROM pg_temp.problems();
ROLLBACK;

-- 10. A checkpoint changed, or removed.
BEGIN;
ALTER TABLE delq.ledger_checkpoint DISABLE TRIGGER ALL;
UPDATE delq.ledger_checkpoint SET actor = 'someone_else'
 WHERE id = (SELECT min(id) FROM delq.ledger_checkpoint);
SELECT problem, event, chain, regexp_replace(detail, '[0-9]+', 'N') AS detail FROM pg_temp.problems();
ROLLBACK;
BEGIN;
ALTER TABLE delq.ledger_checkpoint DISABLE TRIGGER ALL;
DELETE FROM delq.ledger_checkpoint WHERE id = (SELECT min(id) FROM delq.ledger_checkpoint);
SELECT problem, event, chain, regexp_replace(detail, '[0-9]+', 'N') AS detail FROM pg_temp.problems();
ROLLBACK;

-- 11. Everything truncated: every chain reports.
BEGIN;
ALTER TABLE delq.event DISABLE TRIGGER ALL;
TRUNCATE delq.event;
SELECT count(DISTINCT chain) = (SELECT count(*) FROM delq.ledger_head) AS every_chain,
       array_agg(DISTINCT problem ORDER BY problem) AS problems
  FROM delq.verify_ledger();
ROLLBACK;

-- A replica session (session_replication_role) still cannot change an
-- event, and what it inserts is sealed.
BEGIN;
SET LOCAL session_replication_role = replica;
SELECT regress.sqlstate($$UPDATE delq.event SET detail = '{}' WHERE request_id = '$$ || :'r' || $$'$$);
SELECT regress.sqlstate($$DELETE FROM delq.event WHERE request_id = '$$ || :'r' || $$'$$);
SELECT delq._log('note', :'r', NULL, '{"by": "replica"}');
SELECT kind, hash IS NOT NULL AS sealed FROM delq.event WHERE request_id = :'r' ORDER BY id DESC LIMIT 1;
SELECT * FROM pg_temp.problems();
ROLLBACK;

-- An event that arrives with a hash (pg_restore, replication) is kept as
-- it came, and checked like any other.
BEGIN;
INSERT INTO delq.event (request_id, kind, detail, prev_hash, hash)
VALUES (:'r', 'rejected', '{"via": "forged"}', '\x00', '\x00');
INSERT INTO p51_ev SELECT 'forged', id FROM delq.event WHERE detail ->> 'via' = 'forged';
SELECT * FROM pg_temp.problems();
ROLLBACK;

--
-- The subject never gets into an event: a copy in a detail is scrubbed
-- before the event is sealed.
--
SELECT delq._log('note', :'r', NULL,
                 '{"error": "HTTP 404: no user ann.p51@example.com", "n": 1, "list": ["ann.p51@example.com"]}');
SELECT detail FROM delq.event WHERE request_id = :'r' ORDER BY id DESC LIMIT 1;
SELECT * FROM pg_temp.problems();

-- The trigger (C) writes the canonical text that _event_hash() (SQL)
-- hashes, whatever the detail holds: escapes, non-ASCII, nesting, numbers
-- of every form, and for events of requests, destinations and the admin
-- chain.
SELECT delq._log('note', :'r', 'p51_a',
                 jsonb_build_object('quote', 'say "hi" \ back', 'nl', E'two\nlines\ttab',
                                    'intl', 'Zoë 日本 😀', 'ctl', E'\u0001',
                                    'nums', jsonb_build_array(0, -1.50, 1e20, 123456789012345678),
                                    'deep', jsonb_build_object('a', jsonb_build_array(true, false, null, '{}'::jsonb))));
SELECT delq._log('note', NULL, 'p51_b', '{"k": "destination chain"}');
SELECT delq._log('note', NULL, NULL, '{}');
SELECT delq._log('note', NULL, NULL, NULL);
SELECT count(*) FILTER (WHERE hash <> delq._event_hash(e)) AS mismatched, count(*) AS checked
  FROM (SELECT * FROM delq.event ORDER BY id DESC LIMIT 4) e;
SELECT * FROM pg_temp.problems();

-- Intact after all the rolled back tampering.
SELECT count(*) AS problems FROM delq.verify_ledger();
