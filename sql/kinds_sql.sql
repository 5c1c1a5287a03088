--
-- kinds_sql: SQL destinations, run by delq.dispatch_pass() (the worker runs
-- the same code, src/sqldest.c: test/t/025_sql_destination.pl).  The
-- function erases from several application tables as run_as, in the
-- transaction that records the outcome; its result can say "not held";
-- errors are retried or fail by SQLSTATE; the timeout cancels it; run_as
-- is checked when added and before every call; the function cannot leave
-- run_as's privileges, reach delq, or change the session's settings.
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

-- Only this file's destinations are sent in this file: dispatch_pass() would
-- otherwise also try the example URLs of the files before.
CREATE TEMP TABLE t43_paused AS
SELECT name FROM delq.destination WHERE enabled AND name NOT LIKE 't43%';
UPDATE delq.destination SET enabled = false WHERE name IN (SELECT name FROM t43_paused);

-- The application: two tables with personal data, and what it erased.
CREATE SCHEMA app43;
CREATE TABLE app43.customer (email text PRIMARY KEY, name text NOT NULL);
CREATE TABLE app43.orders (email text NOT NULL, item text NOT NULL);
CREATE TABLE app43.calls (mode text, run_by text, search_path text, at timestamptz DEFAULT clock_timestamp());
INSERT INTO app43.customer VALUES ('ann.t43@example.com', 'Ann'), ('bob.t43@example.com', 'Bob');
INSERT INTO app43.orders VALUES ('ann.t43@example.com', 'book'), ('ann.t43@example.com', 'lamp'),
                                ('bob.t43@example.com', 'pen');

CREATE ROLE k43_eraser NOLOGIN;
GRANT USAGE ON SCHEMA app43 TO k43_eraser;
GRANT SELECT, DELETE ON app43.customer, app43.orders TO k43_eraser;
GRANT INSERT ON app43.calls TO k43_eraser;

-- The erasure: every row of the subject, in both tables; returns how many
-- (0: not held).  attributes.mode makes it misbehave, for the test.
CREATE FUNCTION app43.erase(request jsonb) RETURNS bigint
LANGUAGE plpgsql
SET search_path = app43, pg_temp
AS $$
DECLARE
    who text := request ->> 'subject';
    mode text := coalesce(request -> 'attributes' ->> 'mode', 'ok');
    n bigint;
    m bigint;
BEGIN
    INSERT INTO calls (mode, run_by, search_path) VALUES (mode, current_user, current_setting('search_path'));
    DELETE FROM orders WHERE email = who;
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM customer WHERE email = who;
    GET DIAGNOSTICS m = ROW_COUNT;
    CASE mode
    WHEN 'serialization' THEN
        RAISE EXCEPTION 'could not serialize access for %', who USING ERRCODE = 'serialization_failure';
    WHEN 'broken' THEN
        RAISE EXCEPTION 'customer % is on legal hold', who USING ERRCODE = 'check_violation';
    WHEN 'slow' THEN
        PERFORM pg_sleep(5);
    WHEN 'setrole' THEN
        SET ROLE NONE;
    WHEN 'sessionauth' THEN
        RESET SESSION AUTHORIZATION;
    WHEN 'delq' THEN
        UPDATE delq.delivery SET state = 'confirmed';
    WHEN 'temp' THEN
        CREATE TEMP TABLE t43_leftover (x int);
    WHEN 'settings' THEN
        PERFORM set_config('work_mem', '1234kB', false);
        PERFORM set_config('search_path', 'app43', false);
    ELSE
    END CASE;
    RETURN n + m;
