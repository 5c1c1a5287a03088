
# 032_lifecycle.pl
#     The worker's life: it waits quietly (no FATAL, ERROR or WARNING, no
#     restarts) for delq.database and then for CREATE EXTENSION, forwards
#     once both exist, shows itself in pg_stat_activity as 'delq worker',
#     reloads delq.max_attempts and delq.retry_max on SIGHUP (ALTER SYSTEM +
#     pg_reload_conf), stays one worker when its launcher alone is
#     terminated and restarted, and exits promptly on SIGTERM (pg_ctl stop
#     -m fast) even with a transfer hanging.  The HTTP worker
#     (delq.http_listen, docs/http-api.md) is started by the same launcher:
#     it waits as quietly for the database and the extension, then serves,
#     and a restarted launcher starts no second one beside it.

use strict;
use warnings;

use DelqTest;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $t_start = time;
my $QUIET_S = 5;    # > two of the launcher's and worker's 2 s looks

# Lines in the log since $offset that look like trouble.
sub trouble_since
{
	my ($node, $offset) = @_;
	my $log = slurp_file($node->logfile, $offset);
	return join '', grep { /\b(?:FATAL|ERROR|PANIC|WARNING):/ } split /^/, $log;
}

sub activity
{
	my ($node, $what) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = '$what'");
}

