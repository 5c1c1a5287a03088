
# bench/http-submits.pl: submits over the HTTP API, a bounded loop.
#
#   PATH=$PGBIN:$PATH perl -I $PGXS/src/test/perl -I test/perl \
#       bench/http-submits.pl [N] [ROUNDS]
#
# Starts a throw-away cluster with the installed delq and delq.http_listen,
# makes a submitter token, then ROUNDS times (default 5) sends N (default
# 2000) POST /v1/requests, each a new subject, one after another over one
# kept-alive connection (one curl process reading a config file), and
# prints the rate of each round and their median, and the CPU time the
# HTTP worker used per submit (from /proc: user + system), which other
# load on the machine disturbs far less than the rate.  A measurement, not
# a test: nothing fails on a number (bench/http-plans.md has results).
# With BENCH_PGSS=1 pg_stat_statements (track = all, track_planning) is
# loaded too, and the planning the route's SQL and the token lookup did is
# printed: how many plans, and their time per call.

use strict;
use warnings;

use DelqTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More ();
use Time::HiRes qw(time usleep);

# PostgreSQL::Test::Utils sends STDOUT to its log file; Test::More's
# output handle still reaches the terminal.
my $out = Test::More->builder->output;

my $n = shift // 2000;
my $rounds = shift // 5;
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $base = "http://127.0.0.1:$port";
my $pgss = $ENV{BENCH_PGSS} // 0;
my $node = delq_node('bench_http',
	conf => "delq.http_listen = '127.0.0.1:$port'\n"
	  . "delq.http_max_client_connections = 0\n"
	  . ($pgss
		? "shared_preload_libraries = 'delq, pg_stat_statements'\n"
		  . "pg_stat_statements.track = all\npg_stat_statements.track_planning = on\n"
		: ''));
my $dir = PostgreSQL::Test::Utils::tempdir('bench_http');

for (1 .. 300)
{
	last if `curl -s -o /dev/null -w '%{http_code}' $base/v1/healthz` eq '200';
	usleep(100_000);
}
$node->safe_psql('postgres', 'CREATE ROLE bench NOLOGIN IN ROLE delq_submitter');
my $token = $node->safe_psql('postgres', "SELECT delq.add_api_token('bench', 'bench')");

my $wpid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'delq http'");
my $ticks = `getconf CLK_TCK` + 0 || 100;

# CPU seconds (user + system) of a process so far.
sub cpu_seconds
{
	open(my $fh, '<', "/proc/$_[0]/stat") or die "/proc/$_[0]/stat: $!";
	my @f = split ' ', (split /\) /, <$fh>)[1];
	return ($f[11] + $f[12]) / $ticks;
}

my (@rates, @cpus);
for my $round (1 .. $rounds)
{
	my $cfg = "$dir/round$round.cfg";
	open(my $fh, '>', $cfg) or die $!;
	for my $i (1 .. $n)
	{
		print $fh ($i > 1 ? "next\n" : ''),
		  "url = \"$base/v1/requests\"\n",
		  "header = \"Authorization: Bearer $token\"\n",
		  "header = \"Content-Type: application/json\"\n",
		  "data = \"{\\\"subject\\\": \\\"r$round-$i\@example.com\\\", \\\"source\\\": \\\"bench\\\"}\"\n",
		  "output = \"/dev/null\"\n",
		  "write-out = \"%{http_code}\\\\n\"\n";
	}
	close $fh;
	my $t0 = time;
	my $c0 = cpu_seconds($wpid);
	my $codes = `curl -s -K $cfg`;
	my $took = time - $t0;
	my $cpu = (cpu_seconds($wpid) - $c0) / $n * 1e6;
	my $created = () = $codes =~ /^201$/mg;
	die "round $round: $created of $n answered 201\n" if $created != $n;
	push @rates, $n / $took;
	push @cpus, $cpu;
	print $out sprintf("round %d: %d submits in %.2f s: %.0f/s; HTTP worker CPU %.0f us each\n",
		$round, $n, $took, $n / $took, $cpu);
}
my @sorted = sort { $a <=> $b } @rates;
my @cpu_sorted = sort { $a <=> $b } @cpus;
print $out sprintf("median: %.0f submits/s (%.3f ms each); HTTP worker CPU %.0f us each\n",
	$sorted[$#sorted / 2], 1000 / $sorted[$#sorted / 2], $cpu_sorted[$#cpu_sorted / 2]);
if ($pgss)
{
	print $out $node->safe_psql('postgres',
		"CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
		 SELECT CASE WHEN query LIKE '%http_submit%' THEN 'route' ELSE 'token' END
		        || ': ' || calls || ' calls, ' || plans || ' plans, planning '
		        || round((total_plan_time * 1000 / calls)::numeric, 1) || ' us per call'
		   FROM pg_stat_statements
		  WHERE query LIKE '%FROM delq.http_submit(\$1, \$2) r'
		     OR query LIKE 'SELECT delq._api_token_role(%' ORDER BY 1") . "\n";
}
$node->stop;
