--
-- privacy_redact: minimisation of the deletion record.  delq.redact()
-- replaces the subject of requests finished longer ago than
-- delq.subject_retention by a keyed hash (and the attributes listed in
-- delq.redact_attributes); delq.was_erased() still answers from the hash;
-- delq.guard() warns about or refuses an erased subject in an application
-- table.
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

LOAD 'delq';
SHOW delq.subject_retention;
SHOW delq.redact_attributes;

SELECT delq.add_destination('p53_a', 'https://a.p53.example/erase');
SELECT delq.add_route('p53_a', '{"source": "p53"}') IS NOT NULL AS routed;

CREATE TEMP TABLE p53 (label text PRIMARY KEY, id uuid NOT NULL);
INSERT INTO p53 VALUES
    ('old', delq.submit('ann.p53@example.com', 'p53', 'asked for by ann.p53@example.com in a mail',
                        '{"customer": "c-53", "phone": 5553, "plan": "pro"}')),
    ('rejected', delq.submit('bob.p53@example.com', 'p53', attributes => '{"customer": "c-54"}')),
    ('recent', delq.submit('cy.p53@example.com', 'p53')),
    ('open', delq.submit('dee.p53@example.com', 'p53')),
    ('unarchived', delq.submit('eve.p53@example.com', 'p53'));
SELECT delq.confirm((SELECT id FROM p53 WHERE label = 'old'), 'p53_a');
SELECT delq.reject((SELECT id FROM p53 WHERE label = 'rejected'), 'bob.p53@example.com is not a customer');
SELECT delq.confirm((SELECT id FROM p53 WHERE label = 'recent'), 'p53_a');
SELECT delq.archive() > 0 AS archived;
SELECT delq.confirm((SELECT id FROM p53 WHERE label = 'unarchived'), 'p53_a');
-- Time travel for the test: 'old' and 'rejected' finished 40 days ago.
UPDATE delq.finished SET completed_at = completed_at - interval '40 days',
                         rejected_at = rejected_at - interval '40 days'
 WHERE id IN (SELECT id FROM p53 WHERE label IN ('old', 'rejected'));

SELECT t.label, coalesce(p.status, f.status) AS status, f.id IS NOT NULL AS archived
  FROM p53 t LEFT JOIN delq.pending p USING (id) LEFT JOIN delq.finished f USING (id)
 ORDER BY t.label;

-- Before: every request is found by its subject.
SELECT t.label, delq.was_erased(s.subject) AS erased
  FROM p53 t JOIN (SELECT id, subject FROM delq.pending UNION ALL
                   SELECT id, subject FROM delq.finished) s USING (id)
 ORDER BY t.label;

--
-- redact(): by default, what finished longer ago than 30 days.
--
SET delq.redact_attributes = 'customer, phone ,missing';
SELECT delq.redact() AS redacted;
SELECT delq.redact() AS redacted_again;
SELECT t.label, f.subject ~ '^hmac:[0-9a-f]{64}$' AS subject_hashed,
       f.subject = delq._subject_hash(CASE t.label WHEN 'old' THEN 'ann.p53@example.com'
                                                   WHEN 'rejected' THEN 'bob.p53@example.com'
                                                   ELSE 'cy.p53@example.com' END) AS hash_of_the_subject,
       f.redacted_at IS NOT NULL AS redacted
  FROM p53 t JOIN delq.finished f USING (id) ORDER BY t.label;
-- the listed attributes too (a number is hashed as its JSON text); copies
-- of the subject in the reasons are scrubbed
SELECT f.attributes ->> 'plan' AS plan,
       f.attributes ->> 'customer' = delq._subject_hash('c-53') AS customer_hashed,
       f.attributes ->> 'phone' = delq._subject_hash('5553') AS phone_hashed,
       f.reason
  FROM delq.finished f WHERE f.id = (SELECT id FROM p53 WHERE label = 'old');
SELECT f.rejection_reason, f.attributes ->> 'customer' = delq._subject_hash('c-54') AS customer_hashed
  FROM delq.finished f WHERE f.id = (SELECT id FROM p53 WHERE label = 'rejected');
-- what was done is an event, without the subject
SELECT t.label, e.kind, e.detail FROM delq.event e JOIN p53 t ON t.id = e.request_id
 WHERE e.kind = 'redacted' ORDER BY t.label;
-- older_than overrides the setting
UPDATE delq.finished SET completed_at = completed_at - interval '15 days'
 WHERE id = (SELECT id FROM p53 WHERE label = 'recent');
SELECT delq.redact('20 days') AS redacted_20_days;
SELECT delq.redact('10 days') AS redacted_10_days;
SELECT t.label, f.redacted_at IS NOT NULL AS redacted
  FROM p53 t JOIN delq.finished f USING (id) ORDER BY t.label;
-- the setting, too
SET delq.subject_retention = '1000d';
SELECT delq.redact() AS redacted;
RESET delq.subject_retention;
SELECT regress.snapshot();
SELECT regress.bad($$SELECT delq.redact('-1 day')$$);

--
-- was_erased(): completed requests, redacted or not, archived or not.
--
SELECT t.label, t.subject, delq.was_erased(t.subject) AS erased
  FROM (VALUES ('old (redacted)', 'ann.p53@example.com'),
               ('rejected (redacted)', 'bob.p53@example.com'),
               ('recent (redacted)', 'cy.p53@example.com'),
               ('open', 'dee.p53@example.com'),
               ('unarchived', 'eve.p53@example.com'),
               ('never asked', 'zed.p53@example.com'),
               ('other case', 'ANN.p53@example.com')) AS t(label, subject)
 ORDER BY t.label;
SELECT delq.was_erased('ann.p53@example.com', 'p53') AS from_p53,
       delq.was_erased('ann.p53@example.com', 'other') AS from_other;
