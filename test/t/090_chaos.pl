
# 090_chaos.pl
#     Faults all at once (issue 10): requests are submitted continuously to
#     four destinations of one recording sink ('healthy'; 'flaky': 500, 503
#     or a connection reset for 20% of requests, at random; 'slow': 1 s per
#     answer; 'down': 503s and resets for a while, then back) while the
#     postmaster is killed with SIGKILL twice and the delq worker once
#     (restart_after_crash on; the long form repeats that every minute).  At the end: each request exists once and
#     completed, every delivery is confirmed with its own webhook id, no
#     breaker is left open, no webhook id reached the sink for two requests
#     or two destinations, each destination answered 2xx to each of its
#     webhook ids, delq.verify_ledger() and delq.check_consistency() are
#     clean; and the time from "'down' back" to "its queue drained" is
#     reported (a diag and a JSON results file), never asserted.
#
#     DELQ_CHAOS_SECONDS (default 40) is how long requests are submitted:
#     `make test` runs this short form, `make chaos` (test/chaos) a long
#     one, 600 s by default (test/README.md, "Chaos test").  Below 120 s,
#     'down' is down for a third of the time and the kills come at 25%
#     (postmaster), 50% (worker) and 75% (postmaster); from 120 s on it is
#     down for 30 s and the kills come in rounds (postmaster, worker 15 s
#     later, postmaster 15 s after that) every 60 s.  DELQ_CHAOS_COOLDOWN
#     sets delq.breaker_cooldown (default 5s below 300 s, else the server's
#     default, 60s); DELQ_CHAOS_SEED the sink's random draws;
#     DELQ_CHAOS_RESULTS the results file (default: in the log folder).
#
#     The sink is a separate process: what it received (its log file)
#     outlives the crashes.  The submitting client is a separate process
#     too: it retries a batch until submit() answered, under the same
#     external_ids, so a retry after a lost answer is idempotent, and it
#     counts a request only once its transaction committed.

use strict;
use warnings;

use DelqTest;
use JSON::PP;
use POSIX qw(WNOHANG);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $SECONDS = $ENV{DELQ_CHAOS_SECONDS} // 40;
die "DELQ_CHAOS_SECONDS must be at least 20\n" unless $SECONDS =~ /^\d+$/ && $SECONDS >= 20;
my $LONG = $SECONDS >= 120;
my $DOWN_S = $LONG ? 30 : int($SECONDS / 3);
my $COOLDOWN = $ENV{DELQ_CHAOS_COOLDOWN} // ($SECONDS >= 300 ? undef : '5s');
my $SEED = $ENV{DELQ_CHAOS_SEED} // int(rand(1_000_000));
my $BATCH = 3;                # requests per submit transaction
my $PACE_MS = 150;            # pause between two batches
my $SLOW_MS = 1000;           # the slow destination's answer time
my $TIMEOUT = 300;            # seconds for the queues to drain at the end
my %D = map { $_ => $_ } qw(healthy flaky slow down);
my @DESTS = sort values %D;

my $t_start = time;
my $node = delq_node('chaos',
	conf => "restart_after_crash = on\n"
	  . (defined $COOLDOWN ? "delq.breaker_cooldown = '$COOLDOWN'\n" : ''));
my $sink = start_sink(seed => $SEED);
note "the sink's random draws: DELQ_CHAOS_SEED=$SEED";

$sink->control($D{flaky},
	{
		random => [
			{ chance => 0.05, status => 500 },
			{ chance => 0.05, status => 503 },
			{ chance => 0.10, reset => JSON::PP::true }
		]
	});
