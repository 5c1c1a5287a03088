
# 025_sql_destination.pl
#     SQL destinations run by the worker (issue 13; src/sqldest.c).
#
#     1. The worker calls the function as run_as (its privileges, a safe
#        search_path), erasing from two tables; the outcome commits with
#        the erasure; "not held" when nothing was there.
#     2. A retryable error (40001) is retried with backoff and then
#        succeeds; a permanent one fails with its SQLSTATE; the
#        destination's timeout cancels a function that hangs, and the
#        worker goes on.
#     Another database reached through postgres_fdw, as documented.
#     3. kill -9 of the postmaster while the function has done its work
#        but not committed: after the restart the erasure happens once, its
#        record once, nothing is lost.

use strict;
use warnings;

use DelqTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = delq_node('sqldest', conf => "restart_after_crash = on\n");

$node->safe_psql('postgres', q{
	CREATE SCHEMA app;
	CREATE TABLE app.customer (email text PRIMARY KEY, name text NOT NULL);
	CREATE TABLE app.orders (email text NOT NULL, item text NOT NULL);
	-- what the function did, committed or not with its transaction
	CREATE TABLE app.erasures (email text NOT NULL, run_by text NOT NULL,
	                           search_path text NOT NULL, rows bigint NOT NULL);
	-- the flaky mode's tries: a sequence, which no rollback takes back
	CREATE SEQUENCE app.tries;
	CREATE TABLE app.released (ok boolean);
	INSERT INTO app.customer
	SELECT 'user' || g || '@example.com', 'User ' || g FROM generate_series(1, 10) g;
	INSERT INTO app.orders
	SELECT 'user' || g || '@example.com', 'item ' || i FROM generate_series(1, 10) g, generate_series(1, 3) i;

	CREATE ROLE app_eraser NOLOGIN;
	GRANT USAGE ON SCHEMA app TO app_eraser;
	GRANT SELECT, DELETE ON app.customer, app.orders TO app_eraser;
	GRANT SELECT, INSERT ON app.erasures TO app_eraser;
	GRANT USAGE ON SEQUENCE app.tries TO app_eraser;
	GRANT SELECT ON app.released TO app_eraser;

	-- No SET search_path: every name qualified (the worker calls it with
	-- search_path = pg_catalog, pg_temp).
	CREATE FUNCTION app.erase(request jsonb) RETURNS bigint LANGUAGE plpgsql AS $$
	DECLARE
	    who text := request ->> 'subject';
	    mode text := request -> 'attributes' ->> 'mode';
	    n bigint;
	    m bigint;
	    tried integer;
	BEGIN
	    DELETE FROM app.orders WHERE email = who;
	    GET DIAGNOSTICS n = ROW_COUNT;
	    DELETE FROM app.customer WHERE email = who;
	    GET DIAGNOSTICS m = ROW_COUNT;
	    INSERT INTO app.erasures VALUES (who, current_user, current_setting('search_path'), n + m);
	    IF mode = 'flaky' THEN
	        tried := nextval('app.tries');
	        IF tried < 3 THEN
	            RAISE EXCEPTION 'try % of %', tried, who USING ERRCODE = 'serialization_failure';
	        END IF;
	    ELSIF mode = 'broken' THEN
	        RAISE EXCEPTION 'no erasure for %', who USING ERRCODE = 'raise_exception';
	    ELSIF mode = 'hang' THEN
	        PERFORM pg_sleep(600);
	    ELSIF mode = 'hold' AND NOT EXISTS (SELECT FROM app.released) THEN
	        -- the work is done, not committed: the test kills the server here
	        PERFORM pg_sleep(600);
	    END IF;
	    RETURN n + m;
	END
	$$;
	REVOKE EXECUTE ON FUNCTION app.erase(jsonb) FROM PUBLIC;
	GRANT EXECUTE ON FUNCTION app.erase(jsonb) TO app_eraser;

	SELECT delq.add_sql_destination('app_db', 'app.erase(jsonb)', 'app_eraser',
	                                timeout => '2 seconds', max_attempts => 5);
	SELECT delq.add_route('app_db', '{}');
});

ok(poll_until($node, 'SELECT delq.worker_running()', 't', 30), 'worker is running');

sub submit
{
	my ($who, $mode) = @_;
	my $attrs = defined $mode ? qq({"mode": "$mode"}) : '{}';
	return $node->safe_psql('postgres',
		"SELECT delq.submit('$who', 'app', attributes => '$attrs')");
}

