# 050_privacy_alerts.pl
#     Deadline alerts on channel delq_alerts: delq.check_deadlines() sends
#     one NOTIFY per request that became at risk or overdue, with a JSON
#     payload that never holds the subject; the worker sends them on its
#     own once its housekeeping calls delq.check_deadlines().  And the
#     subject stays out of the server log when delq.guard() refuses a row.

use strict;
use warnings;

use DelqTest;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# The notifications psql printed in $out, as decoded payloads.
sub notifications
{
	my ($out) = @_;
	my @got;
	while ($out =~ /^Asynchronous notification "delq_alerts" with payload "(.*)" received from server process with PID \d+\.$/mg)
	{
		push @got, decode_json($1);
	}
	return @got;
}

# --- check_deadlines() in a session -------------------------------------------
# log_statement = 'all' (which the test clusters set) would log every
# statement before it runs: no extension can keep a subject out of that.
my $node = delq_node('alerts', preload => 0,
	conf => "log_min_messages = 'warning'\nlog_statement = 'none'\n");
$node->safe_psql('postgres',
	"SELECT delq.add_destination('crm', 'https://crm.example/erase');
	 SELECT delq.add_destination('shop_db', 'https://db.example/erase');
	 SELECT delq.add_route('crm'); SELECT delq.add_route('shop_db');");
my $soon = $node->safe_psql('postgres',
	"SELECT delq.submit('soon.subject\@example.com', 'shop', due_at => now() + interval '2 days')");
my $late = $node->safe_psql('postgres',
	"SELECT delq.submit('late.subject\@example.com', 'shop', due_at => now() + interval '1 hour')");
$node->safe_psql('postgres',
	"SELECT delq.confirm('$late', 'crm');
	 UPDATE delq.pending SET due_at = now() - interval '1 hour' WHERE id = '$late';");
$node->safe_psql('postgres',
	"SELECT delq.submit('later.subject\@example.com', 'shop', due_at => now() + interval '20 days')");

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN delq_alerts');
is($node->safe_psql('postgres', 'SELECT delq.check_deadlines()'),
	'2', 'check_deadlines() alerts the two requests at risk or overdue');
my @got = notifications($listener->query_safe('SELECT 1'));
is(scalar @got, 2, 'the listener received two notifications');
my %by_id = map { ($_->{request_id} => $_) } @got;
is_deeply([ sort keys %{ $got[0] } ],
	[qw(alert due_at request_id source status unconfirmed)],
	'the payload has alert, due_at, request_id, source, status, unconfirmed');
is($by_id{$soon}{alert}, 'at_risk', 'the request due in two days is at risk');
is_deeply($by_id{$soon}{unconfirmed}, [ 'crm', 'shop_db' ], '... with both destinations unconfirmed');
is($by_id{$late}{alert}, 'overdue', 'the request past its deadline is overdue');
is_deeply($by_id{$late}{unconfirmed}, ['shop_db'], '... with the destination that has not confirmed');
is($by_id{$late}{status}, 'forwarding', '... and its status');
is( $node->safe_psql('postgres', "SELECT due_at = '$by_id{$soon}{due_at}' FROM delq.pending WHERE id = '$soon'"),
	't', 'due_at is the deadline');
unlike(join('', map { encode_json($_) } @got), qr/subject|\@example/, 'no payload holds a subject');

is($node->safe_psql('postgres', 'SELECT delq.check_deadlines()'), '0', 'a second check alerts nothing');
is(scalar(notifications($listener->query_safe('SELECT 1'))), 0, '... and notifies nothing');

# an extension moves the deadline: at risk again later means alerted again
$node->safe_psql('postgres', "SELECT delq.extend('$soon', '1 day', 'a backup must be restored')");
is($node->safe_psql('postgres', 'SELECT delq.check_deadlines()'), '1',
	'the extended request, still at risk, is alerted for its new deadline');
@got = notifications($listener->query_safe('SELECT 1'));
is(scalar @got, 1, '... with one notification');
is($got[0]{request_id}, $soon, '... about it');
$listener->quit;

# --- the subject stays out of the server log ----------------------------------
$node->safe_psql('postgres',
	"CREATE TABLE users (id serial, email text);
	 CREATE TRIGGER users_guard BEFORE INSERT OR UPDATE ON users
	     FOR EACH ROW EXECUTE FUNCTION delq.guard('email', 'refuse');
	 CREATE TABLE leads (id serial, email text);
	 CREATE TRIGGER leads_guard BEFORE INSERT ON leads
	     FOR EACH ROW EXECUTE FUNCTION delq.guard('email', 'warn');");
my $gone = $node->safe_psql('postgres', "SELECT delq.submit('gone.subject\@example.com', 'shop')");
$node->safe_psql('postgres', "SELECT delq.confirm('$gone', 'crm'), delq.confirm('$gone', 'shop_db')");

my $offset = -s $node->logfile;
my ($rc, $out, $err) = $node->psql('postgres', "SELECT 'control.subject' || 1/0");
($rc, $out, $err) = $node->psql('postgres', "INSERT INTO users (email) VALUES ('gone.subject\@example.com')");
like($err, qr/ERROR:  column email of public\.users holds the subject of a completed deletion request/,
	'guard refuses an erased subject');
($rc, $out, $err) = $node->psql('postgres', "INSERT INTO leads (email) VALUES ('gone.subject\@example.com')");
like($err, qr/WARNING:  column email of public\.leads holds the subject/, 'guard warns in warn mode');
($rc, $out, $err) = $node->psql('postgres', "SELECT delq.was_erased('gone.subject\@example.com', 'Bad Source')");
like($err, qr/ERROR:  source 'Bad Source' is not a valid source name/, 'was_erased refuses a bad source');
$node->safe_psql('postgres', "SELECT delq.archive(); SELECT delq.redact('0')");
($rc, $out, $err) = $node->psql('postgres', "INSERT INTO users (email) VALUES ('gone.subject\@example.com')");
like($err, qr/ERROR:  column email/, 'guard refuses it after redaction too');

my $log = slurp_file($node->logfile, $offset);
like($log, qr/STATEMENT:  SELECT 'control\.subject'/,
	'a failing statement is logged with its text (log_min_error_statement)');
like($log, qr/ERROR:  column email of public\.users holds the subject/, 'the refusal is logged');
like($log, qr/WARNING:  column email of public\.leads/, 'so is the warning');
like($log, qr/ERROR:  source 'Bad Source'/, 'so is the bad source');
unlike($log, qr/gone\.subject/, 'but none of them with the statement that holds the subject');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM delq.event WHERE detail::text LIKE '%subject\@example.com%'"),
	'0', 'no event holds a subject');
is($node->safe_psql('postgres', 'SELECT count(*) FROM delq.verify_ledger()'), '0', 'the ledger is intact');
$node->stop;

# --- the worker alerts on its own ----------------------------------------------
# The worker calls delq.check_deadlines() from its housekeeping (src/upkeep.c).
{
	my $wnode = delq_node('alerts_worker');
	my $bg = $wnode->background_psql('postgres');
	$bg->query_safe('LISTEN delq_alerts');
	my $id = $wnode->safe_psql('postgres',
		"SELECT delq.submit('worker.subject\@example.com', 'shop', due_at => now() + interval '1 day')");
	ok( poll_until($wnode,
			"SELECT count(*) FROM delq.event WHERE request_id = '$id' AND kind = 'at_risk'",
			'1', 30),
		'the worker logged an at_risk event');
	is($wnode->safe_psql('postgres',
			"SELECT actor FROM delq.event WHERE request_id = '$id' AND kind = 'at_risk'"),
		'delq', '... as delq');
	my @w = notifications($bg->query_safe('SELECT 1'));
	is(scalar(grep { $_->{request_id} eq $id && $_->{alert} eq 'at_risk' } @w), 1,
		'the listener received the worker\'s notification');
	sleep 3;    # a few more housekeeping rounds
	is($wnode->safe_psql('postgres',
			"SELECT count(*) FROM delq.event WHERE request_id = '$id' AND kind = 'at_risk'"),
		'1', 'once only');
	$bg->quit;
	$wnode->stop;
}

done_testing();
