--
-- security_requests: what submitters and operators can no longer do
-- to other applications' requests or to the permanent record (issue 9,
-- medium and low findings).  docs/security.md.
--
\set SHOW_CONTEXT never
\set VERBOSITY terse
\i sql/include/setup.sql

CREATE ROLE sec62_shop LOGIN IN ROLE delq_submitter;
CREATE ROLE sec62_crm LOGIN IN ROLE delq_submitter;
CREATE ROLE sec62_admin LOGIN IN ROLE delq_admin;
CREATE ROLE sec62_crm_team;
GRANT sec62_crm_team TO sec62_crm;
CREATE ROLE sec62_plain IN ROLE delq_submitter;
GRANT sec62_plain TO sec62_crm;
GRANT USAGE ON SCHEMA regress TO sec62_shop, sec62_crm, sec62_admin, sec62_plain;

--
-- Sources bound to roles.  With no binding (a single application) any
-- submitter may use any source.
--
SELECT count(*) AS bindings FROM delq.source_grant;
SET SESSION AUTHORIZATION sec62_shop;
SELECT delq.submit('first.sec62@example.com', 'crm62', external_id => 'K-0') IS NOT NULL AS open_by_default;
RESET SESSION AUTHORIZATION;

-- Only admins bind; the role must exist.
SET SESSION AUTHORIZATION sec62_shop;
SELECT regress.sqlstate($$SELECT delq.grant_source('crm62', 'sec62_shop')$$) AS submitter_binds;
SET SESSION AUTHORIZATION sec62_admin;
SELECT regress.sqlstate($$SELECT delq.grant_source('crm62', 'no_such_role')$$) AS unknown_role;
SELECT regress.sqlstate($$SELECT delq.grant_source('Not A Source', 'sec62_crm')$$) AS bad_source;
SELECT delq.grant_source('crm62', 'sec62_crm_team');
SELECT delq.grant_source('crm62', 'sec62_crm_team');   -- again: nothing new
RESET SESSION AUTHORIZATION;
SELECT source, role FROM delq.source_grant ORDER BY 1, 2;

-- Once a binding exists it is enforced, for every source: the shop may
-- neither use the crm's source nor an unbound one, and cannot learn the
-- id behind one of the crm's keys; the crm team (through membership) may.
SET SESSION AUTHORIZATION sec62_shop;
SELECT regress.sqlstate($$SELECT delq.submit('x.sec62@example.com', 'crm62', external_id => 'K-1')$$) AS other_source;
SELECT regress.sqlstate($$SELECT delq.submit('x.sec62@example.com', 'crm62', external_id => 'K-0')$$) AS replay_other_source;
SELECT regress.sqlstate($$SELECT delq.submit('x.sec62@example.com', 'unbound62')$$) AS unbound_source;
SET SESSION AUTHORIZATION sec62_crm;
SELECT delq.submit('y.sec62@example.com', 'crm62', external_id => 'K-1') IS NOT NULL AS crm_submits;
-- SET ROLE to a role without the binding: refused, although the login has it
SET ROLE sec62_plain;
SELECT regress.sqlstate($$SELECT delq.submit('y.sec62@example.com', 'crm62', external_id => 'K-2')$$) AS set_role_without_binding;
RESET ROLE;
RESET SESSION AUTHORIZATION;

-- Taking every binding back opens all sources again.
SET SESSION AUTHORIZATION sec62_admin;
SELECT regress.sqlstate($$SELECT delq.revoke_source('crm62', 'sec62_shop')$$) AS not_bound;
SELECT delq.revoke_source('crm62', 'sec62_crm_team');
RESET SESSION AUTHORIZATION;
SELECT kind, detail FROM delq.event WHERE kind LIKE 'source\_%' ORDER BY id;
SET SESSION AUTHORIZATION sec62_shop;
SELECT delq.submit('z.sec62@example.com', 'unbound62') IS NOT NULL AS open_again;
RESET SESSION AUTHORIZATION;

--
-- A replayed (source, external_id) for another subject is refused, also
-- once the first request is archived and its subject redacted; the same
-- subject gets the first id.
--
SELECT delq.submit('Rita.sec62@example.com', 'replay62', external_id => 'R-1') AS r1 \gset
SELECT delq.submit('Rita.sec62@example.com', 'replay62', external_id => 'R-1') = :'r1' AS same_subject_same_id;
SELECT regress.sqlstate($$SELECT delq.submit('mallory.sec62@example.com', 'replay62', external_id => 'R-1')$$) AS other_subject;
UPDATE delq.pending SET status = 'completed', completed_at = now() WHERE id = :'r1';
SELECT delq.archive() > 0 AS archived;
SELECT delq.redact('0') > 0 AS redacted;
SELECT delq.submit('Rita.sec62@example.com', 'replay62', external_id => 'R-1') = :'r1' AS same_id_after_redaction;
SELECT regress.sqlstate($$SELECT delq.submit('mallory.sec62@example.com', 'replay62', external_id => 'R-1')$$) AS other_after_redaction;

