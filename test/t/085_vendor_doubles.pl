# 085_vendor_doubles.pl
#     Self-test of the vendor API doubles (test/doubles/vendor_double.py) that
#     the connector tests rely on: each vendor answers as its documentation
#     says (authentication, lookups and their pages, deletion, the status
#     codes and error bodies delq's connectors classify), and the fault and
#     job controls work.  No PostgreSQL server is started.

use strict;
use warnings;

use DelqTest;    # finds PostgreSQL's TAP modules
use VendorDouble;
use Digest::MD5 qw(md5_hex);
use MIME::Base64 qw(encode_base64);
use Test::More;

my $vd = start_vendor_double();
like($vd->port, qr/^\d+$/, 'double started on port ' . $vd->port);

sub call { return $vd->call(@_) }
sub basic { return 'Basic ' . encode_base64(join(':', @_), '') }

# --- Stripe -----------------------------------------------------------------
{
	$vd->seed('stripe', [ map { { email => $_ } } qw(a@x.com b@x.com a@x.com a@x.com A@x.com) ]);
	my $auth = { authorization => 'Bearer sk_test_delq' };
	is(call('GET', '/stripe/v1/customers?email=a@x.com')->{status}, 401, 'stripe: no key, 401');
	is(call('GET', '/stripe/v1/customers', headers => { authorization => 'Bearer sk_bad' })->{json}{error}{type},
		'invalid_request_error', 'stripe: a bad key is an invalid_request_error');
	is(call('GET', '/stripe/v1/customers?limit=1', headers => { authorization => basic('sk_test_delq', '') })->{status},
		200, 'stripe: the key as Basic user name works too');
	my $p1 = call('GET', '/stripe/v1/customers?email=a%40x.com&limit=2', headers => $auth)->{json};
	is_deeply([ map { $_->{id} } @{ $p1->{data} } ], [qw(cus_000004 cus_000003)],
		'stripe: exact e-mail, newest first, limit');
	ok($p1->{has_more}, 'stripe: has_more on a full page');
	my $p2 = call('GET', "/stripe/v1/customers?email=a%40x.com&limit=2&starting_after=cus_000003",
		headers => $auth)->{json};
	is_deeply([ map { $_->{id} } @{ $p2->{data} } ], ['cus_000001'], 'stripe: starting_after pages on');
	ok(!$p2->{has_more}, 'stripe: no more after the last page');
	is_deeply(call('DELETE', '/stripe/v1/customers/cus_000001', headers => $auth)->{json},
		{ id => 'cus_000001', object => 'customer', deleted => JSON::PP::true }, 'stripe: delete answer');
	my $again = call('DELETE', '/stripe/v1/customers/cus_000001', headers => $auth);
	is($again->{status} . ' ' . $again->{json}{error}{code}, '404 resource_missing', 'stripe: deleting again is 404');
	$vd->control('stripe', { status => 429, retry_after => '3', method => 'DELETE' });
	is(call('GET', '/stripe/v1/customers', headers => $auth)->{status}, 200, 'stripe: a fault for DELETE spares a GET');
	my $r = call('DELETE', '/stripe/v1/customers/cus_000002', headers => $auth);
	is("$r->{status} $r->{headers}{'retry-after'} $r->{json}{error}{code}", '429 3 rate_limit',
		'stripe: injected 429 with Retry-After and the documented body');
	is(call('DELETE', '/stripe/v1/customers/cus_000002', headers => $auth)->{status}, 200, 'stripe: the fault was used once');
}

# --- Auth0 ------------------------------------------------------------------
{
	$vd->seed('auth0', [ { email => 'jane@x.com' }, { email => 'jane@x.com' }, { email => 'max@x.com' } ]);
	my $aud = $vd->url('auth0') . '/api/v2/';
	my $bad = call('POST', '/auth0/oauth/token', content => "grant_type=client_credentials&client_id=delq-client&client_secret=no&audience=$aud",
		headers => { 'content-type' => 'application/x-www-form-urlencoded' });
	is("$bad->{status} $bad->{json}{error}", '401 access_denied', 'auth0: a bad client secret is refused');
	my $tok = call('POST', '/auth0/oauth/token', content => "grant_type=client_credentials&client_id=delq-client&client_secret=delq-secret&audience=$aud",
		headers => { 'content-type' => 'application/x-www-form-urlencoded' })->{json};
	is($tok->{token_type}, 'Bearer', 'auth0: client credentials (form) give a Bearer token');
	my $auth = { authorization => "Bearer $tok->{access_token}" };
	my $users = call('GET', '/auth0/api/v2/users-by-email?email=jane%40x.com', headers => $auth)->{json};
	is_deeply([ map { $_->{user_id} } @$users ], [ 'auth0|000001', 'auth0|000002' ], 'auth0: users by e-mail, an array');
	is(call('DELETE', '/auth0/api/v2/users/auth0%7C000001', headers => $auth)->{status}, 204, 'auth0: delete is 204');
	$vd->control('auth0', { revoke_tokens => JSON::PP::true });
	my $r = call('GET', '/auth0/api/v2/users-by-email?email=jane%40x.com', headers => $auth);
	is("$r->{status} $r->{json}{message}", '401 Invalid token', 'auth0: a revoked token is 401');
	is($vd->state('auth0')->{tokens_issued}, 1, 'auth0: state counts issued tokens');
}

