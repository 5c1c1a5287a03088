
# 031_failover.pl
#     Failover loses nothing: requests queued on a primary (its destination
#     down) are forwarded by a streaming standby once it is promoted.
#
#     - On the standby, in recovery, no delq process runs (the launcher and
#       the worker start only when recovery has finished).
#     - Requests are submitted on the primary while the sink is down (a
#       black hole on the destinations' port: connections are accepted by
#       the kernel and never answered, so deliveries hang in 'sending',
#       time out and are rescheduled), the standby catches up, the primary
#       is killed (-9), the standby is promoted, the sink comes up on that
#       port: the promoted standby's worker requeues what the primary left
#       in flight, completes every request, and the sink sees every webhook
#       id.

use strict;
use warnings;

use DelqTest;
use IO::Socket::INET;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $N = $ENV{DELQ_FAILOVER_REQUESTS} // 300;
my $TIMEOUT = 120;
my @DESTS = qw(crm erp);
my $ndests = scalar @DESTS;
my $t_start = time;

# The conf lines both nodes share (the standby's postgresql.conf is copied
# from the primary by the backup): delq preloaded, fast retries, and no
# circuit breaker (a down destination would otherwise open it for a minute).
my $primary = delq_node('primary',
	allows_streaming => 1,
	conf => "delq.breaker_threshold = 100000\n");

# The sink is not up yet: on its port, a black hole that never accepts.
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $hole = IO::Socket::INET->new(
	LocalAddr => '127.0.0.1',
	LocalPort => $port,
	Listen    => 1024,
	ReuseAddr => 1) or die "black hole on port $port: $!";
for my $d (@DESTS)
{
	$primary->safe_psql('postgres',
		"SELECT delq.add_destination('$d', 'http://127.0.0.1:$port/$d/hook',
		                             connect_timeout => '1s', timeout => '2s');
		 SELECT delq.add_route('$d', '{}');");
}

$primary->backup('bk');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'bk', has_streaming => 1);
$standby->start;
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'standby is in recovery');
is($standby->safe_psql('postgres', 'SHOW shared_preload_libraries'), 'delq',
	'standby preloads delq');

ok(poll_until($primary, 'SELECT delq.worker_running()', 't', 30), 'primary: worker runs');

# Submit while the sink is down: everything stays queued (or in flight).
my $got = $primary->safe_psql('postgres',
	"SELECT count(delq.submit(subject => 'user-' || g, source => 'failover',
	                          external_id => 'f-' || g))
	   FROM generate_series(1, $N) g");
is($got, $N, "primary: $N requests submitted while the destination is down");
ok( poll_until(
		$primary,
		"SELECT count(*) FILTER (WHERE state = 'sending') > 0
		    AND count(*) FILTER (WHERE attempts > 0 AND state = 'queued') > 0
		   FROM delq.delivery",
		't', 30),
	'primary: deliveries hang in flight, timed-out ones are rescheduled');
is( $primary->safe_psql('postgres',
		"SELECT count(*) FROM delq.delivery WHERE state IN ('confirmed', 'failed')"),
	'0', 'primary: nothing confirmed or failed');

$primary->wait_for_catchup($standby);
is( $standby->safe_psql('postgres',
		"SELECT count(*) FROM delq.pending WHERE source = 'failover'"),
	$N, "standby: all $N requests replicated");

# Seconds after start-up: still no delq process on the standby.
is( $standby->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'delq%'"),
	'0', 'standby: no delq launcher or worker while in recovery');
is($standby->safe_psql('postgres', 'SELECT delq.worker_running()'), 'f',
	'standby: delq.worker_running() is false');
ok(!$standby->log_contains(qr/delq worker started/), 'standby log: no worker started');

# Primary gone (some deliveries may be 'sending' in the replicated state).
my $pm_pid = $primary->{_pid};
$primary->kill9;
my $deadline = time + 60;
usleep(50_000) while kill(0, $pm_pid) && time < $deadline;
ok(!kill(0, $pm_pid), 'primary postmaster is gone');
note 'replicated delivery states: ' . $standby->safe_psql('postgres',
	"SELECT string_agg(state || '=' || n, ' ') FROM
	   (SELECT state, count(*) n FROM delq.delivery GROUP BY state ORDER BY state) s");
my $left_sending = $standby->safe_psql('postgres',
	"SELECT count(*) FROM delq.delivery WHERE state = 'sending'");

my $log_offset = -s $standby->logfile;
$standby->promote;
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 'f', 'standby promoted');
ok( poll_until(
		$standby,
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'delq worker'",
		'1', 60),
	'promoted standby: a delq worker runs');

# The destination comes back on its port.
close $hole;
my $sink = start_sink(port => $port);
is($sink->port, $port, "sink up on the destination's port $port");

my $t0 = time;
ok( poll_until(
		$standby,
		"SELECT count(*) FILTER (WHERE status = 'completed') || '/' || count(*)
		   FROM delq.pending WHERE source = 'failover'",
		"$N/$N", $TIMEOUT),
	"promoted standby: all $N requests completed");
note sprintf('completed %.1fs after the sink came up', time - $t0);

is( $standby->safe_psql('postgres',
		"SELECT count(*) || '|' || count(*) FILTER (WHERE state = 'confirmed')
		   FROM delq.delivery"),
	($N * $ndests) . '|' . ($N * $ndests),
	'every delivery exists and is confirmed');
ok($standby->log_contains(qr/delq worker started in database "postgres"/, $log_offset),
	'promoted standby log: worker started');
# The sink hangs, so the primary always has deliveries in flight here.
cmp_ok($left_sending, '>', 0, 'the primary left deliveries in flight');
ok( $standby->log_contains(
		qr/delq worker requeued $left_sending deliveries left in flight/, $log_offset),
	"promoted standby requeued the $left_sending deliveries the primary left in flight");

# Every webhook id reached the sink.
my %seen;
$seen{ $_->{headers}{'webhook-id'} // '' }++ for $sink->requests;
my @ids = split /\n/,
  $standby->safe_psql('postgres', 'SELECT webhook_id FROM delq.delivery ORDER BY 1');
is(scalar @ids, $N * $ndests, 'webhook ids listed');
my @missing = grep { !$seen{$_} } @ids;
is(scalar @missing, 0, 'the sink received every webhook id')
  or diag('missing: ' . join(' ', @missing[ 0 .. ($#missing < 9 ? $#missing : 9) ]));
note scalar(grep { $seen{$_} > 1 } @ids) . ' webhook ids arrived more than once';
is(scalar(grep { !$_->{headers}{'webhook-id'} } $sink->requests), 0,
	'no request without a webhook id');

note sprintf('031_failover: %.1fs', time - $t_start);
$standby->stop('fast');
done_testing();
