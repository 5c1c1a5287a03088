
# 010_deb.pl
#     The Debian package: built from a copy of the tree the way Debian's
#     PostgreSQL extensions are built (dpkg-buildpackage, pg_buildext through
#     debian/rules), named postgresql-15-delq at the version of delq.control,
#     without compiler warnings or lintian complaints, holding the library
#     and every extension script; then extracted (dpkg-deb -x) into a private copy of the
#     PostgreSQL installation from which every delq file was removed, so
#     that only the package's files are used, and smoke-tested there: a
#     server with delq preloaded, CREATE EXTENSION, a request submitted and
#     delivered by the worker to a local sink, and the 1.0 -> current update.
#     The system installation is never written to.  docs/upgrading.md,
#     "Packaging".

use strict;
use warnings;

use DelqInstall;
use File::Spec;
use IPC::Run;
use DelqTest;
use File::Basename qw(dirname);
use File::Path qw(make_path);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $top = File::Spec->rel2abs(dirname(__FILE__) . '/../..');
my $tmp = PostgreSQL::Test::Utils::tempdir();

my ($version) = slurp_file("$top/delq.control") =~ /^default_version\s*=\s*'([^']+)'/m;
ok($version, "delq.control names the version ($version)");

# --- build ------------------------------------------------------------------
# A copy of the tree without build products or test output (dh_clean also
# runs make clean), so the build starts from what a release tarball holds.
make_path("$tmp/src");
system("tar -C '$top' -cf - --exclude-vcs --exclude='*.o' --exclude='*.so' --exclude='*.bc'"
	  . " --exclude='./tmp_check*' --exclude='./results' --exclude='./output_iso'"
	  . " --exclude='./log' --exclude='./*.log' --exclude='./bench/results'"
	  . " --exclude='./delq--1.1.sql' --exclude='./delq--1.0--1.1.sql' ."
	  . " | tar -C '$tmp/src' -xf -") == 0
  or BAIL_OUT('copying the tree failed');

# nocheck: the suites run in `make test`; parallel=2: the machine's cores.
local $ENV{DEB_BUILD_OPTIONS} = 'nocheck parallel=2';
my ($out, $err) = ('', '');
my $built = IPC::Run::run(
	[ 'dpkg-buildpackage', '-us', '-uc', '-b' ],
	'>' => \$out, '2>' => \$err,
	init => sub { chdir "$tmp/src" or die "chdir: $!" });
ok($built, 'dpkg-buildpackage -us -uc -b builds') or diag("$out\n$err");
PostgreSQL::Test::Utils::append_to_file("$tmp/build.log", "$out\n$err");
unlike($out . $err, qr/warning:/, 'without compiler warnings')
  or diag(join "\n", grep { /warning:/ } split /\n/, $out . $err);
like($out, qr/pg_buildext/, 'through pg_buildext');

my @debs = glob("$tmp/postgresql-15-delq_*.deb");
my ($deb) = grep { !/-dbgsym_/ } @debs;
ok($deb, 'it makes postgresql-15-delq') or BAIL_OUT("no package in $tmp: $out$err");
like($deb, qr{/postgresql-15-delq_\Q$version\E\.0-\d+_[a-z0-9]+\.deb$},
	"at version $version.0 (delq.control)");

my $contents = `dpkg-deb -c '$deb'`;
my @files = map { (split ' ', $_)[5] } split /\n/, $contents;
s{^\./}{/} for @files;
ok((grep { $_ eq '/usr/lib/postgresql/15/lib/delq.so' } @files), 'it holds the library');
for my $f ('delq.control', 'delq--1.0.sql', "delq--$version.sql", "delq--1.0--$version.sql")
{
	ok((grep { $_ eq "/usr/share/postgresql/15/extension/$f" } @files), "it holds $f");
}
# Everything `make install` put into the installation under test is packaged.
my $tested_bin = `pg_config --bindir`;
chomp $tested_bin;
my ($tested_lib, $tested_ext) = install_dirs(dirname($tested_bin));
my @installed = (glob("$tested_ext/delq*"), "$tested_lib/delq.so");
my @missing = grep {
	my $name = $_ =~ s{^.*/}{}r;
	!grep { m{/\Q$name\E$} } @files
} @installed;
ok(@installed > 4 && !@missing, 'it holds every file make install installs (' . scalar(@installed) . ')')
  or diag("not in the package: @missing");
is(slurp_file("$tmp/src/delq--1.0.sql"), slurp_file("$top/delq--1.0.sql"),
	'the frozen 1.0 script is packaged as it is');
like(`dpkg-deb -f '$deb' Depends`, qr/\bpostgresql-15\b.*\blibcurl4\b/s,
	'it depends on postgresql-15 and libcurl4');

# Debian's own package checker.  Allowed: initial-upload-closes-no-bugs
# (a first upload to the Debian archive closes its ITP bug; delq is not
# uploaded there).
my $lintian = `lintian --info '$deb' 2>&1`;
my @complaints = grep { /^[EW]: / && !/: initial-upload-closes-no-bugs\b/ } split /\n/, $lintian;
is(join("\n", @complaints), '', 'lintian finds no error or warning') or diag($lintian);

# --- install into a private PostgreSQL and smoke-test ---------------------
my $install = copy_install("$tmp/root", without_delq => 1);
my ($lib, $ext) = install_dirs($install);
ok(!-e "$lib/delq.so" && !-e "$ext/delq.control", 'the private copy has no delq of its own');
system('dpkg-deb', '-x', $deb, "$tmp/root") == 0 or BAIL_OUT('dpkg-deb -x failed');
ok(-e "$lib/delq.so" && -e "$ext/delq.control", 'the package put delq there');

my $node = PostgreSQL::Test::Cluster->new('deb', install_path => $install);
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'delq'\ndelq.database = 'postgres'\n");
$node->start;
my $sink = start_sink();

is($node->safe_psql('postgres', 'SHOW delq.library_version'), $version,
	'the server preloads the packaged library');
$node->safe_psql('postgres', 'CREATE EXTENSION delq');
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'delq'"),
	$version, "CREATE EXTENSION delq installs $version");
$node->safe_psql('postgres',
	"SELECT delq.add_destination('crm', '" . $sink->url('crm') . "');
	 SELECT delq.add_route('crm');");
my $rid = $node->safe_psql('postgres', "SELECT delq.submit('alice\@example.com', 'smoke')");
ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$rid'", 'completed', 30),
	'the worker delivers a request');
check_webhook_id($node, $sink, $rid, 'crm', 'the delivery');
is($node->safe_psql('postgres', 'SELECT count(*) FROM delq.verify_ledger()'), '0',
	'delq.verify_ledger() finds nothing wrong');

# The update path from the packaged scripts.
$node->safe_psql('postgres', 'CREATE DATABASE old');
$node->safe_psql('old', "CREATE EXTENSION delq VERSION '1.0'");
$node->safe_psql('old', 'ALTER EXTENSION delq UPDATE');
is($node->safe_psql('old', "SELECT extversion FROM pg_extension WHERE extname = 'delq'"),
	$version, "1.0 from the package updates to $version");

$node->stop;
done_testing();
