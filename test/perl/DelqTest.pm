
# DelqTest.pm
#     Helpers for delq's Perl TAP tests: the recording HTTP sink
#     (test/sink/delq_sink.py), polling a query, and an independent check of
#     Standard Webhooks signatures.
#
#     use DelqTest;
#     my $sink = start_sink(secret => $secret);
#     ... delq.add_destination('crm', $sink->url('crm'), ...) ...
#     $sink->control('crm', { status => 503, retry_after => '1', times => 2 });
#     poll_until($node, "SELECT state FROM delq.delivery", 'confirmed', 30);
#     my @got = $sink->requests('crm');
#
# It finds PostgreSQL's TAP modules, pg_regress and initdb itself (pg_config),
# so plain "prove -I test/perl test/t/x.pl" works; run outside "make installcheck",
# it keeps tmp_check (logs, data directories) in a fresh folder under $TMPDIR
# instead of the source tree.  Every sink is stopped when the test exits,
# also after a die.

package DelqTest;

use strict;
use warnings;

use File::Temp ();

BEGIN
{
	my $pg_config = $ENV{PG_CONFIG} // 'pg_config';
	my $pgxs = `$pg_config --pgxs 2>/dev/null` // '';
	my $bindir = `$pg_config --bindir 2>/dev/null` // '';
	chomp($pgxs, $bindir);
	my $libdir = $pgxs =~ s{/makefiles/pgxs\.mk$}{/test/perl}r;
	$libdir = '/usr/lib/postgresql/15/lib/pgxs/src/test/perl' unless -d $libdir;
	push @INC, $libdir unless grep { -e "$_/PostgreSQL/Test/Utils.pm" } @INC;
	$ENV{PG_REGRESS} //= "$libdir/../regress/pg_regress"; # Cluster's init needs it
	$ENV{PATH} = "$bindir:$ENV{PATH}"
	  if $bindir && !grep { -x "$_/initdb" } split /:/, $ENV{PATH};

	# Outside make, PostgreSQL::Test::Utils would create ./tmp_check.  The
	# folder is removed at exit unless a test failed (Utils sets KEEP_ALL).
	$DelqTest::own_testdir = $ENV{TESTDIR} =
	  File::Temp::tempdir('delq_tap_XXXXXX', TMPDIR => 1, CLEANUP => 1)
	  unless $ENV{TESTDIR};
}

use Carp;
use Digest::SHA qw(hmac_sha256_base64);
use Exporter 'import';
use File::Basename qw(dirname);
use File::Spec;
use HTTP::Tiny;
use JSON::PP;
use MIME::Base64 qw(decode_base64);
use POSIX qw(WNOHANG);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils ();
use Test::More ();
use Time::HiRes qw(usleep time);

our @EXPORT = qw(start_sink poll_until verify_signature sign_webhook delq_node check_webhook_id);

my $SINK_SCRIPT =
  File::Spec->rel2abs(dirname(__FILE__) . '/../sink/delq_sink.py');
my %live_sinks;    # pid => sink, for the END block

=pod

=item sign_webhook($secret, $id, $timestamp, $body)

The webhook-signature value "v1,<base64>" for a whsec_ secret.

=item verify_signature($secret, $id, $timestamp, $body, $header)

True when one space-separated "v1,<base64>" entry of $header matches.
Written independently of the C signer, so tests can check it.

=cut

sub sign_webhook
{
	my ($secret, $id, $ts, $body) = @_;
	croak "secret must look like whsec_<base64 key>"
	  unless defined $secret && $secret =~ /^whsec_(.+)$/;
	my $mac = hmac_sha256_base64("$id.$ts.$body", decode_base64($1));
	$mac .= '=' while length($mac) % 4;    # Digest::SHA leaves out padding
	return "v1,$mac";
}

