
# 020_meta.pl
#     META.json is a valid PGXN distribution description (PGXN Meta Spec
#     1.0.x, https://pgxn.org/spec/, whose JSON Schemas are published in the
#     pgxn/meta repository, schema/v1/*.schema.json) and names the release
#     that delq.control, debian/changelog and CHANGELOG.md name; LICENSE is
#     the PostgreSQL License that META.json and debian/copyright declare.
#
#     No validator for the spec is packaged for Debian 12 or on npm (PGXN's
#     own are the Perl module PGXN::Meta::Validator on CPAN and the Rust
#     crate pgxn_meta), so meta_errors() below checks the spec's rules
#     itself, and is shown to reject broken documents.

use strict;
use warnings;

use File::Basename qw(dirname);
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

my $top = dirname(__FILE__) . '/../..';

# Spec rules, each citing its schema file in pgxn/meta schema/v1/.
my $SEMVER = qr/(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)
	(?:-(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*)?
	(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?/x;    # version.schema.json
my $RANGE_ONE = qr/(?:(?:[=!]=|[<>]=?)\s*)?(?:$SEMVER|0)/;    # version_range.schema.json
my %LICENSES = map { $_ => 1 } qw(agpl_3 apache_1_1 apache_2_0 artistic_1 artistic_2
  bsd freebsd gfdl_1_2 gfdl_1_3 gpl_1 gpl_2 gpl_3 lgpl_2_1 lgpl_3_0 mit mozilla_1_0
  mozilla_1_1 openssl perl_5 postgresql qpl_1_0 ssleay sun zlib open_source
  restricted unrestricted unknown);    # license.schema.json
my %PHASES = map { $_ => 1 } qw(configure build test runtime develop);    # prereqs
my %RELATIONS = map { $_ => 1 } qw(requires recommends suggests conflicts);    # prereq_phase
my %STATUS = map { $_ => 1 } qw(stable testing unstable);    # base.schema.json

sub is_str { my ($v) = @_; return defined $v && !ref $v && length $v >= 1 }
sub is_term { my ($v) = @_; return is_str($v) && $v =~ /^[^\/\\\s[:cntrl:]]{2,}$/ }
sub is_path { my ($v) = @_; return is_str($v) && $v !~ m{^/|\\} }    # path.schema.json
sub custom { return $_[0] =~ /^[xX]_./ }

sub meta_errors
{
	my ($m) = @_;
	my @e;
	return ('the document is not a JSON object') unless ref $m eq 'HASH';
	my %known = map { $_ => 1 } qw(name version abstract maintainer license provides
	  meta-spec description generated_by tags no_index prereqs release_status resources);
	for my $k (qw(name version abstract maintainer license provides meta-spec))
	{
		push @e, "required key $k is missing" unless exists $m->{$k};
	}
	push @e, map { "unknown key $_" } grep { !$known{$_} && !custom($_) } sort keys %$m;
	push @e, 'name must be a term' if exists $m->{name} && !is_term($m->{name});
	push @e, 'version must be a semantic version'
	  if exists $m->{version} && !(is_str($m->{version}) && $m->{version} =~ /^$SEMVER$/);
	for my $k (qw(abstract description generated_by))
	{
		push @e, "$k must be a non-empty string" if exists $m->{$k} && !is_str($m->{$k});
	}
	if (exists $m->{maintainer})
	{
		my $v = $m->{maintainer};
		push @e, 'maintainer must be a string or a non-empty list of strings'
		  unless is_str($v) || (ref $v eq 'ARRAY' && @$v && !grep { !is_str($_) } @$v);
	}
	if (exists $m->{license})
	{
		my $v = $m->{license};
		push @e, 'license must be a known short name, a list of them or an object of URLs'
		  unless (!ref $v && defined $v && $LICENSES{$v})
		  || (ref $v eq 'ARRAY' && @$v && !grep { ref $_ || !$LICENSES{$_} } @$v)
		  || (ref $v eq 'HASH' && %$v && !grep { !is_str($_) || !/^[a-z][a-z0-9+.-]*:/i } values %$v);
	}
	if (exists $m->{provides})
	{
		my $p = $m->{provides};
		if (ref $p ne 'HASH' || !%$p)
		{
			push @e, 'provides must be a non-empty object';
		}
		else
		{
			for my $ext (sort keys %$p)
			{
				my $x = $p->{$ext};
				push @e, "provides: $ext is not a term" unless is_term($ext);
				if (ref $x ne 'HASH') { push @e, "provides.$ext must be an object"; next; }
				push @e, "provides.$ext.file must be a relative path" unless is_path($x->{file});
				push @e, "provides.$ext.version must be a semantic version"
				  unless is_str($x->{version}) && $x->{version} =~ /^$SEMVER$/;
				push @e, "provides.$ext.docfile must be a relative path"
				  if exists $x->{docfile} && !is_path($x->{docfile});
				push @e, "provides.$ext.abstract must be a non-empty string"
				  if exists $x->{abstract} && !is_str($x->{abstract});
				push @e, map { "provides.$ext: unknown key $_" }
				  grep { !/^(?:file|version|abstract|docfile|docpath)$/ && !custom($_) } sort keys %$x;
			}
		}
	}
	if (exists $m->{'meta-spec'})
	{
		my $s = $m->{'meta-spec'};
		if (ref $s ne 'HASH') { push @e, 'meta-spec must be an object'; }
		else
		{
			push @e, 'meta-spec.version must be 1.0.x'
			  unless is_str($s->{version}) && $s->{version} =~ /^1\.0\.\d+$/;
			push @e, 'meta-spec.url must be the spec\'s URL'
			  if exists $s->{url} && ($s->{url} // '') !~ m{^https?://pgxn\.org/meta/spec\.txt$};
			push @e, map { "meta-spec: unknown key $_" }
			  grep { !/^(?:version|url)$/ && !custom($_) } sort keys %$s;
		}
	}
	if (exists $m->{tags})
	{
		my $t = $m->{tags};
		push @e, 'tags must be a non-empty list of tags (2 to 255 characters, no slashes)'
		  unless ref $t eq 'ARRAY' && @$t
		  && !grep { !is_str($_) || length > 255 || !/^[^\/\\[:cntrl:]]{2,}$/ } @$t;
	}
	push @e, 'release_status must be stable, testing or unstable'
	  if exists $m->{release_status} && !$STATUS{ $m->{release_status} // '' };
	if (exists $m->{prereqs})
	{
		my $p = $m->{prereqs};
		if (ref $p ne 'HASH' || !%$p) { push @e, 'prereqs must be a non-empty object'; }
		else
		{
			for my $phase (sort keys %$p)
			{
				next if custom($phase);
				if (!$PHASES{$phase}) { push @e, "prereqs: unknown phase $phase"; next; }
				my $rels = $p->{$phase};
				if (ref $rels ne 'HASH' || !%$rels) { push @e, "prereqs.$phase must be a non-empty object"; next; }
				for my $rel (sort keys %$rels)
				{
					next if custom($rel);
					if (!$RELATIONS{$rel}) { push @e, "prereqs.$phase: unknown relationship $rel"; next; }
					my $deps = $rels->{$rel};
					if (ref $deps ne 'HASH' || !%$deps) { push @e, "prereqs.$phase.$rel must be a non-empty object"; next; }
					for my $d (sort keys %$deps)
					{
						my $r = $deps->{$d};
						push @e, "prereqs.$phase.$rel: $d is not a term" unless is_term($d);
						push @e, "prereqs.$phase.$rel.$d must be a version range"
						  unless defined $r && !ref $r && "$r" =~ /^$RANGE_ONE(?:,\s*$RANGE_ONE)*$/;
					}
				}
			}
		}
	}
	push @e, 'resources must be an object' if exists $m->{resources} && ref $m->{resources} ne 'HASH';
	push @e, 'no_index must be an object' if exists $m->{no_index} && ref $m->{no_index} ne 'HASH';
	return @e;
}

my $json = JSON::PP->new->canonical;
my $meta = eval { decode_json(slurp_file("$top/META.json")) };
ok($meta, 'META.json is JSON') or diag($@);
my @errors = meta_errors($meta);
ok(!@errors, 'META.json follows the PGXN Meta Spec') or diag(join "\n", @errors);

# The checker rejects what the spec rejects (so the test above can fail).
my %broken = (
	'no license'            => sub { delete $_[0]{license} },
	'an unknown license'    => sub { $_[0]{license} = 'postgres' },
	'a version not semver'  => sub { $_[0]{version} = '1.1' },
	'an unknown key'        => sub { $_[0]{homepage} = 'x' },
	'a name with a space'   => sub { $_[0]{name} = 'del q' },
	'no provides version'   => sub { delete $_[0]{provides}{delq}{version} },
	'meta-spec 2'           => sub { $_[0]{'meta-spec'}{version} = '2.0.0' },
	'a bad version range'   => sub { $_[0]{prereqs}{runtime}{requires}{PostgreSQL} = '15' },
	'an unknown phase'      => sub { $_[0]{prereqs}{install} = { requires => { a => 0 } } },
	'an empty tag list'     => sub { $_[0]{tags} = [] },
	'a bad release status'  => sub { $_[0]{release_status} = 'final' },
);
for my $what (sort keys %broken)
{
	my $copy = decode_json($json->encode($meta));
	$broken{$what}->($copy);
	ok(scalar meta_errors($copy), "the check rejects $what");
}
ok(!meta_errors({ %{ decode_json($json->encode($meta)) }, x_delq => 1 }),
	'and accepts a custom x_ key');

# --- one release, named alike everywhere -----------------------------------
my ($control) = slurp_file("$top/delq.control") =~ /^default_version\s*=\s*'([^']+)'/m;
my $semver = $control =~ /^\d+\.\d+$/ ? "$control.0" : $control;
is($meta->{version}, $semver, "META.json version is delq.control's $control as a semantic version");
is($meta->{provides}{delq}{version}, $semver, 'so is the version of the extension it provides');
ok(-e "$top/$meta->{provides}{delq}{file}", "provides.delq.file ($meta->{provides}{delq}{file}) exists");
ok(-e "$top/$meta->{provides}{delq}{docfile}", "provides.delq.docfile exists");
like(slurp_file("$top/debian/changelog"), qr/\Adelq \(\Q$semver\E-\d+\)/,
	"debian/changelog's newest entry is $semver");
like(slurp_file("$top/CHANGELOG.md"), qr/^## \Q$control\E\b/m, "CHANGELOG.md has a section for $control");
like(slurp_file("$top/CHANGELOG.md"), qr/^## 1\.0\b/m, 'and one for 1.0');

is($meta->{license}, 'postgresql', 'META.json declares the PostgreSQL License');
my $license = slurp_file("$top/LICENSE");
like($license, qr/PostgreSQL License/, 'LICENSE is the PostgreSQL License');
like($license, qr/Permission to use, copy, modify, and distribute this software/, '... with its grant');
like(slurp_file("$top/debian/copyright"), qr/^License: PostgreSQL$/m, 'debian/copyright says so too');

done_testing();
