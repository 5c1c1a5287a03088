
# 033_dispatch.pl
#     delq without shared_preload_libraries: no worker, nothing is sent by
#     itself, and delq.dispatch() does one forwarding pass in the calling
#     session: it returns the deliveries it handled, is bounded by
#     max_deliveries (and not by a destination's concurrency cap, which only
#     limits what is in flight at once), retries a 503 in a later pass after
#     its backoff; inside a transaction block it is refused (25001: a
#     rollback would undo the record of what it sent, issue 9); argument
#     checks.  CALL delq.dispatch_pass() commits each claim before sending:
#     a session killed while its webhook is in flight leaves the delivery
#     'sending', attempted, so reject() refuses and the lease brings it back
#     (issue 10); it too is refused in a transaction block.  Then the same
#     driven by real pg_cron (cron.job_run_details) with CALL.
#
#     The pg_cron node is set up first and its job scheduled, so that a
#     minute-granular pg_cron (before 1.5, e.g. Debian 12's 1.4.2, which
#     refuses '1 second') runs while the rest is tested.

use strict;
use warnings;

use DelqTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $t_start = time;
my $sink = start_sink();

# A node without shared_preload_libraries.
my $node = delq_node('plain', preload => 0);

# --- pg_cron node: schedule now, check at the end ---------------------------
my $cron = delq_node('cron',
	preload => 0,
	extension => 1,
	conf => "shared_preload_libraries = 'pg_cron'\n"
	  . "cron.database_name = 'postgres'\n"
	  # the nodes listen on a Unix socket only: pg_cron connects there
	  . "cron.host = '" . $node->host . "'\n");
$cron->safe_psql('postgres',
	"CREATE EXTENSION pg_cron;
	 SELECT delq.add_destination('viacron', '" . $sink->url('viacron', '/hook') . "');
	 SELECT delq.add_route('viacron', '{}');");
my $cron_version = $cron->safe_psql('postgres',
	"SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'");
my ($ret, $out, $err) = $cron->psql('postgres',
	"SELECT cron.schedule('delq', '1 second', 'CALL delq.dispatch_pass()')");
my $cron_every_second = $ret == 0;
my $cron_wait = 30;
unless ($cron_every_second)
{
	note "pg_cron $cron_version has no second schedules ($err): every minute instead";
	$cron->safe_psql('postgres',
		"SELECT cron.schedule('delq', '* * * * *', 'CALL delq.dispatch_pass()')");
	$cron_wait = 90;
}
$cron->safe_psql('postgres',
	"SELECT delq.submit('cron-user-' || g, 'cron') FROM generate_series(1, 3) g");
my $t_cron = time;

# --- no worker, nothing sent by itself --------------------------------------
is($node->safe_psql('postgres', 'SELECT delq.worker_running()'), 'f',
	'delq.worker_running() is false without preload');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'delq%'"),
	'0', 'no delq process in pg_stat_activity');

for my $d (qw(alpha beta))
{
	$node->safe_psql('postgres',
		"SELECT delq.add_destination('$d', '" . $sink->url($d, '/hook') . "');
		 SELECT delq.add_route('$d', '{}');");
}
$node->safe_psql('postgres',
	"SELECT delq.submit('user-' || g, 'app') FROM generate_series(1, 5) g");
sleep 2;
is($sink->count('alpha') + $sink->count('beta'), 0, 'after 2 s nothing was sent');
is( $node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE state = 'queued' AND attempts = 0) || '/' || count(*)
		   FROM delq.delivery"),
	'10/10', 'all 10 deliveries still queued, never attempted');
is($node->safe_psql('postgres', "SELECT string_agg(DISTINCT status, ',') FROM delq.pending"),
	'forwarding', 'requests are forwarding');

# --- one pass sends and records everything due ------------------------------
is($node->safe_psql('postgres', 'SELECT delq.dispatch()'), '10',
	'delq.dispatch() returns the 10 deliveries it handled');
is($sink->count('alpha') . '/' . $sink->count('beta'), '5/5', 'the sink received 5 + 5');
is( $node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE state = 'confirmed' AND attempts = 1) FROM delq.delivery"),
	'10', 'all deliveries confirmed after one attempt');