-- a keyed hash is not a subject: it does not match itself
SELECT delq.was_erased(delq._subject_hash('ann.p53@example.com')) AS hash_as_subject;
SELECT regress.bad($$SELECT delq.was_erased(NULL)$$);
SELECT regress.bad($$SELECT delq.was_erased('x', 'Not A Source')$$);

--
-- guard(): an application table that must not get erased people back.
--
CREATE SCHEMA p53_app;
CREATE TABLE p53_app.users (id serial PRIMARY KEY, email text, name text);
CREATE TABLE p53_app.leads (id serial PRIMARY KEY, email text);
CREATE TRIGGER users_delq_guard BEFORE INSERT OR UPDATE ON p53_app.users
    FOR EACH ROW EXECUTE FUNCTION delq.guard('email', 'refuse');
CREATE TRIGGER leads_delq_guard BEFORE INSERT OR UPDATE ON p53_app.leads
    FOR EACH ROW EXECUTE FUNCTION delq.guard('email', 'warn');
-- the application's own role needs no delq privilege
CREATE ROLE p53_app_role;
GRANT USAGE ON SCHEMA p53_app TO p53_app_role;
GRANT ALL ON ALL TABLES IN SCHEMA p53_app TO p53_app_role;
GRANT ALL ON ALL SEQUENCES IN SCHEMA p53_app TO p53_app_role;

-- Error fields of a statement: SQLSTATE, constraint, table, column, message.
CREATE FUNCTION pg_temp.guarded(sql text)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    st text;
    con text;
    tab text;
    col text;
    msg text;
    hint text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, con = CONSTRAINT_NAME, tab = TABLE_NAME,
                            col = COLUMN_NAME, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN concat_ws(' | ', st, con, tab, col, msg, CASE WHEN hint IS NULL THEN 'no hint' END);
END
$$;

SET ROLE p53_app_role;
SELECT pg_temp.guarded($$INSERT INTO p53_app.users (email, name) VALUES ('zed.p53@example.com', 'Zed')$$) AS new_person;
SELECT pg_temp.guarded($$INSERT INTO p53_app.users (email, name) VALUES ('ann.p53@example.com', 'Ann')$$) AS erased_redacted;
SELECT pg_temp.guarded($$INSERT INTO p53_app.users (email, name) VALUES ('eve.p53@example.com', 'Eve')$$) AS erased_unarchived;
SELECT pg_temp.guarded($$INSERT INTO p53_app.users (email, name) VALUES ('dee.p53@example.com', 'Dee')$$) AS not_yet_erased;
SELECT pg_temp.guarded($$INSERT INTO p53_app.users (email, name) VALUES (NULL, 'Nobody')$$) AS no_email;
-- updates: changing the column to an erased subject is refused; other columns are not checked
SELECT pg_temp.guarded($$UPDATE p53_app.users SET email = 'cy.p53@example.com' WHERE name = 'Zed'$$) AS to_erased;
SELECT pg_temp.guarded($$UPDATE p53_app.users SET name = 'Zed Z.' WHERE name = 'Zed'$$) AS other_column;
-- warn: the row goes in, with a warning that does not name the subject
INSERT INTO p53_app.leads (email) VALUES ('ann.p53@example.com');
RESET ROLE;
SELECT email, name FROM p53_app.users ORDER BY id;
SELECT count(*) AS leads FROM p53_app.leads;

-- Attached wrongly.
CREATE TABLE p53_app.wrong (id int, mail text);
CREATE TRIGGER w1 BEFORE INSERT ON p53_app.wrong FOR EACH ROW EXECUTE FUNCTION delq.guard('email');
SELECT pg_temp.guarded($$INSERT INTO p53_app.wrong VALUES (1, 'x')$$) AS no_such_column;
DROP TRIGGER w1 ON p53_app.wrong;
CREATE TRIGGER w2 BEFORE INSERT ON p53_app.wrong FOR EACH ROW EXECUTE FUNCTION delq.guard('mail', 'block');
SELECT pg_temp.guarded($$INSERT INTO p53_app.wrong VALUES (1, 'x')$$) AS bad_mode;
DROP TRIGGER w2 ON p53_app.wrong;
CREATE TRIGGER w3 AFTER INSERT ON p53_app.wrong FOR EACH ROW EXECUTE FUNCTION delq.guard('mail');
SELECT pg_temp.guarded($$INSERT INTO p53_app.wrong VALUES (1, 'x')$$) AS after_trigger;
DROP TRIGGER w3 ON p53_app.wrong;
CREATE TRIGGER w4 BEFORE INSERT ON p53_app.wrong FOR EACH STATEMENT EXECUTE FUNCTION delq.guard('mail');
SELECT pg_temp.guarded($$INSERT INTO p53_app.wrong VALUES (1, 'x')$$) AS statement_trigger;
DROP TRIGGER w4 ON p53_app.wrong;
-- a source: only that source's requests count
CREATE TRIGGER w5 BEFORE INSERT ON p53_app.wrong FOR EACH ROW EXECUTE FUNCTION delq.guard('mail', 'refuse', 'other');
SELECT pg_temp.guarded($$INSERT INTO p53_app.wrong VALUES (1, 'ann.p53@example.com')$$) AS other_source;
DROP TRIGGER w5 ON p53_app.wrong;

DROP SCHEMA p53_app CASCADE;
DROP ROLE p53_app_role;

-- Nothing of this file put a subject into an event.
SELECT count(*) AS events_with_a_subject FROM delq.event e
 WHERE e.request_id IN (SELECT id FROM p53) AND e.detail::text LIKE '%p53@example.com%';
SELECT count(*) AS problems FROM delq.verify_ledger();
