
# 023_bad_outcome.pl
#     One outcome that cannot be recorded must not cost the others (issue 10):
#     - drop_destination(..., cancel_deliveries => true) while a delivery to
#       it is in flight: its answer is ignored (docs/sql-api.md), the worker
#       keeps running, and the other outcomes of the same batch are recorded
#       (before: the worker exited on destination_state_name_fkey and a
#       destination that had answered 200 got attempt 2);
#     - an outcome whose recording fails (here a trigger planted by the test
#       refuses one request's update) is set aside; every other outcome of
#       its batch is recorded once, and the set-aside delivery is sent again
#       after its lease, never lost.

use strict;
use warnings;

use DelqTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $sink = start_sink();
my $node = delq_node('badoutcome');

sub sql { return $node->safe_psql('postgres', shift) }

ok(poll_until($node, 'SELECT delq.worker_running()', 't', 30), 'worker running');
my $pid = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'delq worker'");

for my $d (qw(slowdrop fast))
{
	sql("SELECT delq.add_destination('$d', '" . $sink->url($d, '/hook') . "')");
	sql("SELECT delq.add_route('$d', '{}')");
}

# ---------------------------------------------------------------------------
# Both answer after 3 s, so that both outcomes arrive in one batch.
{
	$sink->control('slowdrop', { delay_ms => 3000 });
	$sink->control('fast', { delay_ms => 3000 });
	my $rid = sql("SELECT delq.submit('drop-1', 'app')");
	ok(poll_until($node, "SELECT count(*) FROM delq.delivery WHERE request_id = '$rid' AND state = 'sending'",
			'2', 10), 'both deliveries in flight');
	sql("SELECT delq.drop_destination('slowdrop', cancel_deliveries => true)");
	ok(poll_until($node, "SELECT state || '/' || attempts FROM delq.delivery WHERE request_id = '$rid'
	                        AND destination = 'fast'", 'confirmed/1', 15),
		'the other outcome of the batch was recorded, at the first attempt');
	is(sql("SELECT state FROM delq.delivery WHERE request_id = '$rid' AND destination = 'slowdrop'"),
		'cancelled', 'the dropped destination\'s answer was ignored: still cancelled');
	is(sql("SELECT count(*) FROM delq.destination_state WHERE name = 'slowdrop'"), '0',
		'no health row for the dropped destination');
	is(sql("SELECT status FROM delq.pending WHERE id = '$rid'"), 'completed', 'the request completed');
	sleep 1;
	is($sink->count('fast'), 1, 'fast got the request once');
	is(sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'delq worker'"), $pid,
		'the same worker process is still running');
}

# ---------------------------------------------------------------------------
# A bad row: a trigger refuses the outcome of one request.
{
	$sink->control('fast', { delay_ms => 1000 });
	my $bad = sql("SELECT delq.submit('bad-1', 'app', external_id => 'bad')");
	sql(qq{CREATE FUNCTION public.refuse_bad() RETURNS trigger LANGUAGE plpgsql AS \$\$
	    BEGIN
	        IF NEW.request_id = '$bad' AND NEW.state <> 'sending' AND NEW.state <> 'queued' THEN
	            RAISE EXCEPTION 'planted failure';
	        END IF;
	        RETURN NEW;
	    END \$\$;
	    CREATE TRIGGER refuse_bad BEFORE UPDATE ON delq.delivery
	        FOR EACH ROW EXECUTE FUNCTION public.refuse_bad();});
	# the others, claimed in the same turn as the bad one (not yet sent:
	# the bad request was submitted first, the claim takes them together)
	sql("SELECT delq.submit('good-' || g, 'app') FROM generate_series(1, 10) g");
	ok(poll_until($node, "SELECT count(*) FROM delq.delivery WHERE state = 'confirmed'
	                        AND request_id <> '$bad' AND destination = 'fast'", '11', 20),
		'all 10 good outcomes (and the earlier one) were recorded');
	is(sql("SELECT max(attempts) FROM delq.delivery WHERE request_id <> '$bad' AND destination = 'fast'"),
		'1', 'none of them was sent twice');
	is(sql("SELECT state FROM delq.delivery WHERE request_id = '$bad'"), 'sending',
		'the bad one stays in flight (its lease brings it back)');
	my $log = slurp_file($node->logfile);
	like($log, qr/WARNING:.*could not record the outcome of delivery \d+: planted failure/,
		'a warning names the delivery whose outcome was set aside');
	is(sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'delq worker'"), $pid,
		'the same worker process is still running');

	sql("DROP TRIGGER refuse_bad ON delq.delivery");
	# the lease of a claim is 60 s + 2 x timeout: shorten it for the test
	sql("UPDATE delq.delivery SET lease_until = now() WHERE request_id = '$bad'");
	ok(poll_until($node, "SELECT state || '/' || attempts FROM delq.delivery WHERE request_id = '$bad'",
			'confirmed/2', 30), 'after its lease the bad one was sent again and confirmed');
}

my $log = slurp_file($node->logfile);
unlike($log, qr/"delq worker" \(PID \d+\) exited/, 'the worker never exited');
$node->stop;
done_testing();