is($node->safe_psql('postgres', "SELECT string_agg(DISTINCT status, ',') FROM delq.pending"),
	'completed', 'all requests completed');
my %seen = map { ($_->{headers}{'webhook-id'} => 1) } $sink->requests;
is( scalar(grep { !$seen{$_} } split /\n/,
		$node->safe_psql('postgres', 'SELECT webhook_id FROM delq.delivery')),
	0, 'the sink saw every webhook id');
is($node->safe_psql('postgres', 'SELECT delq.dispatch()'), '0',
	'a second pass has nothing to do');

# --- max_deliveries bounds a pass -------------------------------------------
$node->safe_psql('postgres',
	"SELECT delq.submit('bulk-' || g, 'bulk') FROM generate_series(1, 10) g");
my $before = $sink->count;
my $confirmed_bulk = "SELECT count(*) FROM delq.delivery d JOIN delq.pending p
                        ON p.id = d.request_id
                     WHERE p.source = 'bulk' AND d.state = 'confirmed'";
is($node->safe_psql('postgres', 'SELECT delq.dispatch(max_deliveries => 3)'), '3',
	'dispatch(max_deliveries => 3) handles 3');
is($sink->count - $before, 3, '... the sink received 3');
is($node->safe_psql('postgres', $confirmed_bulk), '3', '... 3 confirmed');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM delq.delivery WHERE state = 'queued' AND attempts = 0"),
	'17', '... the other 17 untouched');
is($node->safe_psql('postgres', 'SELECT delq.dispatch(7)'), '7', 'dispatch(7) handles 7');
is($node->safe_psql('postgres', 'SELECT delq.dispatch(1000)'), '10', 'dispatch(1000) the rest');
is($sink->count - $before, 20, 'the sink received 20 in all, none twice');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM delq.pending WHERE source = 'bulk' AND status = 'completed'"),
	'10', 'all bulk requests completed');

# --- a destination's concurrency cap limits what is in flight, not the pass --
# 'capped' takes 2 at a time and answers in 300 ms: one pass sends all 6 due
# (in 3 rounds, so it takes at least ~0.9 s), not just the first 2.
$sink->control('capped', { delay_ms => 300 });
$node->safe_psql('postgres',
	"SELECT delq.add_destination('capped', '" . $sink->url('capped', '/hook') . "',
	                             concurrency => 2);
	 SELECT delq.add_route('capped', '{\"to\": \"capped\"}');");
$node->safe_psql('postgres',
	"SELECT delq.submit('capped-' || g, 'capped', attributes => '{\"to\": \"capped\"}')
	   FROM generate_series(1, 6) g");
my $t0 = time;
is($node->safe_psql('postgres', 'SELECT delq.dispatch()'), '18',
	'one pass handles all 18 due (6 to the capped destination, 12 to alpha and beta)');
my $took = time - $t0;
is($sink->count('capped'), 6, 'the capped destination received all 6 in one pass');
cmp_ok($took, '>=', 0.85, sprintf('... never more than 2 at once (the pass took %.2fs)', $took));
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM delq.pending WHERE source = 'capped' AND status = 'completed'"),
	'6', '... all 6 requests completed');
# (whatever that pass left, later passes finish: the tests below start clean)
for (1 .. 10)
{
	last if $node->safe_psql('postgres', 'SELECT delq.dispatch()') eq '0';
}

# --- not inside a transaction block --------------------------------------
my $rb_id = $node->safe_psql('postgres', "SELECT delq.submit('rollback-user', 'app')");
$before = $sink->count;
{
	my ($rc, $o, $e) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nBEGIN; SELECT delq.dispatch(); ROLLBACK;");
	like($e, qr/ERROR:  25001: delq.dispatch\(\) cannot run inside a transaction block/,
		'dispatch() in a transaction block: 25001');
	like($e, qr/HINT:  Run CALL delq.dispatch_pass\(\)/, '... with a hint');
	($rc, $o, $e) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nBEGIN; CALL delq.dispatch_pass(); COMMIT;");
	like($e, qr/ERROR:  25001: delq.dispatch_pass\(\) cannot run inside a transaction block/,
		'dispatch_pass() in a transaction block: 25001');
	is($sink->count - $before, 0, 'the refused calls sent nothing');
	($rc, $o, $e) = $node->psql('postgres', 'SELECT delq.dispatch()');
	is($o, '2', 'SELECT delq.dispatch() on its own still works');
	like($e, qr/NOTICE:  delq.dispatch\(\) is deprecated/, '... and says it is deprecated');
	is($node->safe_psql('postgres', "SELECT status FROM delq.pending WHERE id = '$rb_id'"),
		'completed', '... and completes the request');
}

