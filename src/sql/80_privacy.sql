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
CREATE OR REPLACE FUNCTION delq._hmac_sha256(key bytea, data bytea)
RETURNS bytea
LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'delq_hmac_sha256';

-- 32 random bytes without pgcrypto: gen_random_uuid() draws 122 bits from
-- pg_strong_random(); four of them, hashed, give a full 256-bit key.
CREATE OR REPLACE FUNCTION delq._random_key()
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
CREATE TABLE IF NOT EXISTS delq.key (
    name text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_.]{0,62}$'),
    secret bytea NOT NULL CHECK (octet_length(secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    PRIMARY KEY (name, created_at)
);

INSERT INTO delq.key (name, secret)
SELECT k, delq._random_key() FROM unnest(ARRAY['receipt', 'subject']) k
 WHERE NOT EXISTS (SELECT FROM delq.key WHERE key.name = k);

GRANT SELECT ON delq.key TO delq_admin;
SELECT pg_catalog.pg_extension_config_dump('delq.key', '');

-- The key in use for name; a missing key is an error, never replaced
-- silently by a new one (old hashes and receipts would stop matching).
CREATE OR REPLACE FUNCTION delq._secret(name text)
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
CREATE OR REPLACE FUNCTION delq._subject_hash(subject text)
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
-- (timestamps).  Case is ignored: JANE@EXAMPLE.ORG is the same person.

CREATE OR REPLACE FUNCTION delq._scrub_text(val text, subject text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- every character but letters and digits escaped: the subject is
    -- matched as literal text
    SELECT CASE WHEN val IS NULL OR subject IS NULL OR length(subject) < 4 THEN val
                ELSE regexp_replace(val, regexp_replace(subject, '([^[:alnum:]])', '\\\1', 'g'),
                                    '[subject]', 'gi') END;
$$;

CREATE OR REPLACE FUNCTION delq._scrub_value(val jsonb, subject text)
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

CREATE OR REPLACE FUNCTION delq._scrub(val jsonb, subject text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- cheap test first: the subject as it appears inside JSON text
    SELECT CASE WHEN val IS NULL OR subject IS NULL OR length(subject) < 4
                     OR strpos(lower(val::text), lower(substr(to_jsonb(subject)::text, 2,
                                                             length(to_jsonb(subject)::text) - 2))) = 0
                THEN val
                ELSE delq._scrub_value(val, subject) END;
$$;

-- ---------------------------------------------------------------------
-- Minimisation

ALTER TABLE delq.finished ADD COLUMN IF NOT EXISTS redacted_at timestamptz;

-- redact() finds what is due without reading what it already did.
CREATE INDEX IF NOT EXISTS finished_unredacted_idx
    ON delq.finished ((coalesce(completed_at, rejected_at, finished_at)))
    WHERE redacted_at IS NULL;
-- was_erased() and guard(): by subject or its keyed hash.
CREATE INDEX IF NOT EXISTS finished_subject_idx ON delq.finished (subject);
CREATE INDEX IF NOT EXISTS pending_completed_subject_idx ON delq.pending (subject)
    WHERE status = 'completed';

-- The attribute keys of delq.redact_attributes, trimmed, without blanks.
CREATE OR REPLACE FUNCTION delq._redact_keys()
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
CREATE OR REPLACE FUNCTION delq._redact_attributes(attributes jsonb, keys text[])
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
CREATE OR REPLACE FUNCTION delq.redact(older_than interval DEFAULT NULL,
                                       max_requests integer DEFAULT 10000)
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
    -- bounded: a backlog is redacted in as many short transactions as it
    -- takes (the worker calls again at once while batches come back full)
    PERFORM delq._not_null('max_requests', max_requests);
    PERFORM delq._check_range('max_requests', max_requests, 1, 1000000);

    WITH victims AS (
        SELECT f.id FROM delq.finished f
         WHERE f.redacted_at IS NULL
           AND coalesce(f.completed_at, f.rejected_at, f.finished_at) <= now() - keep
         ORDER BY f.id
         LIMIT max_requests
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
CREATE OR REPLACE FUNCTION delq._erased(val text, source text)
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
CREATE OR REPLACE FUNCTION delq.was_erased(subject text, source text DEFAULT NULL)
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

-- The suppression lookup of delq.guard(), the only part of it that needs
-- the owner's rights: a text in, a boolean out.  Granted to nobody:
-- guard() calls it through fmgr, without an EXECUTE check (src/guard.c).
CREATE OR REPLACE FUNCTION delq._guard_erased(val text, source text)
RETURNS boolean
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
AS $$
    SELECT delq._erased(val, source);
$$;

-- Trigger for application tables: warn about, or refuse, a row whose
-- column holds a subject whose data was erased.
--
--   CREATE TRIGGER users_delq_guard BEFORE INSERT OR UPDATE OF email ON app.users
--       FOR EACH ROW EXECUTE FUNCTION delq.guard('email', 'refuse');
--
-- Arguments: the column (of type text, varchar or char), 'refuse'
-- (default) or 'warn', and optionally a source to consider only that
-- source's requests.  Refusal raises check_violation (23514) with
-- constraint name delq_erased_subject: the row breaks a rule about its
-- values, and drivers map class 23 to their integrity error.  Neither
-- message nor log holds the value (the refusal sets
-- log_min_error_statement = panic, which an invoker's SET could not).
-- SECURITY INVOKER, in C: it reads the
-- one column from the tuple and runs no code of the table's types
-- (src/guard.c, docs/security.md).
CREATE OR REPLACE FUNCTION delq.guard()
RETURNS trigger
LANGUAGE c
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'delq_guard';

GRANT EXECUTE ON FUNCTION delq.redact(interval, integer), delq.was_erased(text, text), delq.guard()
    TO delq_operator;
