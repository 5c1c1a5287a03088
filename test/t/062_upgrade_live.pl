
# 062_upgrade_live.pl
#     A live 1.0 installation upgraded the way docs/upgrading.md tells users
#     to: 1.0's own library (built from the 1.0 source) runs the worker over
#     a queue with completed, archived, redacted, failed, held and in-flight
#     requests, a request queued behind an open circuit breaker, and issued
#     receipts.  Then the new package's files replace 1.0's (renamed into
#     place, as dpkg does); ALTER EXTENSION delq UPDATE refuses while the
#     server still runs 1.0's library (and, on a server without preloading,
#     in a session that loaded it, while a new session updates); the server
#     restarts (the in-flight
#     transfer is cut); the new worker waits for the update; the update
#     runs; the same worker carries on.
#
#     Checked as invariants, so that later schema additions do not break
#     it: no request or delivery is lost, every delivery keeps its webhook
#     id and the sink never sees another one for it, nothing confirmed is
#     sent again, the open breaker stays open and the held request held,
#     what queued up is delivered, delq.verify_ledger() finds every chain
#     intact, every receipt issued by 1.0 still verifies, redacted subjects
#     stay redacted.
#
#     The 1.0 source comes from $DELQ_OLD_SOURCE (test/run-all extracts tag
#     v1.0 there) or from the checkout's git history; a clone without that
#     history (a shallow CI clone) skips this file: test/t/061_upgrade_wait.pl
#     covers the new library on a 1.0 schema without it.

use strict;
use warnings;

use Cwd qw(abs_path);
use DelqInstall;
use DelqTest;
use File::Basename qw(dirname);
use File::Copy qw(copy);
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $top = abs_path(dirname(__FILE__) . '/../..');
my $tmp = PostgreSQL::Test::Utils::tempdir();

# --- 1.0's source and library ------------------------------------------------
my $old_src = $ENV{DELQ_OLD_SOURCE};
if (!($old_src && -f "$old_src/Makefile"))
{
	$old_src = undef;
	for my $rev ('v1.0', '686ae81')
	{
		next
		  if system("git -C '$top' rev-parse -q --verify '$rev^{commit}' >/dev/null 2>&1") != 0;
		mkdir "$tmp/src-1.0";
		if (system("git -C '$top' archive '$rev' | tar -C '$tmp/src-1.0' -xf -") == 0)
		{
			$old_src = "$tmp/src-1.0";
			last;
		}
	}
}
plan skip_all => 'no 1.0 source: neither $DELQ_OLD_SOURCE nor git history with tag v1.0 '
  . '(test/t/061_upgrade_wait.pl covers the new library on a 1.0 schema)'
  unless $old_src;

my $build = "$tmp/build-1.0";
system('cp', '-a', $old_src, $build) == 0 or BAIL_OUT("copying $old_src failed");
my $made = system("make -C '$build' -j2 with_llvm=no PG_CONFIG=pg_config >'$tmp/build-1.0.log' 2>&1");
is($made, 0, "1.0's library builds from its source") or BAIL_OUT(slurp_file("$tmp/build-1.0.log"));
is(slurp_file("$build/delq--1.0.sql"), slurp_file("$top/delq--1.0.sql"),
	'the frozen delq--1.0.sql is the script 1.0 built');

# A private PostgreSQL with 1.0 installed as its package would have put it.
my $install = copy_install("$tmp/root", without_delq => 1);
my ($lib, $ext) = install_dirs($install);
copy("$build/delq.so", "$lib/delq.so") or die "copy: $!";
copy("$build/$_", "$ext/$_") or die "copy $_: $!" for qw(delq.control delq--1.0.sql);

my $node = PostgreSQL::Test::Cluster->new('live', install_path => $install);
$node->init;
$node->append_conf('postgresql.conf', <<'EOC');
shared_preload_libraries = 'delq'
delq.database = 'postgres'
delq.retry_base = '100ms'
delq.retry_max = '2s'
delq.idle_timeout = '1s'
delq.breaker_threshold = 2
delq.breaker_cooldown = '1h'
log_min_messages = 'warning'
EOC
$node->start;
my $sink = start_sink();

