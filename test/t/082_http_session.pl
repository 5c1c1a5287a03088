
# 082_http_session.pl
#     The HTTP worker's session as an attacker would look at it
#     (docs/http-api.md, "How it works"; docs/security.md, "The HTTP API"):
#     - the routes' plans are prepared once and kept for the worker's life
#       (pg_stat_statements counts far fewer plans than calls), and a kept
#       plan still checks the privileges of each call's own role;
#     - a token stops working when its role is granted delq_admin (or made
#       superuser) after the token was made, as add_api_token() refuses it;
#     - while a call runs (held on a lock), pg_stat_activity shows its
#       route, never its token, confirmation link or subject;
#     - the status page carries a Content-Security-Policy (no script, no
#       framing);
#     - a body nested past the stack depth is a 400, and a forged
#       confirmation link a 404 before its body is parsed, not a 500 that
#       anyone could make the server log;
#     - failing calls (401, 403, 404, 400, a lock timeout) with
#       log_min_error_statement and log_min_messages at 'warning' leave no
#       token, link or subject in the server log, and neither does a
#       delq.http_submit() that fails when called over SQL (log_statement,
#       which logs statements before they reach delq, is off: out of scope,
#       docs/security.md).

use strict;
use warnings;

use DelqTest;
use HTTP::Tiny;
use IPC::Run ();
use JSON::PP;
use MIME::Base64 ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $base = "http://127.0.0.1:$port";
my $node = delq_node(
	'http_session',
	conf => "delq.http_listen = '127.0.0.1:$port'\n"
	  . "shared_preload_libraries = 'delq, pg_stat_statements'\n"
	  . "pg_stat_statements.track = all\n"
	  . "pg_stat_statements.track_planning = on\n"
	  . "log_min_messages = warning\n"
	  . "log_min_error_statement = warning\n"
	  . "log_error_verbosity = verbose\n"
	  . "log_statement = none\n");
my $http = HTTP::Tiny->new(timeout => 10);

sub sql { return $node->safe_psql('postgres', shift) }

sub call
{
	my ($method, $path, %o) = @_;
	my %h;
	$h{Authorization} = "Bearer $o{token}" if defined $o{token};
	$h{'Content-Type'} = 'application/json' if defined $o{body};
	return $http->request($method, "$base$path",
		{ headers => \%h, (defined $o{body} ? (content => $o{body}) : ()) })->{status};
}

my $up = 0;
for (1 .. 300)
{
	if (call('GET', '/v1/healthz') == 200) { $up = 1; last }
	usleep(100_000);
}
ok($up, 'the HTTP server is up');

sql(q{
	CREATE EXTENSION pg_stat_statements;
	CREATE ROLE app NOLOGIN IN ROLE delq_submitter;
	CREATE ROLE dpo NOLOGIN IN ROLE delq_operator;
});
my $app = sql("SELECT delq.add_api_token('app', 'app')");
my $op = sql("SELECT delq.add_api_token('dpo', 'dpo')");

# ---------------------------------------------------------------------
# Kept plans

