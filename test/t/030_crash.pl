
# 030_crash.pl
#     Nothing is lost when the server dies while deliveries are in flight.
#
#     1. kill -9 of the postmaster while a slow sink holds many deliveries
#        in 'sending': after a restart every request completes, every
#        delivery is confirmed and the sink saw every webhook id (resends
#        allowed, loss not).
#     2. kill -9 of the delq worker only (restart_after_crash = on): crash
#        recovery, a new worker, everything confirmed.
#     3. A plain restart (stop -m fast, start) with queued and in-flight
#        deliveries resumes them.
#
#     The sink records a request before it answers, and its log file
#     outlives every crash, so "seen by the sink" is independent of what
#     the database remembers.

use strict;
use warnings;

use DelqTest;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

# Requests per phase (each goes to two destinations).
my $N = $ENV{DELQ_CRASH_REQUESTS} // 2000;
my $N_RESTART = int($N / 4) || 1;
my $DELAY_MS = 200;           # the sink's answer time: keeps many in flight
my $CONCURRENCY = 64;         # per destination
my $TIMEOUT = 120;            # seconds for anything after a crash
my @DESTS = qw(crm erp);
my $ndests = scalar @DESTS;

my $t_start = time;
my $node = delq_node('crash',
	conf => "restart_after_crash = on\n"
	  # no breaker in the way: this file is about crashes
	  . "delq.breaker_threshold = 100000\n");
my $sink = start_sink();

for my $d (@DESTS)
{
	$sink->control($d, { delay_ms => $DELAY_MS });
	$node->safe_psql('postgres',
		"SELECT delq.add_destination('$d', '" . $sink->url($d, '/hook')
		  . "', concurrency => $CONCURRENCY, timeout => '20s');
		 SELECT delq.add_route('$d', '{}');");
}

# --- helpers --------------------------------------------------------------

# Submit $n requests of $source in one transaction.
sub submit_batch
{
	my ($source, $n) = @_;
	my $got = $node->safe_psql('postgres',
		"SELECT count(delq.submit(subject => 'user-' || g, source => '$source',
		                          external_id => '$source-' || g))
		   FROM generate_series(1, $n) g");
	is($got, $n, "$source: $n requests submitted");
	return;
}

# Delivery state counts of one source: "confirmed|sending|queued|other".
sub states
{
	my ($source) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE d.state = 'confirmed') || '|' ||
		        count(*) FILTER (WHERE d.state = 'sending') || '|' ||
		        count(*) FILTER (WHERE d.state = 'queued') || '|' ||
		        count(*) FILTER (WHERE d.state NOT IN ('confirmed', 'sending', 'queued'))
		   FROM delq.delivery d JOIN delq.pending p ON p.id = d.request_id
		  WHERE p.source = '$source'");
}

# Wait until some deliveries of $source are confirmed and many in flight.
sub wait_mid_flight
{
	my ($source, $min_confirmed, $min_sending) = @_;
	ok( poll_until(
			$node,
			"SELECT count(*) FILTER (WHERE d.state = 'confirmed') >= $min_confirmed
			    AND count(*) FILTER (WHERE d.state = 'sending') >= $min_sending
			   FROM delq.delivery d JOIN delq.pending p ON p.id = d.request_id
			  WHERE p.source = '$source'",
			't', 60),
		"$source: some deliveries confirmed, at least $min_sending in flight");
	my $s = states($source);
	note "$source before the blow: confirmed|sending|queued|other = $s";
	return $s;
}