$sink->control($D{slow}, { delay_ms => $SLOW_MS });
for my $d (@DESTS)
{
	$node->safe_psql('postgres',
		"SELECT delq.add_destination('$d', '" . $sink->url($d, '/hook')
		  . "', concurrency => 32, timeout => '10s');
		 SELECT delq.add_route('$d', '{}');");
}
ok(poll_until($node, 'SELECT delq.worker_running()', 't', 30), 'worker is running');

# --- the submitting client --------------------------------------------------

my $dir = PostgreSQL::Test::Utils::tempdir('chaos');
my ($stop_file, $progress_file) = ("$dir/stop", "$dir/progress");

# Submits batches of $BATCH requests (external_id chaos-1, chaos-2, ...) in
# one transaction each, through psql, until $stop_file exists.  A batch that
# did not answer (connection refused or lost, crash) is sent again as it was
# until it answers; only then are its requests counted, in $progress_file
# ("<requests> <failed tries> <gave up>").  It ends with the test: a test
# killed mid-way leaves no client behind.
sub submitter
{
	my ($parent) = @_;
	my $connstr = $node->connstr('postgres');
	open(STDERR, '>>', "$dir/submitter.stderr");
	$ENV{PGCONNECT_TIMEOUT} = 3;
	my ($done, $failed) = (0, 0);
	my $save = sub {
		my ($gave_up) = @_;
		open(my $fh, '>', "$progress_file.tmp") or POSIX::_exit(3);
		print $fh "$done $failed $gave_up\n";
		close $fh;
		rename("$progress_file.tmp", $progress_file) or POSIX::_exit(3);
	};
	$save->(0);
	until (-e $stop_file)
	{
		my ($first, $last) = ($done + 1, $done + $BATCH);
		my $since = time;
		while (1)
		{
			my $out = '';
			if (open(my $ph, '-|', 'psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1',
					'-d', $connstr, '-c',
					"SELECT count(delq.submit(subject => 'user-' || g, source => 'chaos',
					                          external_id => 'chaos-' || g))
					   FROM generate_series($first, $last) g"))
			{
				local $/;
				$out = <$ph> // '';
				close $ph;
			}
			chomp $out;
			last if $? == 0 && $out eq $BATCH;
			$failed++;
			POSIX::_exit(2) if getppid() != $parent;
			if (time - $since > 120)
			{
				$save->(1);
				POSIX::_exit(1);
			}
			usleep(200_000);
		}
		$done = $last;
		$save->(0);
		POSIX::_exit(2) if getppid() != $parent;
		usleep($PACE_MS * 1000);
	}
	POSIX::_exit(0);
}

sub progress
{
	open(my $fh, '<', $progress_file) or return (0, 0, 0);
	my @p = split ' ', (<$fh> // '0 0 0');
	close $fh;
	return @p;
}

# --- crashes ------------------------------------------------------------------

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

# Deliveries in flight now (a note: the blows should land mid-flight).
sub note_in_flight
{
	my ($what) = @_;
	my ($out, $err) = ('', '');
	$node->psql('postgres', "SELECT count(*) FROM delq.delivery WHERE state = 'sending'",
		stdout => \$out, stderr => \$err);
	note "$what: $out deliveries in flight";
	return;
}

sub kill_postmaster
{
	my ($n) = @_;
	note_in_flight("postmaster kill $n");
	open(my $fh, '<', $node->data_dir . '/postmaster.pid') or die "postmaster.pid: $!";
	chomp(my $pm = <$fh>);
	close $fh;
	my @children = children_of($pm);
	$node->kill9;
	my $deadline = time + 60;
	usleep(50_000) until (process_gone($pm, 0) && !grep { !process_gone($_, 1) } @children)
	  || time > $deadline;
	ok(process_gone($pm, 0) && !grep({ !process_gone($_, 1) } @children),
		"postmaster kill $n: the old postmaster $pm and its children are gone");
	$node->start;
	ok(poll_until($node, 'SELECT delq.worker_running()', 't', 60),
		"postmaster kill $n: restarted, the worker runs again");
	return;
}

sub worker_pid
{
	my ($pid, $err) = ('', '');
	for (1 .. 100)
	{
		$node->psql('postgres',
			"SELECT pid FROM pg_stat_activity WHERE backend_type = 'delq worker'",
			stdout => \$pid, stderr => \$err);
		return $pid if $pid =~ /^\d+$/;
		usleep(100_000);
	}
	return undef;
}

sub kill_worker
{
	my $wpid = worker_pid();
	note_in_flight('worker kill');
	ok(defined $wpid && kill('KILL', $wpid), 'worker kill: SIGKILL to the delq worker '
		  . ($wpid // '(none found)'));
	ok( poll_until(
			$node,
			"SELECT count(*) = 1 AND min(pid) <> " . ($wpid // 0)
			  . " FROM pg_stat_activity WHERE backend_type = 'delq worker'",
			't', 60),
		'worker kill: crash recovery, a new worker runs');
	return;
}

# --- the run ------------------------------------------------------------------

my $back_at;
my @schedule = (
	[
		0.15 * $SECONDS,
		sub {
			# down: every answer a 503 or a reset, for $DOWN_S seconds
			$sink->control(
				$D{down},
				{
					for_ms => $DOWN_S * 1000,
					random => [
						{ chance => 0.5, status => 503 },
						{ chance => 0.5, reset => JSON::PP::true }
					]
				});
			$back_at = $sink->program($D{down})->[0]{ends_at};
			note sprintf('%s is down for %ds', $D{down}, $DOWN_S);
		}
	]);
my ($kills, $worker_kills) = (0, 0);
my $step = $LONG ? 15 : 0.25 * $SECONDS;
for (my $t = $LONG ? 0.15 * $SECONDS + 10 : $step; $t + 2 * $step < $SECONDS; $t += 60)
{
	push @schedule,
	  [ $t, sub { kill_postmaster(++$kills) } ],
	  [ $t + $step, sub { kill_worker(); $worker_kills++ } ],
	  [ $t + 2 * $step, sub { kill_postmaster(++$kills) } ];
	last unless $LONG;
}

my $test_pid = $$;
my $submitter = fork() // die "fork: $!";
submitter($test_pid) if $submitter == 0;

my $t0 = time;
for my $event (@schedule)
{
	my ($at, $what) = @$event;
	usleep(50_000) while time < $t0 + $at;
	note sprintf('t=%.1fs: %d requests submitted', time - $t0, (progress())[0]);
	$what->();
}
usleep(100_000) while time < $t0 + $SECONDS;

open(my $fh, '>', $stop_file) or die $!;
close $fh;
my $deadline = time + 180;
usleep(100_000) while waitpid($submitter, WNOHANG) == 0 && time < $deadline;
my $rc = $?;
my ($N, $failed_tries, $gave_up) = progress();
ok(!$gave_up && $rc == 0, "the client submitted $N requests ($failed_tries tries failed and were repeated)");
cmp_ok($N, '>', 0, 'requests were submitted');
ok($kills >= 2 && $worker_kills >= 1,
	"the postmaster was killed $kills times, the worker $worker_kills (at least 2 and 1)");
ok(defined $back_at && time > $back_at, "$D{down} is back");

# --- the end state ------------------------------------------------------------

is( $node->safe_psql('postgres',
		"SELECT count(*) || '|' || count(DISTINCT external_id) || '|'
		        || coalesce(max(substr(external_id, 7)::integer), 0)
		   FROM delq.pending WHERE source = 'chaos'"),
	"$N|$N|$N", "each of the $N requests exists once (none lost, none doubled)");
ok( poll_until(
		$node,
		"SELECT count(*) FILTER (WHERE status = 'completed') || '/' || count(*)
		   FROM delq.pending WHERE source = 'chaos'",
		"$N/$N", $TIMEOUT),
	"every request completed");
my $ndel = $N * scalar @DESTS;
is( $node->safe_psql('postgres',
		"SELECT count(*) || '|' || count(*) FILTER (WHERE state = 'confirmed')
		        || '|' || count(DISTINCT webhook_id)
		   FROM delq.delivery d JOIN delq.pending p ON p.id = d.request_id
		  WHERE p.source = 'chaos'"),
	"$ndel|$ndel|$ndel", "all $ndel deliveries exist, are confirmed, each has its own webhook id");
is( $node->safe_psql('postgres',
		"SELECT string_agg(name || CASE WHEN enabled THEN ' enabled ' ELSE ' disabled ' END
		                || breaker, ', ' ORDER BY name)
		   FROM delq.destination_health"),
	join(', ', map { "$_ enabled closed" } @DESTS),
	'no destination is left paused: every breaker is closed');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM delq.verify_ledger()"),
	'0', 'delq.verify_ledger() finds nothing wrong')
  or diag $node->safe_psql('postgres', 'SELECT * FROM delq.verify_ledger() LIMIT 20');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM delq.check_consistency()"),
	'0', 'delq.check_consistency() finds nothing wrong')
  or diag $node->safe_psql('postgres', 'SELECT * FROM delq.check_consistency() LIMIT 20');

# What the sink received, from its log file, which outlived every crash:
# per webhook id, the request ids in the bodies, the destinations, and the
# first time it was answered 2xx.
my (%requests_of, %dests_of, %ok_at, %answers);
open(my $log, '<', $sink->log_file) or die "sink log: $!";
while (my $line = <$log>)
{
	my $rec = eval { decode_json($line) } or next;
	my $wid = $rec->{headers}{'webhook-id'} // next;
	my $rid = eval { decode_json($rec->{body})->{request_id} } // '(none)';
	$requests_of{$wid}{$rid} = 1;
	$dests_of{$wid}{ $rec->{dest} } = 1;
	my $label = $rec->{outcome} eq 'answered' ? $rec->{status} : $rec->{outcome};
	$answers{ $rec->{dest} }{$label}++;
	$ok_at{ $rec->{dest} }{$wid} //= $rec->{time}
	  if $rec->{outcome} eq 'answered' && $rec->{status} < 300;
}
close $log;
note "what each destination answered: "
  . join('; ', map { my $a = $answers{$_}; "$_: " . join(', ', map { "$_ x$a->{$_}" } sort keys %$a) }
	  sort keys %answers);

my @shared = grep { keys %{ $requests_of{$_} } > 1 || keys %{ $dests_of{$_} } > 1 } keys %requests_of;
is(scalar @shared, 0, 'no webhook id was sent for two requests or to two destinations')
  or diag 'e.g. ' . join(', ', @shared[ 0 .. ($#shared < 4 ? $#shared : 4) ]);

my @deliveries = map { [ split /\|/ ] } split /\n/, $node->safe_psql('postgres',
	"SELECT d.destination, d.webhook_id, d.request_id,
	        extract(epoch FROM p.submitted_at)
	   FROM delq.delivery d JOIN delq.pending p ON p.id = d.request_id
	  WHERE p.source = 'chaos'");
for my $dest (@DESTS)
{
	my @mine = grep { $_->[0] eq $dest } @deliveries;
	my @missing = grep {
		!$ok_at{$dest}{ $_->[1] } || !$requests_of{ $_->[1] }{ $_->[2] }
	} @mine;
	is(scalar @missing, 0,
		"$dest received each of its " . scalar(@mine) . ' webhook ids, answered 2xx, with its request id')
	  or diag 'missing: ' . join(' ', map { $_->[1] } @missing[ 0 .. ($#missing < 9 ? $#missing : 9) ]);
}

# "back -> drained": from the end of the down window to the first 2xx answer
# of the last delivery that was waiting for it (submitted before it was back).
my @waiting = grep { $_->[0] eq $D{down} && $_->[3] < ($back_at // 0) } @deliveries;
my @answered_after = grep { defined } map { $ok_at{ $D{down} }{ $_->[1] } } @waiting;
my ($drained_at) = sort { $b <=> $a } @answered_after;
my ($first_ok) = sort { $a <=> $b } grep { $_ >= ($back_at // 0) } values %{ $ok_at{ $D{down} } };
my %result = (
	seconds              => $SECONDS + 0,
	seed                 => $SEED + 0,
	postmaster_kills     => $kills,
	worker_kills         => $worker_kills,
	down_seconds         => $DOWN_S,
	breaker_cooldown     => $COOLDOWN // 'server default',
	requests             => $N + 0,
	deliveries           => $ndel,
	failed_submit_tries  => $failed_tries + 0,
	waiting_when_back    => scalar @waiting,
	back_to_first_2xx_s  => defined $first_ok ? sprintf('%.1f', $first_ok - $back_at) + 0 : undef,
	back_to_drained_s    => defined $drained_at ? sprintf('%.1f', $drained_at - $back_at) + 0 : undef,
	total_seconds        => sprintf('%.0f', time - $t_start) + 0);
my $json = JSON::PP->new->canonical->encode(\%result);
my $results_file = $ENV{DELQ_CHAOS_RESULTS} // "$PostgreSQL::Test::Utils::log_path/090_chaos_results.json";
open(my $out, '>', $results_file) or die "$results_file: $!";
print $out "$json\n";
close $out;
diag sprintf('chaos: %s back -> drained %s s (%d deliveries were waiting; first 2xx after %s s); '
	  . '%d requests x 4 destinations in %d s, postmaster killed %d times, worker %d; '
	  . '%d submit tries repeated; results in %s',
	$D{down}, $result{back_to_drained_s} // '?', scalar @waiting,
	$result{back_to_first_2xx_s} // '?', $N, $SECONDS, $kills, $worker_kills,
	$failed_tries, $results_file);

$node->stop('fast');
done_testing();