my $ok = 0;
for my $i (1 .. 20)
{
	$ok++ if call('POST', '/v1/requests', token => $app,
		body => qq({"subject": "plan$i\@example.com", "source": "web"})) == 201;
}
is($ok, 20, '20 submits answered 201');
my ($calls, $plans) = split /\|/, sql(
	"SELECT sum(calls), sum(plans) FROM pg_stat_statements
	  WHERE query LIKE '%FROM delq.http_submit(\$1, \$2) r'");
is($calls, 20, 'pg_stat_statements saw the route\'s SQL run 20 times');
cmp_ok($plans, '<=', 6, "... and planned it $plans times, not for every call (a kept plan)");
($calls, $plans) = split /\|/, sql(
	"SELECT sum(calls), sum(plans) FROM pg_stat_statements
	  WHERE query LIKE 'SELECT delq._api_token_role(%'");
cmp_ok($plans, '<', $calls, "the token lookup too ($plans plans for $calls calls)");

# the kept plan of GET /metrics, made for an operator, still checks a
# submitter's privileges (EXECUTE on delq.metrics) at each call
is(call('GET', '/metrics', token => $op), 200, 'metrics: an operator may read them');
is(call('GET', '/metrics', token => $app), 403, '... a submitter may not, with the same kept plan');
is(call('GET', '/metrics', token => $op), 200, '... and the operator still may');

# the status page may run no script and sit in no other site's frame
{
	my $page = $http->request('GET', "$base/",
		{ headers => { Authorization => 'Basic ' . MIME::Base64::encode_base64("dpo:$op", '') } });
	is($page->{status}, 200, 'the status page: 200 for an operator');
	like($page->{headers}{'content-security-policy'} // '',
		qr/default-src 'none'.*frame-ancestors 'none'/,
		'... with a Content-Security-Policy that allows no script and no framing');
}

# ---------------------------------------------------------------------
# A token's role granted more than a token may have

is(call('GET', '/v1/requests', token => $app), 200, 'a submitter token lists requests');
sql('GRANT delq_admin TO app');
is(call('GET', '/v1/requests', token => $app), 401,
	'once its role is granted delq_admin, the token is refused (401)');
sql('REVOKE delq_admin FROM app');
is(call('GET', '/v1/requests', token => $app), 200, '... and works again once that is revoked');
sql('ALTER ROLE app SUPERUSER');
is(call('GET', '/v1/requests', token => $app), 401, 'refused too while its role is a superuser');
sql('ALTER ROLE app NOSUPERUSER');

# ---------------------------------------------------------------------
# pg_stat_activity while a call runs

my $offset = -s $node->logfile;
my $subject = 'held-subject@example.com';
my ($lock_out, $lock_err) = ('', '');
my $locker = IPC::Run::start(
	[ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-c',
	  'BEGIN; LOCK TABLE delq.pending IN SHARE MODE; SELECT pg_sleep(4); COMMIT;' ],
	'>', \$lock_out, '2>', \$lock_err);
ok(poll_until($node,
		"SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
		  WHERE c.relname = 'pending' AND l.mode = 'ShareLock' AND l.granted", '1', 30),
	'another session holds a lock that submits wait for');
my ($code_out, $code_err) = ('', '');
my $caller = IPC::Run::start(
	[ 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '20',
	  '-H', "Authorization: Bearer $app", '-H', 'Content-Type: application/json',
	  '--data-binary', qq({"subject": "$subject", "source": "web"}), "$base/v1/requests" ],
	'>', \$code_out, '2>', \$code_err);
ok(poll_until($node,
		"SELECT count(*) FROM pg_stat_activity
		  WHERE backend_type = 'delq http' AND wait_event_type = 'Lock'", '1', 30),
	'the HTTP worker waits on the lock, mid-call');
my $activity = sql(
	"SELECT state || ' ' || query FROM pg_stat_activity WHERE backend_type = 'delq http'");
is($activity, 'active /v1/requests', 'pg_stat_activity shows the route it serves');
my $all = sql("SELECT string_agg(coalesce(query, ''), E'\\n') FROM pg_stat_activity");
unlike($all, qr/\Q$subject\E/, '... and no query text of any backend holds the subject');
unlike($all, qr/\Q$app\E/, '... nor the token');
$caller->finish;
$locker->finish;
is($code_out, '503', 'the call ran into its lock_timeout: 503');
is(sql("SELECT count(*) FROM delq.pending WHERE subject = '$subject'"), '0', '... and wrote nothing');

# ---------------------------------------------------------------------
# Failing calls and the server log

my $forged = 'delq_' . ('ab' x 32);
my $link = 'w' . ('x' x 20) . '.forgedsignature';
is(call('GET', '/v1/requests', token => $forged), 401, 'a forged token: 401');
is(call('POST', '/v1/requests/00000000-0000-0000-0000-000000000000/approve', token => $app, body => '{}'),
	403, 'a submitter approving: 403');
is(call('POST', "/v1/confirm/$link", body => '{}'), 404, 'a forged confirmation link: 404');
is(call('POST', '/v1/requests', token => $app,
		body => '{"subject": "bad-due@example.com", "source": "web", "due_at": "soon"}'),
	400, 'a submit with a bad due_at: 400');
is(call('POST', '/v1/requests', token => $app,
		body => '{"subject": "bad-json@example.com", "source": "web"'),
	400, 'a submit of broken JSON: 400');

# a body nested past the server's stack depth: the caller's doing (400),
# not an unexpected error that anyone could make the server log (500);
# without a valid confirmation link the body is not even parsed (404)
my $deep = '[' x 60000;
is(call('POST', '/v1/requests', token => $app, body => $deep), 400,
	'a submit nested 60000 deep: 400');
is(call('POST', "/v1/confirm/$link", body => $deep), 404,
	'the same body to a forged confirmation link: 404');

# the route functions called over SQL, as the token's role could
for my $q (
	q~SELECT delq.http_submit('{"subject": "sql-due@example.com", "source": "web", "due_at": "soon"}', NULL)~,
	q~SELECT delq.http_submit('{"subject": "sql-key@example.com", "source": "web", "external_id": "a"}', 'b')~,
	q~SELECT delq.http_submit('{"subject": "sql-type@example.com", "source": 7}', NULL)~,
	q~SELECT delq.http_submit('{"subject": "sql-json@example.com"', NULL)~)
{
	my ($rc, $out, $err) = $node->psql('postgres', "SET ROLE app; $q");
	like($err, qr/ERROR/, 'over SQL: ' . substr($q, 7, 60) . ' fails');
}

$node->psql('postgres', "SELECT 'control-marker', 1/0");
my $log = slurp_file($node->logfile, $offset);
like($log, qr/STATEMENT:.*control-marker/,
	'the log does show failing statements (log_min_error_statement = warning)');
for my $secret ($app, $op, $forged, $link, $subject, 'bad-due@', 'bad-json@', 'sql-due@',
	'sql-key@', 'sql-type@', 'sql-json@')
{
	unlike($log, qr/\Q$secret\E/, "the server log does not hold " . substr($secret, 0, 12) . '...');
}
unlike($log, qr/delq http: .* failed/, 'no call was an unexpected error (logged as a WARNING)');

$node->stop;
done_testing();
