
# DelqInstall.pm
#     Private copies of the PostgreSQL installation under test, for tests
#     that install delq files of their own (a Debian package, the 1.0
#     library) without touching the installation that other test runs use.
#
#     use DelqInstall;
#     my $install = copy_install("$tmp/root", without_delq => 1);
#     my $node = PostgreSQL::Test::Cluster->new('x', install_path => $install);
#
# PostgreSQL finds its share and lib folders relative to its binaries, so a
# copy laid out as ROOT/usr/lib/postgresql/15/{bin,lib} and
# ROOT/usr/share/postgresql/15 (Debian's layout, as test/private-pg makes
# it) works where it is, and a Debian package extracted into ROOT with
# dpkg-deb -x lands in it.

package DelqInstall;

use strict;
use warnings;

use Carp;
use Exporter 'import';
use File::Path qw(make_path);

our @EXPORT = qw(copy_install install_dirs remove_delq);

# pg_config's answer about the installation whose bin folder is $bindir
# (default: the one on PATH, which is the one under test).
sub _pg_config
{
	my ($what, $bindir) = @_;
	my $pg_config = defined $bindir ? "$bindir/pg_config" : 'pg_config';
	my $out = `$pg_config --$what`;
	croak "$pg_config --$what failed" if $? != 0;
	chomp $out;
	return $out;
}

=pod

=item install_dirs($install_path)

(pkglibdir, extension folder) of the installation whose binaries are in
$install_path/bin.

=cut

sub install_dirs
{
	my ($install) = @_;
	return (_pg_config('pkglibdir', "$install/bin"),
		_pg_config('sharedir', "$install/bin") . '/extension');
}

=pod

=item remove_delq($install_path)

Delete every delq file (library, bitcode, control file, scripts) from the
installation.

=cut

sub remove_delq
{
	my ($install) = @_;
	my ($lib, $ext) = install_dirs($install);
	system('rm', '-rf', "$lib/delq.so", "$lib/bitcode/delq", "$lib/bitcode/delq.index.bc",
		glob("$ext/delq.control $ext/delq--*.sql")) == 0
	  or croak "rm failed";
	return;
}

=pod

=item copy_install($root, %opts)

Copy the installation under test to $root in Debian's layout; returns its
install path ($root/usr/lib/postgresql/15, the parent of bin/).  Option
without_delq removes delq's files from the copy.

=cut

sub copy_install
{
	my ($root, %opts) = @_;
	my $bindir = _pg_config('bindir');
	my $share = _pg_config('sharedir');
	my $major = (_pg_config('version') =~ /PostgreSQL (\d+)/)[0]
	  or croak 'no PostgreSQL version from pg_config';
	my $install = "$root/usr/lib/postgresql/$major";
	make_path("$root/usr/lib/postgresql", "$root/usr/share/postgresql");
	system('cp', '-a', "$bindir/..", $install) == 0
	  or croak "copying $bindir/.. failed";
	system('cp', '-a', $share, "$root/usr/share/postgresql/$major") == 0
	  or croak "copying $share failed";
	croak "the copy in $root does not find its own share folder"
	  unless _pg_config('sharedir', "$install/bin") eq "$root/usr/share/postgresql/$major";
	remove_delq($install) if $opts{without_delq};
	return $install;
}

1;