--
-- No attribute keys in the permanent trail: a request without a route
-- records how many attributes it had.
--
SELECT delq.submit('k.sec62@example.com', 'noroute62', attributes => '{"Jane Doe +1 555 0100": 1, "b": 2}') AS nr \gset
SELECT kind, detail FROM delq.event WHERE request_id = :'nr' AND kind = 'no_route';

--
-- Attributes nest 32 levels deep at most.
--
SELECT regress.snapshot();
SELECT regress.bad(format($$SELECT delq.submit('d.sec62@example.com', 'depth62', attributes => %L)$$,
                          '{"a":' || repeat('[', 32) || repeat(']', 32) || '}')) AS depth_33;
SELECT regress.bad(format($$SELECT delq.submit('d.sec62@example.com', 'depth62', attributes => %L)$$,
                          '{"a":' || repeat('[', 5000) || repeat(']', 5000) || '}')) AS depth_5001;
SELECT delq.submit('d.sec62@example.com', 'depth62',
                   attributes => ('{"a":' || repeat('[', 31) || repeat(']', 31) || '}')::jsonb) IS NOT NULL AS depth_32;

--
-- Scrubbing ignores letter case: an upper-cased copy of the subject in a
-- rejection reason is replaced in the event, and a receipt of a pending
-- request shows no reason with the subject in it.
--
SELECT delq.submit('Case.Sec62@Example.com', 'case62', 'asked by case.sec62@example.com') AS c1 \gset
SELECT delq.reject(:'c1', 'duplicate of CASE.SEC62@EXAMPLE.COM');
SELECT detail FROM delq.event WHERE request_id = :'c1' AND kind = 'rejected';
SELECT r->'request'->>'reason' AS reason, r->'request'->>'rejection_reason' AS rejection_reason
  FROM delq.receipt(:'c1') r;
SELECT delq.submit('pend.sec62@example.com', 'case62', 'asked by PEND.sec62@example.com') AS c2 \gset
SELECT delq.receipt(:'c2')->'request'->>'reason' AS pending_reason;

--
-- extend(): at most two calendar months after the deadline.  From 31
-- December, '1 month 30 days' would reach March.
--
SELECT make_timestamptz(extract(year FROM now() + interval '1 day')::int, 12, 31, 12, 0, 0, 'UTC') AS dec31 \gset
SELECT delq.submit('e.sec62@example.com', 'extend62', due_at => :'dec31') AS e1 \gset
SELECT regress.snapshot();
-- (the message names the dates, which depend on the year)
SELECT regress.bad(format($$SELECT delq.extend(%L, '1 month 30 days', 'complex')$$, :'e1'))
       ~ '^22023: by would move the deadline more than two calendar months .* nothing written$' AS past_two_months_refused;
SELECT delq.extend(:'e1', '2 months', 'complex') = :'dec31'::timestamptz + interval '2 months' AS two_months;

--
-- Error messages do not carry line breaks that a caller wrote.
--
SELECT regress.sqlstate(E'SELECT delq.add_destination(''crlf62'', ''https://h.example/x\r\nX-Injected: 1'')') AS crlf_url;

--
-- TLS files only inside delq.tls_dir (test/regress.conf: /etc/delq).
--
SELECT regress.snapshot();
SELECT regress.bad($$SELECT delq.add_destination('tls62', 'https://h.example/', ca_file => '/var/lib/postgresql/server.key')$$) AS outside;
SELECT regress.bad($$SELECT delq.add_destination('tls62', 'https://h.example/', client_key => '/etc/delq/../ssl/private/server.key')$$) AS dot_dot;
SELECT regress.bad($$SELECT delq.add_destination('tls62', 'https://h.example/', client_cert => '/etc/delqx/c.pem', client_key => '/etc/delqx/c.key')$$) AS prefix_only;
SELECT regress.sqlstate($$SELECT delq.add_destination('tls62', 'https://h.example/', ca_file => '/etc/delq/ca.pem')$$) AS inside;
SELECT delq.drop_destination('tls62');

REVOKE USAGE ON SCHEMA regress FROM sec62_shop, sec62_crm, sec62_admin, sec62_plain;
DROP ROLE sec62_shop, sec62_crm, sec62_admin, sec62_crm_team, sec62_plain;
