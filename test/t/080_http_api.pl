
# 080_http_api.pl
#     The HTTP ingress (docs/http-api.md), with curl and with a Node fetch
#     client (test/http/api-client.mjs) that validates every answer against
#     the OpenAPI document, which Redocly CLI lints, as are the answers curl
#     got (test/http/check-recorded.mjs): off by default; tokens
#     and roles; every route and error code; idempotency; nothing written by
#     a failed call; bad JSON, wrong types, huge bodies; a slow client
#     (slowloris) and many connections; callback confirmation links; inbound
#     Standard Webhooks and Shopify privacy webhooks (fixtures built from
#     Shopify's documented format); metrics; the status page as headless
#     Chromium shows it; TLS with a self-signed certificate.

use strict;
use warnings;

use DelqTest;
use Digest::SHA qw(hmac_sha256_base64 sha256_hex);
use Encode ();
use File::Basename qw(dirname);
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw(encode_base64 decode_base64);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $root = dirname(__FILE__) . '/../..';
my $tmp = PostgreSQL::Test::Utils::tempdir('http');
my $json = JSON::PP->new->canonical;

# ---------------------------------------------------------------------
# Off by default: no worker, nothing listening.

{
	my $off = delq_node('http_off');
	is($off->safe_psql('postgres', 'SHOW delq.http_listen'), '', 'delq.http_listen is empty by default');
	is($off->safe_psql('postgres',
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'delq http'"),
		'0', 'without delq.http_listen there is no HTTP worker in pg_stat_activity');
	$off->stop;
}

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $base = "http://127.0.0.1:$port";
my $sink = start_sink();
my $node = delq_node(
	'http',
	conf => "delq.http_listen = '127.0.0.1:$port'\n"
	  . "delq.http_public_url = '$base/'\n"
	  . "delq.http_request_timeout = '2s'\n"
	  . "delq.http_max_connections = 8\n"
	  . "delq.http_max_client_connections = 6\n");

sub sql { return $node->safe_psql('postgres', shift) }

# One call with curl: {code, headers (lower-case names), body, json}.
my $n_call = 0;
sub curl
{
	my ($method, $path, %o) = @_;
	my $id = ++$n_call;
	my ($bodyf, $hdrf, $inf) = map { "$tmp/c$id.$_" } qw(body hdr in);
	my @cmd = ('curl', '-sS', '-X', $method, '-o', $bodyf, '-D', $hdrf,
		'-w', '%{http_code}', '--max-time', $o{max_time} // 20);
	push @cmd, '-H', "Authorization: Bearer $o{token}" if defined $o{token};
	push @cmd, '-u', "dpo:$o{basic}" if defined $o{basic};
	if (defined $o{body})
	{
		open(my $fh, '>:raw', $inf) or die $!;
		print $fh $o{body};
		close $fh;
		push @cmd, '-H', 'Content-Type: ' . ($o{ctype} // 'application/json'),
		  '--data-binary', "\@$inf";
	}
	push @cmd, map { ('-H', $_) } @{ $o{headers} // [] };
	push @cmd, @{ $o{curl} // [] };
	push @cmd, ($o{base} // $base) . $path;
	open(my $out, '-|', @cmd) or die "curl: $!";
	my $code = do { local $/; <$out> };
	close $out;
	my $rc = $? >> 8;
	my %h;
	if (open(my $hf, '<', $hdrf))
	{
		while (<$hf>)
		{
			s/\r?\n$//;
			$h{ lc $1 } = $2 if /^([^:]+):\s*(.*)$/;
		}
	}
	my $body = '';
	if (open(my $bf, '<:raw', $bodyf)) { local $/; $body = <$bf> // '' }
	my $decoded = eval { decode_json($body) };
	# every answer, for test/http/check-recorded.mjs (the OpenAPI check)
	open(my $rec, '>>', "$tmp/answers.jsonl") or die $!;
	print $rec JSON::PP->new->ascii->canonical->encode({
		method => $method, path => $path, status => $code + 0,
		content_type => $h{'content-type'} // '',
		body => Encode::decode('UTF-8', $body, Encode::FB_DEFAULT) }) . "\n";
	close $rec;
	return { code => $code + 0, rc => $rc, headers => \%h, body => $body, json => $decoded };
}

# Wait for the server (the worker starts once the extension exists).
my $up = 0;
for (1 .. 300)
{
	if (curl('GET', '/v1/healthz', max_time => 2)->{code} == 200) { $up = 1; last }
	usleep(100_000);
}
ok($up, 'the HTTP server answers once delq.http_listen is set');
is(sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'delq http'"), '1',
	'the HTTP worker is in pg_stat_activity');

# ---------------------------------------------------------------------
# Tokens and roles

sql(q{
	CREATE ROLE app NOLOGIN IN ROLE delq_submitter;
	CREATE ROLE dpo NOLOGIN IN ROLE delq_operator;
	CREATE ROLE prom NOLOGIN IN ROLE delq_metrics;
	CREATE ROLE boss NOLOGIN IN ROLE delq_admin;
	CREATE ROLE nobody NOLOGIN;
	CREATE ROLE root_like NOLOGIN SUPERUSER IN ROLE delq_submitter;
});
my $app = sql("SELECT delq.add_api_token('app', 'app')");
my $op = sql("SELECT delq.add_api_token('dpo', 'dpo')");
my $mon = sql("SELECT delq.add_api_token('prometheus', 'prom')");
like($app, qr/^delq_[0-9a-f]{64}$/, 'add_api_token returns a random token');

sub sqlstate_of
{
	my ($q) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', $q, on_error_stop => 1,
		extra_params => ['-v', 'VERBOSITY=verbose']);
	return $err =~ /ERROR:\s+([0-9A-Z]{5}):/ ? $1 : "none ($rc)";
}
is(sqlstate_of("SELECT delq.add_api_token('x', 'boss')"), '22023', 'no token for delq_admin');
is(sqlstate_of("SELECT delq.add_api_token('x', 'root_like')"), '22023', 'no token for a superuser');
is(sqlstate_of("SELECT delq.add_api_token('x', 'nobody')"), '22023', 'no token for a role without delq');
is(sqlstate_of("SELECT delq.add_api_token('x', 'ghost')"), '42704', 'no token for an unknown role');
is(sqlstate_of("SELECT delq.add_api_token('app', 'app')"), '23505', 'token names are unique');
is(sqlstate_of("SELECT delq.drop_api_token('ghost')"), '42704', 'dropping an unknown token: 42704');
is(sql("SELECT string_agg(name || ':' || role, ',' ORDER BY name) FROM delq.api_tokens"),
	'app:app,dpo:dpo,prometheus:prom', 'delq.api_tokens lists names and roles');
is(sql("SELECT count(*) FROM delq.api_token WHERE hash = sha256(convert_to('$app', 'UTF8'))"),
	'1', 'only the hash of a token is stored');
is(sql("SELECT count(*) FROM delq.api_token t WHERE t::text LIKE '%' || substr('$app', 6, 20) || '%'"),
	'0', 'the token itself is stored nowhere');

# ---------------------------------------------------------------------
# Requests

my $r = curl('POST', '/v1/requests', token => $app,
	body => '{"subject": "ann@example.com", "source": "web", "external_id": "t-1"}');
is($r->{code}, 201, 'submit: 201');
my $rid = $r->{json}{id};
is($r->{headers}{location}, "/v1/requests/$rid", 'submit: Location of the new request');
is(sql("SELECT subject || ',' || source || ',' || external_id FROM delq.pending WHERE id = '$rid'"),
	'ann@example.com,web,t-1', 'submit: the request is committed as sent');
$r = curl('POST', '/v1/requests', token => $app,
	body => '{"subject": "ann@example.com", "source": "web", "external_id": "t-1"}');
ok($r->{code} == 200 && $r->{json}{id} eq $rid, 'replay of external_id: 200 with the first id');
$r = curl('POST', '/v1/requests', token => $app, headers => ['Idempotency-Key: k-77'],
	body => '{"subject": "bo@example.com", "source": "web"}');
is($r->{code}, 201, 'Idempotency-Key: first 201');
my $kid = $r->{json}{id};
$r = curl('POST', '/v1/requests', token => $app, headers => ['Idempotency-Key: k-77'],
	body => '{"subject": "bo@example.com", "source": "web"}');
ok($r->{code} == 200 && $r->{json}{id} eq $kid, 'Idempotency-Key replay: 200, first id');
is(sql("SELECT count(*) FROM delq.pending WHERE subject = 'bo\@example.com'"), '1',
	'the replay created nothing');

# Failures write nothing: the same counts before and after each.
my $counts = "SELECT (SELECT count(*) FROM delq.pending) || '/' || (SELECT count(*) FROM delq.event)";
my $before = sql($counts);
my @fail = (
	[ 'bad JSON', 400, '22P02', 'POST', '/v1/requests', token => $app, body => '{"subject": ' ],
	[ 'wrong type', 400, '22023', 'POST', '/v1/requests', token => $app, body => '{"subject": 1, "source": "web"}' ],
	[ 'unknown member', 400, '22023', 'POST', '/v1/requests', token => $app,
		body => '{"subject": "x@example.com", "source": "web", "sujbect": 1}' ],
	[ 'not an object', 400, '22023', 'POST', '/v1/requests', token => $app, body => '[1]' ],
	[ 'NULL subject', 400, '22004', 'POST', '/v1/requests', token => $app, body => '{"source": "web"}' ],
	[ 'bad due_at', 400, '22007', 'POST', '/v1/requests', token => $app,
		body => '{"subject": "x@example.com", "source": "web", "due_at": "soon"}' ],
	[ 'past due_at', 400, '22023', 'POST', '/v1/requests', token => $app,
		body => '{"subject": "x@example.com", "source": "web", "due_at": "2001-01-01T00:00:00Z"}' ],
	[ 'key differs', 400, '22023', 'POST', '/v1/requests', token => $app, headers => ['Idempotency-Key: a'],
		body => '{"subject": "x@example.com", "source": "web", "external_id": "b"}' ],
	[ 'not UTF-8', 400, '22021', 'POST', '/v1/requests', token => $app,
		body => "{\"subject\": \"\xff\xfe\", \"source\": \"web\"}" ],
	[ 'text/plain', 415, undef, 'POST', '/v1/requests', token => $app, ctype => 'text/plain',
		body => '{"subject": "x@example.com", "source": "web"}' ],
	[ 'huge body', 413, undef, 'POST', '/v1/requests', token => $app,
		body => '{"subject": "' . ('x' x 70000) . '", "source": "web"}' ],
	[ 'no token', 401, undef, 'POST', '/v1/requests', body => '{"subject": "x@example.com", "source": "web"}' ],
	[ 'wrong token', 401, undef, 'POST', '/v1/requests', token => 'delq_' . ('0' x 64),
		body => '{"subject": "x@example.com", "source": "web"}' ],
	[ 'metrics token submits', 403, '42501', 'POST', '/v1/requests', token => $mon,
		body => '{"subject": "x@example.com", "source": "web"}' ],
	[ 'submitter approves', 403, '42501', 'POST', "/v1/requests/$rid/approve", token => $app ],
	[ 'approve not held', 409, '55000', 'POST', "/v1/requests/$rid/approve", token => $op ],
	[ 'unknown id', 404, '42704', 'GET', '/v1/requests/00000000-0000-0000-0000-000000000000', token => $op ],
	[ 'malformed id', 400, '22P02', 'GET', '/v1/requests/abc', token => $op ],
	[ 'extend too far', 400, '22023', 'POST', "/v1/requests/$rid/extend", token => $op,
		body => '{"by": "3 months", "reason": "x"}' ],
	[ 'reject without reason', 400, '22004', 'POST', "/v1/requests/$rid/reject", token => $op, body => '{}' ],
	[ 'limit out of range', 400, '22023', 'GET', '/v1/requests?limit=501', token => $app ],
	[ 'unknown route', 404, undef, 'GET', '/v2/anything', token => $app ],
	[ 'wrong method', 405, undef, 'DELETE', "/v1/requests/$rid", token => $op ],
);
for my $f (@fail)
{
	my ($what, $code, $state, $method, $path, %o) = @$f;
	my $res = curl($method, $path, %o);
	is($res->{code}, $code, "$what: $code");
	like($res->{headers}{'content-type'} // '', qr{^application/problem\+json},
		"$what: answered as application/problem+json");
	is($res->{json}{status}, $code, "$what: the problem carries the status");
	is($res->{json}{sqlstate}, $state, "$what: SQLSTATE $state") if defined $state;
	ok(defined $res->{json}{hint}, "$what: with a hint") if defined $state && $code == 400;
}
is(sql($counts), $before, 'no failed call wrote anything');
is(curl('POST', '/v1/requests', body => '{}')->{body},
	curl('POST', '/v1/requests', token => 'delq_' . ('1' x 64), body => '{}')->{body},
	'a wrong token and no token get the same 401');
like(curl('DELETE', "/v1/requests/$rid", token => $op)->{headers}{allow} // '', qr/GET/,
	'405 names the allowed methods');

# chunked body over the limit: cut off, nothing written
$r = curl('POST', '/v1/requests', token => $app, headers => ['Transfer-Encoding: chunked'],
	body => '{"subject": "' . ('y' x 100_000) . '", "source": "web"}');
ok($r->{code} == 413 || $r->{code} == 0, 'a chunked body over the limit is refused');
is(sql($counts), $before, '... and nothing was written');

# Reading: a submitter sees no subject, an operator does.
$r = curl('GET', "/v1/requests/$rid", token => $app);
ok($r->{code} == 200 && !exists $r->{json}{subject}, 'GET as submitter: no subject');
$r = curl('GET', "/v1/requests/$rid", token => $op);
is($r->{json}{subject}, 'ann@example.com', 'GET as operator: the subject');
$r = curl('GET', '/v1/requests?source=web&limit=1', token => $app);
ok($r->{code} == 200 && @{ $r->{json}{items} } == 1 && $r->{json}{next}, 'list: a page and a cursor');
my $second = curl('GET', "/v1/requests?source=web&limit=1&after=$r->{json}{next}", token => $app);
ok($second->{code} == 200 && $second->{json}{items}[0]{id} ne $r->{json}{items}[0]{id},
	'list: the next page');
ok(!grep({ exists $_->{subject} } @{ $second->{json}{items} }), "list: no subjects for a submitter");

# Held requests: approve; reject; extend; receipt.
sql("ALTER SYSTEM SET delq.require_approval = on; SELECT pg_reload_conf()");
poll_until($node, "SELECT setting FROM pg_settings WHERE name = 'delq.require_approval'", 'on', 10);
sleep 1;	# the HTTP worker rereads its configuration on its next turn
my $hid = curl('POST', '/v1/requests', token => $app,
	body => '{"subject": "held@example.com", "source": "web"}')->{json}{id};
is(sql("SELECT status FROM delq.pending WHERE id = '$hid'"), 'held', 'a new request is held');
$r = curl('POST', "/v1/requests/$hid/approve", token => $op);
ok($r->{code} == 200 && $r->{json}{status} ne 'held', 'approve: 200, released');
my $jid = curl('POST', '/v1/requests', token => $app,
	body => '{"subject": "junk@example.com", "source": "web"}')->{json}{id};
$r = curl('POST', "/v1/requests/$jid/reject", token => $op, body => '{"reason": "spam"}');
ok($r->{code} == 200 && $r->{json}{status} eq 'rejected', 'reject: 200, rejected');
is(sql("SELECT rejection_reason FROM delq.pending WHERE id = '$jid'"), 'spam', 'reject: the reason is kept');
sql("ALTER SYSTEM RESET delq.require_approval; SELECT pg_reload_conf()");
$r = curl('POST', "/v1/requests/$rid/extend", token => $op, body => '{"by": "30 days", "reason": "complex"}');
is($r->{code}, 200, 'extend: 200');
is(sql("SELECT count(*) FROM delq.event WHERE request_id = '$rid' AND kind = 'extended' AND actor IS NOT NULL"),
	'1', 'extend: recorded');
$r = curl('GET', "/v1/requests/$rid/receipt", token => $op);
ok($r->{code} == 200 && sql("SELECT delq.verify_receipt('" . $r->{body} =~ s/'/''/gr . "')") eq 't',
	'receipt: 200, and delq.verify_receipt() accepts it');
is(curl('GET', "/v1/requests/$rid/receipt", token => $app)->{code}, 403, 'receipt: 403 for a submitter');

# Each call runs as the token's role: the events name it.
is(sql("SELECT actor FROM delq.event WHERE request_id = '$jid' AND kind = 'rejected'"),
	'dpo', "the actor of an HTTP call is the token's role");
is(sql("SELECT actor FROM delq.event WHERE request_id = '$jid' AND kind = 'submitted'"),
	'app', '... for each token');
# A dropped token stops working.
my $tmpt = sql("SELECT delq.add_api_token('short_lived', 'app')");
is(curl('GET', '/v1/requests?limit=1', token => $tmpt)->{code}, 200, 'a new token works');
sql("SELECT delq.drop_api_token('short_lived')");
is(curl('GET', '/v1/requests?limit=1', token => $tmpt)->{code}, 401, 'a dropped token: 401');
like(sql("SELECT last_used_at IS NOT NULL FROM delq.api_tokens WHERE name = 'app'"), qr/t/,
	'api_tokens shows when a token was last used');

# ---------------------------------------------------------------------
# Slow and many clients

# A slowloris: headers one line every half second, never finished.  The
# connection is cut after delq.http_request_timeout (2 s here), and other
# clients are served meanwhile.
{
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 5)
	  or die "connect: $!";
	$s->autoflush(1);
	print $s "POST /v1/requests HTTP/1.1\r\nHost: x\r\n";
	my $t0 = time;
	my $closed = 0;
	my $served = 0;
	while (time - $t0 < 15)
	{
		last unless print $s "X-Slow-" . int(rand(1e6)) . ": 1\r\n";
		$served++ if curl('GET', '/v1/healthz', max_time => 2)->{code} == 200;
		my $rin = '';
		vec($rin, fileno($s), 1) = 1;
		if (select(my $rout = $rin, undef, undef, 0.5))
		{
			my $got = sysread($s, my $buf, 4096);
			if (!$got) { $closed = 1; last }
		}
	}
	my $took = time - $t0;
	ok($closed || $took < 15, 'a slowloris connection is cut');
	cmp_ok($took, '<', 10, '... well before it could hold the server');
	cmp_ok($served, '>', 0, '... and others are served meanwhile');
}

# One client address with more than delq.http_max_client_connections (6)
# open: 429 with Retry-After.
{
	my @idle = map {
		IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 5)
		  // die "connect: $!"
	} 1 .. 6;
	usleep(200_000);
	my $res = curl('GET', '/v1/requests?limit=1', token => $app, max_time => 5);
	is($res->{code}, 429, 'over the per-client connection limit: 429');
	is($res->{headers}{'retry-after'}, '1', '... with Retry-After');
	close $_ for @idle;
	usleep(300_000);
	is(curl('GET', '/v1/requests?limit=1', token => $app)->{code}, 200, 'with them closed: 200 again');
}

# Many connections: beyond delq.http_max_connections (8), 503 with
# Retry-After, never a hang; once they are gone, 200 again.
{
	my @idle = map {
		IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 5)
		  // die "connect: $!"
	} 1 .. 12;
	usleep(200_000);
	my $res = curl('GET', '/v1/healthz', max_time => 5);
	is($res->{code}, 503, 'over the connection limit: 503');
	is($res->{headers}{'retry-after'}, '1', '... with Retry-After');
	close $_ for @idle;
	usleep(300_000);
	is(curl('GET', '/v1/healthz')->{code}, 200, 'with the connections gone: 200 again');
}

# ---------------------------------------------------------------------
# Callback confirmations over HTTP

sql("SELECT delq.add_destination('cb', '" . $sink->url('cb', '/hook') . "', confirm => 'callback')");
sql("SELECT delq.add_destination('cb2', '" . $sink->url('cb2', '/hook') . "', confirm => 'callback')");
sql("SELECT delq.add_route('cb', '{\"cb\": true}'), delq.add_route('cb2', '{\"cb\": true}')");
my $cid = curl('POST', '/v1/requests', token => $app,
	body => '{"subject": "cb@example.com", "source": "web", "attributes": {"cb": true}}')->{json}{id};
$sink->wait_requests('cb', 1, 20);
$sink->wait_requests('cb2', 1, 20);
my ($rec) = $sink->for_request('cb', $cid);
my ($rec2) = $sink->for_request('cb2', $cid);
my $confirm_url = decode_json($rec->{body})->{confirm_url} // '';
my $confirm_url2 = decode_json($rec2->{body})->{confirm_url} // '';
like($confirm_url, qr{^\Q$base\E/v1/confirm/msg_[0-9a-f]+\.[A-Za-z0-9_-]{43}$},
	'a callback webhook body carries confirm_url under delq.http_public_url');
isnt($confirm_url, $confirm_url2, 'each delivery has its own link');
poll_until($node, "SELECT state FROM delq.delivery WHERE request_id = '$cid' AND destination = 'cb'",
	'awaiting_confirmation', 20);
(my $cpath = $confirm_url) =~ s/^\Q$base\E//;
(my $cpath2 = $confirm_url2) =~ s/^\Q$base\E//;
(my $forged = $cpath) =~ s/.{4}$/AAAA/;
(my $swapped = $cpath) =~ s/\.[^.]+$/'.' . (split m{\.}, $cpath2)[-1]/e;
is(curl('POST', $forged)->{code}, 404, 'a forged link: 404');
is(curl('POST', $swapped)->{code}, 404, "another delivery's token cannot confirm this one");
is(curl('POST', $cpath, body => '{"outcome": "maybe"}')->{code}, 400, 'an unknown outcome: 400');
$r = curl('POST', $cpath);
ok($r->{code} == 200 && $r->{json}{changed}, 'POST confirm_url: 200, confirmed');
is(sql("SELECT state FROM delq.delivery WHERE request_id = '$cid' AND destination = 'cb'"), 'confirmed',
	'the delivery is confirmed');
is(sql("SELECT state FROM delq.delivery WHERE request_id = '$cid' AND destination = 'cb2'"),
	'awaiting_confirmation', 'the other delivery is untouched');
$r = curl('POST', $cpath);
ok($r->{code} == 200 && !$r->{json}{changed}, 'a repeat: 200, nothing changed');
is(sql("SELECT count(*) FROM delq.event WHERE request_id = '$cid' AND destination = 'cb' AND kind = 'confirmed'"),
	'1', 'one confirmation recorded');
$r = curl('POST', $cpath2, body => '{"outcome": "not_held"}');
ok($r->{code} == 200 && $r->{json}{outcome} eq 'not_held', 'the second link answers not_held for its delivery');
is(sql("SELECT state FROM delq.delivery WHERE request_id = '$cid' AND destination = 'cb2'"), 'not_held',
	'... recorded as not held');
is(sql("SELECT detail->>'via' FROM delq.event WHERE request_id = '$cid' AND destination = 'cb2' AND kind = 'not_held'"),
	'confirm_url', '... in an event that says how');
poll_until($node, "SELECT status FROM delq.pending WHERE id = '$cid'", 'completed', 10);
sql("SELECT delq.archive()");
$r = curl('POST', $cpath);
is($r->{code}, 409, 'once the request is finished (archived) the link stops working');

# ---------------------------------------------------------------------
# Inbound vendor webhooks

my $sw_secret = 'whsec_' . encode_base64('delq 080 standard webhooks key!!', '');
sql("SELECT delq.add_hook('partner', 'standard_webhooks', '$sw_secret', "
	  . "'{\"subject\": \"\$.data.email\", \"source\": \"partner\", \"reason\": \"account closed\", "
	  . "\"attributes\": {\"plan\": \"\$.data.plan\"}}')");
is(sqlstate_of("SELECT delq.add_hook('bad', 'standard_webhooks', 'whsec_x', '{\"subject\": \"\$.a\"}')"),
	'22023', 'add_hook checks a Standard Webhooks secret');
is(sqlstate_of("SELECT delq.add_hook('bad', 'standard_webhooks', '$sw_secret', '{}')"),
	'22023', 'add_hook wants a subject path for standard_webhooks');
is(sqlstate_of("SELECT delq.add_hook('bad', 'other', '$sw_secret', '{}')"), '22023', 'unknown hook kind');

sub sw_post
{
	my ($body, %o) = @_;
	my $wid = $o{id} // 'msg_' . int(rand(1e12));
	my $ts = $o{ts} // time;
	$ts = int($ts);
	my $sig = sign_webhook($o{secret} // $sw_secret, $wid, $ts, $body);
	return curl('POST', '/v1/hooks/partner', body => $body,
		headers => [ "webhook-id: $wid", "webhook-timestamp: $ts", "webhook-signature: $sig" ]);
}
my $swbody = '{"type": "user.deleted", "data": {"email": "sw@example.com", "plan": "gold"}}';
$before = sql($counts);
$r = sw_post($swbody, secret => 'whsec_' . encode_base64('some other key of thirty-two b!!', ''));
is($r->{code}, 401, 'standard webhook signed with another key: 401');
is($r->{json}{sqlstate}, '28000', '... SQLSTATE 28000');
is(sw_post($swbody, ts => time - 3600)->{code}, 401, 'a timestamp an hour old: 401');
is(sql($counts), $before, 'refused webhooks wrote nothing');
$r = sw_post($swbody, id => 'msg_replayed');
is($r->{code}, 201, 'a signed standard webhook files a request: 201');
my $swid = $r->{json}{id};
is(sql("SELECT subject || '|' || source || '|' || reason || '|' || (attributes->>'plan') || '|' || external_id "
	  . "FROM delq.pending WHERE id = '$swid'"),
	'sw@example.com|partner|account closed|gold|msg_replayed', '... mapped as the hook says');
$r = sw_post($swbody, id => 'msg_replayed');
ok($r->{code} == 200 && $r->{json}{id} eq $swid, 'the same webhook-id again: 200, the first request');
is(sql("SELECT count(*) FROM delq.pending WHERE subject = 'sw\@example.com'"), '1', '... no second request');

# Shopify's mandatory privacy webhooks, as documented at
# https://shopify.dev/docs/apps/build/compliance/privacy-law-compliance
# (payloads) and https://shopify.dev/docs/apps/build/webhooks/subscribe/https
# (X-Shopify-Hmac-Sha256: base64 HMAC-SHA256 of the raw body, keyed with
# the app's client secret; X-Shopify-Topic; X-Shopify-Webhook-Id).
my $shop_secret = 'shpss_5a7e1c0de5ec4e7f00d15ea5e';
sql("SELECT delq.add_hook('shopify', 'shopify', '$shop_secret')");
my %shopify = (
	'customers/redact' => '{"shop_id":954889,"shop_domain":"{shop}.myshopify.com",'
	  . '"customer":{"id":191167,"email":"john@example.com","phone":"555-625-1199"},'
	  . '"orders_to_redact":[299938,280263,220458]}',
	'shop/redact' => '{"shop_id":954889,"shop_domain":"{shop}.myshopify.com"}',
	'customers/data_request' => '{"shop_id":954889,"shop_domain":"{shop}.myshopify.com",'
	  . '"orders_requested":[299938,280263,220458],'
	  . '"customer":{"id":191167,"email":"john@example.com","phone":"555-625-1199"},'
	  . '"data_request":{"id":9999}}');
sub shopify_post
{
	my ($topic, %o) = @_;
	my $body = $shopify{$topic};
	my $hmac = $o{hmac} // hmac_sha256_base64($body, $shop_secret);
	$hmac .= '=' while length($hmac) % 4;
	return curl('POST', '/v1/hooks/shopify', body => $body,
		headers => [ "X-Shopify-Topic: $topic", "X-Shopify-Hmac-Sha256: $hmac",
			'X-Shopify-Shop-Domain: {shop}.myshopify.com',
			'X-Shopify-Webhook-Id: ' . ($o{id} // 'b54557e4-bdd9-4b37-8a5f-bf7d70bcd043'),
			($o{event} ? ("X-Shopify-Event-Id: $o{event}") : ()) ]);
}
$before = sql($counts);
is(shopify_post('customers/redact', hmac => encode_base64('x' x 32, ''))->{code}, 401,
	'shopify with a wrong HMAC: 401');
is(sql($counts), $before, '... nothing written');
$r = shopify_post('customers/redact', id => 'shopify-1');
is($r->{code}, 201, 'shopify customers/redact files a request');
my $sid = $r->{json}{id};
is(sql("SELECT subject || '|' || source || '|' || (attributes->>'topic') || '|' || (attributes->>'customer_id') "
	  . "|| '|' || (attributes->'orders_to_redact')::text FROM delq.pending WHERE id = '$sid'"),
	'john@example.com|shopify|customers/redact|191167|[299938, 280263, 220458]',
	'... for the customer, with the shop and orders as attributes');
$r = shopify_post('customers/redact', id => 'shopify-1');
ok($r->{code} == 200 && $r->{json}{id} eq $sid, 'the same X-Shopify-Webhook-Id again: 200, no second request');
# https://shopify.dev/apps/build/webhooks/ignore-duplicates: the same
# X-Shopify-Event-Id on more than one delivery marks a duplicate, whatever
# their X-Shopify-Webhook-Id.
$r = shopify_post('customers/redact', id => 'shopify-4', event => 'ev-4711');
is($r->{code}, 201, 'shopify with an X-Shopify-Event-Id files a request');
my $ev_sid = $r->{json}{id};
$r = shopify_post('customers/redact', id => 'shopify-5', event => 'ev-4711');
ok($r->{code} == 200 && $r->{json}{id} eq $ev_sid,
	'the same X-Shopify-Event-Id under another X-Shopify-Webhook-Id: 200, no second request');
$r = shopify_post('shop/redact', id => 'shopify-2');
is($r->{code}, 201, 'shopify shop/redact files a request');
is(sql("SELECT subject FROM delq.pending WHERE id = '$r->{json}{id}'"), '{shop}.myshopify.com',
	'... for the shop');
$before = sql($counts);
$r = shopify_post('customers/data_request', id => 'shopify-3');
ok($r->{code} == 200 && $r->{json}{ignored}, 'customers/data_request is acknowledged and files nothing');
is(sql($counts), $before, '... nothing written');

# ---------------------------------------------------------------------
# Metrics and the status page

$r = curl('GET', '/metrics', token => $mon);
is($r->{code}, 200, 'metrics: 200 for a delq_metrics token');
like($r->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4}, 'metrics: Prometheus text format');
for my $m ('delq_requests{status="forwarding",archived="false"}', '# TYPE delq_deliveries gauge',
	'delq_oldest_queued_seconds{destination="cb"}', 'delq_breaker_open{destination="cb"} 0',
	'delq_overdue_requests 0', 'delq_at_risk_requests', 'delq_worker_up 1',
	'delq_http_requests_total{route="/v1/requests",code="201"}')
{
	ok(index($r->{body}, $m) >= 0, "metrics: $m");
}
my @bad_lines = grep { !/^(# (HELP|TYPE) \w+ .+|\w+(\{(\w+="[^"]*",?)+\})? [0-9.e+-]+)$/ } split /\n/, $r->{body};
is_deeply(\@bad_lines, [], 'metrics: every line is a comment or a sample');
is(curl('GET', '/metrics', token => $app)->{code}, 403, 'metrics: 403 for a submitter');
is(curl('GET', '/metrics')->{code}, 401, 'metrics: 401 without a token');

$r = curl('GET', '/', basic => $op);
is($r->{code}, 200, 'status page: 200 for an operator token as Basic password');
like($r->{headers}{'content-type'}, qr{^text/html}, 'status page: HTML');
unlike($r->{body}, qr/<script/i, 'status page: no JavaScript');
is(curl('GET', '/', basic => $app)->{code}, 403, 'status page: 403 for a submitter');
$r = curl('GET', '/');
is($r->{code}, 401, 'status page: 401 without credentials');
like($r->{headers}{'www-authenticate'} // '', qr/^Basic realm="delq"/, 'status page asks for Basic');

# What a person sees, in headless Chromium (Debian's package).
SKIP:
{
	my $chromium = (grep { -x } '/usr/bin/chromium', '/usr/bin/chromium-browser')[0];
	skip 'chromium is not installed (test/install-deps installs it)', 3 unless $chromium;
	sql("SELECT delq.add_destination('crm', 'http://127.0.0.1:9/x'), delq.add_route('crm', '{\"crm\": true}')");
	my $profile = "$tmp/chromium";
	my @chrome = ($chromium, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
		"--user-data-dir=$profile", '--window-size=1100,900');
	my $url = "http://dpo:$op\@127.0.0.1:$port/";
	my $dom = `HOME=$tmp timeout 60 @chrome --dump-dom '$url' 2>/dev/null`;
	like($dom, qr{<h1>delq status</h1>.*Open requests by status.*Destinations.*crm.*Last failures}s,
		'Chromium shows the status page: requests, destinations, failures');
	my $png = "$tmp/status-page.png";
	system("HOME=$tmp timeout 60 @chrome --screenshot=$png '$url' >/dev/null 2>&1");
	ok(-s $png && do { open(my $f, '<:raw', $png); read($f, my $sig, 8); $sig eq "\x89PNG\r\n\x1a\n" },
		'Chromium renders a screenshot (docs/http-status-page.png is one)');
	unlike($dom, qr/example\.com/, 'the status page shows no subject');
}

# ---------------------------------------------------------------------
# The Node client (every answer validated against the OpenAPI document) and
# the OpenAPI linter, from the pinned npm tools.

SKIP:
{
	skip 'node is not installed (test/install-deps installs it)', 5 unless `node --version 2>/dev/null`;
	my $modules = `bash $root/test/http/npm-install`;
	chomp $modules;
	ok(-d $modules, 'the npm tools are installed');
	my $lint = `cd $root && '$modules/.bin/redocly' lint --config test/http/redocly.yaml src/delq-openapi.json 2>&1`;
	is($? >> 8, 0, 'Redocly CLI lints the OpenAPI document without a problem')
	  or diag($lint);
	my $cb3 = curl('POST', '/v1/requests', token => $app,
		body => '{"subject": "node-cb@example.com", "source": "web", "attributes": {"cb": true}}')->{json}{id};
	$sink->wait_requests('cb', 2, 20);
	my ($rec3) = $sink->for_request('cb', $cb3);
	poll_until($node, "SELECT state FROM delq.delivery WHERE request_id = '$cb3' AND destination = 'cb'",
		'awaiting_confirmation', 20);
	local $ENV{DELQ_URL} = $base;
	local $ENV{DELQ_NODE_MODULES} = $modules;
	local $ENV{DELQ_TOKEN_APP} = $app;
	local $ENV{DELQ_TOKEN_OP} = $op;
	local $ENV{DELQ_TOKEN_MON} = $mon;
	local $ENV{DELQ_HOOK_SW} = 'partner';
	local $ENV{DELQ_HOOK_SW_SECRET} = $sw_secret;
	local $ENV{DELQ_HOOK_SHOPIFY} = 'shopify';
	local $ENV{DELQ_HOOK_SHOPIFY_SECRET} = $shop_secret;
	local $ENV{DELQ_CONFIRM_URL} = decode_json($rec3->{body})->{confirm_url};
	my $out = `node $root/test/http/api-client.mjs 2>&1`;
	is($? >> 8, 0, 'the Node client: every call as expected, every answer valid against the document')
	  or diag($out);
	note($out);
	local $ENV{DELQ_OPENAPI} = "$root/src/delq-openapi.json";
	$out = `node $root/test/http/check-recorded.mjs $tmp/answers.jsonl 2>&1`;
	is($? >> 8, 0, 'every answer curl got so far is valid against the document')
	  or diag($out);
	my ($checked) = $out =~ /^1\.\.(\d+)$/m;
	cmp_ok($checked // 0, '>', 50, "... ($checked answers checked)");
	note($out);
}

# ---------------------------------------------------------------------
# TLS with a self-signed certificate

SKIP:
{
	skip 'openssl is not installed', 3 unless `openssl version 2>/dev/null`;
	my $dir = $node->data_dir;
	system('openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
		'-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
		'-keyout', "$dir/http.key", '-out', "$dir/http.crt", '-loglevel', 'error') == 0
	  or system('openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
		'-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
		'-keyout', "$dir/http.key", '-out', "$dir/http.crt");
	$node->append_conf('postgresql.conf',
		"delq.http_tls_cert = 'http.crt'\ndelq.http_tls_key = 'http.key'\n");
	$node->restart;
	my $https = "https://127.0.0.1:$port";
	my $ok = 0;
	for (1 .. 300)
	{
		if (curl('GET', '/v1/healthz', base => $https, curl => [ '--cacert', "$dir/http.crt" ],
				max_time => 2)->{code} == 200) { $ok = 1; last }
		usleep(100_000);
	}
	ok($ok, 'HTTPS with the configured certificate, verified by curl');
	$r = curl('POST', '/v1/requests', base => $https, curl => [ '--cacert', "$dir/http.crt" ],
		token => $app, body => '{"subject": "tls@example.com", "source": "web"}');
	is($r->{code}, 201, 'a submit over HTTPS');
	isnt(curl('GET', '/v1/healthz', max_time => 3)->{code}, 200, 'plain HTTP is not served then');
}

$node->stop;
done_testing();
