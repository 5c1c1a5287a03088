
# 090_chaos.pl
#     Faults all at once (issue 10).  Requests are submitted continuously
#     (idempotently, by external_id) to four destinations of one recording
#     sink: 'healthy'; 'flaky', which answers 503 to 10% and resets 10% of
#     requests at random; 'slow' (500 ms per answer); 'down', which resets
#     every connection for 30 s and then comes back.  Meanwhile the
#     postmaster is killed with SIGKILL twice and the worker once (crash
#     recovery).  At the end:
#     - every request completed and every delivery is confirmed;
#     - no destination is left paused (breaker closed);
#     - no webhook id reached a destination for two different requests, and
#       each destination received each of its webhook ids at least once;
#     - delq.verify_ledger() and delq.check_consistency() are clean;
#     and the time from "destination back" to "its queue drained" (what was
#     submitted before it came back is confirmed) is reported.
#
#     Short form (default suite, CI): submits for 45 s.  Long form:
#         test/chaos [SECONDS]        (e.g. test/chaos 600)
#     which runs this file with DELQ_CHAOS_SECONDS set (test/README.md).

use strict;
use warnings;

use DelqTest;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $D = $ENV{DELQ_CHAOS_SECONDS} // 45;    # seconds of submitting
die "DELQ_CHAOS_SECONDS must be at least 40" if $D < 40;
my $DOWN_FOR = 30;
my $t_down = 5;                             # 'down' goes down here ...
my @kills = (                               # ... and these happen meanwhile
	[ 8,  'postmaster' ],
	[ 20, 'worker' ],
	[ 32, 'postmaster' ]);
# a long run repeats the kills every 40 s after the first round
for (my $t = 48; $t < $D - 5; $t += 40)
{
	push @kills, [ $t, 'postmaster' ], [ $t + 12, 'worker' ], [ $t + 24, 'postmaster' ];
}

my $sink = start_sink(seed => 42);
my $node = delq_node('chaos',
	conf => "restart_after_crash = on\n"
	  . "delq.breaker_cooldown = '3s'\n"
	  . "delq.breaker_max_cooldown = '10s'\n"
	  . "log_min_messages = warning\n");