sub sql { return $node->safe_psql('postgres', $_[0]) }

sub submit
{
	my ($subject, $to, $extra) = @_;
	return sql(($extra // '') . "SELECT delq.submit('$subject', 'upgrade', attributes => '{\"to\": \"$to\"}')");
}

sub worker_pid
{
	return sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'delq worker'");
}

sql('CREATE EXTENSION delq');
is(sql("SELECT extversion FROM pg_extension WHERE extname = 'delq'"), '1.0', 'the database is at 1.0');
is(sql("SELECT count(*) FROM pg_settings WHERE name = 'delq.library_version'"), '0',
	"and runs 1.0's library (it has no delq.library_version)");

for my $d (qw(ok fail brk slow))
{
	my $opts = $d eq 'fail' ? ', max_attempts => 1' : $d eq 'slow' ? ", timeout => '5 min'" : '';
	sql("SELECT delq.add_destination('$d', '" . $sink->url($d) . "'$opts);
		 SELECT delq.add_route('$d', '{\"to\": \"$d\"}');");
}
$sink->control('fail', { status => 500 });
$sink->control('brk', { status => 503 });
$sink->control('slow', { hang => JSON::PP::true });

# --- a live 1.0 queue ----------------------------------------------------------
my %rid;
$rid{"a$_"} = submit("alice-$_\@example.com", 'ok') for 1 .. 3;
ok(poll_until($node,
		"SELECT count(*) FROM delq.pending WHERE status = 'completed'", '3', 30),
	'1.0 completes requests');
is(sql("SELECT delq.archive('0')"), '3', 'and archives them');
cmp_ok(sql("SELECT delq.redact('0')"), '>=', 3, 'and redacts their subjects');
$rid{a4} = submit('dora@example.com', 'ok');
$rid{f1} = submit('frank@example.com', 'fail');
$rid{b1} = submit('bert@example.com', 'brk');
$rid{b2} = submit('bob@example.com', 'brk');
ok(poll_until($node,
		"SELECT status FROM delq.pending WHERE id = '$rid{a4}'", 'completed', 30),
	'another request completes');
ok(poll_until($node,
		"SELECT status FROM delq.pending WHERE id = '$rid{f1}'", 'failed', 30),
	'a request fails');
ok(poll_until($node,
		"SELECT breaker FROM delq.destination_health WHERE name = 'brk'", 'open', 30),
	"destination brk's circuit breaker opens");
$rid{b3} = submit('bea@example.com', 'brk');
$rid{h1} = submit('hal@example.com', 'ok', "SET delq.hold_period = '1h';");
$rid{s1} = submit('sam@example.com', 'slow');
ok($sink->wait_requests('slow', 1, 30), 'a transfer hangs in flight');
is(sql("SELECT state FROM delq.delivery WHERE request_id = '$rid{s1}'"), 'sending', '... sending');
is(sql("SELECT status FROM delq.pending WHERE id = '$rid{h1}'"), 'held', 'a request is held');

my %receipt = map { $_ => sql("SELECT delq.receipt('$rid{$_}')") } qw(a1 a4 f1);
is(sql("SELECT delq.verify_receipt('$receipt{$_}')"), 't', "1.0's receipt of $_ verifies")
  for sort keys %receipt;

# What must survive: every request, every delivery with its webhook id
# (live or archived), what the sink got, the breaker.
my $webhook_ids = q{
	SELECT request_id || ' ' || destination || ' ' || webhook_id FROM delq.delivery
	UNION ALL
	SELECT f.id || ' ' || (d->>'destination') || ' ' || (d->>'webhook_id')
	  FROM delq.finished f, jsonb_array_elements(f.deliveries) d
	ORDER BY 1};
my $requests = q{SELECT id FROM delq.pending UNION ALL SELECT id FROM delq.finished ORDER BY 1};
my $confirmed = q{SELECT request_id || ' ' || destination FROM delq.delivery WHERE state = 'confirmed'
	UNION ALL
	SELECT f.id || ' ' || (d->>'destination') FROM delq.finished f, jsonb_array_elements(f.deliveries) d
	 WHERE d->>'state' = 'confirmed' ORDER BY 1};
my $redacted = q{SELECT count(*) FROM delq.finished WHERE subject LIKE 'alice-%'};
my %before = (
	webhook_ids => sql($webhook_ids),
	requests    => sql($requests),
	confirmed   => sql($confirmed),
	breaker     => sql("SELECT breaker_until FROM delq.destination_state WHERE name = 'brk'"),
	events      => sql('SELECT count(*) FROM delq.event'),);
is(scalar(split /\n/, $before{requests}), 10, 'ten requests before the upgrade');
is(sql($redacted), '0', 'the archived subjects are redacted');
my %sent_before = map { $_ => $sink->count($_) } qw(ok fail brk slow);

# A second server without shared_preload_libraries (delq.dispatch() from
# pg_cron): its sessions load the library when they first call into it, and
# a session that loaded 1.0's keeps it.
my $plain = PostgreSQL::Test::Cluster->new('plain', install_path => $install);
$plain->init;
$plain->start;
$plain->safe_psql('postgres', 'CREATE EXTENSION delq');
my $old_session = $plain->background_psql('postgres', on_error_stop => 0);
$old_session->query_safe("SELECT delq.submit('pat\@example.com', 'upgrade')");

# --- the new package's files ---------------------------------------------------
# As dpkg unpacks: each file written beside its target, then renamed over
# it, so running processes keep the old library they have mapped.
my $new_bin = `pg_config --bindir`;
chomp $new_bin;
my ($new_lib, $new_ext) = install_dirs(dirname($new_bin));
my %files = ("$new_lib/delq.so" => "$lib/delq.so");
$files{$_} = "$ext/" . substr($_, length($new_ext) + 1)
  for glob("$new_ext/delq.control $new_ext/delq--*.sql");
while (my ($from, $to) = each %files)
{
	copy($from, "$to.dpkg-new") or die "copy $from: $!";
	chmod 0644, "$to.dpkg-new";
	rename("$to.dpkg-new", $to) or die "rename $to: $!";
}
my $current = sql("SELECT default_version FROM pg_available_extensions WHERE name = 'delq'");
isnt($current, '1.0', "the new package offers $current");

# Before the restart, the server still runs 1.0's library: the update
# refuses and changes nothing.
my ($ret, $out, $err) = $node->psql('postgres', 'ALTER EXTENSION delq UPDATE');
isnt($ret, 0, 'ALTER EXTENSION UPDATE refuses while 1.0\'s library is loaded');
like($err, qr/the delq library loaded in this session is version 1\.0, not \Q$current\E/,
	'... saying which library is loaded');
like($err, qr/HINT:  .*restart PostgreSQL/, '... with a hint to restart');
is(sql("SELECT extversion FROM pg_extension WHERE extname = 'delq'"), '1.0', '... and nothing changed');

# Without preloading: the session that loaded 1.0's library is refused too;
# a new session loads the new library and updates.
$old_session->query('ALTER EXTENSION delq UPDATE');
like($old_session->{stderr}, qr/the delq library loaded in this session is version 1\.0.*HINT:  .*open a new session/s,
	'without preloading, a session that loaded 1.0\'s library is refused, with a hint to reconnect');
$old_session->quit;
$plain->safe_psql('postgres', 'ALTER EXTENSION delq UPDATE');
is($plain->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'delq'"),
	$current, '... and a new session updates');
is($plain->safe_psql('postgres', 'SELECT count(*) FROM delq.verify_ledger()'), '0',
	'... with its ledger intact');
$plain->stop;

# --- restart: the new library, the schema still 1.0 --------------------------
my $offset = -s $node->logfile;
$node->restart;    # fast: the hanging transfer is cut
my $since_restart = -s $node->logfile;
my $wait_line = qr/delq worker waiting: extension "delq" in database "postgres" is at version 1\.0, this library needs \Q$current\E/;
ok($node->wait_for_log($wait_line, $offset), 'the new worker waits for the update');
is(sql('SHOW delq.library_version'), $current, "the server runs the $current library");
my $wpid = worker_pid();
$rid{n1} = submit('nina@example.com', 'ok');
$sink->control('slow', { status => 200 });
sleep 3;
is(worker_pid(), $wpid, 'the worker waits in one process');
is($sink->count('ok'), $sent_before{ok}, 'nothing is sent before the update');

# --- the update ------------------------------------------------------------------
sql('ALTER EXTENSION delq UPDATE');
is(sql("SELECT extversion FROM pg_extension WHERE extname = 'delq'"), $current,
	"ALTER EXTENSION delq UPDATE reaches $current");
ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$rid{n1}'", 'completed', 30),
	'the worker carries on: a request submitted while it waited is delivered');
ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$rid{s1}'", 'completed', 30),
	'the transfer cut by the restart is sent again and completes');
is(worker_pid(), $wpid, 'by the worker that waited (no restart)');

# --- invariants ---------------------------------------------------------------------
my $ids_after = sql($webhook_ids);
my %after_ids = map { my @f = split ' '; ("$f[0] $f[1]" => $f[2]) } split /\n/, $ids_after;
for my $line (split /\n/, $before{webhook_ids})
{
	my ($r, $d, $w) = split ' ', $line;
	is($after_ids{"$r $d"}, $w, "delivery $r to $d keeps webhook id $w");
}
my @req_after = split /\n/, sql($requests);
is_deeply(\@req_after, [ sort(split(/\n/, $before{requests}), $rid{n1}) ],
	'no request is lost (and the new one is there)');
cmp_ok(sql('SELECT count(*) FROM delq.event'), '>', $before{events}, 'no event is lost');

# Every request the sink got carries the delivery's webhook id: nothing was
# sent under a new one.
my %delivery_id = %after_ids;
my @foreign;
for my $rec ($sink->requests)
{
	my $body = eval { decode_json($rec->{body}) } or next;
	my $want = $delivery_id{"$body->{request_id} $rec->{dest}"} // '(none)';
	push @foreign, "$rec->{dest} $body->{request_id}: $rec->{headers}{'webhook-id'} (delivery: $want)"
	  if ($rec->{headers}{'webhook-id'} // '') ne $want;
}
is(join("\n", @foreign), '', 'every request the sink got carries its delivery\'s webhook id');

# Nothing confirmed before the upgrade was sent again.
for my $pair (split /\n/, $before{confirmed})
{
	my ($r, $d) = split ' ', $pair;
	is(scalar(my @got = $sink->for_request($d, $r)), 1, "confirmed delivery $r to $d was sent once");
}
is($sink->count('fail'), $sent_before{fail}, 'the failed delivery is not retried by itself');
is($sink->count('brk'), $sent_before{brk}, 'nothing is sent through the open breaker');
is(sql("SELECT breaker_until FROM delq.destination_state WHERE name = 'brk'"), $before{breaker},
	'the breaker stays open until its time');
is(sql("SELECT state FROM delq.delivery WHERE request_id = '$rid{b3}'"), 'queued',
	'the request behind it is still queued');
is(sql("SELECT status FROM delq.pending WHERE id = '$rid{h1}'"), 'held', 'the held request is still held');
is(sql("SELECT status FROM delq.pending WHERE id = '$rid{f1}'"), 'failed', 'the failed request is still failed');
is(sql($redacted), '0', 'redacted subjects stay redacted');

is(sql('SELECT count(*) FROM delq.verify_ledger()'), '0', 'delq.verify_ledger() finds every chain intact');
is(sql("SELECT delq.verify_receipt('$receipt{$_}')"), 't', "1.0's receipt of $_ still verifies")
  for sort keys %receipt;
is(sql("SELECT delq.verify_receipt(delq.receipt('$rid{a4}'))"), 't',
	'a receipt issued after the upgrade verifies');
ok(!$node->log_contains(qr/\b(?:FATAL|PANIC):|terminated by signal|exited with exit code/, $since_restart),
	'no crash and no worker exit since the restart')
  or diag(slurp_file($node->logfile, $since_restart));

$node->stop;
done_testing();
