
# 022_breaker.pl
#     The circuit breaker under bursts and operator fixes (issue 10):
#     - a burst opens it once: outcomes that arrive while it is already open
#       neither reopen it nor stretch its cool-down (111 requests, defaults:
#       it stayed closed-for-17-hours before; 150 requests, threshold 5 and
#       cool-down 10 s: paused 2 min 35 s before);
#     - only a failed probe doubles the cool-down, capped by
#       delq.breaker_max_cooldown;
#     - alter_destination(url => ...) followed by retry() sends at once,
#       behind no open breaker; enabling a destination probes at once;
#     - delq.reset_breaker() closes it, and says who did;
#     - every transition is an event.

use strict;
use warnings;

use DelqTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $sink = start_sink();
my $node = delq_node('breaker');

sub sql { return $node->safe_psql('postgres', shift) }

sub set_conf
{
	my ($name, $value) = @_;
	sql(defined $value
		? "ALTER SYSTEM SET $name = '$value'"
		: "ALTER SYSTEM RESET $name");
	sql('SELECT pg_reload_conf()');
	usleep(500_000);
}

sub add_dest
{
	my ($name, $opts) = @_;
	sql("SELECT delq.add_destination('$name', '" . $sink->url($name, '/hook') . "'"
		  . ($opts ? ", $opts" : '') . ')');
	sql("SELECT delq.add_route('$name', '{\"t\": \"$name\"}')");
}

sub burst
{
	my ($dest, $n) = @_;
	sql(qq{SELECT count(delq.submit('$dest-' || g, 'app', attributes => '{"t": "$dest"}'))
	         FROM generate_series(1, $n) g});
}

