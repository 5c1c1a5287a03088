
# 021_outcomes.pl
#     How the worker classifies and schedules what destinations answer:
#     Retry-After, timeouts (slow and hanging receivers, which must not
#     block the others), an oversized response, a connection reset,
#     max_attempts, and the circuit breaker (410 Gone and consecutive
#     failures, probing, draining).  Each test checks what the sink recorded
#     and what delq recorded; the worker must survive all of it in one
#     process and stay idle when there is nothing it may send.

use strict;
use warnings;

use DelqTest;
use JSON::PP;
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $sink = start_sink();
my $node = delq_node('outcomes');

sub sql { return $node->safe_psql('postgres', shift) }

sub add_dest
{
	my ($name, $route, $opts) = @_;
	my $url = $sink->url($name, '/hook');
	sql("SELECT delq.add_destination('$name', '$url'"
		  . ($opts ? ", $opts" : '') . ')');
	return sql("SELECT delq.add_route('$name', '$route')");
}

sub submit
{
	my ($t, $subject) = @_;
	$subject //= $t;
	return sql(qq{SELECT delq.submit(subject => '$subject', source => 'app', attributes => '{"t": "$t"}')});
}

sub records { return $sink->for_request(@_) }

sub delivery
{
	my ($rid, $dest, $cols) = @_;
	return sql("SELECT $cols FROM delq.delivery WHERE request_id = '$rid' AND destination = '$dest'");
}

sub same_webhook_id { return check_webhook_id($node, $sink, @_) }

# The errors of the retry_scheduled events of one delivery, oldest first.
sub retry_errors
{
	my ($rid, $dest) = @_;
	return split /\n/, sql("SELECT coalesce(detail->>'error', '') FROM delq.event
	    WHERE request_id = '$rid' AND destination = '$dest' AND kind = 'retry_scheduled' ORDER BY id");
}

my $worker_pid;

sub worker_pid
{
	return sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'delq worker'");
}

# CPU seconds (user + system) the worker has used, from /proc.
my $ticks = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;

sub worker_cpu
{
	open(my $fh, '<', "/proc/$worker_pid/stat") or return undef;
	my $stat = <$fh>;
	close $fh;
	$stat =~ s/^.*\)\s+//;    # after "pid (comm) "
	my @f = split ' ', $stat;
	return ($f[11] + $f[12]) / $ticks;
}

sub worker_rss_kb
{
	open(my $fh, '<', "/proc/$worker_pid/status") or return undef;
	while (<$fh>) { return $1 if /^VmRSS:\s+(\d+)\s+kB/ }
	return undef;
}

# Share of one CPU the worker used during $secs seconds.
sub worker_cpu_share
{
	my ($secs) = @_;
	my ($c0, $t0) = (worker_cpu(), time);
	usleep($secs * 1_000_000);
	return (worker_cpu() - $c0) / (time - $t0);
}

# Change a PGC_SIGHUP setting and give the worker a moment to reload.
sub set_conf
{
	my ($name, $value) = @_;
	sql(defined $value
		? "ALTER SYSTEM SET $name = '$value'"
		: "ALTER SYSTEM RESET $name");
	sql('SELECT pg_reload_conf()');
	usleep(500_000);
}

ok(poll_until($node, 'SELECT delq.worker_running()', 't', 30), 'worker running');
$worker_pid = worker_pid();
like($worker_pid, qr/^\d+$/, "delq worker in pg_stat_activity (pid $worker_pid)");
{
	my $share = worker_cpu_share(1);
	cmp_ok($share, '<', 0.25, sprintf('an idle worker does not spin (used %.0f%% of a CPU)', 100 * $share));
}