# The HTTP status of GET /v1/healthz, 0 when nothing answers.
my $http_port = PostgreSQL::Test::Cluster::get_free_port();
sub healthz
{
	my $code = `curl -s -o /dev/null -w '%{http_code}' --max-time 2 http://127.0.0.1:$http_port/v1/healthz`;
	return ($code // 0) + 0;
}

# delq.database names a database that does not exist yet.  delq_node sets
# log_min_messages = 'log', which in the server log ranks above ERROR and
# WARNING and so hides them: 'warning' shows both, and LOG lines too.
my $node = delq_node('life',
	extension => 0,
	conf => "delq.database = 'appdb'\n"
	  . "delq.http_listen = '127.0.0.1:$http_port'\n"
	  . "log_min_messages = 'warning'\n"
	  . "delq.breaker_threshold = 100000\n");
my $sink = start_sink();

# The log shows an ERROR when there is one (so "no ERROR" below means it).
$node->psql('postgres', 'SELECT 1/0');
ok($node->log_contains(qr/ERROR:  division by zero/), 'the server log shows ERRORs');

# --- waiting for the database -----------------------------------------------
my $offset = -s $node->logfile;
ok(poll_until($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'delq launcher'",
		'1', 30),
	'the delq launcher runs');
sleep $QUIET_S;
is(activity($node, 'delq worker'), '0', 'no worker while delq.database does not exist');
is(trouble_since($node, $offset), '',
	"no FATAL/ERROR/WARNING in the log over ${QUIET_S}s without the database");
is(activity($node, 'delq http'), '0', 'no HTTP worker while delq.database does not exist');
# from the start: a worker registered at preload would have failed at once
is(join('', grep { !/division by zero/ } split /^/, trouble_since($node, 0)), '',
	'no FATAL/ERROR/WARNING since start-up either (the HTTP worker waits too)');

# --- waiting for the extension ----------------------------------------------
$offset = -s $node->logfile;
$node->safe_psql('postgres', 'CREATE DATABASE appdb');
ok( poll_until(
		$node,
		"SELECT count(*) FROM pg_stat_activity
		  WHERE backend_type = 'delq worker' AND datname = 'appdb'",
		'1', 30),
	'once appdb exists, a delq worker connects to it');
is( $node->safe_psql('postgres',
		"SELECT application_name FROM pg_stat_activity WHERE backend_type = 'delq worker'"),
	'delq worker', 'it names itself in application_name too');
my $wpid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'delq worker'");
sleep $QUIET_S;
is(trouble_since($node, $offset), '',
	"no FATAL/ERROR/WARNING over ${QUIET_S}s without the extension");
is( $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'delq worker'"),
	$wpid, 'the same worker waits (no restarts)');
ok(!$node->log_contains(qr/delq worker started/, $offset), 'not started yet');
is(activity($node, 'delq http'), '1', 'the HTTP worker waits in appdb too');
is(healthz(), 0, '... and serves nothing before CREATE EXTENSION');

# --- the extension appears: forwarding --------------------------------------
$node->safe_psql('appdb', 'CREATE EXTENSION delq');
$node->safe_psql('appdb',
	"SELECT delq.add_destination('crm', '" . $sink->url('crm', '/hook') . "');
	 SELECT delq.add_route('crm', '{}');");
my $rid = $node->safe_psql('appdb', "SELECT delq.submit('alice', 'lifecycle')");
ok( poll_until(
		$node, "SELECT status FROM delq.pending WHERE id = '$rid'",
		'completed', 30, 'appdb'),
	'after CREATE EXTENSION the worker forwards a request');
ok($node->log_contains(qr/delq worker started in database "appdb"/, $offset),
	'log: worker started in appdb');
my $served = 0;
for (1 .. 150)
{
	if (healthz() == 200) { $served = 1; last }
	usleep(100_000);
}
ok($served, 'after CREATE EXTENSION the HTTP worker serves GET /v1/healthz');
is($node->safe_psql('appdb', 'SELECT delq.worker_running()'), 't', 'delq.worker_running()');
my @got = $sink->requests('crm');
is(scalar @got, 1, 'the sink got one request');
is( $got[0]{headers}{'webhook-id'},
	$node->safe_psql('appdb', "SELECT webhook_id FROM delq.delivery WHERE request_id = '$rid'"),
	'with the delivery\'s webhook id');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_extension WHERE extname = 'delq'"),
	'0', 'nothing was created in postgres');

# --- SIGHUP: a changed delq.max_attempts takes effect -----------------------
# With the default (25) a 503 is retried ...
$sink->control('flaky', { status => 503 });
$node->safe_psql('appdb',
	"SELECT delq.add_destination('flaky', '" . $sink->url('flaky', '/hook') . "');
	 SELECT delq.add_route('flaky', '{\"to\": \"flaky\"}');");
my $a_id = $node->safe_psql('appdb',
	"SELECT delq.submit('bob', 'lifecycle', attributes => '{\"to\": \"flaky\"}')");
my $a_delivery = "SELECT %s FROM delq.delivery WHERE request_id = '$a_id' AND destination = 'flaky'";
ok( poll_until(
		$node, sprintf($a_delivery, "attempts >= 2 AND state IN ('queued', 'sending')"),
		't', 30, 'appdb'),
	'max_attempts 25: a 503 is retried');

# ... lowered to 1 and reloaded, the next attempt is the last.
$offset = -s $node->logfile;
$node->safe_psql('postgres',
	'ALTER SYSTEM SET delq.max_attempts = 1; SELECT pg_reload_conf();');
ok(poll_until($node, sprintf($a_delivery, 'state'), 'failed', 30, 'appdb'),
	'after ALTER SYSTEM + reload, the retried delivery fails on its next attempt');
my $a_attempts = $node->safe_psql('appdb', sprintf($a_delivery, 'attempts'));
cmp_ok($a_attempts, '<', 25, "... after $a_attempts attempts, not 25: the worker reloaded");
ok( $node->log_contains(
		qr/parameter "delq\.max_attempts" changed to "1"/, $offset),
	'log: the parameter change was read');

my $b_id = $node->safe_psql('appdb',
	"SELECT delq.submit('carol', 'lifecycle', attributes => '{\"to\": \"flaky\"}')");
ok( poll_until(
		$node,
		"SELECT state || ' ' || attempts FROM delq.delivery
		  WHERE request_id = '$b_id' AND destination = 'flaky'",
		'failed 1', 30, 'appdb'),
	'a new request to a 503 destination fails after exactly 1 attempt');
is($node->safe_psql('appdb', "SELECT status FROM delq.pending WHERE id = '$b_id'"),
	'failed', '... and the request is failed');
my $b_webhook = $node->safe_psql('appdb',
	"SELECT webhook_id FROM delq.delivery WHERE request_id = '$b_id' AND destination = 'flaky'");
is(scalar(grep { $_->{headers}{'webhook-id'} eq $b_webhook } $sink->requests('flaky')),
	1, '... and the sink saw it once');

# SIGHUP again: back to retrying (reset the setting), retry() succeeds.
$node->safe_psql('postgres',
	'ALTER SYSTEM RESET delq.max_attempts; SELECT pg_reload_conf();');
$sink->control('flaky', { status => 200 });
$node->safe_psql('appdb', "SELECT delq.retry('$b_id')");
ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$b_id'", 'completed', 30, 'appdb'),
	'after a reset and delq.retry() the request completes');

# SIGHUP with a changed delq.retry_max: it caps Retry-After, which makes
# the delay deterministic (no jitter): 2 s in delq_node's conf, then 30 s.
$sink->control('flaky', { status => 503, retry_after => '3600' });
my $delay_of = sub {
	my ($id, $attempts) = @_;
	my $sql = "SELECT extract(epoch FROM next_attempt_at - last_attempt_at)::numeric(10,1)
	             FROM delq.delivery
	            WHERE request_id = '$id' AND destination = 'flaky'
	              AND state = 'queued' AND attempts = $attempts";
	poll_until($node, "SELECT count(*) FROM ($sql) s", '1', 30, 'appdb') or return -1;
	return $node->safe_psql('appdb', $sql);
};
my $c_id = $node->safe_psql('appdb',
	"SELECT delq.submit('dave', 'lifecycle', attributes => '{\"to\": \"flaky\"}')");
my $d1 = $delay_of->($c_id, 1);
ok($d1 >= 1.9 && $d1 < 5, "Retry-After: 3600 capped by delq.retry_max 2s: retry after ${d1}s");
$node->safe_psql('postgres',
	"ALTER SYSTEM SET delq.retry_max = '30s'; SELECT pg_reload_conf();");
my $d2 = $delay_of->($c_id, 2);
ok($d2 >= 29.9 && $d2 < 33,
	"after ALTER SYSTEM SET delq.retry_max = '30s' + reload: next retry after ${d2}s");
my $e_id = $node->safe_psql('appdb',
	"SELECT delq.submit('frank', 'lifecycle', attributes => '{\"to\": \"flaky\"}')");
my $d3 = $delay_of->($e_id, 1);
ok($d3 >= 29.9 && $d3 < 33, "a new request's first retry: after ${d3}s too");
$node->safe_psql('postgres', 'ALTER SYSTEM RESET delq.retry_max; SELECT pg_reload_conf();');

# --- SIGTERM to the launcher alone: still one worker ------------------------
# The launcher is restarted by the postmaster (bgw_restart_time); the worker
# its predecessor started keeps running, and the new launcher must not start
# a second one beside it (docs/worker.md: one worker per cluster).
my $launcher = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'delq launcher'");
$wpid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'delq worker'");
my $hpid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'delq http'");
$offset = -s $node->logfile;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($launcher)");
ok( poll_until(
		$node,
		"SELECT count(*) FROM pg_stat_activity
		  WHERE backend_type = 'delq launcher' AND pid <> $launcher",
		'1', 30),
	'a terminated launcher is restarted');
sleep 4;    # two of the launcher's 2 s looks
is( $node->safe_psql('postgres',
		"SELECT string_agg(pid::text, ',') FROM pg_stat_activity
		  WHERE backend_type = 'delq worker'"),
	$wpid, 'the restarted launcher starts no second worker beside the running one');
is( $node->safe_psql('postgres',
		"SELECT string_agg(pid::text, ',') FROM pg_stat_activity
		  WHERE backend_type = 'delq http'"),
	$hpid, '... nor a second HTTP worker');
is(join('', grep { !/"delq launcher" due to administrator command/ } split /^/,
			trouble_since($node, $offset)),
	'', '... and nothing in the log complains');
$node->safe_psql('postgres',
	"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'delq worker'");
ok( poll_until(
		$node,
		"SELECT count(*) FILTER (WHERE pid <> $wpid) || '/' || count(*) FROM pg_stat_activity
		  WHERE backend_type = 'delq worker'",
		'1/1', 30),
	'once that worker is terminated, the new launcher starts exactly one');
ok(poll_until($node, 'SELECT delq.worker_running()', 't', 30, 'appdb'),
	'... which announces itself');
my $g_id = $node->safe_psql('appdb', "SELECT delq.submit('gina', 'lifecycle')");
ok( poll_until(
		$node, "SELECT status FROM delq.pending WHERE id = '$g_id'",
		'completed', 30, 'appdb'),
	'... and forwards');

# --- SIGTERM: a fast stop is prompt, also with a transfer hanging ---------
$sink->control('crm', { hang => JSON::PP::true });
my $crm_before = $sink->count('crm');
my $h_id = $node->safe_psql('appdb', "SELECT delq.submit('erin', 'lifecycle')");
ok($sink->wait_requests('crm', $crm_before + 1, 30), 'a transfer hangs at the sink');
is( $node->safe_psql('appdb',
		"SELECT state FROM delq.delivery WHERE request_id = '$h_id' AND destination = 'crm'"),
	'sending', '... its delivery is in flight');
ok( poll_until(
		$node,
		"SELECT wait_event_type || '.' || wait_event FROM pg_stat_activity
		  WHERE backend_type = 'delq worker'",
		'Extension.Extension', 30),
	'the worker waits (wait event Extension)');
$offset = -s $node->logfile;
my $t0 = time;
$node->stop('fast');
my $took = time - $t0;
cmp_ok($took, '<', 5, sprintf('pg_ctl stop -m fast took %.2fs', $took));
ok( $node->log_contains(
		qr/terminating background worker "delq worker" due to administrator command/, $offset),
	'the worker exited on SIGTERM');
unlike(slurp_file($node->logfile, $offset), qr/delq worker.*was terminated by signal|PANIC/,
	'no crash on the way out');

note sprintf('032_lifecycle: %.1fs', time - $t_start);
done_testing();
