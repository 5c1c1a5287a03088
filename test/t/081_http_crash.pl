
# 081_http_crash.pl
#     kill -9 of the postmaster during a flood of submits over HTTP: every
#     request answered 2xx exists afterwards (the answer is sent after the
#     commit), none exists twice, and submitting them all again once the
#     server is back answers each acknowledged one with its first id.

use strict;
use warnings;

use DelqTest;
use HTTP::Tiny;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use POSIX ();
use Test::More;
use Time::HiRes qw(time usleep);

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $base = "http://127.0.0.1:$port";
my $node = delq_node('http_crash',
	conf => "delq.http_listen = '127.0.0.1:$port'\nrestart_after_crash = on\n");
my $dir = PostgreSQL::Test::Utils::tempdir('flood');

sub wait_up
{
	my $http = HTTP::Tiny->new(timeout => 2);
	for (1 .. 300)
	{
		return 1 if $http->get("$base/v1/healthz")->{status} == 200;
		usleep(100_000);
	}
	return 0;
}
ok(wait_up(), 'the HTTP server is up');
$node->safe_psql('postgres', 'CREATE ROLE flood NOLOGIN IN ROLE delq_submitter');
my $token = $node->safe_psql('postgres', "SELECT delq.add_api_token('flood', 'flood')");

# One client: submits until $until, writes "external_id status id" per
# answer to its file (status 0: no answer).
sub client
{
	my ($k, $until) = @_;
	my $http = HTTP::Tiny->new(timeout => 5);
	open(my $log, '>>', "$dir/client$k") or die $!;
	$log->autoflush(1);
	my $i = 0;
	while (time < $until)
	{
		my $ext = "flood-$k-" . $i++;
		my $res = $http->post("$base/v1/requests", {
			headers => { authorization => "Bearer $token", 'content-type' => 'application/json' },
			content => encode_json({ subject => "$ext\@example.com", source => 'flood', external_id => $ext }) });
		my $id = ($res->{status} =~ /^2/) ? decode_json($res->{content})->{id} : '-';
		print $log "$ext $res->{status} $id\n";
		usleep(50_000) if $res->{status} !~ /^2/;
	}
	close $log;
}

my $until = time + 4;
my @pids;
for my $k (1 .. 4)
{
	my $pid = fork() // die "fork: $!";
	if ($pid == 0) { client($k, $until); POSIX::_exit(0) }
	push @pids, $pid;
}
sleep 1.5;
$node->kill9;
waitpid($_, 0) for @pids;

# The old postmaster and its children must be gone before a restart.
my $pidfile = $node->data_dir . '/postmaster.pid';
for (1 .. 100) { last unless -e $pidfile && kill(0, (split /\n/, `cat $pidfile`)[0] // 0); usleep(100_000) }
unlink $pidfile;
$node->start;
ok(wait_up(), 'the HTTP server is back after the crash');

my (%acked, %sent);
for my $k (1 .. 4)
{
	open(my $f, '<', "$dir/client$k") or die $!;
	while (<$f>)
	{
		my ($ext, $status, $id) = split;
		$sent{$ext} = 1;
		$acked{$ext} = $id if $status =~ /^2/;
	}
}
my $answered = keys %acked;
my $failed = keys(%sent) - $answered;
cmp_ok($answered, '>', 20, "a flood: $answered submits answered 2xx before the crash");
cmp_ok($failed, '>', 0, "... and $failed that got no 2xx (the crash hit them)");

my %stored = map { split /\|/ } split /\n/,
  $node->safe_psql('postgres', "SELECT external_id || '|' || id FROM delq.pending WHERE source = 'flood'");
my @lost = grep { ($stored{$_} // '') ne $acked{$_} } sort keys %acked;
is_deeply(\@lost, [], 'every request answered 2xx exists, with the id it was answered with');
is($node->safe_psql('postgres',
		"SELECT count(*) - count(DISTINCT subject) FROM delq.pending WHERE source = 'flood'"),
	'0', 'no request exists twice');

# Clients retry what they sent: acknowledged ones answer 200 with the
# first id; nothing is created twice.
my $http = HTTP::Tiny->new(timeout => 10);
my @wrong;
for my $ext (sort keys %sent)
{
	my $res = $http->post("$base/v1/requests", {
		headers => { authorization => "Bearer $token", 'content-type' => 'application/json' },
		content => encode_json({ subject => "$ext\@example.com", source => 'flood', external_id => $ext }) });
	my $id = $res->{status} =~ /^2/ ? decode_json($res->{content})->{id} : '';
	push @wrong, "$ext: $res->{status}"
	  if exists $acked{$ext} ? ($res->{status} != 200 || $id ne $acked{$ext}) : $res->{status} !~ /^20[01]$/;
}
is_deeply(\@wrong, [], 'resubmitting: 200 and the first id for every acknowledged request');
is($node->safe_psql('postgres',
		"SELECT count(*) || '/' || count(DISTINCT external_id) FROM delq.pending WHERE source = 'flood'"),
	scalar(keys %sent) . '/' . scalar(keys %sent), 'each external id exactly once');

$node->stop;
done_testing();