# --- dispatch_pass commits each claim before sending ------------------------
{
	for my $case ([ 'NULL', '22004' ], [ '0', '22023' ])
	{
		my ($arg, $state) = @$case;
		my ($rc, $o, $e) = $node->psql('postgres',
			"\\set VERBOSITY verbose\nCALL delq.dispatch_pass($arg)");
		like($e, qr/ERROR:  $state: .*max_deliveries/, "dispatch_pass($arg): $state naming max_deliveries");
	}
	$sink->control('slowpass', { delay_ms => 6000 });
	$node->safe_psql('postgres',
		"SELECT delq.add_destination('slowpass', '" . $sink->url('slowpass', '/hook') . "');
		 SELECT delq.add_route('slowpass', '{\"to\": \"slowpass\"}');");
	my $sp = $node->safe_psql('postgres',
		"SELECT delq.submit('slow-sally', 'app', attributes => '{\"to\": \"slowpass\"}')");
	my ($in, $out, $err) = ('', '', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-h', $node->host, '-p', $node->port, '-d', 'postgres',
		  '-c', "SET application_name = 'the_pass'", '-c', 'CALL delq.dispatch_pass()' ],
		'<', \$in, '>', \$out, '2>', \$err);
	ok(poll_until($node, "SELECT count(*) > 0 FROM delq.delivery WHERE request_id = '$sp'
	                        AND destination = 'slowpass' AND state = 'sending'", 't', 15),
		'the pass claimed the slow delivery');
	ok($sink->wait_requests('slowpass', 1, 15), 'and sent it');
	is( $node->safe_psql('postgres',
			"SELECT state || ':' || attempts FROM delq.delivery
			  WHERE request_id = '$sp' AND destination = 'slowpass'"),
		'sending:1', 'while it is in flight, the claim is committed: sending, attempt 1');
	$node->safe_psql('postgres',
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'the_pass'");
	$h->finish;
	is( $node->safe_psql('postgres',
			"SELECT state || ':' || attempts FROM delq.delivery
			  WHERE request_id = '$sp' AND destination = 'slowpass'"),
		'sending:1', 'the session was killed mid-flight: the send is still on record');
	my ($rc, $o, $e) = $node->psql('postgres', "SELECT delq.reject('$sp', 'too late')");
	like($e, qr/has already been sent to/, 'so reject() refuses: the destination may have it');
	$sink->control('slowpass', { status => 200 });
	$node->safe_psql('postgres',
		"UPDATE delq.delivery SET lease_until = now() WHERE request_id = '$sp' AND state = 'sending'");
	$node->safe_psql('postgres', 'CALL delq.dispatch_pass()');
	is( $node->safe_psql('postgres',
			"SELECT state || ':' || attempts FROM delq.delivery
			  WHERE request_id = '$sp' AND destination = 'slowpass'"),
		'confirmed:2', 'the next pass requeued the expired lease and sent it again');
	my @r = $sink->requests('slowpass');
	is($r[0]{headers}{'webhook-id'}, $r[-1]{headers}{'webhook-id'}, '... with the same webhook id');
	$node->safe_psql('postgres', "SELECT delq.alter_destination('slowpass', enabled => false)");
	$node->safe_psql('postgres', 'CALL delq.dispatch_pass()');
}

# --- a 503 is retried by a later pass, after its backoff ---------------------
$sink->control('flaky', { status => 503, retry_after => '3', times => 1 });
$node->safe_psql('postgres',
	"SELECT delq.add_destination('flaky', '" . $sink->url('flaky', '/hook') . "',
	                             retry_max => '10s');
	 SELECT delq.add_route('flaky', '{\"to\": \"flaky\"}');");
my $f_id = $node->safe_psql('postgres',
	"SELECT delq.submit('frank', 'app', attributes => '{\"to\": \"flaky\"}')");
my $flaky = "SELECT %s FROM delq.delivery WHERE request_id = '$f_id' AND destination = 'flaky'";
is($node->safe_psql('postgres', 'SELECT delq.dispatch()'), '3',
	'dispatch() handles alpha, beta and flaky');
is( $node->safe_psql('postgres',
		sprintf($flaky,
			"state || ' ' || attempts || ' ' || last_status || ' ' ||
			 (next_attempt_at > now() + interval '1 second')")),
	'queued 1 503 true', 'flaky answered 503: queued for a retry after Retry-After (3 s)');
is($node->safe_psql('postgres', "SELECT status FROM delq.pending WHERE id = '$f_id'"),
	'forwarding', 'the request is still forwarding');
is($node->safe_psql('postgres', 'SELECT delq.dispatch()'), '0',
	'a pass before the backoff has passed sends nothing');
is($sink->count('flaky'), 1, '... the sink got flaky once');
ok(poll_until($node, sprintf($flaky, 'next_attempt_at <= now()'), 't', 30), 'backoff passes');
is($node->safe_psql('postgres', 'SELECT delq.dispatch()'), '1', 'a later pass retries flaky');
is($node->safe_psql('postgres', sprintf($flaky, "state || ' ' || attempts")),
	'confirmed 2', 'flaky confirmed on attempt 2');
is($node->safe_psql('postgres', "SELECT status FROM delq.pending WHERE id = '$f_id'"),
	'completed', 'the request completed');
my @f = $sink->requests('flaky');
is(scalar @f, 2, 'the sink got flaky twice');
is($f[0]{headers}{'webhook-id'}, $f[1]{headers}{'webhook-id'}, '... with the same webhook id');

# --- argument validation ----------------------------------------------------
$node->safe_psql('postgres', "SELECT delq.submit('grace', 'app')");    # work to (not) do
$before = $sink->count;
for my $case ([ 'NULL', '22004' ], [ '0', '22023' ], [ '-1', '22023' ],
	[ '1000001', '22023' ])
{
	my ($arg, $state) = @$case;
	my ($rc, $o, $e) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSELECT delq.dispatch($arg)");
	like($e, qr/ERROR:  $state: .*max_deliveries/, "dispatch($arg): $state naming max_deliveries");
}
is($sink->count, $before, 'the refused calls sent nothing');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM delq.delivery WHERE state = 'queued' AND attempts = 0"),
	'2', '... and claimed nothing');
is($node->safe_psql('postgres', 'SELECT delq.dispatch()'), '2', 'a valid call does the work');

# --- pg_cron drives dispatch() ----------------------------------------------
ok( poll_until(
		$cron,
		"SELECT count(*) FILTER (WHERE status = 'completed') FROM delq.pending
		  WHERE source = 'cron'",
		'3', $cron_wait),
	'pg_cron ' . ($cron_every_second ? 'every second' : 'every minute')
	  . ': all 3 requests completed');
note sprintf('via pg_cron %s after %.1fs', $cron_version, time - $t_cron);
is($cron->safe_psql('postgres', 'SELECT delq.worker_running()'), 'f',
	'the pg_cron node has no delq worker');
is($sink->count('viacron'), 3, 'the sink got 3 webhooks from the pg_cron node');
cmp_ok(
	$cron->safe_psql('postgres',
		"SELECT count(*) FROM cron.job_run_details r JOIN cron.job j USING (jobid)
		  WHERE j.jobname = 'delq' AND r.status = 'succeeded'
		    AND r.command = 'CALL delq.dispatch_pass()'"),
	'>=', 1, 'cron.job_run_details shows succeeded runs of CALL delq.dispatch_pass()');
is( $cron->safe_psql('postgres',
		"SELECT count(*) FROM cron.job_run_details WHERE status = 'failed'"),
	'0', 'and no failed runs');
$cron->safe_psql('postgres', "SELECT cron.unschedule('delq')");

note sprintf('033_dispatch: %.1fs', time - $t_start);
$node->stop('fast');
$cron->stop('fast');
done_testing();
