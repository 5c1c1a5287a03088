# 072_templates.pl
#     Templated HTTP destinations end to end (docs/connectors.md), against
#     the generic records API double (test/doubles/generic_api.py):
#
#     1. lookup over cursor pages, erase per item (a 503 and a 429 with
#        Retry-After on the way), 404 not held; found none: not held;
#     2. a render failure fails at once, naming the field, nothing sent;
#     3. an async job polled until done, the wait a row in the database;
#     4. OAuth2 client credentials: one token, cached; a new one on 401;
#     5. kill -9 in the middle of a lookup-then-erase run, and while a poll
#        is pending: nothing lost, nothing erased twice but the call that
#        was in flight;
#     6. credentials and tokens are in no event, no operator-readable view,
#        not in pg_stat_activity and not in the server log.

use strict;
use warnings;

use DelqTest;
use File::Basename qw(dirname);
use File::Spec;
use HTTP::Tiny;
use JSON::PP;
use POSIX qw(WNOHANG);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $API_KEY = 'key-TAP-5ecret-7d1';
my $CLIENT_SECRET = 'csecret-TAP-9b2';

# --- the double -------------------------------------------------------------

my $script = File::Spec->rel2abs(dirname(__FILE__) . '/../doubles/generic_api.py');
my $dir = PostgreSQL::Test::Utils::tempdir('api');
my $pid = fork() // die "fork: $!";
if ($pid == 0)
{
	open(STDIN, '<', '/dev/null');
	open(STDOUT, '>>', "$dir/api.stderr");
	open(STDERR, '>&', \*STDOUT);
	exec('/usr/bin/python3', $script, '--watch-parent', '--port-file', "$dir/api.port")
	  or POSIX::_exit(127);
}
END { kill 'TERM', $pid if $pid; }
my $deadline = time + 15;
usleep(20_000) until -s "$dir/api.port" || time > $deadline;
open(my $fh, '<', "$dir/api.port") or die "generic_api did not start";
chomp(my $port = <$fh>);
close $fh;
my $base = "http://127.0.0.1:$port";
my $http = HTTP::Tiny->new(timeout => 10);

sub api
{
	my ($method, $path, $content) = @_;
	my $res = $http->request($method, "$base$path",
		defined $content ? { content => encode_json($content) } : {});
	die "generic_api $method $path: $res->{status}" unless $res->{success};
	return decode_json($res->{content});
}

# Recorded calls matching method and a path pattern.
sub calls
{
	my ($method, $re) = @_;
	return grep { $_->{method} eq $method && $_->{path} =~ $re } @{ api('GET', '/_requests') };
}

api('POST', '/_config', { api_key => $API_KEY, client_secret => $CLIENT_SECRET });

# --- delq -------------------------------------------------------------------

my $node = delq_node('templates',
	conf => "restart_after_crash = on\n"
	  . "log_min_messages = debug1\n"
	  # the test's own add_destination statements carry the credentials
	  . "log_statement = none\n");

sub sql { return $node->safe_psql('postgres', $_[0]) }

