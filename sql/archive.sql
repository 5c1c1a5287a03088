--
-- archive: delq.archive() moves completed and rejected requests, with
-- a summary of their deliveries, to delq.finished.
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

SELECT delq.add_destination('t06_a', 'https://a.t06.example/erase');
SELECT delq.add_destination('t06_b', 'https://b.t06.example/erase', confirm => 'callback');
SELECT delq.add_route('t06_a', '{"source": "t06"}') AS route_a \gset
SELECT delq.add_route('t06_b', '{"source": "t06"}') AS route_b \gset

-- completed: t06_a answered 200 on the first attempt, t06_b confirmed by
-- callback
SELECT delq.submit('ann.t06@example.com', 't06', 'gdpr', '{"plan": "pro"}', 'T06-1') AS done \gset
SELECT webhook_id AS wh_a FROM delq.delivery WHERE request_id = :'done' AND destination = 't06_a' \gset
SELECT webhook_id AS wh_b FROM delq.delivery WHERE request_id = :'done' AND destination = 't06_b' \gset
UPDATE delq.delivery SET attempts = 1, last_status = 200, first_attempt_at = now(),
                         last_attempt_at = now()
 WHERE request_id = :'done' AND destination = 't06_a';
SELECT delq.confirm(:'done', 't06_a'), delq.confirm(:'done', 't06_b');
-- rejected
SELECT delq.submit('bob.t06@example.com', 't06', external_id => 'T06-2') AS rej \gset
SELECT delq.reject(:'rej', 'duplicate of T06-1');
-- failed (no route), forwarding, held: these stay pending
SELECT delq.submit('cy.t06@example.com', 't06none') AS failed \gset
SELECT delq.submit('dee.t06@example.com', 't06') AS fwd \gset
SET delq.require_approval = on;
SELECT delq.submit('eve.t06@example.com', 't06') AS held \gset
RESET delq.require_approval;

CREATE TEMP TABLE t06 (label text, id uuid);
INSERT INTO t06 VALUES ('done', :'done'), ('rej', :'rej'), ('failed', :'failed'),
                       ('fwd', :'fwd'), ('held', :'held');
SELECT t.label, p.status FROM t06 t JOIN delq.pending p USING (id) ORDER BY t.label;

-- older_than: nothing finished an hour ago.
SELECT delq.archive('1 hour') AS archived;
-- Pretend 'done' completed two days ago (superuser, for the test only).
UPDATE delq.pending SET completed_at = completed_at - interval '2 days' WHERE id = :'done';
SELECT delq.archive('1 day') AS archived;
SELECT t.label, 'pending' AS in_table FROM t06 t JOIN delq.pending p USING (id)
UNION ALL
SELECT t.label, 'finished' FROM t06 t JOIN delq.finished f USING (id)
ORDER BY 1;

-- What the archive keeps: the request, and per destination what it
-- answered and when.
SELECT source, external_id, subject, reason, attributes, status, rejected, rejection_reason,
       completed_at IS NOT NULL AS has_completed_at, failure_reason,
       due_at > submitted_at AS due_after_submitted, finished_at IS NOT NULL AS has_finished_at,
       jsonb_array_length(deliveries) AS deliveries
  FROM delq.finished WHERE id = :'done';
SELECT e ->> 'destination' AS destination, e ->> 'state' AS state,
       (e ->> 'attempts')::int AS attempts, (e ->> 'last_status')::int AS last_status,
       e ->> 'last_error' AS last_error,
       (e ->> 'first_attempt_at')::timestamptz IS NOT NULL AS has_first_attempt_at,
       (e ->> 'last_attempt_at')::timestamptz IS NOT NULL AS has_last_attempt_at,
       (e ->> 'confirmed_at')::timestamptz IS NOT NULL AS has_confirmed_at,
       e ->> 'webhook_id' = CASE e ->> 'destination' WHEN 't06_a' THEN :'wh_a' ELSE :'wh_b' END
           AS same_webhook_id
  FROM delq.finished f, jsonb_array_elements(f.deliveries) e
 WHERE f.id = :'done'
 ORDER BY 1;
SELECT array_agg(k ORDER BY k) AS summary_keys
  FROM delq.finished f, jsonb_object_keys(f.deliveries -> 0) k WHERE f.id = :'done';
-- its delivery rows are gone, its events stay
SELECT (SELECT count(*) FROM delq.delivery WHERE request_id = :'done') AS deliveries,
       (SELECT count(*) FROM delq.event WHERE request_id = :'done') > 0 AS has_events;
SELECT kind, detail FROM delq.event WHERE request_id = :'done' AND kind = 'archived';

-- archive() with the default '0' takes every completed or rejected request.
SELECT count(*) AS finishable FROM delq.pending WHERE status IN ('completed', 'rejected') \gset
SELECT delq.archive() = :finishable AS archived_all_finishable;
SELECT count(*) AS left_finishable FROM delq.pending WHERE status IN ('completed', 'rejected');
SELECT delq.archive() AS archived;
SELECT t.label, coalesce(p.status, f.status) AS status,
       CASE WHEN p.id IS NOT NULL THEN 'pending' ELSE 'finished' END AS in_table
  FROM t06 t LEFT JOIN delq.pending p USING (id) LEFT JOIN delq.finished f USING (id)
 ORDER BY t.label;
SELECT status, rejected, rejection_reason, rejected_at IS NOT NULL AS has_rejected_at, completed_at,
       (SELECT array_agg(e ->> 'destination' || ':' || (e ->> 'state') ORDER BY e ->> 'destination')
          FROM jsonb_array_elements(deliveries) e) AS deliveries
  FROM delq.finished WHERE id = :'rej';
SELECT kind, detail FROM delq.event WHERE request_id = :'rej' AND kind = 'archived';
-- The finished table holds only completed and rejected requests, every one
-- with its delivery rows gone.
SELECT status, count(*) > 0 AS some FROM delq.finished GROUP BY status ORDER BY status;
SELECT count(*) AS orphan_deliveries FROM delq.delivery d
 WHERE NOT EXISTS (SELECT 1 FROM delq.pending p WHERE p.id = d.request_id);

-- Idempotency holds after archiving: the same (source, external_id)
-- returns the archived request and creates nothing.
SELECT regress.snapshot();
SELECT delq.submit('ann.t06@example.com', 't06', external_id => 'T06-1') = :'done' AS same_id;
SELECT delq.submit('ann.t06@example.com', 't06', 'ccpa', '{}', 'T06-1') = :'done' AS same_id;
SELECT regress.bad($$SELECT delq.submit('another.t06@example.com', 't06', 'ccpa', '{}', 'T06-1')$$);
SELECT delq.submit('bob.t06@example.com', 't06', external_id => 'T06-2') = :'rej' AS same_id;
SELECT regress.unchanged();
SELECT count(*) AS pending_with_key FROM delq.pending WHERE source = 't06' AND external_id IN ('T06-1', 'T06-2');

-- Archived requests are final.
SELECT regress.bad(format('SELECT delq.approve(%L)', :'done'));
SELECT regress.bad(format('SELECT delq.reject(%L, %L)', :'done', 'late'));
SELECT regress.bad(format('SELECT delq.retry(%L)', :'done'));
SELECT regress.bad(format('SELECT delq.confirm(%L, %L)', :'done', 't06_a'));
SELECT regress.bad(format('SELECT delq.reject(%L, %L)', :'rej', 'again'));

SELECT count(*) AS routes FROM (SELECT delq.drop_route(id) FROM delq.route WHERE destination LIKE 't06\_%') d;