sub verify_signature
{
	my ($secret, $id, $ts, $body, $header) = @_;
	return 0 unless defined $header && defined $id && defined $ts;
	my $expected = sign_webhook($secret, $id, $ts, $body // '');
	my $ok = 0;
	for my $entry (split ' ', $header)
	{
		next unless length($entry) == length($expected);
		my $diff = 0;    # constant time for entries of the right length
		$diff |= ord(substr($entry, $_, 1)) ^ ord(substr($expected, $_, 1))
		  for 0 .. length($entry) - 1;
		$ok = 1 if $diff == 0;
	}
	return $ok;
}

=pod

=item poll_until($node, $sql, $expected, $timeout_s [, $dbname])

Run $sql until it prints $expected (psql -At, chomped) without error, at most
$timeout_s seconds (default 30).  Returns 1, or 0 after a diag of the last
answer.

=cut

sub poll_until
{
	my ($node, $sql, $expected, $timeout_s, $dbname) = @_;
	$timeout_s //= 30;
	$dbname //= 'postgres';
	my $deadline = time + $timeout_s;
	my ($out, $err);
	while (1)
	{
		$node->psql($dbname, $sql, stdout => \$out, stderr => \$err);
		return 1 if defined $out && $out eq $expected && !$err;
		last if time >= $deadline;
		usleep(100_000);
	}
	Test::More::diag("poll_until: no '$expected' after ${timeout_s}s from: $sql\n"
		  . "last output: " . ($out // '') . "\nlast error: " . ($err // ''));
	return 0;
}

=pod

=item delq_node($name, %opts)

A started PostgreSQL::Test::Cluster with delq preloaded and its worker in
database "postgres".  Options: preload (default 1), extension (CREATE
EXTENSION delq, default 1), allows_streaming, conf (extra postgresql.conf
lines).  Retries are fast (retry_base 100ms, retry_max 2s) so that tests
of outcomes finish quickly; destinations' TLS files may be named under
/etc/delq (delq.tls_dir).

=cut

sub delq_node
{
	my ($name, %opts) = @_;
	my $preload = $opts{preload} // 1;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => $opts{allows_streaming} // 0);
	$node->append_conf('postgresql.conf',
		($preload ? "shared_preload_libraries = 'delq'\n" : '')
		  . "delq.database = 'postgres'\n"
		  . "delq.retry_base = '100ms'\n"
		  . "delq.retry_max = '2s'\n"
		  . "delq.idle_timeout = '1s'\n"
		  . "delq.tls_dir = '/etc/delq'\n"
		  . ($opts{conf} // ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION delq')
	  if $opts{extension} // 1;
	return $node;
}

=pod

=item check_webhook_id($node, $sink, $rid, $dest, $name)

One test: every request the sink got for (request, destination) carries
the delivery's webhook id as webhook-id, Idempotency-Key and body "id".
Returns how many requests there were.

=cut

sub check_webhook_id
{
	my ($node, $sink, $rid, $dest, $name) = @_;
	my $wid = $node->safe_psql('postgres',
		"SELECT webhook_id FROM delq.delivery WHERE request_id = '$rid' AND destination = '$dest'");
	my @r = $sink->for_request($dest, $rid);
	my @bad = grep {
		($_->{headers}{'webhook-id'} // '') ne $wid
		  || ($_->{headers}{'idempotency-key'} // '') ne $wid
		  || (JSON::PP::decode_json($_->{body})->{id} // '') ne $wid
	} @r;
	Test::More::ok(@r > 0 && !@bad,
		"$name: all " . scalar(@r) . " requests carry webhook id $wid");
	return scalar @r;
}

=pod

=item start_sink(%opts)

Start test/sink/delq_sink.py and wait until it listens.  Options: secret
(whsec_...), port (default 0: any free), name (file prefix, default "sink"),
hang_max (seconds), seed (for "random" behaviours), python (default
$DELQ_PYTHON or /usr/bin/python3).
Returns a DelqTest::Sink.

=cut

sub start_sink
{
	my %opts = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir('sink');
	my $name = $opts{name} // 'sink';
	my $python = $opts{python} // $ENV{DELQ_PYTHON}
	  // (-x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3');
	my $self = bless {
		dir       => $dir,
		log_file  => "$dir/$name.jsonl",
		port_file => "$dir/$name.port",
		err_file  => "$dir/$name.stderr",
		http      => HTTP::Tiny->new(timeout => 10),
		owner     => $$,
	}, 'DelqTest::Sink';
	my @cmd = (
		$python, $SINK_SCRIPT, '--watch-parent',
		'--port' => $opts{port} // 0,
		'--port-file' => $self->{port_file},
		'--log' => $self->{log_file});
	push @cmd, '--secret' => $opts{secret} if defined $opts{secret};
	push @cmd, '--hang-max' => $opts{hang_max} if defined $opts{hang_max};
	push @cmd, '--seed' => $opts{seed} if defined $opts{seed};

	my $pid = fork() // croak "fork: $!";
	if ($pid == 0)
	{
		open(STDIN,  '<',  '/dev/null');
		open(STDOUT, '>>', $self->{err_file});
		open(STDERR, '>&', \*STDOUT);
		exec(@cmd) or POSIX::_exit(127);
	}
	$self->{pid} = $pid;
	$live_sinks{$pid} = $self;

	my $deadline = time + 15;
	until (-s $self->{port_file})
	{
		if (waitpid($pid, WNOHANG) == $pid || time > $deadline)
		{
			delete $live_sinks{$pid};
			kill 'KILL', $pid;
			croak "delq_sink did not start: " . $self->_stderr;
		}
		usleep(20_000);
	}
	open(my $fh, '<', $self->{port_file}) or croak "$self->{port_file}: $!";
	chomp($self->{port} = <$fh>);
	close $fh;
	return $self;
}

END
{
	my $failed = $? != 0 || !PostgreSQL::Test::Utils::all_tests_passing();
	local $?;    # keep the test's exit status
	$_->stop for grep { $_->{owner} == $$ } values %live_sinks;
	Test::More::diag("logs kept in $DelqTest::own_testdir/tmp_check")
	  if $failed && $DelqTest::own_testdir;
}

package DelqTest::Sink;

use strict;
use warnings;

use Carp;
use JSON::PP;
use POSIX qw(WNOHANG);
use Time::HiRes qw(usleep time);

sub port     { return $_[0]->{port} }
sub pid      { return $_[0]->{pid} }
sub log_file { return $_[0]->{log_file} }

# URL of destination $dest ("http://127.0.0.1:<port>/<dest>"), with an
# optional extra path.
sub url
{
	my ($self, $dest, $path) = @_;
	return "http://127.0.0.1:$self->{port}/$dest" . ($path // '');
}

sub _call
{
	my ($self, $method, $path, $content) = @_;
	my $res = $self->{http}->request($method, "http://127.0.0.1:$self->{port}$path",
		defined $content
		? { content => encode_json($content), headers => { 'content-type' => 'application/json' } }
		: {});
	croak "delq_sink: $method $path: $res->{status} $res->{content}"
	  unless $res->{success};
	return decode_json($res->{content});
}

# Behaviour for the next requests to $dest: a hashref ({status => 503,
# retry_after => '2', times => 1, ...}; see delq_sink.py) or an arrayref,
# meaning a sequence of them.
sub control
{
	my ($self, $dest, $behaviour) = @_;
	return $self->_call('POST', "/_control/$dest", $behaviour);
}

# The steps of $dest's program still to come (arrayref of {behaviour,
# remaining, ends_at}); ends_at (epoch seconds) is when a for_ms step ends.
sub program
{
	my ($self, $dest) = @_;
	return $self->_call('GET', "/_control/$dest");
}

# Recorded requests (hashrefs, oldest first) for $dest, or all when undef.
sub requests
{
	my ($self, $dest, $since) = @_;
	my $q = join '&', (defined $dest ? "dest=$dest" : ()), "since=" . ($since // 0);
	return @{ $self->_call('GET', "/_requests?$q") };
}

# The records for $dest, only those of request $rid when given.
sub for_request
{
	my ($self, $dest, $rid) = @_;
	return grep {
		!defined $rid
		  || (eval { JSON::PP::decode_json($_->{body})->{request_id} } // '') eq $rid
	} $self->requests($dest);
}

sub stats { return $_[0]->_call('GET', '/_stats') }

sub count
{
	my ($self, $dest) = @_;
	my $stats = $self->stats;
	return $stats->{total} unless defined $dest;
	return $stats->{dests}{$dest} ? $stats->{dests}{$dest}{count} : 0;
}

# Wait until $dest has received at least $n requests; true unless timed out.
sub wait_requests
{
	my ($self, $dest, $n, $timeout_s) = @_;
	my $deadline = time + ($timeout_s // 30);
	while ($self->count($dest) < $n)
	{
		return 0 if time > $deadline;
		usleep(50_000);
	}
	return 1;
}

sub reset { return $_[0]->_call('POST', '/_reset') }

# SIGTERM (then SIGKILL after 5 s) to this sink's own PID; returns its wait
# status, or undef if it was already stopped.
sub stop
{
	my ($self) = @_;
	return undef unless $self->{pid} && $self->{owner} == $$;
	my $pid = delete $self->{pid};
	delete $live_sinks{$pid};
	kill 'TERM', $pid;
	my $deadline = time + 5;
	while (waitpid($pid, WNOHANG) == 0)
	{
		kill 'KILL', $pid if time > $deadline;
		usleep(20_000);
	}
	return $?;
}

sub _stderr
{
	my ($self) = @_;
	open(my $fh, '<', $self->{err_file}) or return '';
	local $/;
	return <$fh> // '';
}

1;
