
# 020_forwarding.pl
#     End-to-end forwarding through the background worker to the recording
#     sink: wake on commit, routing, what a destination receives (body,
#     headers, signature), partial and total outages, permanent failures and
#     delq.retry(), idempotent submits and callback confirmation.  Every test
#     checks both sides: what the sink recorded and what delq recorded
#     (delivery, pending, event, destination_health).
#
#     delq.idle_timeout is 60 s here, so anything that arrives within a few
#     seconds was woken by a commit or scheduled precisely, not polled.

use strict;
use warnings;

use DelqTest;
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $secret = 'whsec_' . encode_base64('delq 020 forwarding test key, 32b', '');
my $sink = start_sink(secret => $secret);
my $node = delq_node(
	'fwd',
	conf => "delq.idle_timeout = '60s'\n"
	  # a breaker opened by a test's deliberate failures must not stall it
	  . "delq.breaker_cooldown = '1s'\n");

sub sql { return $node->safe_psql('postgres', shift) }

# A destination on the sink, named like its path.
sub add_dest
{
	my ($name, $route, $opts) = @_;
	my $url = $sink->url($name, '/hook');
	sql("SELECT delq.add_destination('$name', '$url'"
		  . ($opts ? ", $opts" : '') . ')');
	return sql("SELECT delq.add_route('$name', '$route')");
}

# Submit; returns the request id.
sub submit
{
	my ($args) = @_;
	return sql("SELECT delq.submit($args)");
}

sub records { return $sink->for_request(@_) }

sub delivery
{
	my ($rid, $dest, $cols) = @_;
	return sql("SELECT $cols FROM delq.delivery WHERE request_id = '$rid' AND destination = '$dest'");
}

sub same_webhook_id { return check_webhook_id($node, $sink, @_) }

# A TCP port on 127.0.0.1 where nothing listens.
sub closed_port
{
	my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0)
	  or die "bind: $!";
	my $port = $s->sockport;
	close $s;
	return $port;
}

# ---------------------------------------------------------------------------
# The worker is visible.
ok(poll_until($node, 'SELECT delq.worker_running()', 't', 30), 'worker registered its latch');
is(sql("SELECT count(*), min(datname), min(application_name) FROM pg_stat_activity WHERE backend_type = 'delq worker'"),
	'1|postgres|delq worker', 'one delq worker in pg_stat_activity, in delq.database');
is(sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'delq launcher'"),
	'1', 'the launcher is visible too');
my $worker_pid = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'delq worker'");

# ---------------------------------------------------------------------------
# Wake on commit: the idle worker sleeps up to 60 s, a commit wakes it.
add_dest('wake', '{"t": "wake"}');
ok(poll_until($node,
		"SELECT state, wait_event FROM pg_stat_activity WHERE backend_type = 'delq worker'",
		'idle|Extension', 30),
	'worker is idle, waiting');
usleep(500_000);    # deep in its 60 s sleep
{
	my $t0 = time;
	my $rid = submit(q{subject => 'wake-1', source => 'app', attributes => '{"t": "wake"}'});
	ok($sink->wait_requests('wake', 1, 30), 'woken worker sent the request');
	my $took = time - $t0;
	cmp_ok($took, '<', 15, sprintf('it reached the sink after %.2f s, not after the 60 s idle poll', $took));
	ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$rid'", 'completed', 30),
		'request completed');

	# a submit that rolls back sends nothing (and wakes nobody)
	$node->safe_psql('postgres', q{BEGIN;
		SELECT delq.submit(subject => 'rolled-back', source => 'app', attributes => '{"t": "wake"}');
		ROLLBACK;});
	my $marker = submit(q{subject => 'wake-2', source => 'app', attributes => '{"t": "wake"}'});
	ok($sink->wait_requests('wake', 2, 30), 'a later committed submit is sent');
	usleep(300_000);
	my @subjects = map { decode_json($_->{body})->{subject} } records('wake');
	is_deeply(\@subjects, [ 'wake-1', 'wake-2' ], 'the rolled-back submit was never sent');
	is(sql("SELECT count(*) FROM delq.pending WHERE subject = 'rolled-back'"), '0',
		'and left no request behind');
}

