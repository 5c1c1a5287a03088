-- Views for operators (and, for delq.requests, submitters).  None of them
-- shows a subject or a destination's secrets.

-- One row per request, pending and finished together, with the state of
-- each of its deliveries.
CREATE OR REPLACE VIEW delq.requests AS
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
GRANT SELECT ON delq.requests TO delq_submitter;

-- Requests past their deadline that are not completed or rejected.
CREATE OR REPLACE VIEW delq.overdue AS
SELECT p.id, p.source, p.external_id, p.status, p.submitted_at, p.due_at,
       now() - p.due_at AS overdue_by,
       coalesce((SELECT jsonb_object_agg(dl.destination, dl.state ORDER BY dl.destination)
                   FROM delq.delivery dl WHERE dl.request_id = p.id), '{}') AS deliveries
  FROM delq.pending p
 WHERE p.status IN ('held', 'forwarding', 'failed')
   AND p.due_at < now();
GRANT SELECT ON delq.overdue TO delq_operator;

-- What an operator must act on: failed requests (no route, or a delivery
-- failed permanently) and each failed delivery.
CREATE OR REPLACE VIEW delq.needs_attention AS
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
GRANT SELECT ON delq.needs_attention TO delq_operator;

-- Destinations without their secrets: header names only, whether signed.
CREATE OR REPLACE VIEW delq.destinations AS
SELECT d.name, d.url, d.enabled, d.confirm,
       ARRAY(SELECT jsonb_object_keys(d.headers) ORDER BY 1) AS header_names,
       d.secret IS NOT NULL AS signed,
       d.timeout_ms, d.connect_timeout_ms, d.max_attempts, d.concurrency,
       d.retry_base_ms, d.retry_max_ms, d.ca_file, d.client_cert,
       d.created_at, d.updated_at,
       -- 1.1, last so that CREATE OR REPLACE VIEW adds them over 1.0's:
       -- the kind; a SQL destination's function and role; a pull
       -- destination's consumer role and lease
       d.kind, d.sql_function, d.run_as, d.consumer, d.lease_ms,
       -- templated (kind 'http') destinations: their steps and the names
       -- of their credentials
       ARRAY(SELECT k FROM unnest(ARRAY['lookup', 'erase', 'poll']) k WHERE d.request ? k) AS steps,
       ARRAY(SELECT jsonb_object_keys(coalesce(d.credentials, '{}')) ORDER BY 1) AS credential_names
  FROM delq.destination d;
GRANT SELECT ON delq.destinations TO delq_operator;