# ---------------------------------------------------------------------------
# 429 with Retry-After: 2 -> the next attempt waits about 2 s.
{
	add_dest('ra', '{"t": "ra"}');
	$sink->control('ra', { status => 429, retry_after => '2', times => 1 });
	my $rid = submit('ra');
	ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$rid'", 'completed', 30),
		'429 then 200: completed');
	my @r = records('ra', $rid);
	is_deeply([ map { $_->{status} } @r ], [ 429, 200 ], 'sink: 429, then 200');
	my $gap = $r[1]{time} - $r[0]{time};
	cmp_ok($gap, '>=', 1.9, sprintf('second attempt %.2f s after the first (Retry-After: 2)', $gap));
	same_webhook_id($rid, 'ra', 'Retry-After retry');
	is(sql("SELECT detail->>'status', round(extract(epoch FROM (detail->>'next_attempt_at')::timestamptz - at))
              FROM delq.event WHERE request_id = '$rid' AND kind = 'retry_scheduled'"),
		'429|2', 'retry_scheduled: status 429, next attempt 2 s later');
	is(delivery($rid, 'ra', 'state, attempts, last_status'), 'confirmed|2|200', 'delivery confirmed at attempt 2');
}

# ---------------------------------------------------------------------------
# A slow receiver (beyond its 1 s timeout) and a hanging one are retried,
# and neither holds up a third destination.
{
	add_dest('slow', '{"t": "timeouts"}', q{timeout => '1 second'});
	add_dest('hang', '{"t": "timeouts"}', q{timeout => '3 seconds'});
	add_dest('quick', '{"t": "timeouts"}');
	add_dest('quick2', '{"t": "quick2"}');
	$sink->control('slow', { delay_ms => 3000, times => 1 });
	$sink->control('hang', { hang => JSON::PP::true, times => 1 });
	my $rid = submit('timeouts');

	ok(poll_until($node,
			"SELECT string_agg(destination || '=' || state || '/' || attempts, ',' ORDER BY destination)
               FROM delq.delivery WHERE request_id = '$rid' AND destination IN ('hang', 'quick')",
			'hang=sending/1,quick=confirmed/1', 30),
		'quick confirmed while hang is still in flight');
	my $other = submit('quick2');
	ok(poll_until($node,
			"SELECT (SELECT state FROM delq.delivery WHERE request_id = '$other')
                 || '|' || (SELECT state || '/' || attempts FROM delq.delivery
                             WHERE request_id = '$rid' AND destination = 'hang')",
			'confirmed|sending/1', 30),
		'a request submitted meanwhile is confirmed while hang still hangs');

	ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$rid'", 'completed', 30),
		'after the timeouts, everything completes');
	is(delivery($rid, 'slow', 'state, attempts'), 'confirmed|2', 'slow: confirmed at attempt 2');
	is(delivery($rid, 'hang', 'state, attempts'), 'confirmed|2', 'hang: confirmed at attempt 2');
	like((retry_errors($rid, 'slow'))[0], qr/timed out/i, 'slow: the first attempt timed out');
	like((retry_errors($rid, 'hang'))[0], qr/timed out/i, 'hang: the first attempt timed out');
	is(sql("SELECT count(*) FROM delq.event WHERE request_id = '$rid' AND kind = 'retry_scheduled'
             AND NOT detail ? 'status'"),
		'2', 'no HTTP status recorded for a timeout');

	my @s = records('slow', $rid);
	is(scalar(@s), 2, 'sink: slow got two requests');
	cmp_ok($s[1]{time} - $s[0]{time}, '>=', 0.9, 'slow was retried only after its 1 s timeout');
	my @h = records('hang', $rid);
	is_deeply([ map { $_->{outcome} } @h ], [ 'hang', 'answered' ], 'sink: hang hung, then answered');
	cmp_ok($h[1]{time} - $h[0]{time}, '>=', 2.9, 'hang was retried only after its 3 s timeout');
	same_webhook_id($rid, 'slow', 'slow retry');
	same_webhook_id($rid, 'hang', 'hang retry');
	is(scalar(records('quick', $rid)), 1, 'quick got it once');
}