# ---------------------------------------------------------------------------
# Routing: by attributes, source, reason; '{}' matches all.
my $all_route = add_dest('all', '{}', q{headers => '{"Authorization": "Bearer t0ken-020"}'});
add_dest('eu', '{"region": "eu"}', "secret => '$secret'");
add_dest('crm', '{"source": "crm"}');
add_dest('ccpa', '{"region": "us", "reason": "ccpa"}');

my $r1 = submit(q{subject => 'alice@example.com', source => 'web', reason => 'gdpr-art17',
	attributes => '{"region": "eu", "tier": "gold", "ids": [1, 2]}', external_id => 'w-1',
	due_at => now() + interval '7 days'});
my $r2 = submit(q{subject => 'bob@example.com', source => 'crm', reason => 'ccpa',
	attributes => '{"region": "us"}'});
my $r3 = submit(q{subject => 'carol@example.com', source => 'web', attributes => '{"region": "us"}'});

is(sql("SELECT string_agg(destination, ',' ORDER BY destination) FROM delq.delivery WHERE request_id = '$r1'"),
	'all,eu', 'r1 (region eu, source web) routed to all and eu');
is(sql("SELECT string_agg(destination, ',' ORDER BY destination) FROM delq.delivery WHERE request_id = '$r2'"),
	'all,ccpa,crm', 'r2 (source crm, region us, reason ccpa) routed to all, ccpa and crm');
is(sql("SELECT string_agg(destination, ',' ORDER BY destination) FROM delq.delivery WHERE request_id = '$r3'"),
	'all', 'r3 (region us, no reason) routed to all only');

ok(poll_until($node,
		"SELECT count(*) FROM delq.pending WHERE id IN ('$r1', '$r2', '$r3') AND status = 'completed'",
		'3', 30),
	'routed requests completed');
for my $case (
	[ 'all',  [ $r1, $r2, $r3 ] ],
	[ 'eu',   [$r1] ],
	[ 'crm',  [$r2] ],
	[ 'ccpa', [$r2] ])
{
	my ($dest, $want) = @$case;
	my @got = sort map { decode_json($_->{body})->{request_id} } records($dest);
	is_deeply(\@got, [ sort @$want ], "sink: $dest received exactly its requests");
}
is(sql("SELECT count(*) FILTER (WHERE state = 'confirmed' AND attempts = 1 AND last_status = 200
                                 AND confirmed_at IS NOT NULL), count(*)
          FROM delq.delivery WHERE request_id IN ('$r1', '$r2', '$r3')"),
	'6|6', 'every delivery confirmed at the first attempt with 200');
