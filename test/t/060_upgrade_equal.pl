
# 060_upgrade_equal.pl
#     A fresh install of the current version and 1.0 updated to it with
#     ALTER EXTENSION delq UPDATE are the same database: every fact that
#     test/upgrade/catalog.sql lists (members, function definitions, owners,
#     privileges and settings, columns in order, constraints, indexes,
#     triggers and whether they fire always, views, sequences,
#     pg_extension_config_dump entries, roles, initial keys) is equal.
#     Also: the update is idempotent about its seed rows, and the frozen
#     delq--1.0.sql is still what 1.0 shipped (its checksum).  How a change
#     reaches both: docs/upgrading.md.

use strict;
use warnings;

use DelqTest;
use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $top = dirname(__FILE__) . '/../..';
my $catalog = "$top/test/upgrade/catalog.sql";

# 1.0 as it shipped (commit 686ae81): this sum changes only if someone edits
# the frozen script, which must never happen.
my $sum = `sha256sum $top/delq--1.0.sql`;
like($sum, qr/^d8c4086edbc4fe8eabad5df81b3522e9e194268f26fdeda0f9b9125256d506b6/, 'delq--1.0.sql is the script 1.0 shipped')
  or diag("delq--1.0.sql changed: $sum");

my $node = delq_node('upgrade_equal', preload => 0, extension => 0);
my $current = $node->safe_psql('postgres',
	"SELECT default_version FROM pg_available_extensions WHERE name = 'delq'");

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('postgres', 'CREATE DATABASE upgraded');
$node->safe_psql('fresh', 'CREATE EXTENSION delq');
$node->safe_psql('upgraded', "CREATE EXTENSION delq VERSION '1.0'");
is($node->safe_psql('upgraded', "SELECT extversion FROM pg_extension WHERE extname = 'delq'"),
	'1.0', 'the 1.0 script installs');
$node->safe_psql('upgraded', 'ALTER EXTENSION delq UPDATE');
is($node->safe_psql('upgraded', "SELECT extversion FROM pg_extension WHERE extname = 'delq'"),
	$current, "ALTER EXTENSION UPDATE reaches $current");

sub catalog
{
	my ($db) = @_;
	my ($ret, $out, $err) = $node->psql($db, undef,
		extra_params => [ '-X', '-v', 'ON_ERROR_STOP=1', '-f', $catalog ]);
	is($ret, 0, "catalog of $db read") or diag($err);
	return $out;
}

my $fresh = catalog('fresh');
my $upgraded = catalog('upgraded');
cmp_ok(scalar(split /\n/, $fresh), '>', 1000, 'the catalog lists the extension (sanity)');

# A unified diff names what differs, instead of two 3,000-line blobs.
if ($fresh eq $upgraded)
{
	pass('fresh and upgraded catalogs are equal');
}
else
{
	my $dir = PostgreSQL::Test::Utils::tempdir();
	PostgreSQL::Test::Utils::append_to_file("$dir/fresh", $fresh);
	PostgreSQL::Test::Utils::append_to_file("$dir/upgraded", $upgraded);
	my $diff = `diff -u $dir/fresh $dir/upgraded | head -200`;
	fail('fresh and upgraded catalogs are equal');
	diag("fresh (-) vs upgraded (+):\n$diff");
}

done_testing();
