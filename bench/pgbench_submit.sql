-- pgbench: one delq.submit() per transaction, tagged with the run name
-- (PGOPTIONS='-c bench.run=...') so that latencies can be found again.
\set n random(1, 1000000000)
SELECT delq.submit('user-' || :n || '@example.com', 'bench', 'gdpr-art17',
                   jsonb_build_object('tenant', 't' || (:n % 10), 'run', current_setting('bench.run')),
                   'ext-' || gen_random_uuid());