sub state_of
{
	my ($subject, $dest) = @_;
	return sql("SELECT dl.state FROM delq.delivery dl JOIN delq.pending p ON p.id = dl.request_id
	           WHERE p.subject = '$subject' AND dl.destination = '$dest'");
}

sub wait_state
{
	my ($subject, $dest, $want, $timeout) = @_;
	return poll_until($node,
		"SELECT dl.state FROM delq.delivery dl JOIN delq.pending p ON p.id = dl.request_id
		  WHERE p.subject = '$subject' AND dl.destination = '$dest'", $want, $timeout // 30);
}

sub submit
{
	my ($subject, $attrs) = @_;
	return sql("SELECT delq.submit('$subject', 'tap', NULL, '" . ($attrs // '{}') . "')");
}

sql("SELECT delq.add_destination('records', '$base', request => \$\${
    \"auth\":   {\"bearer\": \"{{credentials.api_key}}\"},
    \"lookup\": {\"url\": \"/api/records\", \"query\": {\"email\": \"{{subject}}\"},
               \"items\": \"\$.data[*].id\",
               \"next\": {\"cursor\": \"\$.next_cursor\", \"param\": \"cursor\"}},
    \"erase\":  {\"method\": \"DELETE\", \"url\": \"/api/records/{{item}}\",
               \"headers\": {\"Idempotency-Key\": \"{{webhook_id}}-{{item}}\"},
               \"answers\": {\"not_held\": [404]}}
  }\$\$, credentials => '{\"api_key\": \"$API_KEY\"}');
  SELECT delq.add_route('records', '{\"api\": \"records\"}');");

# --- 1. lookup over pages, erase per item, faults, not held ------------------

api('POST', '/_seed', { records => [
	map { { id => "a$_", email => 'alice@example.com' } } 1 .. 3 ] });
api('POST', '/_fault', { method => 'DELETE', path => '/api/records/a1', status => 503 });
api('POST', '/_fault', { method => 'DELETE', path => '/api/records/a2', status => 429, retry_after => 1 });
my $t0 = time;
submit('alice@example.com', '{"api": "records"}');
submit('nobody@example.com', '{"api": "records"}');
ok(wait_state('alice@example.com', 'records', 'confirmed'), 'alice: confirmed');
ok(wait_state('nobody@example.com', 'records', 'not_held'), 'nobody: not held');
my $st = api('GET', '/_state');
is(scalar(grep { $_->{email} eq 'alice@example.com' } @{ $st->{records} }), 0,
	'the double holds nothing on alice any more');
is(scalar(calls('GET', qr{^/api/records$})), 3, 'three lookup pages: alice two, nobody one');
is(scalar(calls('DELETE', qr{^/api/records/a1$})), 2, 'a1: erased once more after the 503');
is(scalar(calls('DELETE', qr{^/api/records/a2$})), 2, 'a2: erased once more after the 429');
is(scalar(calls('DELETE', qr{^/api/records/a3$})), 1, 'a3: erased once');
my @a2 = calls('DELETE', qr{^/api/records/a2$});
my ($wid) = sql("SELECT webhook_id FROM delq.delivery dl JOIN delq.pending p ON p.id = dl.request_id
               WHERE p.subject = 'alice\@example.com'");
is($a2[1]{headers}{'idempotency-key'}, "$wid-a2", 'templated header with the webhook id and the item');
is($a2[0]{headers}{authorization}, "Bearer $API_KEY", 'bearer auth from the credentials');
ok(!exists $a2[0]{headers}{'webhook-signature'}, 'no Standard Webhooks headers');
is(sql("SELECT string_agg(detail::text, ' ' ORDER BY e.id) FROM delq.event e
       JOIN delq.pending p ON p.id = e.request_id
      WHERE p.subject = 'alice\@example.com' AND kind = 'step' AND detail->>'step' = 'lookup'"),
	'{"page": 1, "step": "lookup", "found": 2, "status": 200} {"page": 2, "step": "lookup", "found": 1, "status": 200}',
	'lookup events: found per page');
is(sql("SELECT string_agg((detail->>'item') || ':' || (detail->>'outcome'), ' ' ORDER BY e.id) FROM delq.event e
       JOIN delq.pending p ON p.id = e.request_id
      WHERE p.subject = 'alice\@example.com' AND kind = 'step' AND detail->>'step' = 'erase'"),
	'1:retry 1:done 2:retry 2:done 3:done', 'erase events: each item\'s outcome');
is(sql("SELECT string_agg(kind, ' ' ORDER BY e.id) FROM delq.event e JOIN delq.pending p ON p.id = e.request_id
      WHERE p.subject = 'nobody\@example.com' AND kind IN ('step', 'not_held')"),
	'step step not_held', 'nobody: lookup found nothing, then not_held');

# --- 2. render failure -------------------------------------------------------

sql("SELECT delq.add_destination('jobs', '$base', request => \$\${
    \"auth\":  {\"bearer\": \"{{credentials.api_key}}\"},
    \"erase\": {\"method\": \"POST\", \"url\": \"/api/jobs\", \"json\": {\"email\": \"{{attributes.work_email}}\"}},
    \"poll\":  {\"url\": \"/api/jobs/{{job_id}}\", \"job_id\": \"\$.id\", \"interval\": \"1 second\",
              \"finished\": \"\$.status == \\\"done\\\"\", \"failed\": \"\$.status == \\\"failed\\\"\"}
  }\$\$, credentials => '{\"api_key\": \"$API_KEY\"}');
  SELECT delq.add_route('jobs', '{\"api\": \"jobs\"}');");
my $jobs_before = scalar calls('POST', qr{^/api/jobs$});
submit('erin@example.com', '{"api": "jobs"}');
ok(wait_state('erin@example.com', 'jobs', 'failed'), 'a request without the attribute fails');
is(sql("SELECT attempts || ' ' || last_error FROM delq.delivery dl JOIN delq.pending p ON p.id = dl.request_id
      WHERE p.subject = 'erin\@example.com'"),
	'1 render: erase.json.email: attributes.work_email is missing',
	'at once, naming the field');
is(scalar(calls('POST', qr{^/api/jobs$})), $jobs_before, 'nothing was sent');
is(sql("SELECT detail FROM delq.needs_attention WHERE destination = 'jobs'"),
	'render: erase.json.email: attributes.work_email is missing', 'needs_attention says why');

# --- 3. async job ------------------------------------------------------------

api('POST', '/_seed', { records => [ { id => 'f1', email => 'fay@example.com' } ] });
api('POST', '/_config', { job_polls => 2 });
submit('frank@example.com', '{"api": "jobs", "work_email": "fay@example.com"}');
ok(poll_until($node, "SELECT s.phase FROM delq.delivery_step s JOIN delq.delivery dl ON dl.id = s.delivery_id
                      WHERE dl.destination = 'jobs' AND dl.state = 'queued'", 'poll', 20),
	'while the job runs the delivery waits, queued, in the poll phase');
ok(wait_state('frank@example.com', 'jobs', 'confirmed'), 'job done: confirmed');
is(scalar(grep { $_->{body} =~ /fay\@example/ } calls('POST', qr{^/api/jobs$})), 1, 'one job started');
is(scalar(calls('GET', qr{^/api/jobs/})), 3, 'polled until done: pending, pending, done');
is(sql("SELECT string_agg(detail->>'outcome', ' ' ORDER BY e.id) FROM delq.event e JOIN delq.pending p ON p.id = e.request_id
      WHERE p.subject = 'frank\@example.com' AND kind = 'step'"),
	'pending pending pending finished', 'events: erase pending, poll pending twice, finished');

# --- 4. OAuth2 ---------------------------------------------------------------

sql("SELECT delq.add_destination('oauthapi', '$base', request => \$\${
    \"auth\":   {\"oauth2\": {\"token_url\": \"/oauth/token\", \"client_id\": \"{{credentials.client_id}}\",
                           \"client_secret\": \"{{credentials.client_secret}}\"}},
    \"lookup\": {\"url\": \"/api/records\", \"query\": {\"email\": \"{{subject}}\"}, \"items\": \"\$.data[*].id\"},
    \"erase\":  {\"url\": \"/api/records/{{item}}\"}
  }\$\$, credentials => '{\"client_id\": \"cid\", \"client_secret\": \"$CLIENT_SECRET\"}');
  SELECT delq.add_route('oauthapi', '{\"api\": \"oauth\"}');");
api('POST', '/_seed', { records => [ { id => 'g1', email => 'gus@example.com' },
	{ id => 'h1', email => 'hal@example.com' } ] });
submit('gus@example.com', '{"api": "oauth"}');
ok(wait_state('gus@example.com', 'oauthapi', 'confirmed'), 'oauth: confirmed');
is(scalar(calls('POST', qr{^/oauth/token$})), 1, 'one token for lookup and erase');
my ($tok) = @{ api('GET', '/_state')->{tokens} };
api('POST', '/_config', { revoke_tokens => JSON::PP::true });
submit('hal@example.com', '{"api": "oauth"}');
ok(wait_state('hal@example.com', 'oauthapi', 'confirmed'), 'oauth after a revoked token: confirmed');
is(scalar(calls('POST', qr{^/oauth/token$})), 2, 'a 401 fetched a new token, once');
my ($tok2) = @{ api('GET', '/_state')->{tokens} };

# --- 5. crashes --------------------------------------------------------------

# kill -9 of the postmaster; start again once it and its children are gone
# (as test/t/030_crash.pl does: orphans are reaped a little late).
sub crash_and_restart
{
	open(my $p, '<', $node->data_dir . '/postmaster.pid') or die "postmaster.pid: $!";
	chomp(my $pm = <$p>);
	close $p;
	my @children;
	for my $stat (glob '/proc/[0-9]*/stat')
	{
		open(my $fh, '<', $stat) or next;
		my $line = <$fh> // '';
		close $fh;
		push @children, $1 if $line =~ /^(\d+) \(.*\) \S+ (\d+) / && $2 == $pm;
	}
	$node->kill9;
	my $until = time + 60;
	# the postmaster gone for good (a zombie still holds its PID), its
	# children at least zombies
	usleep(50_000) while (kill(0, $pm) || grep({ gone_or_zombie($_) == 0 } @children)) && time < $until;
	$node->start;
}

sub gone_or_zombie
{
	my ($pid) = @_;
	return 1 unless kill(0, $pid);
	open(my $fh, '<', "/proc/$pid/stat") or return 1;
	my $line = <$fh> // '';
	close $fh;
	return $line =~ /^\d+ \(.*\) Z / ? 1 : 0;
}

# 5a. in the middle of lookup-then-erase: c2's DELETE hangs in flight
api('POST', '/_seed', { records => [ map { { id => "c$_", email => 'carol@example.com' } } 1 .. 3 ] });
api('POST', '/_fault', { method => 'DELETE', path => '/api/records/c2', delay_ms => 5000 });
submit('carol@example.com', '{"api": "records"}');
$deadline = time + 30;
usleep(50_000) until calls('DELETE', qr{^/api/records/c2$}) || time > $deadline;
is(state_of('carol@example.com', 'records'), 'sending', 'c2 in flight');
my $activity = sql("SELECT string_agg(query, ' ') FROM pg_stat_activity WHERE pid <> pg_backend_pid()");
ok(index($activity, $API_KEY) < 0 && index($activity, 'carol') < 0,
	'pg_stat_activity shows neither the key nor the subject while a step is in flight');
crash_and_restart();
ok(wait_state('carol@example.com', 'records', 'confirmed', 60), 'after the crash: confirmed');
is(scalar(grep { $_->{query} =~ /carol/ } calls('GET', qr{^/api/records$})), 2,
	'carol: the two lookup pages read once (recorded before the crash)');
is(scalar(calls('DELETE', qr{^/api/records/c1$})), 1, 'c1 (recorded before the crash): erased once');
cmp_ok(scalar(calls('DELETE', qr{^/api/records/c2$})), '<=', 2, 'c2 (in flight): at most once more');
is(scalar(calls('DELETE', qr{^/api/records/c3$})), 1, 'c3: erased once');

# 5b. while a poll is pending
api('POST', '/_seed', { records => [ { id => 'd1', email => 'dora@example.com' } ] });
api('POST', '/_config', { job_polls => 1000 });
submit('dan@example.com', '{"api": "jobs", "work_email": "dora@example.com"}');
$deadline = time + 30;
my $job;
until ((($job) = grep { $_->{email} eq 'dora@example.com' } values %{ api('GET', '/_state')->{jobs} })
	  && $job->{reads} >= 2 || time > $deadline)
{
	usleep(100_000);
}
ok(poll_until($node, "SELECT s.phase || ' ' || dl.state || ' ' || (dl.next_attempt_at > now())
                      FROM delq.delivery_step s JOIN delq.delivery dl ON dl.id = s.delivery_id
                     WHERE dl.destination = 'jobs' AND s.job_id = '\"$job->{id}\"'", 'poll queued true', 10),
	'job pending: queued until the next poll, in the poll phase');
crash_and_restart();
api('POST', '/_config', { job_polls => 0 });
ok(wait_state('dan@example.com', 'jobs', 'confirmed', 60), 'after the crash the poll goes on: confirmed');
is(scalar(grep { $_->{body} =~ /dora\@example/ } calls('POST', qr{^/api/jobs$})), 1,
	'the job was started once');

# --- 5c. without the worker: dispatch_pass() runs the steps too -------------

my $cron = delq_node('templates_cron', preload => 0);
$cron->safe_psql('postgres', "SELECT delq.add_destination('records', '$base', request => \$\${
    \"auth\":   {\"bearer\": \"{{credentials.api_key}}\"},
    \"lookup\": {\"url\": \"/api/records\", \"query\": {\"email\": \"{{subject}}\"},
               \"items\": \"\$.data[*].id\", \"next\": {\"cursor\": \"\$.next_cursor\", \"param\": \"cursor\"}},
    \"erase\":  {\"url\": \"/api/records/{{item}}\", \"answers\": {\"not_held\": [404]}}
  }\$\$, credentials => '{\"api_key\": \"$API_KEY\"}');
  SELECT delq.add_route('records');
  SELECT delq.submit('eve\@example.com', 'tap');");
api('POST', '/_seed', { records => [ map { { id => "e$_", email => 'eve@example.com' } } 1 .. 3 ] });
$cron->safe_psql('postgres', 'CALL delq.dispatch_pass()');
is($cron->safe_psql('postgres', 'SELECT state FROM delq.delivery'), 'confirmed',
	'one dispatch_pass() looks up both pages and erases every item');
is(scalar(grep { $_->{email} eq 'eve@example.com' } @{ api('GET', '/_state')->{records} }), 0,
	'the double holds nothing on eve');
$cron->stop;

# --- 6. secrets nowhere ------------------------------------------------------

my @secrets = ($API_KEY, $CLIENT_SECRET, $tok, $tok2);
my $operator_text = $node->safe_psql('postgres', q{
	SET ROLE delq_operator;
	SELECT concat_ws(' ', (SELECT string_agg(to_jsonb(x)::text, ' ') FROM delq.event x),
	                      (SELECT string_agg(to_jsonb(x)::text, ' ') FROM delq.delivery x),
	                      (SELECT string_agg(to_jsonb(x)::text, ' ') FROM delq.destinations x),
	                      (SELECT string_agg(to_jsonb(x)::text, ' ') FROM delq.destination_health x),
	                      (SELECT string_agg(to_jsonb(x)::text, ' ') FROM delq.destination_state x),
	                      (SELECT string_agg(to_jsonb(x)::text, ' ') FROM delq.needs_attention x),
	                      (SELECT string_agg(to_jsonb(x)::text, ' ') FROM delq.finished x))});
my $log = slurp_file($node->logfile);
for my $i (0 .. $#secrets)
{
	my $s = $secrets[$i];
	ok(defined $s && length $s > 5, "secret $i known");
	ok(index($operator_text, $s) < 0, "secret $i in nothing delq_operator reads");
	ok(index($log, $s) < 0, "secret $i not in the server log");
}
like($operator_text, qr/"step"/, 'the operator text searched holds the step events');
# the subjects went into URLs, queries and bodies: none reached the log
unlike($log, qr/\w\@example\.com|\%40example\.com/, 'no subject in the server log');

done_testing();