my @dests = qw(healthy flaky slow down);
for my $d (@dests)
{
	$node->safe_psql('postgres',
		"SELECT delq.add_destination('$d', '" . $sink->url($d, '/hook') . "');
		 SELECT delq.add_route('$d');");
}
$sink->control('flaky',
	{ random => [ { status => 503, chance => 0.1 }, { reset => JSON::PP::true, chance => 0.1 } ] });
$sink->control('slow', { delay_ms => 500 });
ok(poll_until($node, 'SELECT delq.worker_running()', 't', 30), 'worker running');

# --- processes --------------------------------------------------------------
sub pid_file
{
	open(my $fh, '<', $node->data_dir . '/postmaster.pid') or return undef;
	my $pid = <$fh>;
	close $fh;
	chomp $pid if defined $pid;
	return $pid;
}

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

sub gone
{
	my ($pid) = @_;
	return 1 unless kill(0, $pid);
	open(my $fh, '<', "/proc/$pid/stat") or return 1;
	my $line = <$fh> // '';
	close $fh;
	return $line =~ /^\d+ \(.*\) Z /;
}

my %killed = (postmaster => 0, worker => 0);

sub kill_postmaster
{
	my $pm = pid_file();
	my @children = children_of($pm);
	$node->kill9;
	my $deadline = time + 60;
	usleep(50_000) until (!kill(0, $pm) && !grep { !gone($_) } @children) || time > $deadline;
	$node->start;
	$killed{postmaster}++;
}

sub kill_worker
{
	my ($ret, $pid) = $node->psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'delq worker'");
	return unless $ret == 0 && $pid =~ /^\d+$/;
	$killed{worker}++ if kill('KILL', $pid);
}

# --- the run ------------------------------------------------------------------
my $n = 0;
my @unsure;       # external ids whose submit may not have committed
my $t0 = time;
my ($back_at, $drained_at);
my $down_set = 0;
my $next_drain_look = 0;
my $drain_sql;

while (time - $t0 < $D || (defined $back_at && !defined $drained_at && time - $t0 < $D + 180))
{
	my $t = time - $t0;
	if (!$down_set && $t >= $t_down)
	{
		$sink->control('down', [ { reset => JSON::PP::true, for_ms => $DOWN_FOR * 1000 } ]);
		$back_at = time + $DOWN_FOR;
		$down_set = 1;
	}
	if (@kills && $t >= $kills[0][0])
	{
		my (undef, $what) = @{ shift @kills };
		$what eq 'postmaster' ? kill_postmaster() : kill_worker();
		next;
	}
	if ($t < $D)
	{
		my @batch = (@unsure, map { 'chaos-' . ++$n } 1 .. 2);
		@unsure = ();
		my $values = join ',', map { "('$_')" } @batch;
		my ($ret) = $node->psql('postgres',
			"SELECT count(delq.submit(v.x || '\@example.com', 'chaos', external_id => v.x))
			   FROM (VALUES $values) v(x)");
		push @unsure, @batch if $ret != 0;
	}
	if (defined $back_at && !defined $drained_at && time >= $back_at && time >= $next_drain_look)
	{
		$drain_sql //= "SELECT count(*) FROM delq.delivery dl JOIN delq.pending p ON p.id = dl.request_id
		                 WHERE dl.destination = 'down' AND dl.state <> 'confirmed'
		                   AND p.submitted_at <= to_timestamp($back_at)";
		my ($ret, $left) = $node->psql('postgres', $drain_sql);
		$drained_at = time if $ret == 0 && $left eq '0';
		$next_drain_look = time + 0.25;
	}
	usleep(50_000);
}
my $submitted = $n;
# whatever may not have committed is submitted again: the same request
for my $x (map { "chaos-$_" } 1 .. $n)
{
	$node->safe_psql('postgres', "SELECT delq.submit('$x\@example.com', 'chaos', external_id => '$x')")
	  if grep { $_ eq $x } @unsure;
}

cmp_ok($killed{postmaster}, '>=', 2, 'the postmaster was killed with SIGKILL at least twice');
cmp_ok($killed{worker}, '>=', 1, 'the worker was killed with SIGKILL at least once');

# --- the end state -------------------------------------------------------------
ok( poll_until(
		$node,
		"SELECT count(*) FILTER (WHERE status <> 'completed') || '/' || count(*)
		   FROM delq.pending WHERE source = 'chaos'",
		"0/$submitted", 240),
	"all $submitted requests completed, none twice");
is( $node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE state <> 'confirmed') || '/' || count(*) FROM delq.delivery"),
	'0/' . (4 * $submitted), 'every delivery confirmed');
ok( poll_until(
		$node,
		"SELECT string_agg(name || ':' || breaker, ',' ORDER BY name) FROM delq.destination_health",
		join(',', map { "$_:closed" } sort @dests), 30),
	'no destination left paused');

my %rid_of;       # webhook id -> request ids seen with it
my %got;          # destination -> webhook id -> 1
for my $r ($sink->requests)
{
	my $wid = $r->{headers}{'webhook-id'} // next;
	my $rid = eval { decode_json($r->{body})->{request_id} } // next;
	$rid_of{$wid}{$rid} = 1;
	$got{ $r->{dest} }{$wid} = 1;
}
is(scalar(grep { keys %{ $rid_of{$_} } > 1 } keys %rid_of), 0,
	'no webhook id was delivered for two different requests');
my @missing;
for my $row (split /\n/, $node->safe_psql('postgres',
		'SELECT destination, webhook_id FROM delq.delivery'))
{
	my ($dest, $wid) = split /\|/, $row;
	push @missing, "$dest:$wid" unless $got{$dest}{$wid};
}
is(scalar(@missing), 0, 'each destination received each of its webhook ids at least once')
  or diag("missing: @missing[0 .. ($#missing < 9 ? $#missing : 9)]");
is($node->safe_psql('postgres', 'SELECT count(*) FROM delq.verify_ledger()'), '0',
	'delq.verify_ledger() is clean');
is($node->safe_psql('postgres', 'SELECT count(*) FROM delq.check_consistency()'), '0',
	'delq.check_consistency() is clean');

ok(defined $drained_at, "'down' drained after it came back");
my $drain = defined $drained_at ? sprintf('%.1f', $drained_at - $back_at) : 'never';
my $summary = sprintf(
	'chaos: %d s, %d requests x 4 destinations; postmaster killed %d times, worker %d; '
	  . "destination back -> queue drained: %s s; %d requests received by the sink",
	$D, $submitted, $killed{postmaster}, $killed{worker}, $drain, scalar($sink->requests));
diag($summary);
if (my $file = $ENV{DELQ_CHAOS_REPORT})
{
	open(my $fh, '>>', $file) or die "$file: $!";
	print $fh "$summary\n";
	close $fh;
}

$node->stop('fast');
done_testing();
