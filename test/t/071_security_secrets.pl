
# 071_security_secrets.pl
#     Secrets stay out of the server log and of what operators read, and
#     the worker's HTTP follows only delq's own settings (issue 9, medium
#     and low findings; docs/security.md):
#     - a failing add_destination / alter_destination (bad secret, bad
#       header name, duplicate name) leaves neither the secret nor a header
#       value in the server log, although the log keeps failing statements
#       (log_min_error_statement = error, the default);
#     - a receiver that echoes the Authorization header in a 400 does not
#       put the token into delivery.last_error (masked, also when the
#       excerpt cuts it off);
#     - a TLS file named inside delq.tls_dir that is a symbolic link to a
#       file outside it is not used: the delivery fails, and says why;
#     - the server's proxy environment (http_proxy) is ignored; a proxy is
#       used only when delq.http_proxy names one;
#     - no connection is made to an address in delq.denied_networks.

use strict;
use warnings;

use DelqTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $sink = start_sink();
my $tls = PostgreSQL::Test::Utils::tempdir('tls');
chmod 0755, $tls;
my $node;
{
	# The server inherits this environment: libcurl would route every
	# request through this (closed) port if delq did not set the proxy
	# itself.  Only the server's: the test's own HTTP client stays direct.
	local $ENV{http_proxy} = 'http://127.0.0.1:9';
	local $ENV{HTTP_PROXY} = 'http://127.0.0.1:9';
	local $ENV{ALL_PROXY} = 'http://127.0.0.1:9';
	delete local $ENV{no_proxy};
	delete local $ENV{NO_PROXY};
	$node = delq_node('secrets',
		conf => "log_statement = none\n"
		  . "log_min_error_statement = error\n"
		  . "delq.tls_dir = '$tls'\n");
}

my $token = 'tok-Wq7ZpXk4Rt9Lm2Vb';
my $secret = 'whsec_MDEyMzQ1Njc4OWFiY2RlZmdoaWprbG1u';    # 24 bytes: valid

# --- failing calls keep their statement out of the log -----------------------

my $logstart = -s $node->logfile;
for my $sql (
	# a secret that is not valid (the value is in the statement)
	"SELECT delq.add_destination('a', 'https://a.example/', secret => 'whsec_$token!')",
	# a bad header name next to a header value
	"SELECT delq.add_destination('a', 'https://a.example/', headers => '{\"Authorization\": \"Bearer $token\", \"bad name\": \"x\"}')",
	"SELECT delq.add_destination('dup', 'https://a.example/', headers => '{\"Authorization\": \"Bearer $token\"}')",
	"SELECT delq.add_destination('dup', 'https://a.example/', headers => '{\"Authorization\": \"Bearer $token\"}', secret => '$secret')",
	"SELECT delq.alter_destination('dup', headers => '{\"Authorization\": \"Bearer $token\", \"bad name\": \"x\"}')",
	"SELECT delq.alter_destination('no_such', secret => '$secret')")
{
	$node->psql('postgres', $sql);
}
my $log = slurp_file($node->logfile, $logstart);
like($log, qr/ERROR:  destination 'dup' already exists/, 'the errors are logged');
unlike($log, qr/\Q$token\E/, 'no header value or secret candidate in the server log');
unlike($log, qr/\Q$secret\E/, 'no signing secret in the server log');
unlike($log, qr/STATEMENT:.*add_destination|STATEMENT:.*alter_destination/,
	'no failing add_destination/alter_destination statement in the server log');
# the same failure in an ordinary statement is logged with its text, so
# the check above can fail
$node->psql('postgres', "SELECT 1/0 AS \"$token\"");
like(slurp_file($node->logfile, $logstart), qr/STATEMENT:.*\Q$token\E/,
	'an ordinary failing statement is logged with its text');
$node->safe_psql('postgres', "SELECT delq.drop_destination('dup')");

# --- an echoed Authorization header is masked in last_error ------------------

$node->safe_psql('postgres',
	"SELECT delq.add_destination('echo', '" . $sink->url('echo', '/hook') . "',
	        headers => '{\"Authorization\": \"Bearer $token\"}');
	 SELECT delq.add_route('echo', '{\"kind\": \"echo\"}');");
$sink->control('echo',
	{ status => 400, body => "invalid credentials: Authorization: Bearer $token (token $token)" });
$node->safe_psql('postgres',
	"SELECT delq.submit('echo\@example.com', 'shop', attributes => '{\"kind\": \"echo\"}')");
ok( poll_until(
		$node, "SELECT state FROM delq.delivery WHERE destination = 'echo'",
		'failed', 30),
	'the 400 fails the delivery');
my $last_error = $node->safe_psql('postgres',
	"SELECT last_error FROM delq.delivery WHERE destination = 'echo'");
