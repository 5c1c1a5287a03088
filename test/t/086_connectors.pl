# 086_connectors.pl
#     The connector catalogue end to end: every connector of delq.connectors
#     (connectors/*.json) made with delq.add_connector against its vendor's
#     double (test/doubles/vendor_double.py), through the background worker.
#     Per vendor, as its API allows: found one, found several across pages,
#     found none (not held), 429 with Retry-After, 5xx then success, 401 then
#     a new OAuth2 token (auth0), async job pending then finished, async job
#     failed (segment, sendgrid), a missing identifier (segment).  Each case
#     checks both sides: what the vendor holds afterwards and received, and
#     what delq recorded.  Credentials never reach delq.event, the server log
#     or what delq_operator can read.

use strict;
use warnings;

use DelqTest;
use VendorDouble;
use Digest::MD5 qw(md5_hex);
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $vd = start_vendor_double();
# No statement logging: the test's own add_connector calls carry the
# credentials; what delq itself logs is what is searched below.
my $node = delq_node('conn', conf => "delq.breaker_cooldown = '1s'\nlog_statement = none\n");

sub sql { return $node->safe_psql('postgres', shift) }
sub q_ { my $s = shift; $s =~ s/'/''/g; return "'$s'" }

my %SECRETS = (
	stripe    => { api_key => 'sk_test_4eC39HqLyjWDarjtT1zdp7dc' },
	auth0     => { client_id => 'delq-client', client_secret => 'auth0-Secret-Vq9zX2' },
	mailchimp => { api_key => '0123456789abcdef0123456789abcdef-us6', list_id => 'a1b2c3d4e5' },
	segment   => { token => 'sgp_SegmentToken7Hq' },
	hubspot   => { token => 'pat-eu1-HubSpotToken3Kd' },
	zendesk   => { email => 'agent@example.com', api_token => 'zd-ApiToken-8Jw' },
	sendgrid  => { api_key => 'SG.SendGridKey.5Lp' },
	klaviyo   => { api_key => 'pk_KlaviyoKey_2Mx' },
);
# The doubles accept exactly these credentials.
for my $v (keys %SECRETS)
{
	my %c = %{ $SECRETS{$v} };
	if ($v eq 'mailchimp') { $c{lists} = [ delete $c{list_id} ] }
	$vd->config($v, \%c);
}

# A destination made from a connector, pointed at the double, with a route
# of its own: requests reach it when attributes.case is its name.
my $n = 0;
sub connector
{
	my ($vendor, %extra) = @_;
	my $name = sprintf('%s_%02d', $vendor, ++$n);
	my %settings = (%{ $SECRETS{$vendor} }, base_url => $vd->url($vendor), %extra);
	sql("SELECT delq.add_connector('$name', '$vendor', " . q_(encode_json(\%settings)) . ')');
	sql("SELECT delq.add_route('$name', " . q_(encode_json({ case => $name })) . ')');
	return $name;
}

# A poll interval short enough for a test.
sub fast_poll
{
	my ($name) = @_;
	sql("SELECT delq.alter_destination('$name', request => jsonb_set(request, '{poll,interval}', '\"1 second\"')) "
		  . "FROM delq.destination WHERE name = '$name'");
}

sub submit
{
	my ($dest, $subject, $attrs) = @_;
	my %a = (%{ $attrs // {} }, case => $dest);
	return sql("SELECT delq.submit(" . q_($subject) . ", 'test', 'erasure', " . q_(encode_json(\%a)) . ')');
}

# Wait for the delivery to reach $state; returns state|last_error.
sub outcome
{
	my ($rid, $dest, $state, $timeout) = @_;
	my $q = "SELECT state FROM delq.delivery WHERE request_id = '$rid' AND destination = '$dest'";
	poll_until($node, $q, $state, $timeout // 60);
	return sql("SELECT state || '|' || coalesce(last_error, '') FROM delq.delivery "
		  . "WHERE request_id = '$rid' AND destination = '$dest'");
}

sub steps
{
	my ($rid, $dest) = @_;
	return [ map { decode_json($_) } split /\n/, sql(
		"SELECT detail FROM delq.event WHERE request_id = '$rid' AND destination = '$dest' "
		  . "AND kind = 'step' ORDER BY id") ];
}

sub reqs
{
	my ($vendor, $since, $filter) = @_;
	return grep { !$filter || $filter->($_) } $vd->requests($vendor, $since);
}

sub last_seq { my @r = $vd->requests(); return @r ? $r[-1]{seq} : 0 }

# ---------------------------------------------------------------------------
# The catalogue.
is(sql("SELECT string_agg(name, ',' ORDER BY name) FROM delq.connectors"),
	'auth0,hubspot,klaviyo,mailchimp,segment,sendgrid,stripe,zendesk', 'the eight connectors are installed');
is(sql("SELECT count(*) FROM delq.connectors WHERE settings ? 'base_url' AND cardinality(documentation) > 0 "
		  . "AND documentation[1] LIKE 'https://%' AND erases <> '' AND identifier <> ''"),
	'8', 'each has base_url, documentation, what it erases and its identifier');

# ---------------------------------------------------------------------------
# Stripe: lookup by e-mail with cursor pages, delete each.
{
	my $d = connector('stripe');
	$vd->seed('stripe', [ { email => 'one@example.com' }, { email => 'other@example.com' } ]);
	my $since = last_seq();
	my $rid = submit($d, 'one@example.com');
	is(outcome($rid, $d, 'confirmed'), 'confirmed|', 'stripe: found one, confirmed');
	my @r = reqs('stripe', $since);
	is(join(' ', map { "$_->{method} $_->{path}" } @r), 'GET /v1/customers DELETE /v1/customers/cus_000001',
		'stripe: one lookup, one delete');
	like($r[0]{query}, qr/(^|&)email=one%40example\.com(&|$)/, 'stripe: the e-mail is URL-encoded in the query');
	is($r[0]{headers}{authorization}, "Bearer $SECRETS{stripe}{api_key}", 'stripe: bearer key');
	is_deeply([ map { $_->{email} } grep { !$_->{deleted} } @{ $vd->state('stripe')->{records} } ],
		['other@example.com'], 'stripe: only the other customer is left');

	$vd->control('stripe', { page_size => 2 });
	$vd->seed('stripe', [ map { { email => 'many@example.com' } } 1 .. 5 ]);
	$since = last_seq();
	$rid = submit($d, 'many@example.com');
	is(outcome($rid, $d, 'confirmed'), 'confirmed|', 'stripe: found five across pages, confirmed');
	@r = reqs('stripe', $since);
	is(scalar(grep { $_->{method} eq 'GET' } @r), 3, 'stripe: three pages read');
	like((grep { $_->{method} eq 'GET' } @r)[1]{query}, qr/starting_after=cus_/, 'stripe: the next page by starting_after');
	is(scalar(grep { $_->{method} eq 'DELETE' && $_->{status} == 200 } @r), 5, 'stripe: five deleted');
	is(scalar(grep { $_->{email} eq 'many@example.com' && !$_->{deleted} } @{ $vd->state('stripe')->{records} }),
		0, 'stripe: none of them is left');
	my $st = steps($rid, $d);
	is(scalar(grep { $_->{step} eq 'erase' } @$st), 5, 'stripe: one erase event per item');

	$since = last_seq();
	$rid = submit($d, 'nobody@example.com');
	is(outcome($rid, $d, 'not_held'), 'not_held|', 'stripe: found none, not held');
	is(scalar(grep { $_->{method} eq 'DELETE' } reqs('stripe', $since)), 0, 'stripe: nothing deleted');

	$vd->seed('stripe', [ { email => 'rate@example.com' } ]);
	$vd->control('stripe', { status => 429, retry_after => '2', method => 'DELETE' });
	$since = last_seq();
	$rid = submit($d, 'rate@example.com');
	is(outcome($rid, $d, 'confirmed'), 'confirmed|', 'stripe: 429 then confirmed');
	@r = grep { $_->{method} eq 'DELETE' } reqs('stripe', $since);
	is(join(' ', map { $_->{status} } @r), '429 200', 'stripe: the delete was repeated after the 429');
	cmp_ok($r[1]{time} - $r[0]{time}, '>=', 1.9, 'stripe: Retry-After (2 s) honoured');

	$vd->seed('stripe', [ { email => 'flaky@example.com' } ]);
	$vd->control('stripe', { status => 503, method => 'GET' });
	$since = last_seq();
	$rid = submit($d, 'flaky@example.com');
	is(outcome($rid, $d, 'confirmed'), 'confirmed|', 'stripe: 503 on the lookup, then confirmed');
	is(join(' ', map { $_->{status} } reqs('stripe', $since)), '503 200 200', 'stripe: lookup retried, then the delete');
}

# ---------------------------------------------------------------------------
# Auth0: OAuth2 client credentials, users by e-mail, delete each; 401 -> new token.
{
	my $d = connector('auth0');
	$vd->seed('auth0', [ { email => 'jane@example.com' }, { email => 'jane@example.com' }, { email => 'max@example.com' } ]);
	my $since = last_seq();
	my $rid = submit($d, 'Jane@Example.com');
	is(outcome($rid, $d, 'confirmed'), 'confirmed|', 'auth0: found two (e-mail lower-cased), confirmed');
	my @r = reqs('auth0', $since);
	is(join(' ', map { "$_->{method} $_->{path} $_->{status}" } @r),
		'POST /oauth/token 200 GET /api/v2/users-by-email 200 DELETE /api/v2/users/auth0%7C000001 204 DELETE /api/v2/users/auth0%7C000002 204',
		'auth0: token, lookup, two deletes');
	like($r[0]{body}, qr/grant_type=client_credentials/, 'auth0: client credentials grant');
	like($r[0]{body}, qr/audience=http%3A%2F%2F127\.0\.0\.1/, 'auth0: with the audience');
	is_deeply([ map { $_->{email} } @{ $vd->state('auth0')->{records} } ], ['max@example.com'], 'auth0: only max is left');

	$vd->control('auth0', { revoke_tokens => JSON::PP::true });
	$vd->seed('auth0', [ { email => 'ann@example.com' } ]);
	$since = last_seq();
	$rid = submit($d, 'ann@example.com');
	is(outcome($rid, $d, 'confirmed'), 'confirmed|', 'auth0: revoked token, confirmed after a new one');
	is(join(' ', map { "$_->{path} $_->{status}" } reqs('auth0', $since)),
		'/api/v2/users-by-email 401 /oauth/token 200 /api/v2/users-by-email 200 /api/v2/users/auth0%7C000004 204',
		'auth0: 401, token fetched again, the step repeated');
	is($vd->state('auth0')->{tokens_issued}, 2, 'auth0: two tokens in all (cached between deliveries)');

	$rid = submit($d, 'nobody@example.com');
	is(outcome($rid, $d, 'not_held'), 'not_held|', 'auth0: found none, not held');

	$vd->seed('auth0', [ { email => 'slow@example.com' } ]);
	$vd->control('auth0', { status => 429, method => 'DELETE', retry_after => '1' });
	$since = last_seq();
	$rid = submit($d, 'slow@example.com');
	is(outcome($rid, $d, 'confirmed'), 'confirmed|', 'auth0: 429 on the delete, then confirmed');
}

# ---------------------------------------------------------------------------
# Mailchimp: permanent delete by subscriber hash; 404 is not held.
{
	my $d = connector('mailchimp');
	$vd->seed('mailchimp', [ { list_id => 'a1b2c3d4e5', email_address => 'Jane@Example.com' } ]);
	my $since = last_seq();
	my $rid = submit($d, 'Jane@Example.com');
	is(outcome($rid, $d, 'confirmed'), 'confirmed|', 'mailchimp: member deleted, confirmed');
	my @r = reqs('mailchimp', $since);
	is($r[0]{path}, '/3.0/lists/a1b2c3d4e5/members/' . md5_hex('jane@example.com') . '/actions/delete-permanent',
		'mailchimp: MD5 of the lower-cased e-mail');
	is(scalar @{ $vd->state('mailchimp')->{records} }, 0, 'mailchimp: the member is gone');

	$rid = submit($d, 'Jane@Example.com');
	is(outcome($rid, $d, 'not_held'), 'not_held|', 'mailchimp: 404, not held');

	$vd->seed('mailchimp', [ { list_id => 'a1b2c3d4e5', email_address => 'x@example.com' } ]);
	$vd->control('mailchimp', { status => 500 });
	$since = last_seq();
	$rid = submit($d, 'x@example.com');
	is(outcome($rid, $d, 'confirmed'), 'confirmed|', 'mailchimp: 500, then confirmed');
	is(join(' ', map { $_->{status} } reqs('mailchimp', $since)), '500 204', 'mailchimp: retried once');
}

# ---------------------------------------------------------------------------
# Segment: a regulation by user id, polled until finished or failed.
{
	my $d = connector('segment');
	fast_poll($d);
	$vd->control('segment', { job_states => [qw(INITIALIZED RUNNING FINISHED)] });
	my $since = last_seq();
	my $rid = submit($d, 'jane@example.com', { user_id => 'u-123' });
	is(outcome($rid, $d, 'confirmed'), 'confirmed|', 'segment: pending, then finished: confirmed');
	my @r = reqs('segment', $since);
	is(join(' ', map { "$_->{method} $_->{path}" } @r),
		'POST /regulations GET /regulations/reg_000001 GET /regulations/reg_000001 GET /regulations/reg_000001',
		'segment: one regulation, polled three times');
	is_deeply(decode_json($r[0]{body}),
		{ regulationType => 'SUPPRESS_WITH_DELETE', subjectType => 'USER_ID', subjectIds => ['u-123'] },
		'segment: the user id from attributes.user_id');
	is(join(',', map { $_->{outcome} } grep { $_->{step} eq 'poll' } @{ steps($rid, $d) }),
		'pending,pending,finished', 'segment: poll events');

	$vd->control('segment', [ { status => 429, retry_after => '1', method => 'POST' },
							  { status => 500, method => 'GET' }, { job_states => [qw(RUNNING FINISHED)] } ]);
	$since = last_seq();
	$rid = submit($d, 'ann@example.com', { user_id => 'u-789' });
	is(outcome($rid, $d, 'confirmed'), 'confirmed|', 'segment: 429 on the regulation, 500 on a poll, then confirmed');
	is(join(' ', map { "$_->{method} $_->{status}" } reqs('segment', $since)),
		'POST 429 POST 200 GET 500 GET 200 GET 200', 'segment: each retried, one regulation only');

	$vd->control('segment', { job_states => [qw(RUNNING FAILED)] });
	$rid = submit($d, 'max@example.com', { user_id => 'u-456' });
	like(outcome($rid, $d, 'failed'), qr/^failed\|poll: job failed/, 'segment: a failed regulation fails the delivery');

	$since = last_seq();
	$rid = submit($d, 'anon@example.com');
	like(outcome($rid, $d, 'failed'), qr/^failed\|render: erase\.json\.subjectIds\[\]: attributes\.user_id is missing$/,
		'segment: no user id, failed at once, saying which field');
	is(sql("SELECT attempts FROM delq.delivery WHERE request_id = '$rid'"), '1', 'segment: not retried');
	is(scalar(reqs('segment', $since)), 0, 'segment: nothing sent');
}

# ---------------------------------------------------------------------------
# HubSpot: GDPR delete by e-mail.
{
	my $d = connector('hubspot');
	$vd->seed('hubspot', [ { email => 'jane@example.com' } ]);
	$vd->control('hubspot', { status => 429, retry_after => '1' });
	my $since = last_seq();
	my $rid = submit($d, 'jane@example.com');
	is(outcome($rid, $d, 'confirmed'), 'confirmed|', 'hubspot: 429, then deleted: confirmed');
	my @r = reqs('hubspot', $since);
	is(join(' ', map { $_->{status} } @r), '429 204', 'hubspot: retried after the 429');
	is_deeply(decode_json($r[1]{body}), { objectId => 'jane@example.com', idProperty => 'email' }, 'hubspot: by e-mail');
	is(scalar @{ $vd->state('hubspot')->{records} }, 0, 'hubspot: the contact is gone');

	$vd->control('hubspot', { status => 502 });
	$since = last_seq();
	$rid = submit($d, 'max@example.com');
	is(outcome($rid, $d, 'confirmed'), 'confirmed|', 'hubspot: 502, then confirmed');
	is(join(' ', map { $_->{status} } reqs('hubspot', $since)), '502 204', 'hubspot: retried once');
	is_deeply($vd->state('hubspot')->{blocklist}, ['max@example.com'], 'hubspot: an unknown address is blocklisted');
}

# ---------------------------------------------------------------------------
# Zendesk: search users (next_page links), delete, then delete permanently.
{
	my $d = connector('zendesk');
	$vd->control('zendesk', { page_size => 2 });
	$vd->seed('zendesk', [ map { { email => 'jane@example.com', name => "Jane $_" } } 1 .. 3 ]);
	my $since = last_seq();
	my $rid = submit($d, 'jane@example.com');
	is(outcome($rid, $d, 'confirmed'), 'confirmed|', 'zendesk: three users over two pages, confirmed');
	my @r = reqs('zendesk', $since);
	is(scalar(grep { $_->{path} =~ m{/users/search} } @r), 2, 'zendesk: two pages by next_page');
	is(scalar(grep { $_->{method} eq 'DELETE' && $_->{path} =~ m{^/api/v2/users/} } @r), 3, 'zendesk: three deleted');
	is(scalar(grep { $_->{method} eq 'DELETE' && $_->{path} =~ m{^/api/v2/deleted_users/} } @r), 3,
		'zendesk: three deleted permanently');
	is(join(',', map { $_->{deleted} } @{ $vd->state('zendesk')->{records} }), 'permanent,permanent,permanent',
		'zendesk: no user left, not even soft-deleted');

	$rid = submit($d, 'nobody@example.com');
	is(outcome($rid, $d, 'not_held'), 'not_held|', 'zendesk: found none, not held');

	$vd->seed('zendesk', [ { email => 'busy@example.com' } ]);
	$vd->control('zendesk', { status => 429, method => 'DELETE' });
	$rid = submit($d, 'busy@example.com');
	is(outcome($rid, $d, 'confirmed'), 'confirmed|', 'zendesk: 429 (Retry-After), then confirmed');

	$vd->seed('zendesk', [ { email => 'perm@example.com' } ]);
	$vd->control('zendesk', { status => 500, path => '/api/v2/deleted_users/' });
	$since = last_seq();
	$rid = submit($d, 'perm@example.com');
	is(outcome($rid, $d, 'confirmed'), 'confirmed|', 'zendesk: 500 on the permanent delete, then confirmed');
	is(join(' ', map { $_->{status} } grep { $_->{method} eq 'DELETE' } reqs('zendesk', $since)), '200 500 200',
		'zendesk: only the permanent delete repeated');
	is(scalar(grep { ($_->{email} // '') eq 'perm@example.com' } @{ $vd->state('zendesk')->{records} }), 0,
		'zendesk: the user is scrubbed');
}

# ---------------------------------------------------------------------------
# SendGrid: contacts by e-mail, a delete job per contact, polled.
{
	my $d = connector('sendgrid');
	fast_poll($d);
	$vd->seed('sendgrid', [ { email => 'jane@example.com' } ]);
	$vd->control('sendgrid', { job_states => [qw(pending pending completed)] });
	my $since = last_seq();
	my $rid = submit($d, 'Jane@example.com');
	is(outcome($rid, $d, 'confirmed'), 'confirmed|', 'sendgrid: job pending then completed, confirmed');
	my @r = reqs('sendgrid', $since);
	is(join(' ', map { "$_->{method} $_->{status}" } @r), 'POST 200 DELETE 202 GET 200 GET 200 GET 200',
		'sendgrid: lookup, delete job, three polls');
	like($r[1]{query}, qr/^ids=[0-9a-f-]+$/, 'sendgrid: delete by contact id');
	is(scalar @{ $vd->state('sendgrid')->{records} }, 0, 'sendgrid: the contact is gone');

	$rid = submit($d, 'nobody@example.com');
	is(outcome($rid, $d, 'not_held'), 'not_held|', 'sendgrid: 404 on the lookup, not held');

	$vd->seed('sendgrid', [ { email => 'ann@example.com' } ]);
	$vd->control('sendgrid', [ { status => 503, method => 'DELETE' }, { job_states => ['completed'] } ]);
	$since = last_seq();
	$rid = submit($d, 'ann@example.com');
	is(outcome($rid, $d, 'confirmed'), 'confirmed|', 'sendgrid: 503 on the delete, then confirmed');
	is(join(' ', map { "$_->{method} $_->{status}" } reqs('sendgrid', $since)), 'POST 200 DELETE 503 DELETE 202 GET 200',
		'sendgrid: the delete repeated, one job');

	$vd->seed('sendgrid', [ { email => 'max@example.com' } ]);
	$vd->control('sendgrid', { job_states => [qw(pending failed)] });
	$rid = submit($d, 'max@example.com');
	like(outcome($rid, $d, 'failed'), qr/^failed\|poll: job failed/, 'sendgrid: a failed job fails the delivery');
}

# ---------------------------------------------------------------------------
# Klaviyo: a data-privacy deletion job.
{
	my $d = connector('klaviyo');
	$vd->seed('klaviyo', [ { email => 'jane@example.com' } ]);
	$vd->control('klaviyo', { status => 429 });
	my $since = last_seq();
	my $rid = submit($d, 'jane@example.com');
	is(outcome($rid, $d, 'confirmed'), 'confirmed|', 'klaviyo: 429 (Retry-After), then 202: confirmed');
	my @r = reqs('klaviyo', $since);
	is(join(' ', map { $_->{status} } @r), '429 202', 'klaviyo: retried once');
	is($r[1]{headers}{revision}, '2024-10-15', 'klaviyo: revision header');
	is($r[1]{headers}{'content-type'}, 'application/vnd.api+json', 'klaviyo: JSON:API content type');
	is($r[1]{headers}{authorization}, "Klaviyo-API-Key $SECRETS{klaviyo}{api_key}", 'klaviyo: private key header');
	is(decode_json($r[1]{body})->{data}{attributes}{profile}{data}{attributes}{email}, 'jane@example.com',
		'klaviyo: the profile by e-mail');
	is(scalar @{ $vd->state('klaviyo')->{records} }, 0, 'klaviyo: the profile is gone');
}

# ---------------------------------------------------------------------------
# Credentials never reach the ledger, the server log or delq_operator.
{
	my @secrets = map { my $v = $_; grep { length > 8 } values %{ $SECRETS{$v} } } keys %SECRETS;
	push @secrets, 'mgmt-token-1', 'mgmt-token-2';    # the OAuth2 tokens auth0 issued
	my $events = sql("SELECT string_agg(detail::text || coalesce(actor, ''), ' ') FROM delq.event");
	my $log = slurp_file($node->logfile);
	sql("CREATE ROLE conn_op LOGIN IN ROLE delq_operator");
	my $op = '';
	for my $rel (split /\n/, sql(
		"SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
		  . "WHERE n.nspname = 'delq' AND c.relkind IN ('r', 'v') "
		  . "AND has_table_privilege('delq_operator', c.oid, 'SELECT')"))
	{
		$op .= $node->safe_psql('postgres', "SELECT t::text FROM $rel t", extra_params => [ '-U', 'conn_op' ]);
	}
	ok(length($op) > 1000, 'delq_operator reads something (' . length($op) . ' bytes)');
	for my $s (@secrets)
	{
		ok(index($events, $s) < 0, "credential not in delq.event");
		ok(index($log, $s) < 0, "credential not in the server log");
		ok(index($op, $s) < 0, "credential not readable by delq_operator");
	}
	ok(index($events, 'jane@example.com') < 0, 'no subject in the step events');
}

done_testing();