# --- Mailchimp --------------------------------------------------------------
{
	$vd->seed('mailchimp', [ { list_id => 'a1b2c3d4e5', email_address => 'Jane@X.com' } ]);
	my $auth = { authorization => basic('delq', '0123456789abcdef0123456789abcdef-us6') };
	my $path = '/mailchimp/3.0/lists/a1b2c3d4e5/members/' . md5_hex('jane@x.com') . '/actions/delete-permanent';
	is(call('POST', $path, headers => { authorization => basic('delq', 'wrong') })->{json}{title}, 'API Key Invalid', 'mailchimp: bad key');
	is(call('POST', $path, headers => $auth)->{status}, 204, 'mailchimp: delete-permanent by MD5 of the lower-cased e-mail is 204');
	my $r = call('POST', $path, headers => $auth);
	is("$r->{status} $r->{headers}{'content-type'}", '404 application/problem+json; charset=utf-8', 'mailchimp: a missing member is a 404 problem');
}

# --- Segment ----------------------------------------------------------------
{
	my $auth = { authorization => 'Bearer sgp_delq' };
	is(call('POST', '/segment/regulations', headers => $auth, json => { regulationType => 'SUPPRESS_WITH_DELETE', subjectType => 'USER_ID', subjectIds => [] })->{status},
		422, 'segment: empty subjectIds is a validation failure');
	$vd->control('segment', { job_states => [qw(INITIALIZED RUNNING FAILED)] });
	my $id = call('POST', '/segment/regulations', headers => $auth,
		json => { regulationType => 'SUPPRESS_WITH_DELETE', subjectType => 'USER_ID', subjectIds => ['u-1'] })->{json}{data}{regulateId};
	like($id, qr/^reg_/, 'segment: a regulation id in data.regulateId');
	my @s = map { call('GET', "/segment/regulations/$id", headers => $auth)->{json}{data}{regulation}{overallStatus} } 1 .. 4;
	is_deeply(\@s, [qw(INITIALIZED RUNNING FAILED FAILED)], 'segment: the programmed states, the last for good');
	is(call('GET', '/segment/regulations/nope', headers => $auth)->{status}, 404, 'segment: unknown regulation 404');
}

# --- HubSpot ----------------------------------------------------------------
{
	$vd->seed('hubspot', [ { email => 'Jane@X.com' } ]);
	my $auth = { authorization => 'Bearer pat-eu1-delq' };
	is(call('POST', '/hubspot/crm/v3/objects/contacts/gdpr-delete', headers => $auth, json => { objectId => 'jane@x.com', idProperty => 'email' })->{status},
		204, 'hubspot: gdpr-delete by e-mail is 204');
	is(call('POST', '/hubspot/crm/v3/objects/contacts/gdpr-delete', headers => $auth, json => { objectId => 'nobody@x.com', idProperty => 'email' })->{status},
		204, 'hubspot: an unknown e-mail is 204 too');
	is_deeply($vd->state('hubspot'), { records => [], blocklist => ['nobody@x.com'] }, 'hubspot: deleted, and the unknown address blocklisted');
	$vd->control('hubspot', { status => 429 });
	is(call('POST', '/hubspot/crm/v3/objects/contacts/gdpr-delete', headers => $auth, json => {})->{json}{errorType},
		'RATE_LIMIT', 'hubspot: 429 body');
}

