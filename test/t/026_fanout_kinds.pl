
# 026_fanout_kinds.pl
#     Issue 13's "done when": one request fans out, in one run of the worker,
#     to a webhook, a templated API, an in-database function and a manual
#     task; delq.recipients(), the receipt and the archive tell the same
#     story (docs/recipients.md).

use strict;
use warnings;

use DelqTest;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = delq_node('fanout');
my $sink = start_sink();
my $hook = $sink->url('hook', '/erase');
my $api = $sink->url('api');

$node->safe_psql('postgres', qq{
	CREATE TABLE public.customers (email text PRIMARY KEY);
	INSERT INTO public.customers VALUES ('ann\@example.com');
	CREATE ROLE app_eraser NOLOGIN;
	GRANT SELECT, DELETE ON public.customers TO app_eraser;
	CREATE FUNCTION public.erase(request jsonb) RETURNS boolean LANGUAGE sql
	    BEGIN ATOMIC
	        WITH gone AS (DELETE FROM public.customers WHERE email = request ->> 'subject' RETURNING 1)
	        SELECT count(*) > 0 FROM gone;
	    END;
	REVOKE EXECUTE ON FUNCTION public.erase(jsonb) FROM PUBLIC;
	GRANT EXECUTE ON FUNCTION public.erase(jsonb) TO app_eraser;
	CREATE ROLE archive_team NOLOGIN;

	SELECT delq.add_destination('hook', '$hook');
	SELECT delq.add_destination('api', '$api',
	    request => '{"erase": {"method": "DELETE", "url": "/users/{{request_id}}"}}');
	SELECT delq.add_sql_destination('app_db', 'public.erase(jsonb)', 'app_eraser');
	SELECT delq.add_pull_destination('archive', 'archive_team');
	SELECT delq.add_route(d) FROM unnest(ARRAY['hook', 'api', 'app_db', 'archive']) d;
});
is($node->safe_psql('postgres',
		"SELECT string_agg(name || ':' || kind, ',' ORDER BY name) FROM delq.destinations"),
	'api:http,app_db:sql,archive:pull,hook:webhook', 'one destination of each kind');

my $rid = $node->safe_psql('postgres', "SELECT delq.submit('ann\@example.com', 'shop')");
# the person works the manual task
my $taken = $node->safe_psql('postgres',
	"SET ROLE archive_team; SELECT webhook_id FROM delq.take('archive')");
ok($taken =~ /^msg_/, 'the manual task is taken');
$node->safe_psql('postgres',
	"SET ROLE archive_team; SELECT delq.ack('$taken', not_held => true, note => 'nothing filed')");

ok(poll_until($node,
		"SELECT status FROM delq.pending WHERE id = '$rid'", 'completed', 60),
	'the request completed');
is($node->safe_psql('postgres',
		"SELECT string_agg(destination || ':' || kind || ':' || outcome, ',' ORDER BY destination)
		   FROM delq.recipients('$rid')"),
	'api:http:confirmed,app_db:sql:confirmed,archive:pull:not_held,hook:webhook:confirmed',
	'recipients: each kind with its outcome');
ok(scalar(grep { $_->{path} =~ m{^/api/users/$rid$} && $_->{method} eq 'DELETE' } $sink->requests('api')) >= 1,
	'the templated API got its DELETE');
ok(scalar($sink->requests('hook')) >= 1, 'the webhook got its POST');
is($node->safe_psql('postgres', "SELECT count(*) FROM public.customers"), '0',
	'the function erased the row');

# The same story in the receipt, and after archiving in the archive and
# its receipt.
sub story_agrees
{
	my ($what) = @_;
	is($node->safe_psql('postgres', qq{
		SELECT (SELECT jsonb_agg(jsonb_build_object('d', d ->> 'destination', 's', d ->> 'state',
		                                            'a', (d ->> 'attempts')::int, 'w', d ->> 'webhook_id')
		                         ORDER BY d ->> 'destination')
		          FROM jsonb_array_elements(delq.receipt('$rid') -> 'destinations') d)
		     = (SELECT jsonb_agg(jsonb_build_object('d', destination, 's', state, 'a', attempts,
		                                            'w', webhook_id) ORDER BY destination)
		          FROM delq.recipients('$rid'))}),
		't', "$what: the receipt and recipients() agree");
}
story_agrees('pending');
$node->safe_psql('postgres', 'SELECT delq.archive()');
story_agrees('archived');
is($node->safe_psql('postgres',
		"SELECT string_agg(d ->> 'destination' || ':' || (d ->> 'state'), ',' ORDER BY d ->> 'destination')
		   FROM delq.finished f, jsonb_array_elements(f.deliveries) d WHERE f.id = '$rid'"),
	'api:confirmed,app_db:confirmed,archive:not_held,hook:confirmed',
	'the archive summary says the same');
is($node->safe_psql('postgres', "SELECT delq.verify_receipt(delq.receipt('$rid'))"), 't',
	'the receipt verifies');

done_testing();