END
$$;
REVOKE EXECUTE ON FUNCTION app43.erase(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app43.erase(jsonb) TO k43_eraser;

-- Who may add one: a delq_admin who is a member of run_as.
CREATE ROLE k43_admin LOGIN IN ROLE delq_admin;
CREATE ROLE k43_admin2 LOGIN IN ROLE delq_admin;
GRANT k43_eraser TO k43_admin;

-- Roles and functions that must be refused.
CREATE ROLE k43_super SUPERUSER NOLOGIN;
CREATE ROLE k43_creator CREATEROLE NOLOGIN;
CREATE ROLE k43_files NOLOGIN IN ROLE pg_write_server_files;
CREATE ROLE k43_operator NOLOGIN IN ROLE delq_operator;
CREATE ROLE k43_writer NOLOGIN;
GRANT USAGE ON SCHEMA delq TO k43_writer;
GRANT INSERT ON delq.event TO k43_writer;
CREATE ROLE k43_noexec NOLOGIN;
GRANT k43_super, k43_creator, k43_files, k43_operator, k43_writer, k43_noexec TO k43_admin;
CREATE FUNCTION app43.wrong_arg(request text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE FUNCTION app43.wrong_result(request jsonb) RETURNS text LANGUAGE sql AS 'SELECT ''done''';
CREATE FUNCTION app43.definer(request jsonb) RETURNS boolean LANGUAGE sql SECURITY DEFINER AS 'SELECT true';
CREATE PROCEDURE app43.proc(request jsonb) LANGUAGE sql AS 'SELECT 1';
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA app43 TO k43_eraser, k43_writer;
GRANT USAGE ON SCHEMA app43 TO k43_admin, k43_admin2;

SET ROLE k43_admin;
SELECT regress.st($$SELECT delq.add_sql_destination('t43_x', 'app43.erase(jsonb)', 'k43_super')$$);
SELECT regress.st($$SELECT delq.add_sql_destination('t43_x', 'app43.erase(jsonb)', 'k43_creator')$$);
SELECT regress.st($$SELECT delq.add_sql_destination('t43_x', 'app43.erase(jsonb)', 'k43_files')$$);
SELECT regress.st($$SELECT delq.add_sql_destination('t43_x', 'app43.erase(jsonb)', 'k43_operator')$$);
SELECT regress.st($$SELECT delq.add_sql_destination('t43_x', 'app43.erase(jsonb)', 'k43_writer')$$);
SELECT regress.st($$SELECT delq.add_sql_destination('t43_x', 'app43.erase(jsonb)', 'k43_noexec')$$);
SELECT regress.st($$SELECT delq.add_sql_destination('t43_x', 'app43.wrong_arg(text)', 'k43_eraser')$$);
SELECT regress.st($$SELECT delq.add_sql_destination('t43_x', 'app43.wrong_result(jsonb)', 'k43_eraser')$$);
SELECT regress.st($$SELECT delq.add_sql_destination('t43_x', 'app43.definer(jsonb)', 'k43_eraser')$$);
SELECT regress.st($$SELECT delq.add_sql_destination('t43_x', 'app43.proc(jsonb)', 'k43_eraser')$$);
SELECT regress.st($$SELECT delq.add_sql_destination('t43_x', 'delq.verify_receipt(jsonb)', 'k43_eraser')$$);
SELECT regress.st($$SELECT delq.add_sql_destination('t43_x', 'app43.erase(jsonb)', NULL)$$);
SELECT regress.st($$SELECT delq.add_sql_destination('t43_x', NULL, 'k43_eraser')$$);
SELECT regress.st($$SELECT delq.add_sql_destination('t43_x', 'app43.erase(jsonb)', 'k43_eraser', timeout => '10 milliseconds')$$);
RESET ROLE;
-- a delq_admin that is not a member of run_as cannot borrow it
SET ROLE k43_admin2;
SELECT regress.st($$SELECT delq.add_sql_destination('t43_x', 'app43.erase(jsonb)', 'k43_eraser')$$);
RESET ROLE;
SELECT count(*) AS none_added FROM delq.destination WHERE name = 't43_x';

SET ROLE k43_admin;
SELECT delq.add_sql_destination('t43_sql', 'app43.erase(jsonb)', 'k43_eraser', max_attempts => 3,
                                retry_base => '1 hour', retry_max => '1 hour');
SELECT delq.add_route('t43_sql', '{"source": "t43"}') IS NOT NULL AS routed;
RESET ROLE;
SELECT name, kind, url, sql_function, run_as, timeout_ms, max_attempts
  FROM delq.destinations WHERE name = 't43_sql';
SELECT detail FROM delq.event WHERE kind = 'destination_added' AND destination = 't43_sql';
SELECT regress.snapshot();
SELECT regress.bad($$SELECT delq.alter_destination('t43_sql', url => 'https://x.example/')$$);
SELECT regress.bad($$SELECT delq.alter_sql_destination('t43_sql', run_as => 'k43_super')$$);
SELECT regress.bad($$SELECT delq.alter_pull_destination('t43_sql', lease => '1 hour')$$);
SELECT destination, kind, planned, explanation
  FROM delq.explain_routes('t43') WHERE destination = 't43_sql';

-- The engine sends none of it; the worker looks for it (_next_due).
SELECT delq.submit('ann.t43@example.com', 't43') AS r1 \gset
SELECT count(*) AS claimed FROM delq._claim(1000) c WHERE c.destination LIKE 't43%';
SELECT delq._sql_due() AS due;

--
-- Erasure from both tables, as run_as, committed with its record.
--
CALL delq.dispatch_pass();
SELECT * FROM app43.customer ORDER BY email;
SELECT * FROM app43.orders ORDER BY email, item;
SELECT mode, run_by, search_path FROM app43.calls ORDER BY at;
SELECT destination, state, attempts, last_status, last_error, confirmed_at IS NOT NULL AS done
  FROM delq.delivery WHERE request_id = :'r1';
SELECT kind, detail, nullif(actor, session_user::text) AS actor FROM delq.event
 WHERE request_id = :'r1' AND destination IS NOT NULL ORDER BY id;
SELECT status FROM delq.pending WHERE id = :'r1';
SELECT delq._sql_due() AS due;

-- Nothing held: 0 rows erased.
SELECT delq.submit('cem.t43@example.com', 't43') AS r2 \gset
CALL delq.dispatch_pass();
SELECT state, last_error FROM delq.delivery WHERE request_id = :'r2';
SELECT status FROM delq.pending WHERE id = :'r2';
-- the deprecated delq.dispatch() runs them too, in its statement's transaction
SELECT delq.submit('hal.t43@example.com', 't43') AS r2b \gset
SELECT delq.dispatch() AS dispatched;
SELECT state FROM delq.delivery WHERE request_id = :'r2b';

--
-- A retryable error (40001): the function's work is undone, the delivery
-- retried after the backoff; its message kept for the operator without
-- the subject, the event only with the SQLSTATE.
--
TRUNCATE app43.calls;
SELECT delq.submit('bob.t43@example.com', 't43', attributes => '{"mode": "serialization"}') AS r3 \gset
CALL delq.dispatch_pass();
SELECT state, attempts, next_attempt_at > now() AS later, last_error FROM delq.delivery WHERE request_id = :'r3';
SELECT kind, detail - 'next_attempt_at' AS detail FROM delq.event
 WHERE request_id = :'r3' AND destination IS NOT NULL ORDER BY id;
SELECT count(*) AS bob_rows FROM app43.orders WHERE email = 'bob.t43@example.com';
SELECT count(*) AS calls_kept FROM app43.calls;
SELECT name, consecutive_failures, last_failure FROM delq.destination_health WHERE name = 't43_sql';
SELECT delq.confirm(:'r3', 't43_sql') AS settled;

-- A permanent error: failed with its SQLSTATE; an operator sees it.
SELECT delq.submit('dee.t43@example.com', 't43', attributes => '{"mode": "broken"}') AS r4 \gset
CALL delq.dispatch_pass();
SELECT state, attempts, last_error FROM delq.delivery WHERE request_id = :'r4';
SELECT kind, detail FROM delq.event WHERE request_id = :'r4' AND kind = 'failed' ORDER BY id;
SELECT destination, problem, detail FROM delq.needs_attention WHERE request_id = :'r4' ORDER BY 1;

-- The timeout: the call is cancelled (57014) and retried, an hour later
-- at most (a retry that the full jitter made due at once would run again
-- in the same pass).
SELECT delq.alter_destination('t43_sql', timeout => '200 milliseconds',
                              retry_base => '1 hour', retry_max => '1 hour');
SELECT delq.submit('eve.t43@example.com', 't43', attributes => '{"mode": "slow"}') AS r5 \gset
CALL delq.dispatch_pass();
SELECT state, last_error FROM delq.delivery WHERE request_id = :'r5';
SELECT detail ->> 'error' AS error FROM delq.event WHERE request_id = :'r5' AND kind = 'retry_scheduled';
-- settled by an operator, so that it is not called again in this file
SELECT delq.confirm(:'r5', 't43_sql') AS settled;

--
-- The function cannot leave run_as, reach delq, or leave anything behind.
--
SELECT count(delq.submit(m || '.t43@example.com', 't43', attributes => jsonb_build_object('mode', m)))
  FROM unnest(ARRAY['setrole', 'sessionauth', 'delq', 'temp', 'settings']) m;
SET work_mem = '4MB';
CALL delq.dispatch_pass();
SELECT p.attributes ->> 'mode' AS mode, dl.state, dl.last_error
  FROM delq.delivery dl JOIN delq.pending p ON p.id = dl.request_id
 WHERE dl.destination = 't43_sql'
   AND p.attributes ->> 'mode' IN ('setrole', 'sessionauth', 'delq', 'temp', 'settings')
 ORDER BY 1;
SELECT current_setting('work_mem') AS work_mem, current_setting('search_path') AS search_path,
       current_user = session_user AS same_user;
RESET work_mem;

--
-- run_as is checked again before every call: a grant made later stops it.
--
ALTER ROLE k43_eraser CREATEROLE;
TRUNCATE app43.calls;
SELECT delq.submit('fay.t43@example.com', 't43') AS r6 \gset
CALL delq.dispatch_pass();
SELECT state, last_error FROM delq.delivery WHERE request_id = :'r6';
SELECT count(*) AS calls FROM app43.calls;
ALTER ROLE k43_eraser NOCREATEROLE;
SELECT delq.retry(:'r6');
CALL delq.dispatch_pass();
SELECT state FROM delq.delivery WHERE request_id = :'r6';

-- The function dropped: the delivery fails with 42883, nothing is called.
CREATE FUNCTION app43.gone(request jsonb) RETURNS void LANGUAGE sql AS '';
GRANT EXECUTE ON FUNCTION app43.gone(jsonb) TO k43_eraser;
SET ROLE k43_admin;
SELECT delq.alter_sql_destination('t43_sql', function => 'app43.gone(jsonb)');
RESET ROLE;
DROP FUNCTION app43.gone(jsonb);
SELECT delq.submit('gus.t43@example.com', 't43') AS r7 \gset
CALL delq.dispatch_pass();
SELECT state, last_error FROM delq.delivery WHERE request_id = :'r7';
SET ROLE k43_admin;
SELECT delq.alter_sql_destination('t43_sql', function => 'app43.erase(jsonb)');
RESET ROLE;
SELECT kind, detail FROM delq.event WHERE kind = 'destination_altered' AND destination = 't43_sql' ORDER BY id;

-- recipients and the archive agree for this kind too.
SELECT destination, kind, outcome, at IS NOT NULL AS has_at FROM delq.recipients(:'r1');
SELECT destination, kind, outcome FROM delq.recipients(:'r2');
SELECT delq.archive() >= 2 AS archived;
SELECT destination, kind, outcome, state FROM delq.recipients(:'r2');
SELECT d ->> 'state' AS archived_state FROM delq.finished f, jsonb_array_elements(f.deliveries) d
 WHERE f.id = :'r2';

UPDATE delq.destination SET enabled = true WHERE name IN (SELECT name FROM t43_paused);
REVOKE ALL ON delq.event FROM k43_writer;
REVOKE ALL ON SCHEMA delq FROM k43_writer;