# --- Zendesk ----------------------------------------------------------------
{
	$vd->seed('zendesk', [ map { { email => 'z@x.com', name => "Z$_" } } 1 .. 3 ]);
	my $auth = { authorization => basic('agent@example.com/token', 'zd-token-delq') };
	is(call('GET', '/zendesk/api/v2/users/search.json?query=email:z@x.com', headers => { authorization => basic('agent@example.com', 'zd-token-delq') })->{status},
		401, 'zendesk: the API token needs the /token user suffix');
	my $p = call('GET', '/zendesk/api/v2/users/search.json?query=email%3Az%40x.com&per_page=2', headers => $auth)->{json};
	is(scalar @{ $p->{users} } . " $p->{count}", '2 3', 'zendesk: a page of 2 of 3');
	like($p->{next_page}, qr{^http://127\.0\.0\.1:\d+/zendesk/api/v2/users/search\.json\?.*page=2}, 'zendesk: next_page is an absolute URL');
	my $id = $p->{users}[0]{id};
	is(call('DELETE', "/zendesk/api/v2/deleted_users/$id.json", headers => $auth)->{status}, 404, 'zendesk: permanent delete needs a soft delete first');
	is(call('DELETE', "/zendesk/api/v2/users/$id.json", headers => $auth)->{json}{user}{active}, JSON::PP::false, 'zendesk: soft delete');
	is(call('DELETE', "/zendesk/api/v2/deleted_users/$id.json", headers => $auth)->{json}{deleted_user}{id}, $id, 'zendesk: permanent delete');
	$vd->control('zendesk', { status => 429 });
	is(call('GET', '/zendesk/api/v2/users/search.json?query=x', headers => $auth)->{headers}{'retry-after'}, '1', 'zendesk: 429 always has Retry-After');
}

# --- SendGrid ---------------------------------------------------------------
{
	$vd->seed('sendgrid', [ { email => 's@x.com' } ]);
	my $auth = { authorization => 'Bearer SG.delq' };
	my $found = call('POST', '/sendgrid/v3/marketing/contacts/search/emails', headers => $auth, json => { emails => ['S@x.com'] })->{json};
	my $cid = $found->{result}{'S@x.com'}{contact}{id};
	ok($cid, 'sendgrid: contacts by e-mail, case-insensitive, keyed by the address asked');
	is(call('POST', '/sendgrid/v3/marketing/contacts/search/emails', headers => $auth, json => { emails => ['n@x.com'] })->{status}, 404, 'sendgrid: none found is 404');
	$vd->control('sendgrid', { job_states => [qw(pending completed)] });
	my $del = call('DELETE', "/sendgrid/v3/marketing/contacts?ids=$cid", headers => $auth);
	is($del->{status}, 202, 'sendgrid: delete is 202');
	my $job = $del->{json}{job_id};
	is(call('GET', "/sendgrid/v3/marketing/contacts/imports/$job", headers => $auth)->{json}{status}, 'pending', 'sendgrid: job pending');
	is(scalar @{ $vd->state('sendgrid')->{records} }, 1, 'sendgrid: the contact stays while the job is pending');
	is(call('GET', "/sendgrid/v3/marketing/contacts/imports/$job", headers => $auth)->{json}{status}, 'completed', 'sendgrid: job completed');
	is(scalar @{ $vd->state('sendgrid')->{records} }, 0, 'sendgrid: the contact is gone');
}

# --- Klaviyo ----------------------------------------------------------------
{
	$vd->seed('klaviyo', [ { email => 'k@x.com' } ]);
	my %h = (authorization => 'Klaviyo-API-Key pk_delq', 'content-type' => 'application/vnd.api+json');
	my $job = { data => { type => 'data-privacy-deletion-job', attributes => { profile => { data => { type => 'profile', attributes => { email => 'k@x.com' } } } } } };
	is(call('POST', '/klaviyo/api/data-privacy-deletion-jobs', headers => \%h, json => $job)->{status}, 400, 'klaviyo: the revision header is required');
	my $r = call('POST', '/klaviyo/api/data-privacy-deletion-jobs', headers => { %h, revision => '2024-10-15' }, json => $job);
	is("$r->{status} " . length($r->{content}), '202 0', 'klaviyo: 202 Accepted, no body');
	is(scalar @{ $vd->state('klaviyo')->{records} }, 0, 'klaviyo: the profile is gone');
}

# --- controls ---------------------------------------------------------------
my @rec = $vd->requests('klaviyo');
is(scalar @rec, 2, 'requests are recorded per vendor');
is($rec[1]{headers}{revision}, '2024-10-15', 'with their headers');
eval { $vd->control('stripe', { status => 200 }) };
like($@, qr/400/, 'a fault must be an error status');
eval { $vd->control('stripe', { stauts => 500 }) };
like($@, qr/unknown control key/, 'a misspelt control is refused');
$vd->reset;
is(scalar $vd->requests, 0, 'reset forgets the records');

done_testing();