# ---------------------------------------------------------------------------
# A 100 MB response: not read past 64 kB; its status still decides (a 503
# is retried, a 200 confirms: the destination has answered); the worker
# survives with its memory intact.  Retry-After holds the retry back long
# enough to read the delivery row, which keeps the full error.
{
	add_dest('huge', '{"t": "huge"}');
	$sink->control('huge', [
		{ status => 503, body_bytes => 100_000_000, retry_after => '2' },
		{ status => 200, body_bytes => 100_000_000 } ]);
	my $rss0 = worker_rss_kb();
	my $rid = submit('huge');
	ok(poll_until($node,
			"SELECT state, attempts, last_status, last_error FROM delq.delivery
              WHERE request_id = '$rid' AND destination = 'huge' AND attempts = 1",
			'queued|1|503|response larger than 65536 bytes, not read (HTTP 503)', 30),
		'a 503 with a 100 MB body: queued for a retry, error says too large');
	ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$rid'", 'completed', 30),
		'then a 200 with a 100 MB body: completed');
	is(sql("SELECT count(*) FROM delq.event WHERE request_id = '$rid' AND destination = 'huge'
             AND kind = 'retry_scheduled' AND detail->>'status' = '503'
             AND detail->>'error' LIKE 'response larger than%'"),
		'1', 'one retry_scheduled event, with status 503 and the reason');
	is(delivery($rid, 'huge', 'state, attempts, last_status'), 'confirmed|2|200', 'confirmed at attempt 2');
	my @r = records('huge', $rid);
	is(scalar(@r), 2, 'sink: two requests');
	same_webhook_id($rid, 'huge', 'huge retry');
	is(worker_pid(), $worker_pid, 'same worker process');
	my $rss1 = worker_rss_kb();
	cmp_ok($rss1 - $rss0, '<', 50 * 1024, "worker memory did not follow the answer ($rss0 kB -> $rss1 kB)");
}

# ---------------------------------------------------------------------------
# Connection reset in the middle of the response -> retry, then success.
{
	add_dest('rst', '{"t": "rst"}');
	$sink->control('rst', { reset => JSON::PP::true, times => 1 });
	my $rid = submit('rst');
	ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$rid'", 'completed', 30),
		'reset, then 200: completed');
	my @r = records('rst', $rid);
	is_deeply([ map { $_->{outcome} } @r ], [ 'reset', 'answered' ], 'sink: reset, then answered');
	my @err = retry_errors($rid, 'rst');
	is(scalar(@err), 1, 'one retry');
	isnt($err[0], '', "with the transport error ($err[0])");
	is(delivery($rid, 'rst', 'state, attempts'), 'confirmed|2', 'confirmed at attempt 2');
	same_webhook_id($rid, 'rst', 'reset retry');
}

# ---------------------------------------------------------------------------
# The other retryable answers (408, 425, 5xx) are retried; a redirect is
# not followed and fails permanently.
{
	add_dest('retryable', '{"t": "retryable"}');
	$sink->control('retryable', [ map { { status => $_ } } 408, 425, 500, 502 ]);
	add_dest('redir', '{"t": "redir"}');
	$sink->control('redir', { status => 302, headers => { Location => $sink->url('quick', '/hook') }, times => 1 });
	my $rid = submit('retryable');
	my $rr = submit('redir');
	ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$rid'", 'completed', 30),
		'408, 425, 500, 502, then 200: completed');
	is_deeply([ map { $_->{status} } records('retryable', $rid) ], [ 408, 425, 500, 502, 200 ],
		'sink: each retryable answer was retried');
	is(sql("SELECT string_agg(detail->>'status', ',' ORDER BY id) FROM delq.event
             WHERE request_id = '$rid' AND kind = 'retry_scheduled'"),
		'408,425,500,502', 'one retry_scheduled event per retryable answer');
	same_webhook_id($rid, 'retryable', 'retryable statuses');
	ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$rr'", 'failed', 30), '302: request failed');
	is(delivery($rr, 'redir', 'state, attempts, last_status'), 'failed|1|302', 'redirect not followed: failed');
	is(scalar(records('quick', $rr)), 0, 'nothing arrived at the redirect target');
}

