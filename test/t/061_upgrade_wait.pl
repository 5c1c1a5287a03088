
# 061_upgrade_wait.pl
#     The new library in a database whose extension is still 1.0 (users
#     install the package first and run ALTER EXTENSION later,
#     docs/upgrading.md): the worker waits with one log line, no error and no
#     restart, sends nothing; requests can still be submitted and held, the
#     ledger still seals them; delq.dispatch() refuses with a hint; after
#     ALTER EXTENSION delq UPDATE the same worker process resumes by itself
#     and delivers what queued up under the webhook ids 1.0 gave it, and
#     delq.verify_ledger() finds every chain intact.  (test/t/062_upgrade_live.pl
#     upgrades a live queue under 1.0's own library.)

use strict;
use warnings;

use DelqTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $QUIET_S = 5;    # > two of the worker's 2 s looks

my $node = delq_node('upgrade_wait', extension => 0,
	conf => "log_min_messages = 'warning'\n");
my $sink = start_sink();
my $current = $node->safe_psql('postgres',
	"SELECT default_version FROM pg_available_extensions WHERE name = 'delq'");
isnt($current, '1.0', "the library is a later version ($current)");

sub worker_pid
{
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'delq worker'");
}

sub trouble_since
{
	my ($offset) = @_;
	my $log = slurp_file($node->logfile, $offset);
	return join '', grep { /\b(?:FATAL|ERROR|PANIC|WARNING):|terminated by|exited with/ }
	  split /^/, $log;
}

# --- a 1.0 database under the new library -----------------------------------
my $offset = -s $node->logfile;
$node->safe_psql('postgres', "CREATE EXTENSION delq VERSION '1.0'");
$node->safe_psql('postgres',
	"SELECT delq.add_destination('crm', '" . $sink->url('crm') . "');
	 SELECT delq.add_route('crm');");
my $wait_line = qr/LOG:  delq worker waiting: extension "delq" in database "postgres" is at version 1\.0, this library needs \Q$current\E/;
ok($node->wait_for_log($wait_line, $offset), 'the worker says once that it waits for the update');
like(slurp_file($node->logfile, $offset),
	qr/HINT:  Run ALTER EXTENSION delq UPDATE in database "postgres"/, '... with a hint');
my $wpid = worker_pid();
like($wpid, qr/^\d+$/, 'one worker runs');

# Submits keep working on 1.0 (the ledger seal trigger is the new library's).
my @rids = map {
	$node->safe_psql('postgres', "SELECT delq.submit('waiting-$_', 'upgrade')")
} 1 .. 3;
my $held = $node->safe_psql('postgres',
	"SET delq.hold_period = '1h'; SELECT delq.submit('held', 'upgrade')");
my %wid = split /[|\n]/, $node->safe_psql('postgres',
	"SELECT request_id, webhook_id FROM delq.delivery ORDER BY request_id");
is(scalar keys %wid, 3, 'submits on 1.0 queue their deliveries');
is($node->safe_psql('postgres', "SELECT status FROM delq.pending WHERE id = '$held'"),
	'held', 'a held request is held (its deliveries come at release)');

my ($ret, $out, $err) = $node->psql('postgres', 'SELECT delq.dispatch()',
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
isnt($ret, 0, 'delq.dispatch() refuses on a 1.0 schema');
like($err, qr/55000: extension "delq" is at version 1\.0, but the loaded delq library is version \Q$current\E/,
	'... with SQLSTATE 55000 and both versions');
like($err, qr/HINT:  Run ALTER EXTENSION delq UPDATE/, '... and a hint');
my $quiet_from = -s $node->logfile;    # the log after that ERROR

sleep $QUIET_S;
is(worker_pid(), $wpid, "the same worker is still waiting after ${QUIET_S}s (no restarts)");
my @lines = slurp_file($node->logfile, $offset) =~ /$wait_line/g;
is(scalar @lines, 1, 'it said so once');
is(trouble_since($quiet_from), '', 'no error, warning or worker exit in the log');
is($sink->count, 0, 'nothing was sent before the update');
is($node->safe_psql('postgres', "SELECT count(*) FROM delq.delivery WHERE state = 'queued'"),
	'3', 'every delivery is still queued');

# --- the update: the same worker resumes ------------------------------------
$node->safe_psql('postgres', 'ALTER EXTENSION delq UPDATE');
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'delq'"),
	$current, "the extension is at $current");
ok($sink->wait_requests('crm', 3, 30), 'the waiting requests are delivered');
ok( poll_until(
		$node,
		"SELECT count(*) FROM delq.pending WHERE status = 'completed' AND id IN ('"
		  . join("','", @rids) . "')",
		'3', 30),
	'... and completed');
is(worker_pid(), $wpid, 'by the same worker process');
ok($node->log_contains(qr/delq worker: extension "delq" in database "postgres" is now at version \Q$current\E/, $offset),
	'log: the worker saw the update');
for my $rid (@rids)
{
	my @got = $sink->for_request('crm', $rid);
	is_deeply([ map { $_->{headers}{'webhook-id'} } @got ], [ $wid{$rid} ],
		"request $rid sent once, under the webhook id given on 1.0");
}
is($node->safe_psql('postgres', "SELECT status FROM delq.pending WHERE id = '$held'"),
	'held', 'the held request stays held');
is($node->safe_psql('postgres', 'SELECT count(*) FROM delq.verify_ledger()'),
	'0', 'delq.verify_ledger() finds every chain intact');
is(trouble_since($quiet_from), '', 'no error, warning or worker exit in the log');

done_testing();
