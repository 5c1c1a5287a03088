
# 010_pgtap.pl
#     Runs the pgTAP suites (test/pgtap/*.sql) with pg_prove, one TAP
#     assertion per file, so that they are part of `prove test/t/*.pl` and
#     `make installcheck`: on a fresh node with delq preloaded (the worker's
#     setup), then on one without (the delq.dispatch() setup).
#
#     Each file creates the pgtap and delq extensions, its login roles and
#     its data inside one transaction and rolls it back, so the files do not
#     depend on each other or on their order.  They run in a database of
#     their own, not the worker's (delq.database = postgres), so the worker
#     never sees them.
#
#     Afterwards the server log must hold none of the subjects the suites
#     submitted: personal data never reaches the logs.
#
#     Run from the tree root:
#       prove -I test/perl test/t/010_pgtap.pl

use strict;
use warnings;

use Cwd ();
use DelqTest;
use File::Basename qw(basename);
use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my @files = sort glob('test/pgtap/*.sql');
ok(scalar @files, 'test/pgtap holds pgTAP files (prove runs from the tree root)')
  or BAIL_OUT('no test/pgtap/*.sql in ' . Cwd::getcwd());

# PostgreSQL::Test::Cluster logs every statement; the suites' statements
# hold subjects by design, so statement logging is off here and the log
# holds only what the server and delq themselves write.
#
# Twice: with the library preloaded (the worker's setup) and without it
# (the delq.dispatch() setup), where it is loaded by the first call.
for my $preload (1, 0)
{
	my $setup = $preload ? 'preloaded' : 'not preloaded';
	my $node = delq_node($preload ? 'pgtap_preload' : 'pgtap_nopreload',
		preload => $preload,
		extension => 0,
		conf => "log_statement = none\n");
	my $db = 'delq_pgtap';
	$node->safe_psql('postgres', "CREATE DATABASE $db");

	# A missing pgTAP is a setup problem, said once here rather than as a
	# failure in every file.
	my $available = $node->safe_psql($db,
		"SELECT string_agg(name, ',' ORDER BY name) FROM pg_available_extensions
		  WHERE name IN ('delq', 'pgtap')");
	is($available, 'delq,pgtap', "$setup: the delq and pgtap extensions are installed")
	  or diag('install postgresql-15-pgtap (test/install-deps) and run make install');

	for my $file (@files)
	{
		my ($out, $err) = ('', '');
		my @cmd = (
			'pg_prove', '--verbose',
			'--host' => $node->host,
			'--port' => $node->port,
			'--dbname' => $db,
			$file);
		my $ok = IPC::Run::run(\@cmd, '<', \undef, '>', \$out, '2>', \$err);
		# The whole output goes to the test log; a failure also shows what
		# failed.
		note(join(' ', @cmd) . "\n$out$err");
		ok($ok, "$setup: pgTAP " . basename($file))
		  or diag(join("\n",
			  grep { /^(not ok|#|\S.*(?:Failed|Bad plan|ERROR|FATAL|Result))/ }
			  split(/\n/, "$out\n$err")));
	}

	# The suites use subjects such as jane.doe@example.com and
	# pd-marker-1@example.org; none may appear in the server log.
	$node->stop;
	my $log = slurp_file($node->logfile);
	unlike($log, qr/pd-marker|jane\.doe\@example|john\.roe\@example/,
		"$setup: the server log holds none of the subjects that were submitted");
	unlike($log, qr/TOPSECRET|whsec_/,
		"$setup: the server log holds none of the destination secrets");
}

done_testing();
