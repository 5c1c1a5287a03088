
# 000_sink.pl
#     Self-test of the recording HTTP sink (test/sink/delq_sink.py) and of
#     DelqTest.pm, which the other TAP tests rely on.  No server is started.

use strict;
use warnings;

use DelqTest;
use PostgreSQL::Test::Utils;
use PostgreSQL::Test::Cluster;    # only loaded, to show the helpers find it
use Test::More;

use Errno qw(ECONNRESET);
use File::Spec;
use HTTP::Tiny;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(time usleep);

# The Standard Webhooks example vector: the Perl signer matches the spec.
is( sign_webhook(
		'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_p5jXN8AQM9LWM0D4loKWxJek',
		1614265330, '{"test": 2432232314}'),
	'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
	'sign_webhook matches the Standard Webhooks example');

my $secret = 'whsec_' . encode_base64('delq sink self-test key', '');
my $sink = start_sink(secret => $secret);
like($sink->port, qr/^\d+$/, 'sink started on port ' . $sink->port);

my $http = HTTP::Tiny->new(timeout => 10, keep_alive => 0);

sub post
{
	my ($dest, $body, %headers) = @_;
	return $http->post($sink->url($dest, '/hook'),
		{ content => $body, headers => { 'content-type' => 'application/json', %headers } });
}

# A raw connection that sends one request and leaves reading to the caller.
sub raw_request
{
	my ($dest) = @_;
	my $sock = IO::Socket::INET->new(
		PeerAddr => '127.0.0.1',
		PeerPort => $sink->port,
		Timeout  => 10) or die "connect: $!";
	print $sock "GET /$dest HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
	return $sock;
}

# Read a response head from a raw connection.
sub read_head
{
	my ($sock) = @_;
	my $head = '';
	while ($head !~ /\r\n\r\n/)
	{
		my $n = sysread($sock, $head, 1, length $head);
		last unless $n;
	}
	return $head;
}