sub delivery
{
	my ($rid) = @_;
	return $node->safe_psql('postgres',
		"SELECT state || '|' || attempts || '|' || coalesce(last_error, '')
		   FROM delq.delivery WHERE request_id = '$rid'");
}

sub wait_state
{
	my ($rid, $state, $secs) = @_;
	return poll_until($node,
		"SELECT state FROM delq.delivery WHERE request_id = '$rid'", $state, $secs // 30);
}

# --- 1. erasure as run_as; not held -----------------------------------------
my $r1 = submit('user1@example.com');
ok(wait_state($r1, 'confirmed'), 'the worker called the function: confirmed');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM app.customer WHERE email = 'user1\@example.com'")
	  + $node->safe_psql('postgres',
		"SELECT count(*) FROM app.orders WHERE email = 'user1\@example.com'"),
	0, 'erased from both tables');
is($node->safe_psql('postgres',
		"SELECT run_by || '|' || search_path || '|' || rows FROM app.erasures WHERE email = 'user1\@example.com'"),
	'app_eraser|pg_catalog, pg_temp|4', 'ran as app_eraser with search_path pg_catalog, pg_temp');
is($node->safe_psql('postgres',
		"SELECT string_agg(kind || ':' || actor, ',' ORDER BY id) FROM delq.event
		  WHERE request_id = '$r1' AND destination = 'app_db'"),
	'queued:' . $node->safe_psql('postgres', 'SELECT session_user') . ',sending:delq,confirmed:delq',
	'events: queued, sending, confirmed');

my $r2 = submit('nobody@example.com');
ok(wait_state($r2, 'not_held'), 'nothing held: not_held');

# --- 2. retry, permanent failure, timeout -------------------------------------
my $r3 = submit('user3@example.com', 'flaky');
ok(wait_state($r3, 'confirmed'), 'a serialization failure is retried, then confirmed');
is($node->safe_psql('postgres',
		"SELECT string_agg(kind || coalesce(':' || (detail->>'error'), ''), ',' ORDER BY id)
		   FROM delq.event WHERE request_id = '$r3' AND destination = 'app_db' AND kind <> 'queued'"),
	'sending,retry_scheduled:SQLSTATE 40001,sending,retry_scheduled:SQLSTATE 40001,sending,confirmed',
	'two retries recorded with their SQLSTATE');
is($node->safe_psql('postgres',
		"SELECT count(*) || '|' || sum(rows) FROM app.erasures WHERE email = 'user3\@example.com'"),
	'1|4', 'the failed tries left nothing: one erasure, of all 4 rows');

my $r4 = submit('user4@example.com', 'broken');
ok(wait_state($r4, 'failed'), 'a permanent error fails the delivery');
is(delivery($r4), 'failed|1|SQLSTATE P0001: no erasure for [subject]',
	'its SQLSTATE and message kept, without the subject');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM app.customer WHERE email = 'user4\@example.com'"),
	1, 'and its work undone');

my $t0 = time;
my $r5 = submit('user5@example.com', 'hang');
ok(poll_until($node,
		"SELECT state = 'queued' AND attempts >= 1 FROM delq.delivery WHERE request_id = '$r5'", 't', 30),
	'a hanging function is cancelled at the timeout and the delivery retried');
like(delivery($r5), qr/^queued\|\d+\|SQLSTATE 57014: the function ran longer than the destination's timeout \(2000 ms\)$/,
	'the timeout is recorded as 57014');
my $r6 = submit('user6@example.com');
ok(wait_state($r6, 'confirmed'), 'the worker goes on with other work');
# an operator settles it, so that it hangs no more
$node->safe_psql('postgres', "SELECT delq.confirm('$r5', 'app_db')");

# --- another database, through postgres_fdw (docs/sql-destinations.md) ---------
$node->safe_psql('postgres', 'CREATE DATABASE crm');
$node->safe_psql('crm', q{
	CREATE ROLE crm_eraser LOGIN;
	CREATE TABLE contacts (email text PRIMARY KEY, phone text);
	INSERT INTO contacts VALUES ('user8@example.com', '555-0108'), ('user9@example.com', '555-0109');
	GRANT SELECT, DELETE ON contacts TO crm_eraser;
});
my ($host, $port) = ($node->host, $node->port);
$node->safe_psql('postgres', qq{
	CREATE EXTENSION postgres_fdw;
	CREATE SERVER crm_server FOREIGN DATA WRAPPER postgres_fdw
	    OPTIONS (host '$host', port '$port', dbname 'crm');
	-- trust authentication here; with passwords, put one in the mapping
	CREATE USER MAPPING FOR app_eraser SERVER crm_server
	    OPTIONS (user 'crm_eraser', password_required 'false');
	CREATE SCHEMA crm;
	CREATE FOREIGN TABLE crm.contacts (email text, phone text)
	    SERVER crm_server OPTIONS (schema_name 'public', table_name 'contacts');
	GRANT USAGE ON SCHEMA crm TO app_eraser;
	GRANT SELECT, DELETE ON crm.contacts TO app_eraser;
	GRANT USAGE ON FOREIGN SERVER crm_server TO app_eraser;
	CREATE FUNCTION app.erase_crm(request jsonb) RETURNS boolean LANGUAGE plpgsql AS \$\$
	BEGIN
	    DELETE FROM crm.contacts WHERE email = request ->> 'subject';
	    RETURN FOUND;
	END
	\$\$;
	REVOKE EXECUTE ON FUNCTION app.erase_crm(jsonb) FROM PUBLIC;
	GRANT EXECUTE ON FUNCTION app.erase_crm(jsonb) TO app_eraser;
	SELECT delq.add_sql_destination('crm_db', 'app.erase_crm(jsonb)', 'app_eraser');
	SELECT delq.add_route('crm_db', '{"reason": "crm"}');
});
my $r8 = $node->safe_psql('postgres',
	"SELECT delq.submit('user8\@example.com', 'app', reason => 'crm')");
ok(poll_until($node,
		"SELECT string_agg(destination || ':' || state, ',' ORDER BY destination)
		   FROM delq.delivery WHERE request_id = '$r8'",
		'app_db:confirmed,crm_db:confirmed', 30),
	'postgres_fdw: erased in the other database too');
is($node->safe_psql('crm', "SELECT string_agg(email, ',') FROM contacts"),
	'user9@example.com', 'the row is gone from database crm');
my $r9 = $node->safe_psql('postgres',
	"SELECT delq.submit('nobody9\@example.com', 'app', reason => 'crm')");
ok(poll_until($node, "SELECT state FROM delq.delivery WHERE request_id = '$r9' AND destination = 'crm_db'",
		'not_held', 30), 'postgres_fdw: nothing there is not held');

# --- 3. kill -9 between the function's work and the commit ---------------------
$node->safe_psql('postgres', "SELECT delq.alter_destination('app_db', timeout => '10 minutes')");
my $r7 = submit('user7@example.com', 'hold');
ok(poll_until($node,
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'delq worker' AND wait_event = 'PgSleep'",
		'1', 60),
	'the function did its work and waits before the commit');
is($node->safe_psql('postgres',
		"SELECT (SELECT count(*) FROM app.customer WHERE email = 'user7\@example.com') || '|' ||
		        (SELECT count(*) FROM app.erasures WHERE email = 'user7\@example.com') || '|' ||
		        (SELECT state FROM delq.delivery WHERE request_id = '$r7')"),
	'1|0|queued', 'nothing of it is visible yet: rows there, no record, delivery queued');
$node->safe_psql('postgres', 'INSERT INTO app.released VALUES (true)');

my $pidfile = $node->data_dir . '/postmaster.pid';
open(my $fh, '<', $pidfile) or die "$pidfile: $!";
my $pm = <$fh>;
close $fh;
chomp $pm;
$node->kill9;
my $deadline = time + 60;
usleep(50_000) while kill(0, $pm) && time < $deadline;
ok(!kill(0, $pm), 'the server is gone');
$node->start;

ok(wait_state($r7, 'confirmed', 60), 'after the restart the delivery is confirmed');
is($node->safe_psql('postgres',
		"SELECT (SELECT count(*) FROM app.customer WHERE email = 'user7\@example.com') || '|' ||
		        (SELECT count(*) FROM app.erasures WHERE email = 'user7\@example.com') || '|' ||
		        (SELECT sum(rows) FROM app.erasures WHERE email = 'user7\@example.com')"),
	'0|1|4', 'erased once: one record of the erasure, of all 4 rows');
is($node->safe_psql('postgres',
		"SELECT string_agg(kind, ',' ORDER BY id) FROM delq.event
		  WHERE request_id = '$r7' AND destination = 'app_db'"),
	'queued,sending,confirmed', 'the ledger shows one attempt: the killed one left nothing');
is($node->safe_psql('postgres', "SELECT attempts FROM delq.delivery WHERE request_id = '$r7'"),
	'1', 'one attempt counted');
is($node->safe_psql('postgres', 'SELECT count(*) FROM delq.verify_ledger()'), '0', 'the ledger verifies');

# nothing else lost: every request still there, each delivery final or retrying
is($node->safe_psql('postgres',
		"SELECT count(*) FROM delq.delivery WHERE request_id IN ('$r1', '$r2', '$r3', '$r4', '$r6', '$r7')
		    AND state IN ('confirmed', 'not_held', 'failed')"),
	'6', 'the other outcomes survived the crash');

done_testing();