# Seconds from now until the breaker lets a probe through.
sub paused_for
{
	my ($dest) = @_;
	return sql("SELECT coalesce(extract(epoch FROM breaker_until - now()), 0)::int
	              FROM delq.destination_state WHERE name = '$dest'");
}

sub events
{
	my ($dest, $kind) = @_;
	return sql("SELECT count(*) FROM delq.event WHERE destination = '$dest'
	              AND request_id IS NULL AND kind = '$kind'");
}

# Nothing of $dest in flight any more: every answer of the burst is in.
sub settled
{
	my ($dest) = @_;
	return poll_until($node,
		"SELECT count(*) FROM delq.delivery WHERE destination = '$dest' AND state = 'sending'",
		'0', 60);
}

ok(poll_until($node, 'SELECT delq.worker_running()', 't', 30), 'worker running');

# ---------------------------------------------------------------------------
# The defaults (threshold 10, cool-down 60 s): 111 requests at once to a
# destination that answers 503 at first.
{
	add_dest('blink', 'enabled => false');
	$sink->control('blink', { status => 503, times => 222 });
	burst('blink', 111);
	sql("SELECT delq.alter_destination('blink', enabled => true)");
	ok(poll_until($node, "SELECT breaker FROM delq.destination_health WHERE name = 'blink'", 'open', 30),
		'the burst of 503s opened the breaker');
	ok(settled('blink'), 'every answer of the burst is in');
	sleep 2;
	my $paused = paused_for('blink');
	cmp_ok($paused, '<=', 60, "paused for at most one cool-down (${paused}s)");
	is(sql("SELECT breaker_opens FROM delq.destination_state WHERE name = 'blink'"), '1',
		'breaker_opens is 1: one burst opened it once');
	is(events('blink', 'breaker_opened'), '1', 'one breaker_opened event');
	my $detail = sql("SELECT detail->>'cooldown' FROM delq.event WHERE destination = 'blink'
	                    AND kind = 'breaker_opened'");
	is($detail, '00:01:00', 'the event tells the cool-down');
	$sink->control('blink', { status => 200 });
	sql("SELECT delq.reset_breaker('blink')");
	is(sql("SELECT breaker FROM delq.destination_health WHERE name = 'blink'"), 'closed',
		'reset_breaker() closed it');
	is(sql("SELECT actor = session_user, detail->>'was' FROM delq.event
	         WHERE destination = 'blink' AND kind = 'breaker_reset'"), 't|open',
		'a breaker_reset event names who reset it and what it was');
	ok(poll_until($node, "SELECT count(*) FROM delq.delivery WHERE destination = 'blink' AND state = 'confirmed'",
			'111', 60),
		'after the reset the queue drained');
	is(events('blink', 'breaker_closed'), '0', 'a reset is not also a close by a success');
}

# ---------------------------------------------------------------------------
# Threshold 5, cool-down 10 s, an always-500 destination, 150 requests.
# Then the probe fails: the cool-down doubles, up to breaker_max_cooldown.
{
	set_conf('delq.breaker_threshold', '5');
	set_conf('delq.breaker_cooldown', '10s');
	set_conf('delq.breaker_max_cooldown', '15s');
	add_dest('down', 'enabled => false');
	$sink->control('down', { status => 500 });
	burst('down', 150);
	sql("SELECT delq.alter_destination('down', enabled => true)");
	ok(poll_until($node, "SELECT breaker FROM delq.destination_health WHERE name = 'down'", 'open', 30),
		'always-500 opened the breaker');
	ok(settled('down'), 'every answer of the burst is in');
	my $paused = paused_for('down');
	cmp_ok($paused, '<=', 10, "paused for at most the 10 s cool-down (${paused}s)");
	is(events('down', 'breaker_opened'), '1', 'opened once');
	my $sent = $sink->count('down');

	ok(poll_until($node, "SELECT count(*) >= 2 FROM delq.event WHERE destination = 'down'
	                        AND request_id IS NULL AND kind = 'breaker_opened'", 't', 30),
		'the probe after the cool-down failed and reopened it');
	is(events('down', 'breaker_probe'), '1', 'one breaker_probe event');
	is($sink->count('down'), $sent + 1, 'exactly one probe was sent');
	is(sql("SELECT breaker_opens FROM delq.destination_state WHERE name = 'down'"), '2',
		'breaker_opens 2');
	my $cool = sql("SELECT detail->>'cooldown' FROM delq.event WHERE destination = 'down'
	                  AND kind = 'breaker_opened' ORDER BY id DESC LIMIT 1");
	is($cool, '00:00:15', 'the doubled cool-down (20 s) is capped by breaker_max_cooldown (15 s)');
	cmp_ok(paused_for('down'), '<=', 15, 'and breaker_until agrees');

	# the destination is fixed: enabling it again probes at once
	$sink->control('down', { status => 200 });
	sql("SELECT delq.alter_destination('down', enabled => false)");
	my $t0 = time;
	sql("SELECT delq.alter_destination('down', enabled => true)");
	ok(poll_until($node, "SELECT breaker FROM delq.destination_health WHERE name = 'down'", 'closed', 10),
		'enabling it sent a probe at once, which closed the breaker');
	cmp_ok(time - $t0, '<', 8, 'within seconds, not after the cool-down');
	is(events('down', 'breaker_closed'), '1', 'a breaker_closed event');
	ok(poll_until($node, "SELECT count(*) FROM delq.delivery WHERE destination = 'down' AND state = 'confirmed'",
			'150', 60), 'the queue drained');
	set_conf('delq.breaker_threshold', undef);
	set_conf('delq.breaker_cooldown', undef);
	set_conf('delq.breaker_max_cooldown', undef);
}

# ---------------------------------------------------------------------------
# 410 Gone, then the operator fixes the url and retries: sent at once.
{
	add_dest('moved');
	$sink->control('moved', { status => 410 });
	my $rid = sql(q{SELECT delq.submit('moved-1', 'app', attributes => '{"t": "moved"}')});
	ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$rid'", 'failed', 30),
		'410: the delivery failed');
	is(sql("SELECT breaker FROM delq.destination_health WHERE name = 'moved'"), 'open',
		'and the breaker is open (60 s)');
	my $t0 = time;
	sql("SELECT delq.alter_destination('moved', url => '" . $sink->url('moved2', '/hook') . "')");
	is(sql("SELECT breaker FROM delq.destination_health WHERE name = 'moved'"), 'probing',
		'a new url lets a probe through at once');
	sql("SELECT delq.retry('$rid')");
	ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$rid'", 'completed', 10),
		'the retried delivery went to the fixed url at once');
	cmp_ok(time - $t0, '<', 8, 'within seconds');
	is($sink->count('moved2'), 1, 'the fixed url got it');
	is(sql("SELECT string_agg(kind, ',' ORDER BY id) FROM delq.event WHERE destination = 'moved'
	         AND request_id IS NULL AND kind LIKE 'breaker%'"),
		'breaker_opened,breaker_reset,breaker_probe,breaker_closed',
		'events: opened, reset (by the url change), probe sent, closed');
	is(sql("SELECT detail->>'because' FROM delq.event WHERE destination = 'moved' AND kind = 'breaker_reset'"),
		'url changed', 'the reset says why');
}

# retry() alone (no change) also lets a probe through at once.
{
	add_dest('again');
	$sink->control('again', { status => 410, times => 1 });
	my $rid = sql(q{SELECT delq.submit('again-1', 'app', attributes => '{"t": "again"}')});
	ok(poll_until($node, "SELECT breaker FROM delq.destination_health WHERE name = 'again'", 'open', 30),
		'410 opened the breaker');
	my $t0 = time;
	sql("SELECT delq.retry('$rid')");
	ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$rid'", 'completed', 10),
		'retry() sent it at once');
	cmp_ok(time - $t0, '<', 8, 'within seconds');
}

# reset_breaker: argument checks and privileges.
{
	my ($ret, $out, $err) = $node->psql('postgres', "SELECT delq.reset_breaker('nosuch')");
	like($err, qr/destination 'nosuch' does not exist/, 'reset_breaker of an unknown destination: 42704');
	($ret, $out, $err) = $node->psql('postgres', "SELECT delq.reset_breaker(NULL)");
	like($err, qr/must not be null|is null/i, 'reset_breaker(NULL) refused');
}

my $log = slurp_file($node->logfile);
unlike($log, qr/"delq worker" \(PID \d+\) exited/, 'the worker never exited');
$node->stop;
done_testing();