# --- signatures and recording ---------------------------------------------
my ($id, $ts) = ('msg_self_test_1', time() =~ s/\..*//r);
my $body = qq({"type":"erasure.requested","subject":"J\xc3\xbcrgen"});    # UTF-8 bytes
my $sig = sign_webhook($secret, $id, $ts, $body);
ok(verify_signature($secret, $id, $ts, $body, $sig), 'verify_signature accepts its counterpart');
ok(verify_signature($secret, $id, $ts, $body, "v1,AAAA $sig"), 'any v1 entry may match');
ok(!verify_signature($secret, $id, $ts, "$body ", $sig), 'a changed body fails');
ok(!verify_signature($secret, $id, $ts + 1, $body, $sig), 'a changed timestamp fails');

my %wh = ('webhook-id' => $id, 'webhook-timestamp' => $ts);
my $res = post('alpha', $body, %wh, 'webhook-signature' => $sig);
is($res->{status}, 200, 'default answer is 200');
is_deeply(decode_json($res->{content}), { ok => JSON::PP::true }, 'default body is {"ok":true}');
my $wrong = sign_webhook('whsec_' . encode_base64('another key', ''), $id, $ts, $body);
post('alpha', $body, %wh, 'webhook-signature' => $wrong);
post('alpha', $body, %wh);

my @got = $sink->requests('alpha');
is(scalar @got, 3, 'three requests recorded for alpha');
my $r = $got[0];
is($r->{method}, 'POST', 'method recorded');
is($r->{path}, '/alpha/hook', 'path recorded');
is($r->{dest}, 'alpha', 'destination is the first path segment');
is($r->{headers}{'webhook-id'}, $id, 'headers recorded with lower-case names');
utf8::encode(my $recorded_body = $r->{body});
is($recorded_body, $body, 'raw body recorded');
is($r->{status}, 200, 'answered status recorded');
ok($r->{signature_ok}, 'sink verified the correct signature');
ok(verify_signature($secret, @{ $r->{headers} }{qw(webhook-id webhook-timestamp)},
		$recorded_body, $r->{headers}{'webhook-signature'}),
	'recorded request verifies in Perl');
ok(defined $got[1]{signature_ok} && !$got[1]{signature_ok}, 'sink rejected the wrong key');
ok(defined $got[2]{signature_ok} && !$got[2]{signature_ok}, 'sink rejected a missing signature');
is($sink->count('alpha'), 3, 'count');

# --- fixed status, Retry-After, times, sequence ---------------------------
$sink->control('beta', { status => 503, retry_after => '2', times => 1 });
$res = post('beta', '{}');
is($res->{status}, 503, '503 as told');
is($res->{headers}{'retry-after'}, '2', 'with Retry-After');
is(post('beta', '{}')->{status}, 200, 'times => 1 applies once');

$sink->control('gamma',
	[ { status => 500 }, { status => 429, retry_after => 1 }, { status => 201, body => '{"accepted":1}' } ]);
my @answers = map { post('gamma', '{}') } 1 .. 4;
is_deeply([ map { $_->{status} } @answers ], [ 500, 429, 201, 200 ],
	'a sequence applies in order, then the default');
is($answers[2]{content}, '{"accepted":1}', 'custom body');
is_deeply($sink->stats->{dests}{gamma}{status},
	{ 500 => 1, 429 => 1, 201 => 1, 200 => 1 }, 'stats per status');

ok(!eval { $sink->control('beta', { statsu => 500 }); 1 }, 'unknown behaviour key refused');
like($@, qr/unknown behaviour keys: statsu/, '... with a message naming it');

# --- delay and hang -------------------------------------------------------
$sink->control('delta', { delay_ms => 600 });
my $t0 = time;
is(post('delta', '{}')->{status}, 200, 'delayed answer arrives');
cmp_ok(time - $t0, '>=', 0.55, '... after the delay');

$sink->control('hang', { hang => JSON::PP::true });
my $hung = raw_request('hang');
ok($sink->wait_requests('hang', 1, 10), 'hanging request recorded');
$t0 = time;
is(post('alpha', '{}')->{status}, 200, 'other requests are answered while one hangs');
cmp_ok(time - $t0, '<', 2, '... promptly');
ok(!IO::Select->new($hung)->can_read(0.3), 'the hanging request gets no answer');
my ($h) = $sink->requests('hang');
is_deeply([ $h->{status}, $h->{outcome} ], [ undef, 'hang' ], 'recorded as a hang');
close $hung;

# --- reset mid-response ---------------------------------------------------
$sink->control('eps', { reset => JSON::PP::true, body_bytes => 4096 });
my $sock = raw_request('eps');
my $head = read_head($sock);
like($head, qr/^HTTP\/1\.1 200 .*Content-Length: 4096\r\n/s, 'reset: head promises 4096 bytes');
my ($part, $n) = ('', 0);
while ($n = sysread($sock, $part, 65536, length $part)) { }
my $err = $!;
cmp_ok(length $part, '<', 4096, 'reset: fewer bytes than promised (' . length($part) . ')');
ok(!defined $n && $err == ECONNRESET, "reset: the client sees a connection reset ($err)");
close $sock;
is(post('eps', '{}')->{status}, 599, 'HTTP::Tiny reports the reset as an error');

# --- a huge body, read in part --------------------------------------------
$sink->control('big', { body_bytes => 100_000_000 });
$sock = raw_request('big');
$head = read_head($sock);
like($head, qr/Content-Length: 100000000\r\n/, 'huge body: 100 MB promised');
my $data = '';
while (length $data < 1_000_000)
{
	last unless sysread($sock, $data, 65536, length $data);
}
is(length($data) >= 1_000_000 && $data !~ /[^x]/, 1, 'huge body: the first MB arrives');
close $sock;
is(post('alpha', '{}')->{status}, 200, 'sink fine after the client closed early');
SKIP:
{
	open(my $st, '<', '/proc/' . $sink->pid . '/status') or skip 'no /proc', 1;
	my ($hwm) = join('', <$st>) =~ /VmHWM:\s+(\d+) kB/;
	cmp_ok($hwm, '<', 80_000, "huge body streamed, not held (peak RSS ${hwm} kB)");
}

# --- keep-alive -----------------------------------------------------------
my $ka = HTTP::Tiny->new(timeout => 10, keep_alive => 1);
$ka->post($sink->url('kappa'), { content => '{}' }) for 1 .. 2;
post('kappa', '{}');
my @k = $sink->requests('kappa');
is("@{$k[0]{client}}", "@{$k[1]{client}}", 'keep-alive: two requests share one connection');
is_deeply([ map { $_->{conn_request} } @k ], [ 1, 2, 1 ], 'keep-alive: per-connection request number');
isnt($k[2]{client}[1], $k[0]{client}[1], 'a new connection has another client port');

# --- random answers and time windows ---------------------------------------
$sink->control('rho',
	{ random => [ { chance => 0.1, status => 503 }, { chance => 0.1, reset => JSON::PP::true } ] });
post('rho', '{}') for 1 .. 400;
my $rho = $sink->stats->{dests}{rho}{status};
note 'random: ' . join(', ', map { "$_ => $rho->{$_}" } sort keys %$rho);
ok( ($rho->{503} // 0) >= 15 && ($rho->{503} // 0) <= 70
	  && ($rho->{reset} // 0) >= 15 && ($rho->{reset} // 0) <= 70
	  && ($rho->{200} // 0) >= 260,
	'random: about 10% 503, 10% resets, the rest the default 200');
ok(!eval { $sink->control('rho', { random => [ { chance => 0.7, status => 500 }, { chance => 0.4 } ] }); 1 },
	'random: chances adding up to more than 1 are refused');
ok(!eval { $sink->control('rho', { random => [ { status => 500 } ] }); 1 },
	'random: a choice without a chance is refused');
ok(!eval { $sink->control('rho', { status => 500, times => 2, for_ms => 10 }); 1 },
	'times and for_ms together are refused');

$sink->control('win', { status => 503, for_ms => 1500 });
my $set_at = time;
my $prog = $sink->program('win');
ok(abs($prog->[0]{ends_at} - ($set_at + 1.5)) < 0.5, 'for_ms: the window ends 1.5 s after it was set');
is(post('win', '{}')->{status}, 503, 'for_ms: 503 inside the window');
usleep(10_000) while time < $prog->[0]{ends_at} + 0.05;
is(post('win', '{}')->{status}, 200, 'for_ms: the default after it');
is_deeply($sink->program('win'), [], 'for_ms: nothing left to come');

$sink->control('win', [ { status => 503, for_ms => 400 }, { status => 502 } ]);
is(post('win', '{}')->{status}, 503, 'sequence: a window first');
usleep(450_000);
is_deeply([ map { post('win', '{}')->{status} } 1 .. 2 ], [ 502, 200 ],
	'sequence: then the next step once, then the default');

# --- log file, reset ------------------------------------------------------
my $total = $sink->count;
open(my $log, '<', $sink->log_file) or die $!;
my @lines = <$log>;
close $log;
is(scalar @lines, $total, "log file has one line per request ($total)");
is(scalar(grep { eval { decode_json($_)->{seq} } } @lines), $total, '... each a JSON record');
is(scalar($sink->requests), $total, 'requests() without a destination lists all');

$sink->control('beta', { status => 503 });
$sink->reset;
is($sink->count, 0, 'reset forgets the records');
is(post('beta', '{}')->{status}, 200, 'reset forgets the behaviours');

# --- stopping -------------------------------------------------------------
my $pid = $sink->pid;
is($sink->stop, 0, 'SIGTERM: the sink exits with status 0');
ok(!kill(0, $pid), 'sink process is gone');

# A test that dies still stops its sink (END block in DelqTest).
my $dir = PostgreSQL::Test::Utils::tempdir('dies');
my $script = "$dir/dies.pl";
open(my $fh, '>', $script) or die $!;
print $fh 'use DelqTest; my $s = start_sink(); open(my $f, ">", $ARGV[0]) or die;'
  . ' print $f $s->pid; close $f; die "dying on purpose\n";';
close $fh;
my $inc = File::Spec->rel2abs((grep { -e "$_/DelqTest.pm" } @INC)[0]);
{
	local $ENV{TESTDIR} = $dir;    # its files go with ours
	system($^X, '-I', $inc, $script, "$dir/pid");
}
isnt($?, 0, 'the dying script failed');
open($fh, '<', "$dir/pid") or die "no pid file: $!";
my $dead_pid = <$fh>;
close $fh;
ok($dead_pid && !kill(0, $dead_pid), "its sink (pid $dead_pid) was stopped on exit");

done_testing();