like($last_error, qr/^HTTP 400: invalid credentials/, 'last_error keeps the answer');
unlike($last_error, qr/\Q$token\E/, 'but not the token it echoed');
like($last_error, qr/\*{8}/, 'which is masked');
is(($sink->requests('echo'))[0]{headers}{authorization},
	"Bearer $token", 'the receiver got the header');

# cut off by the end of the excerpt (200 bytes): the start is masked too
$sink->control('echo', { status => 400, body => ('x' x 190) . " $token" });
$node->safe_psql('postgres',
	"SELECT delq.retry(id) FROM delq.pending WHERE subject = 'echo\@example.com'");
ok( poll_until(
		$node,
		"SELECT last_error LIKE '%xxxx%' AND state = 'failed' FROM delq.delivery WHERE destination = 'echo'",
		't', 30),
	'the second answer is recorded');
$last_error = $node->safe_psql('postgres',
	"SELECT last_error FROM delq.delivery WHERE destination = 'echo'");
unlike($last_error, qr/\Q@{[substr($token, 0, 4)]}\E/, 'a token cut off by the excerpt is masked as well');

# --- TLS files: inside delq.tls_dir after symbolic links are resolved ----------

symlink($node->data_dir . '/postgresql.conf', "$tls/evil.pem") or die "symlink: $!";
open(my $fh, '>', "$tls/ca.pem") or die; print $fh "not used for http\n"; close $fh;
$node->safe_psql('postgres',
	"SELECT delq.add_destination('evil', '" . $sink->url('evil', '/hook') . "', ca_file => '$tls/evil.pem');
	 SELECT delq.add_route('evil', '{\"kind\": \"evil\"}');
	 SELECT delq.add_destination('good', '" . $sink->url('good', '/hook') . "', ca_file => '$tls/ca.pem');
	 SELECT delq.add_route('good', '{\"kind\": \"good\"}');
	 SELECT delq.submit('tls\@example.com', 'shop', attributes => '{\"kind\": \"evil\"}');
	 SELECT delq.submit('tls2\@example.com', 'shop', attributes => '{\"kind\": \"good\"}');");
ok( poll_until(
		$node, "SELECT state || ': ' || last_error FROM delq.delivery WHERE destination = 'evil'",
		'failed: ca_file is not a file in delq.tls_dir', 30),
	'a TLS file that links out of delq.tls_dir is refused when sending');
is($sink->count('evil'), 0, 'and nothing was sent');
ok( poll_until(
		$node, "SELECT state FROM delq.delivery WHERE destination = 'good'", 'confirmed', 30),
	'a file inside delq.tls_dir is accepted (and the proxy environment ignored)');

# --- delq.http_proxy ------------------------------------------------------------

$node->safe_psql('postgres',
	"ALTER SYSTEM SET delq.http_proxy = 'http://127.0.0.1:9'; SELECT pg_reload_conf();");
sleep 1;
$node->safe_psql('postgres',
	"SELECT delq.submit('proxy\@example.com', 'shop', attributes => '{\"kind\": \"good\"}')");
ok( poll_until(
		$node,
		"SELECT count(*) FROM delq.delivery d JOIN delq.pending p ON p.id = d.request_id
		  WHERE p.subject = 'proxy\@example.com' AND d.last_error IS NOT NULL AND d.state = 'queued'",
		'1', 30),
	'with delq.http_proxy set, requests go to the proxy (here a closed port: retried)');
is($sink->count('good'), 1, 'the destination got nothing more');

# --- delq.denied_networks ---------------------------------------------------------

# By default a cloud's metadata networks; here loopback, where the sink is,
# so that the refusal is seen without sending anything anywhere else.
is($node->safe_psql('postgres', 'SHOW delq.denied_networks'),
	'169.254.0.0/16, fe80::/10, fd00:ec2::254', 'link-local and metadata addresses are denied by default');
my ($ret, $out, $err) = $node->psql('postgres', "ALTER SYSTEM SET delq.denied_networks = '127.0.0.0/33'");
like($err, qr/invalid value for parameter "delq.denied_networks"/, 'a malformed list is refused');
$node->safe_psql('postgres',
	"ALTER SYSTEM RESET delq.http_proxy;
	 ALTER SYSTEM SET delq.denied_networks = '10.0.0.0/8, 127.0.0.0/8';
	 SELECT pg_reload_conf();");
sleep 1;
my $before = $sink->count('good');
$node->safe_psql('postgres',
	"SELECT delq.submit('denied\@example.com', 'shop', attributes => '{\"kind\": \"good\"}')");
ok( poll_until(
		$node,
		"SELECT d.state || ': ' || d.last_error FROM delq.delivery d JOIN delq.pending p ON p.id = d.request_id
		  WHERE p.subject = 'denied\@example.com'",
		'failed: address 127.0.0.1 is in a denied network (delq.denied_networks)', 30),
	'a destination whose address is in delq.denied_networks is refused before connecting');
is($sink->count('good'), $before, 'and receives nothing');

done_testing();