# Every request of $source completes and every delivery is confirmed.
sub assert_all_done
{
	my ($source, $n) = @_;
	my $t0 = time;
	ok( poll_until(
			$node,
			"SELECT count(*) FILTER (WHERE status = 'completed') || '/' || count(*)
			   FROM delq.pending WHERE source = '$source'",
			"$n/$n", $TIMEOUT),
		"$source: all $n requests completed");
	note sprintf("%s: finished %.1fs after the blow", $source, time - $t0);
	is( $node->safe_psql('postgres',
			"SELECT count(*) || '|' || count(*) FILTER (WHERE d.state = 'confirmed')
			        || '|' || count(*) FILTER (WHERE d.confirmed_at IS NULL)
			   FROM delq.delivery d JOIN delq.pending p ON p.id = d.request_id
			  WHERE p.source = '$source'"),
		($n * $ndests) . '|' . ($n * $ndests) . '|0',
		"$source: all " . ($n * $ndests) . " deliveries exist and are confirmed");
	return;
}

# Webhook ids the sink has seen (from its log file, which outlives crashes)
# and how many requests carried each.
sub sink_seen
{
	my %seen;
	open(my $fh, '<', $sink->log_file) or die "sink log: $!";
	while (my $line = <$fh>)
	{
		my $rec = eval { decode_json($line) } or next;
		my $id = $rec->{headers}{'webhook-id'};
		$seen{$id}++ if defined $id;
	}
	close $fh;
	return \%seen;
}

sub assert_sink_saw_all
{
	my ($source) = @_;
	my @ids = split /\n/, $node->safe_psql('postgres',
		"SELECT d.webhook_id FROM delq.delivery d
		   JOIN delq.pending p ON p.id = d.request_id
		  WHERE p.source = '$source' ORDER BY 1");
	my $seen = sink_seen();
	my @missing = grep { !$seen->{$_} } @ids;
	is(scalar @missing, 0,
		"$source: the sink received every one of " . scalar(@ids) . ' webhook ids')
	  or diag('missing: ' . join(' ', @missing[ 0 .. ($#missing < 9 ? $#missing : 9) ]));
	my $resent = grep { $seen->{$_} > 1 } @ids;
	note "$source: $resent webhook ids arrived more than once (resends are allowed)";
	return;
}

# PIDs of the processes whose parent is $ppid.
sub children_of
{
	my ($ppid) = @_;
	my @pids;
	for my $stat (glob '/proc/[0-9]*/stat')
	{
		open(my $fh, '<', $stat) or next;
		my $line = <$fh> // '';
		close $fh;
		# pid (comm) state ppid ...: comm may hold spaces and parens
		push @pids, $1 if $line =~ /^(\d+) \(.*\) \S+ (\d+) / && $2 == $ppid;
	}
	return @pids;
}

# True once the process is gone; a zombie counts as gone only if $zombie_ok.
sub process_gone
{
	my ($pid, $zombie_ok) = @_;
	return 1 unless kill(0, $pid);
	return 0 unless $zombie_ok;
	open(my $fh, '<', "/proc/$pid/stat") or return 1;
	my $line = <$fh> // '';
	close $fh;
	return $line =~ /^\d+ \(.*\) Z /;
}

sub postmaster_pid
{
	open(my $fh, '<', $node->data_dir . '/postmaster.pid') or die "postmaster.pid: $!";
	my $pid = <$fh>;
	close $fh;
	chomp $pid;
	return $pid;
}

sub worker_pid
{
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'delq worker'");
}

# --- 1. kill -9 of the postmaster -----------------------------------------
ok(poll_until($node, 'SELECT delq.worker_running()', 't', 30), 'worker is running');

submit_batch('crash.pm', $N);
wait_mid_flight('crash.pm', int($N * $ndests / 4), 20);

my $pm = postmaster_pid();
my @children = children_of($pm);
cmp_ok(scalar @children, '>', 0, 'postmaster has children (' . scalar(@children) . ')');
my $log_offset = -s $node->logfile;
$node->kill9;
my $deadline = time + 60;
usleep(50_000) until (process_gone($pm, 0) && !grep { !process_gone($_, 1) } @children)
  || time > $deadline;
ok(process_gone($pm, 0), "old postmaster $pm is gone");
ok(!grep({ !process_gone($_, 1) } @children), 'its children are gone too');

$node->start;
assert_all_done('crash.pm', $N);
ok($node->log_contains(qr/delq worker requeued \d+ deliveries left in flight/, $log_offset),
	'the new worker requeued what the killed one left in flight');
cmp_ok(
	$node->safe_psql('postgres',
		"SELECT count(*) FROM delq.event
		  WHERE kind = 'requeued' AND detail->>'because' = 'worker restarted'"),
	'>', 0, 'requeues are in the audit trail');
assert_sink_saw_all('crash.pm');

# --- 2. kill -9 of the worker only: crash recovery ------------------------
ok(poll_until($node, 'SELECT delq.worker_running()', 't', 30), 'worker is running again');
submit_batch('crash.worker', $N);
wait_mid_flight('crash.worker', int($N * $ndests / 4), 20);

my $wpid = worker_pid();
like($wpid, qr/^\d+$/, "delq worker has pid $wpid");
$log_offset = -s $node->logfile;
is(kill('KILL', $wpid), 1, 'worker killed with SIGKILL');

ok( poll_until(
		$node,
		"SELECT count(*) = 1 AND min(pid) <> $wpid
		   FROM pg_stat_activity WHERE backend_type = 'delq worker'",
		't', $TIMEOUT),
	'a new worker runs after crash recovery');
ok( $node->log_contains(
		qr/delq worker.*\(PID $wpid\) was terminated by signal 9/, $log_offset),
	'the postmaster noticed the crash');
ok($node->log_contains(qr/all server processes terminated; reinitializing/, $log_offset),
	'and reinitialized (crash recovery)');
assert_all_done('crash.worker', $N);
ok($node->log_contains(qr/delq worker requeued \d+ deliveries left in flight/, $log_offset),
	'the new worker requeued what the killed one left in flight');
assert_sink_saw_all('crash.worker');

# --- 3. plain restart with pending requests -------------------------------
submit_batch('restart', $N_RESTART);
wait_mid_flight('restart', int($N_RESTART * $ndests / 4), 5);
$log_offset = -s $node->logfile;
$node->stop('fast');
$node->start;
assert_all_done('restart', $N_RESTART);
ok($node->log_contains(qr/delq worker started in database "postgres"/, $log_offset),
	'worker started again after the restart');
ok($node->log_contains(qr/delq worker requeued \d+ deliveries left in flight/, $log_offset),
	'it requeued what the stopped one left in flight');
assert_sink_saw_all('restart');

# --- overall --------------------------------------------------------------
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM delq.delivery WHERE state <> 'confirmed'"),
	'0', 'no delivery anywhere is left unconfirmed');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM delq.pending WHERE status <> 'completed'"),
	'0', 'no request anywhere is left incomplete');

note sprintf('030_crash: %.1fs', time - $t_start);
$node->stop('fast');
done_testing();