is(sql("SELECT name, queued, sending, awaiting, confirmed, failed, consecutive_failures, breaker
          FROM delq.destination_health WHERE name = 'all'"),
	'all|0|0|0|3|0|0|closed', 'destination_health of all: 3 confirmed, breaker closed');

# The audit trail of r1.
is(sql("SELECT string_agg(kind || ':' || coalesce(destination, '-') || ':' || n, ',' ORDER BY kind, destination)
          FROM (SELECT kind, destination, count(*) AS n FROM delq.event
                 WHERE request_id = '$r1' GROUP BY 1, 2) e"),
	'completed:-:1,confirmed:all:1,confirmed:eu:1,queued:all:1,queued:eu:1,sending:all:1,sending:eu:1,submitted:-:1',
	'events of r1: submitted, queued, sending, confirmed per destination, completed');
is(sql("SELECT count(*) FROM delq.event WHERE request_id = '$r1' AND kind = 'confirmed'
           AND actor = 'delq' AND detail->>'status' = '200'"),
	'2', 'confirmed events name the worker and the HTTP status');

# What a destination receives.
{
	my ($rec) = records('eu', $r1);
	my $body = decode_json($rec->{body});
	my $h = $rec->{headers};
	my $wid = delivery($r1, 'eu', 'webhook_id');
	my ($submitted, $due) = split /\|/,
	  sql("SELECT to_jsonb(submitted_at) #>> '{}', to_jsonb(due_at) #>> '{}' FROM delq.pending WHERE id = '$r1'");

	is($rec->{method}, 'POST', 'method POST');
	is($rec->{path}, '/eu/hook', 'to the destination URL');
	like($wid, qr/^msg_[0-9a-f]{32}$/, 'webhook id looks like msg_<hex>');
	is($body->{type}, 'erasure.requested', 'body type');
	is($body->{id}, $wid, 'body id = webhook id');
	is($body->{request_id}, $r1, 'body request_id');
	is($body->{subject}, 'alice@example.com', 'body subject');
	is($body->{source}, 'web', 'body source');
	is($body->{reason}, 'gdpr-art17', 'body reason');
	is_deeply($body->{attributes}, { region => 'eu', tier => 'gold', ids => [ 1, 2 ] }, 'body attributes');
	is($body->{submitted_at}, $submitted, 'body submitted_at');
	is($body->{due_at}, $due, 'body due_at (the one passed to submit)');
	is($body->{external_id}, 'w-1', 'body external_id');

	is($h->{'webhook-id'}, $wid, 'webhook-id header');
	is($h->{'idempotency-key'}, $wid, 'Idempotency-Key = webhook-id');
	like($h->{'webhook-timestamp'}, qr/^\d+$/, 'webhook-timestamp is unix seconds');
	cmp_ok(abs($h->{'webhook-timestamp'} - $rec->{time}), '<=', 30, 'webhook-timestamp is near now');
	is($h->{'user-agent'}, 'delq/1.0', 'User-Agent delq/1.0');
	is($h->{'content-type'}, 'application/json', 'content-type application/json');
	ok(!exists $h->{authorization}, 'eu does not get all\'s Authorization header');

	# signature, checked by the independent Perl implementation
	ok(defined $h->{'webhook-signature'}, 'signed destination gets webhook-signature');
	ok(verify_signature($secret, $h->{'webhook-id'}, $h->{'webhook-timestamp'}, $rec->{body},
			$h->{'webhook-signature'}),
		'webhook-signature verifies (Perl HMAC)');
	ok($rec->{signature_ok}, 'and the sink verified it too');
	ok(!verify_signature($secret, $h->{'webhook-id'}, $h->{'webhook-timestamp'}, $rec->{body} . ' ',
			$h->{'webhook-signature'}),
		'the signature does not verify for a changed body');
	ok(!verify_signature($secret, $h->{'webhook-id'}, $h->{'webhook-timestamp'} + 1, $rec->{body},
			$h->{'webhook-signature'}),
		'nor for another timestamp');

	my ($all) = records('all', $r1);
	is($all->{headers}{authorization}, 'Bearer t0ken-020', 'destination header Authorization sent');
	ok(!exists $all->{headers}{'webhook-signature'}, 'no webhook-signature without a secret');
	is($all->{headers}{'webhook-id'}, delivery($r1, 'all', 'webhook_id'), 'all has its own webhook id');
	isnt($all->{headers}{'webhook-id'}, $wid, 'webhook ids differ per destination');

	my ($r3rec) = records('all', $r3);
	my $b3 = decode_json($r3rec->{body});
	ok(exists $b3->{reason} && !defined $b3->{reason}, 'a request without reason sends reason null');
	is_deeply($b3->{attributes}, { region => 'us' }, 'r3 attributes');
}

# ---------------------------------------------------------------------------
# Duplicate submits: same (source, external_id) -> same request, no new
# delivery, no new webhook id, nothing sent again.
{
	my $wids = sql("SELECT string_agg(webhook_id, ',' ORDER BY destination) FROM delq.delivery WHERE request_id = '$r1'");
	# (the same subject: for another one, submit refuses, sql/security_requests.sql)
	my $again = submit(q{subject => 'alice@example.com', source => 'web', external_id => 'w-1',
		attributes => '{"region": "us"}'});
	is($again, $r1, 'a duplicate submit returns the first request id');
	is(sql("SELECT count(*), min(subject) FROM delq.pending WHERE source = 'web' AND external_id = 'w-1'"),
		'1|alice@example.com', 'no second request, the first one unchanged');
	is(sql("SELECT string_agg(webhook_id, ',' ORDER BY destination) FROM delq.delivery WHERE request_id = '$r1'"),
		$wids, 'same deliveries and webhook ids');
	is(sql("SELECT count(*) FROM delq.event WHERE request_id = '$r1' AND kind IN ('submitted', 'queued')"),
		'3', 'no new submitted/queued events');
	my $other = submit(q{subject => 'w-2', source => 'web', external_id => 'w-2', attributes => '{"region": "eu"}'});
	isnt($other, $r1, 'another external_id makes a new request');
	ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$other'", 'completed', 30),
		'which is forwarded');
	is(scalar(records('eu', $r1)), 1, 'the duplicate caused no second send to eu');
	is(scalar(records('all', $r1)), 1, 'nor to all');
}

# From here on, '{}' would route every test's requests to "all".
sql("SELECT delq.drop_route($all_route)");

# ---------------------------------------------------------------------------
# One destination down (503) while the others confirm.
{
	add_dest($_, '{"t": "partial"}') for qw(p_up1 p_up2 p_down);
	$sink->control('p_down', { status => 503 });
	my $rid = submit(q{subject => 'partial', source => 'app', attributes => '{"t": "partial"}'});

	ok(poll_until($node,
			"SELECT string_agg(destination || '=' || state, ',' ORDER BY destination)
               FROM delq.delivery WHERE request_id = '$rid' AND destination LIKE 'p_up%'",
			'p_up1=confirmed,p_up2=confirmed', 30),
		'the healthy destinations confirm');
	ok(poll_until($node,
			"SELECT state, attempts >= 3, last_status, last_error LIKE 'HTTP 503%'
               FROM delq.delivery WHERE request_id = '$rid' AND destination = 'p_down'",
			'queued|t|503|t', 30),
		'the down one keeps retrying (queued again, 3+ attempts, last 503)');
	is(sql("SELECT status, completed_at IS NULL FROM delq.pending WHERE id = '$rid'"),
		'forwarding|t', 'the request is still forwarding');
	is(sql("SELECT queued + sending, confirmed, failed, consecutive_failures >= 2, last_failure LIKE 'HTTP 503%'
              FROM delq.destination_health WHERE name = 'p_down'"),
		'1|0|0|t|t', 'destination_health shows the down destination failing');
	cmp_ok(scalar(records('p_down', $rid)), '>=', 3, 'sink saw 3+ attempts at p_down');

	$sink->control('p_down', { status => 200 });
	ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$rid'", 'completed', 30),
		'once p_down answers 200 the request completes');
	my $attempts = delivery($rid, 'p_down', 'attempts');
	my @st = map { $_->{status} } records('p_down', $rid);
	is(scalar(@st), $attempts, "sink got as many requests as delq counted attempts ($attempts)");
	is_deeply(\@st, [ (503) x ($attempts - 1), 200 ], 'all 503 but the last, 200');
	same_webhook_id($rid, 'p_down', 'retries to p_down');
	is(sql("SELECT count(*) FROM delq.event WHERE request_id = '$rid' AND destination = 'p_down'
               AND kind = 'retry_scheduled' AND detail->>'status' = '503' AND detail ? 'next_attempt_at'"),
		$attempts - 1, 'one retry_scheduled event per failed attempt');
	is(sql("SELECT confirmed, consecutive_failures, breaker, last_success_at IS NOT NULL
              FROM delq.destination_health WHERE name = 'p_down'"),
		'1|0|closed|t', 'health: confirmed, failures reset');
	is(scalar(records('p_up1', $rid)), 1, 'p_up1 got it once');
}

# ---------------------------------------------------------------------------
# A signed delivery that is retried is signed afresh on every attempt.
{
	add_dest('signed_retry', '{"t": "signed_retry"}', "secret => '$secret'");
	$sink->control('signed_retry', { status => 503, times => 2 });
	my $rid = submit(q{subject => 'signed-retry', source => 'app', attributes => '{"t": "signed_retry"}'});
	ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$rid'", 'completed', 30),
		'signed delivery completed after two 503s');
	my @r = records('signed_retry', $rid);
	is(scalar(@r), 3, 'sink: three attempts');
	is(scalar(grep {
				verify_signature($secret, $_->{headers}{'webhook-id'}, $_->{headers}{'webhook-timestamp'},
					$_->{body}, $_->{headers}{'webhook-signature'})
			} @r),
		3, 'every attempt carries a valid signature (Perl HMAC)');
	same_webhook_id($rid, 'signed_retry', 'signed retries');
}

# ---------------------------------------------------------------------------
# All destinations down (connection refused), then back.
{
	my $port = closed_port();
	for my $d (qw(a_x a_y))
	{
		sql("SELECT delq.add_destination('$d', 'http://127.0.0.1:$port/$d/hook')");
		sql(qq{SELECT delq.add_route('$d', '{"t": "alldown"}')});
	}
	my @rids = map { submit(qq{subject => 'down-$_', source => 'app', attributes => '{"t": "alldown"}'}) } 1 .. 2;
	my $in = join ',', map { "'$_'" } @rids;

	ok(poll_until($node,
			"SELECT count(*) FROM delq.delivery WHERE request_id IN ($in)
                AND state IN ('queued', 'sending') AND attempts >= 2",
			'4', 30),
		'every delivery retried at least once');
	is(sql("SELECT count(*) FROM delq.delivery WHERE request_id IN ($in)
             AND last_status IS NULL AND last_error ~* 'connect'"),
		'4', 'no HTTP status, a connection error recorded');
	is(sql("SELECT string_agg(DISTINCT status, ',') FROM delq.pending WHERE id IN ($in)"),
		'forwarding', 'requests still forwarding, not failed');
	is(sql("SELECT count(*) FROM delq.destination_health WHERE name IN ('a_x', 'a_y')
             AND confirmed = 0 AND failed = 0 AND consecutive_failures >= 2 AND last_failure ~* 'connect'"),
		'2', 'health shows both failing to connect');
	is($sink->count('a_x') + $sink->count('a_y'), 0, 'nothing reached the sink');

	# back: the same destinations now point at a live server
	sql("SELECT delq.alter_destination('$_', url => '" . $sink->url($_, '/hook') . "')") for qw(a_x a_y);
	ok(poll_until($node, "SELECT count(*) FROM delq.pending WHERE id IN ($in) AND status = 'completed'", '2', 30),
		'once they are back, everything completes');
	for my $d (qw(a_x a_y))
	{
		for my $rid (@rids)
		{
			is(scalar(records($d, $rid)), 1, "$d got request " . substr($rid, 0, 8) . ' once');
			same_webhook_id($rid, $d, "$d after the outage");
		}
	}
	is(sql("SELECT count(*) FROM delq.delivery WHERE request_id IN ($in) AND state = 'confirmed' AND attempts >= 3"),
		'4', 'confirmed after 3+ attempts');
	is(sql("SELECT count(*) FROM delq.destination_health WHERE name IN ('a_x', 'a_y')
             AND consecutive_failures = 0 AND breaker = 'closed'"),
		'2', 'health recovered');
}

# ---------------------------------------------------------------------------
# Permanent 4xx fails the delivery and the request; delq.retry() requeues
# it with the same webhook id.
{
	add_dest('perm_ok', '{"t": "perm"}');
	add_dest('f404', '{"t": "perm"}');
	add_dest('f400', '{"t": "perm400"}');
	$sink->control('f404', { status => 404, times => 1 });
	$sink->control('f400', { status => 400, body => 'bad field: subject', times => 1 });
	my $ra = submit(q{subject => 'perm-a', source => 'app', attributes => '{"t": "perm"}'});
	my $rb = submit(q{subject => 'perm-b', source => 'app', attributes => '{"t": "perm400"}'});

	ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$ra'", 'failed', 30), '404: request failed');
	ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$rb'", 'failed', 30), '400: request failed');
	ok(poll_until($node, "SELECT state FROM delq.delivery WHERE request_id = '$ra' AND destination = 'perm_ok'",
			'confirmed', 30),
		'the other destination of the 404 request confirmed');
	is(delivery($ra, 'f404', 'state, attempts, last_status, last_error'),
		'failed|1|404|HTTP 404: {"ok": false}', 'f404 delivery failed after one attempt');
	is(delivery($rb, 'f400', 'state, attempts, last_status, last_error'),
		'failed|1|400|HTTP 400: bad field: subject', 'f400 delivery failed, with the body excerpt');
	is(sql("SELECT failure_reason FROM delq.pending WHERE id = '$ra'"), 'delivery failed: f404',
		'failure_reason names the destination');
	is(sql("SELECT string_agg(problem || ':' || coalesce(destination, '-') || ':' || coalesce(last_status::text, '-'),
                              ',' ORDER BY problem, destination)
              FROM delq.needs_attention WHERE request_id = '$ra'"),
		'delivery failed:f404:404,request failed:-:-', 'needs_attention lists the request and the delivery');
	is(sql("SELECT count(*) FROM delq.event WHERE request_id = '$ra' AND destination = 'f404' AND kind = 'failed'
               AND detail->>'status' = '404'"),
		'1', 'a failed event with the status');
	is(sql("SELECT count(*) FROM delq.event WHERE request_id = '$ra' AND kind = 'failed' AND destination IS NULL"),
		'1', 'and a request status event');
	is(sql("SELECT failed, breaker FROM delq.destination_health WHERE name = 'f404'"), '1|closed',
		'health: one failed, a 404 does not open the breaker');
	usleep(500_000);
	is(scalar(records('f404', $ra)), 1, 'a permanent failure is not retried by itself');

	my $wid = delivery($ra, 'f404', 'webhook_id');
	is(sql("SELECT delq.retry('$ra')"), '1', 'delq.retry() requeues the failed delivery');
	is(sql("SELECT delq.retry('$rb', 'f400')"), '1', 'delq.retry(id, destination) too');
	ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$ra'", 'completed', 30),
		'404 request completed after retry');
	ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$rb'", 'completed', 30),
		'400 request completed after retry');
	is(delivery($ra, 'f404', 'webhook_id, state, attempts, attempts_base, last_error IS NULL'),
		"$wid|confirmed|2|1|t", 'same webhook id, confirmed at attempt 2');
	is(scalar(records('f404', $ra)), 2, 'f404 received it twice');
	same_webhook_id($ra, 'f404', 'f404 before and after retry');
	same_webhook_id($rb, 'f400', 'f400 before and after retry');
	is(scalar(records('perm_ok', $ra)), 1, 'retry did not resend to the destination that confirmed');
	is(sql("SELECT count(*) FROM delq.event WHERE request_id = '$ra' AND kind = 'retried' AND destination = 'f404'"),
		'1', 'a retried event');
	is(sql("SELECT count(*) FROM delq.needs_attention WHERE request_id IN ('$ra', '$rb')"), '0',
		'nothing needs attention any more');
}

# ---------------------------------------------------------------------------
# Callback confirm mode.
{
	add_dest('cb', '{"t": "cb"}', q{confirm => 'callback'});
	my $rid = submit(q{subject => 'callback', source => 'app', attributes => '{"t": "cb"}'});
	ok(poll_until($node, "SELECT state FROM delq.delivery WHERE request_id = '$rid' AND destination = 'cb'",
			'awaiting_confirmation', 30),
		'2xx in callback mode -> awaiting_confirmation');
	is(sql("SELECT status, completed_at IS NULL FROM delq.pending WHERE id = '$rid'"), 'forwarding|t',
		'request not completed');
	is(delivery($rid, 'cb', 'attempts, last_status, confirmed_at IS NULL'), '1|200|t', 'sent once, 200, no confirmed_at');
	is(sql("SELECT awaiting, confirmed FROM delq.destination_health WHERE name = 'cb'"), '1|0', 'health: awaiting 1');
	my ($rec) = records('cb', $rid);
	is(decode_json($rec->{body})->{confirmation}, 'callback', 'body tells the receiver to call back');
	usleep(500_000);
	is(scalar(records('cb', $rid)), 1, 'an awaiting delivery is not sent again');

	is(sql("SELECT delq.confirm('$rid', 'cb')"), 't', 'delq.confirm() returns true');
	is(delivery($rid, 'cb', 'state, confirmed_at IS NOT NULL'), 'confirmed|t', 'delivery confirmed');
	is(sql("SELECT status, completed_at IS NOT NULL FROM delq.pending WHERE id = '$rid'"), 'completed|t',
		'request completed');
	is(sql("SELECT detail->>'via', detail->>'previous_state' FROM delq.event
             WHERE request_id = '$rid' AND kind = 'confirmed'"),
		'delq.confirm|awaiting_confirmation', 'confirmed event says how');
	is(sql("SELECT delq.confirm('$rid', 'cb')"), 'f', 'confirming twice is harmless');
}

# ---------------------------------------------------------------------------
# The worker reports its table statistics while it runs (a background
# worker flushes them itself, or autovacuum never hears of the rows it
# changes).  delq.destination_state is written by the worker alone here.
ok(poll_until($node,
		"SELECT n_tup_ins + n_tup_upd > 0 FROM pg_stat_user_tables
		  WHERE relid = 'delq.destination_state'::regclass", 't', 30),
	'the running worker has reported the rows it wrote to the statistics');

# ---------------------------------------------------------------------------
is(sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'delq worker'"), $worker_pid,
	'the same worker process did all of it');

$node->stop;
done_testing();
