
# 024_restore.pl
#     Backups and restores (issue 10, docs/operations.md "Backups and
#     restores"):
#     - pg_dump -Fd, then pg_restore -j 2: delq.delivery references
#       delq.pending, and a parallel restore loads it first and loses it;
#       pg_restore exits non-zero, delq.check_consistency() names every
#       delivery the ledger knows was planned but the table lacks, and a
#       worker started in that database logs a WARNING;
#     - the documented procedure (delq's data in one job, the rest in
#       parallel) restores everything: check_consistency() is empty, the
#       ledger verifies;
#     - of the keys in delq.key after a restore (the restored ones and those
#       CREATE EXTENSION made), the restored ones sign and verify: a receipt
#       made in the restored database verifies in the original and back;
#     - delq.worker_running() answers for the database it is called in.

use strict;
use warnings;

use DelqTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $sink = start_sink();
my $node = delq_node('restore');
my @conn = ('-h', $node->host, '-p', $node->port);

sub sql { my ($db, $q) = @_; return $node->safe_psql($db, $q) }

ok(poll_until($node, 'SELECT delq.worker_running()', 't', 30), 'the worker serves database postgres');

sql('postgres', "SELECT delq.add_destination('crm', '" . $sink->url('crm', '/hook') . "');
                 SELECT delq.add_route('crm');
                 SELECT delq.add_destination('later', 'http://127.0.0.1:9/off', enabled => false);
                 SELECT delq.add_route('later', '{\"source\": \"shop\"}');");
sql('postgres', "SELECT delq.submit('done-' || g || '\@example.com', 'app') FROM generate_series(1, 20) g");
sql('postgres', "SELECT delq.submit('open-' || g || '\@example.com', 'shop') FROM generate_series(1, 30) g");
ok(poll_until($node, "SELECT count(*) FROM delq.pending WHERE status = 'completed'", '20', 30),
	'20 requests completed, 30 wait for a paused destination');
sql('postgres', "SELECT delq.archive()");
my $deliveries = sql('postgres', 'SELECT count(*) FROM delq.delivery');
is($deliveries, '60', '60 open deliveries (30 requests x 2 destinations)');
my $done = sql('postgres', 'SELECT id FROM delq.finished ORDER BY id LIMIT 1');

# --- worker_running() is per database ----------------------------------------
{
	$node->safe_psql('postgres', 'CREATE DATABASE other');
	sql('other', "CREATE EXTENSION delq;
	              SELECT delq.add_destination('o', '" . $sink->url('o', '/hook') . "');
	              SELECT delq.add_route('o');");
	is(sql('other', 'SELECT delq.worker_running()'), 'f',
		'worker_running() is false in a database no worker serves');
	my $rid = sql('other', "SELECT delq.submit('x\@example.com', 'app')");
	sleep 2;
	is(sql('other', "SELECT state FROM delq.delivery WHERE request_id = '$rid'"), 'queued',
		'and indeed a request there stays queued');
	is(sql('postgres', 'SELECT delq.worker_running()'), 't', 'while it is true in postgres');
}

my $dump = PostgreSQL::Test::Utils::tempdir() . '/dump';
command_ok([ 'pg_dump', @conn, '-Fd', '-f', $dump, 'postgres' ], 'pg_dump -Fd');

# --- pg_restore -j 2: loud, and check_consistency() tells what is missing ----
{
	$node->safe_psql('postgres', 'CREATE DATABASE par');
	my ($stdout, $stderr);
	my $ok = IPC::Run::run([ 'pg_restore', @conn, '-j', '2', '-d', 'par', $dump ],
		'>', \$stdout, '2>', \$stderr);
	my $lost = sql('par', 'SELECT count(*) FROM delq.delivery') ne $deliveries;
	if ($lost)
	{
		ok(!$ok, 'pg_restore -j 2 lost rows and exits non-zero');
		like($stderr, qr/violates foreign key constraint/, 'and says why');
		my $missing = sql('par', "SELECT count(*) FROM delq.check_consistency() WHERE problem = 'delivery missing'");
		is($missing, 60 - sql('par', 'SELECT count(*) FROM delq.delivery'),
			"check_consistency() names each of the $missing missing deliveries");
		is(sql('par', "SELECT count(*) FROM delq.check_consistency() WHERE problem = 'delivery missing'
		                  AND destination = 'later'"), '30', 'including the 30 to the paused destination');
		# a worker that starts in the incomplete copy says so
		my $offset = -s $node->logfile;
		$node->append_conf('postgresql.conf', "delq.database = 'par'\n");
		$node->restart;
		ok(poll_until($node, 'SELECT delq.worker_running()', 't', 30, 'par'), 'a worker started in the copy');
		ok($node->log_contains(qr/WARNING:  delq: 30 open requests in database "par" have lost their deliveries/,
				$offset), 'and warned that 30 open requests lost their deliveries');
	}
	else
	{
		# the jobs happened to load the tables in order this time
		ok($ok, 'pg_restore -j 2 restored everything');
		is(sql('par', 'SELECT count(*) FROM delq.check_consistency()'), '0', 'check_consistency() is empty');
	}
}

# --- the documented procedure --------------------------------------------
{
	$node->safe_psql('postgres', 'CREATE DATABASE seq');
	command_ok([ 'pg_restore', @conn, '-d', 'seq', '--section=pre-data', $dump ], 'pre-data');
	command_ok([ 'pg_restore', @conn, '-d', 'seq', '--section=data', '-n', 'delq', $dump ],
		"delq's data in one job");
	command_ok([ 'pg_restore', @conn, '-d', 'seq', '--section=data', '-N', 'delq', '-j', '2', $dump ],
		'the rest of the data in parallel');
	command_ok([ 'pg_restore', @conn, '-d', 'seq', '--section=post-data', '-j', '2', $dump ],
		'post-data in parallel');
	is(sql('seq', 'SELECT count(*) FROM delq.delivery'), $deliveries, 'every delivery restored');
	is(sql('seq', 'SELECT count(*) FROM delq.check_consistency()'), '0', 'check_consistency() is empty');
	is(sql('seq', 'SELECT count(*) FROM delq.verify_ledger()'), '0', 'the ledger verifies');

	# drop rows behind delq's back: the check finds each kind
	sql('seq', "ALTER TABLE delq.delivery DISABLE TRIGGER ALL;
	            DELETE FROM delq.delivery WHERE id = (SELECT min(id) FROM delq.delivery);
	            DELETE FROM delq.route WHERE destination = 'later';");
	is(sql('seq', "SELECT string_agg(problem || ':' || coalesce(destination, ''), ',')
	                 FROM delq.check_consistency()"),
		'delivery missing:crm,route missing:later', 'a lost delivery and a lost route are found');
}

# --- keys: the restored ones sign and verify -------------------------------
{
	my $keys = "SELECT string_agg(name || ':' || encode(sha256(secret), 'hex'), ',' ORDER BY name)
	              FROM (SELECT DISTINCT ON (name) name, secret FROM delq.key ORDER BY name, created_at) k";
	# receipt, subject and confirm (HTTP confirmation links, 88_http.sql)
	is(sql('seq', 'SELECT count(*) FROM delq.key'), '6',
		'delq.key holds the 3 restored keys and the 3 CREATE EXTENSION made');
	is(sql('seq', $keys), sql('postgres', $keys), 'the earliest of each name, the restored one, is in use');
	my $r = sql('seq', "SELECT delq.receipt('$done')");
	is(sql('postgres', "SELECT delq.verify_receipt('$r')"), 't',
		'a receipt signed in the restored database verifies in the original');
	my $o = sql('postgres', "SELECT delq.receipt('$done')");
	is(sql('seq', "SELECT delq.verify_receipt('$o')"), 't', 'and one from the original in the restored');
	is(sql('seq', "SELECT delq.was_erased('done-1\@example.com')"), 't',
		'a subject hashed before the dump is found with the restored key');
}

$node->stop;
done_testing();
