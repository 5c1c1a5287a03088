-- bench/setup.sql: helpers of bench/run in schema "bench" of the bench
-- cluster's own database.  They write delq's tables directly (as the
-- superuser) so that a section can start from a known queue in seconds;
-- the worker does not care how a queued delivery got there.

CREATE SCHEMA bench;

-- Forget everything: requests, deliveries, events, destinations.  The
-- audit trail refuses TRUNCATE, so its trigger is off for the moment.
CREATE FUNCTION bench.reset() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    tables text[];
    t record;
BEGIN
    -- the queue, its history and whatever hangs off them (ledger, alerts)
    SELECT array_agg(c.oid::regclass::text) INTO tables
      FROM pg_class c
     WHERE c.relnamespace = 'delq'::regnamespace AND c.relkind = 'r'
       AND c.relname IN ('event', 'delivery', 'pending', 'finished', 'request_key',
                         'destination_state', 'route', 'destination', 'ledger_head',
                         'ledger_checkpoint', 'ledger_checkpoint_head', 'deadline_alert');
    -- all locks at once or none, retried: waiting for them one by one
    -- while the worker holds some and wants others would be a deadlock
    FOR i IN 1 .. 6000 LOOP
        BEGIN
            EXECUTE 'LOCK TABLE ' || array_to_string(tables, ', ') || ' IN ACCESS EXCLUSIVE MODE NOWAIT';
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            IF i = 6000 THEN
                RAISE;	-- a minute: better an error than a deadlock with the worker
            END IF;
            PERFORM pg_sleep(0.01);
        END;
    END LOOP;
    CREATE TEMP TABLE IF NOT EXISTS bench_trig (rel regclass, name name, mode "char");
    DELETE FROM bench_trig;
    INSERT INTO bench_trig
    SELECT tg.tgrelid, tg.tgname, tg.tgenabled FROM pg_trigger tg
     WHERE tg.tgrelid = ANY (tables::regclass[]) AND NOT tg.tgisinternal
       AND tg.tgtype & 32 <> 0;	-- TRUNCATE triggers
    FOR t IN SELECT * FROM bench_trig LOOP
        EXECUTE format('ALTER TABLE %s DISABLE TRIGGER %I', t.rel, t.name);
    END LOOP;
    EXECUTE 'TRUNCATE ' || array_to_string(tables, ', ') || ' RESTART IDENTITY CASCADE';
    FOR t IN SELECT * FROM bench_trig LOOP
        EXECUTE format('ALTER TABLE %s ENABLE %s TRIGGER %I', t.rel,
                       CASE t.mode WHEN 'A' THEN 'ALWAYS' WHEN 'R' THEN 'REPLICA' ELSE '' END, t.name);
    END LOOP;
    TRUNCATE bench.wire, bench.plain;
END
$$;

-- k destinations named <prefix>01.., each with a route that matches
-- everything, a signing secret, and the given concurrency.
CREATE FUNCTION bench.destinations(k integer, prefix text, url text, concurrency integer,
                                   enabled boolean DEFAULT true) RETURNS void
LANGUAGE sql AS $$
    SELECT delq.add_destination(prefix || lpad(i::text, 2, '0'), url,
                                secret => 'whsec_' || encode(sha256(i::text::bytea), 'base64'),
                                concurrency => concurrency, enabled => enabled),
           delq.add_route(prefix || lpad(i::text, 2, '0'))
      FROM generate_series(1, k) i;
$$;

-- n forwarding requests, one queued delivery to each destination in dests;
-- a share not_due of the deliveries falls due only tomorrow.  The worker
-- is woken when the calling transaction commits.
CREATE FUNCTION bench.fill(n integer, dests text[], not_due double precision DEFAULT 0,
                           tag text DEFAULT 'fill') RETURNS bigint
LANGUAGE sql AS $$
    WITH r AS (
        INSERT INTO delq.pending (id, source, external_id, subject, reason, attributes,
                                  status, due_at)
        SELECT gen_random_uuid(), 'bench', tag || '-' || g, 'user-' || g || '@example.com',
               'gdpr-art17', jsonb_build_object('tenant', 't' || g % 10, 'run', tag),
               'forwarding', now() + interval '30 days' + g * interval '1 ms'
          FROM generate_series(1, n) g
        RETURNING id, due_at
    ), d AS (
        INSERT INTO delq.delivery (request_id, destination, due_at, webhook_id, next_attempt_at)
        SELECT r.id, dest, r.due_at, 'msg_' || replace(gen_random_uuid()::text, '-', ''),
               CASE WHEN random() < not_due THEN now() + interval '1 day' ELSE now() END
          FROM r, unnest(dests) dest
        RETURNING 1
    )
    SELECT count(*) FROM d, (SELECT delq._wake_on_commit()) w;
$$;

-- nginx's access log under /log/: when each webhook-id reached the sink.
CREATE TABLE bench.wire (msec numeric, webhook_id text, status integer,
                         conn bigint, conn_requests bigint);

-- The plain INSERT that submit() is compared with: the same row shape,
-- defaults, constraints and indexes as delq.pending.
CREATE TABLE bench.plain (LIKE delq.pending INCLUDING ALL);

-- Latency of the requests tagged tag, in ms: submitted_at to the sink's
-- log ($msec) and to the 'confirmed' event.
CREATE FUNCTION bench.latency(tag text)
RETURNS TABLE (n bigint, wire_p50 numeric, wire_p99 numeric, wire_max numeric,
               conf_n bigint, conf_p50 numeric, conf_p99 numeric, conf_max numeric)
LANGUAGE sql AS $$
    WITH req AS (
        SELECT p.id, p.submitted_at FROM delq.pending p WHERE p.attributes ->> 'run' = tag
    ), wire AS (
        SELECT (w.msec - extract(epoch FROM r.submitted_at)) * 1000 AS ms
          FROM req r JOIN delq.delivery d ON d.request_id = r.id
          JOIN bench.wire w ON w.webhook_id = d.webhook_id
    ), conf AS (
        SELECT extract(epoch FROM e.at - r.submitted_at) * 1000 AS ms
          FROM req r JOIN delq.event e ON e.request_id = r.id AND e.kind = 'confirmed'
    )
    SELECT (SELECT count(*) FROM wire),
           (SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1) FROM wire),
           (SELECT round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1) FROM wire),
           (SELECT round(max(ms)::numeric, 1) FROM wire),
           (SELECT count(*) FROM conf),
           (SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1) FROM conf),
           (SELECT round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1) FROM conf),
           (SELECT round(max(ms)::numeric, 1) FROM conf);
$$;