# ---------------------------------------------------------------------------
# max_attempts => 2 with a destination that always answers 503.
{
	add_dest('ma', '{"t": "ma"}', 'max_attempts => 2');
	$sink->control('ma', { status => 503 });
	my $rid = submit('ma');
	ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$rid'", 'failed', 30),
		'request failed');
	is(delivery($rid, 'ma', 'state, attempts, last_status'), 'failed|2|503', 'delivery failed after 2 attempts');
	usleep(500_000);
	is(scalar(records('ma', $rid)), 2, 'sink: exactly 2 attempts');
	same_webhook_id($rid, 'ma', 'max_attempts');
	is(sql("SELECT string_agg(kind, ',' ORDER BY id) FROM delq.event
             WHERE request_id = '$rid' AND destination = 'ma' AND kind IN ('retry_scheduled', 'failed')"),
		'retry_scheduled,failed', 'events: one retry, then failed');
	is(sql("SELECT count(*) FROM delq.needs_attention WHERE request_id = '$rid'"), '2',
		'the request and the delivery need attention');
	$sink->control('ma', {});
}

# ---------------------------------------------------------------------------
# Circuit breaker, 410 Gone: opens it; the destination's other deliveries
# wait (not failed, not sent); after the cool-down one probe goes out, and
# when it succeeds the rest drain.
{
	set_conf('delq.breaker_cooldown', '3s');
	# concurrency 1 for the first claim, so the others are still queued
	# when the 410 arrives; 16 once the breaker is open
	add_dest('gone', '{"t": "gone"}', 'concurrency => 1, enabled => false');
	$sink->control('gone', [ { status => 410 }, { status => 200, delay_ms => 1500 } ]);
	my @rids = map { submit('gone', "gone-$_") } 1 .. 4;
	my ($first, @rest) = @rids;
	my $rest_in = join ',', map { "'$_'" } @rest;
	sql("SELECT delq.alter_destination('gone', enabled => true)");

	ok(poll_until($node, "SELECT breaker FROM delq.destination_health WHERE name = 'gone'", 'open', 30),
		'410 Gone opened the breaker');
	sql("SELECT delq.alter_destination('gone', concurrency => 16)");
	is(delivery($first, 'gone', 'state, last_status'), 'failed|410', 'the 410 delivery itself failed');
	is(sql("SELECT status FROM delq.pending WHERE id = '$first'"), 'failed', 'and its request');
	is(sql("SELECT breaker_until > now() + interval '1 second' FROM delq.destination_state WHERE name = 'gone'"),
		't', 'breaker_until is about one cool-down ahead');
	is(sql("SELECT string_agg(DISTINCT state || '/' || attempts, ',') FROM delq.delivery
             WHERE request_id IN ($rest_in)"),
		'queued/0', 'the other deliveries are queued, never attempted, not failed');
	is(sql("SELECT string_agg(DISTINCT status, ',') FROM delq.pending WHERE id IN ($rest_in)"),
		'forwarding', 'their requests are still forwarding');
	# all that is queued is held back by the breaker: nothing to do until
	# the cool-down ends, so the worker must sleep, not spin
	my $share = worker_cpu_share(2);
	cmp_ok($share, '<', 0.25,
		sprintf('the worker idles while the breaker is open (used %.0f%% of a CPU)', 100 * $share));
	is($sink->count('gone'), 1, 'nothing more was sent while the breaker is open');

	ok(poll_until($node, "SELECT count(*) FROM delq.pending WHERE id IN ($rest_in) AND status = 'completed'",
			'3', 30),
		'after the cool-down the probe succeeded and the rest drained');
	my @r = records('gone');
	is_deeply([ map { $_->{status} } @r ], [ 410, 200, 200, 200 ], 'sink: 410, probe, then the rest');
	cmp_ok($r[1]{time} - $r[0]{time}, '>=', 2.9, 'the probe came only after the 3 s cool-down');
	cmp_ok($r[2]{time} - $r[1]{time}, '>=', 1.4, 'a single probe: the next one waited for its (1.5 s) answer');
	cmp_ok($r[3]{time} - $r[1]{time}, '>=', 1.4, 'and so did the last');
	is(sql("SELECT breaker, consecutive_failures, confirmed, failed, queued
              FROM delq.destination_health WHERE name = 'gone'"),
		'closed|0|3|1|0', 'health: breaker closed, 3 confirmed, 1 failed');
	is(sql("SELECT count(*) FROM delq.needs_attention WHERE request_id = '$first' AND destination = 'gone'"),
		'1', 'the 410 delivery needs attention');
	same_webhook_id($_, 'gone', 'gone') for @rids;
}

# A breaker that opened with nothing left to send must not make the worker
# spin once its cool-down has passed.
{
	add_dest('gone_alone', '{"t": "gone_alone"}');
	$sink->control('gone_alone', { status => 410, times => 1 });
	my $rid = submit('gone_alone');
	ok(poll_until($node, "SELECT breaker FROM delq.destination_health WHERE name = 'gone_alone'", 'open', 30),
		'410 opened the breaker of gone_alone');
	ok(poll_until($node, "SELECT breaker FROM delq.destination_health WHERE name = 'gone_alone'", 'probing', 30),
		'cool-down passed: probing, with nothing to probe');
	my $share = worker_cpu_share(2);
	cmp_ok($share, '<', 0.25,
		sprintf('the worker idles with a past breaker_until (used %.0f%% of a CPU)', 100 * $share));
	is(delivery($rid, 'gone_alone', 'state, attempts'), 'failed|1', 'the 410 delivery stays failed');
	sql("SELECT delq.drop_destination('gone_alone', cancel_deliveries => true)");
}

# ---------------------------------------------------------------------------
# Circuit breaker, consecutive failures >= delq.breaker_threshold.
{
	set_conf('delq.breaker_threshold', '3');
	add_dest('th', '{"t": "th"}');
	$sink->control('th', { status => 503 });
	my $rid = submit('th');
	ok(poll_until($node, "SELECT breaker FROM delq.destination_health WHERE name = 'th'", 'open', 30),
		'3 consecutive 503s opened the breaker');
	$sink->control('th', { status => 200 });
	is(sql("SELECT consecutive_failures >= 3, failed FROM delq.destination_health WHERE name = 'th'"),
		't|0', 'health: 3+ consecutive failures, nothing failed');
	is(delivery($rid, 'th', 'state'), 'queued', 'the delivery waits in the queue');
	ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$rid'", 'completed', 30),
		'the probe after the cool-down succeeded');
	my @r = records('th', $rid);
	is_deeply([ map { $_->{status} } @r ], [ 503, 503, 503, 200 ], 'sink: three 503, then the probe');
	cmp_ok($r[3]{time} - $r[2]{time}, '>=', 2.9, 'the probe came after the cool-down');
	is(sql("SELECT breaker, consecutive_failures, confirmed FROM delq.destination_health WHERE name = 'th'"),
		'closed|0|1', 'breaker closed again');
	same_webhook_id($rid, 'th', 'breaker retries');
	set_conf('delq.breaker_threshold', undef);
	set_conf('delq.breaker_cooldown', undef);
}

# ---------------------------------------------------------------------------
is(worker_pid(), $worker_pid, 'one worker process survived every outcome');
is(sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'delq worker'"), '1', 'exactly one worker');
my $log = slurp_file($node->logfile);
unlike($log, qr/"delq worker" \(PID \d+\) exited/, 'the worker never exited');
unlike($log, qr/ERROR:.*delq/, 'no delq errors in the server log');

$node->stop;
done_testing();
