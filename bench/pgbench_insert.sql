-- pgbench: the plain INSERT that delq.submit() is compared with, the same
-- row (values, defaults, indexes) into a copy of delq.pending.
\set n random(1, 1000000000)
INSERT INTO bench.plain (id, source, external_id, subject, reason, attributes, status, due_at)
VALUES (gen_random_uuid(), 'bench', 'ext-' || gen_random_uuid(), 'user-' || :n || '@example.com',
        'gdpr-art17', jsonb_build_object('tenant', 't' || (:n % 10), 'run', current_setting('bench.run')),
        'forwarding', now() + interval '30 days');
