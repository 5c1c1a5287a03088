# 051_privacy_restore.pl
#     pg_dump and pg_restore keep the proof: the restored ledger verifies
#     and goes on chaining, a receipt issued before the dump verifies after
#     the restore, and a redacted subject is still found by
#     delq.was_erased(), because the original keys win over the ones
#     CREATE EXTENSION makes in the new database.

use strict;
use warnings;

use DelqTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = delq_node('restore', preload => 0);
$node->safe_psql('postgres', "
	SELECT delq.add_destination('crm', 'https://crm.example/erase');
	SELECT delq.add_route('crm');");
my $done = $node->safe_psql('postgres', "SELECT delq.submit('kept.subject\@example.com', 'shop')");
my $open = $node->safe_psql('postgres',
	"SELECT delq.submit('open.subject\@example.com', 'shop', due_at => now() + interval '2 days')");
my $risk = $node->safe_psql('postgres',
	"SELECT delq.submit('risk.subject\@example.com', 'shop', due_at => now() + interval '3 days')");
$node->safe_psql('postgres', "
	SELECT delq.confirm('$done', 'crm');
	SELECT delq.archive();
	SELECT delq.redact('0');
	SELECT delq.check_deadlines();
	SELECT * FROM delq.ledger_checkpoint();");
my $receipt = $node->safe_psql('postgres', "SELECT delq.receipt('$done')");
my $keys = "SELECT string_agg(name || ':' || encode(sha256(secret), 'hex'), ',' ORDER BY name)
              FROM (SELECT DISTINCT ON (name) name, secret FROM delq.key ORDER BY name, created_at) k";
my $keys_before = $node->safe_psql('postgres', $keys);
is($node->safe_psql('postgres', 'SELECT count(*) FROM delq.verify_ledger()'), '0',
	'the ledger verifies before the dump');

my $dump = $node->basedir . '/delq.dump';
$node->command_ok(
	[ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('postgres') ],
	'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok(
	[ 'pg_restore', '--exit-on-error', '-d', $node->connstr('restored'), $dump ],
	'pg_restore into a new database');

is($node->safe_psql('restored',
		'SELECT count(*) || \' \' || count(DISTINCT name) FROM delq.key'),
	$node->safe_psql('postgres', 'SELECT 2 * count(*) || \' \' || count(*) FROM delq.key'),
	'the restored keys sit next to the ones CREATE EXTENSION made (two of each)');
is($node->safe_psql('restored', $keys), $keys_before, 'the original keys are the ones in use');
is($node->safe_psql('restored', 'SELECT count(*) FROM delq.verify_ledger()'), '0',
	'the restored ledger verifies');
is($node->safe_psql('restored', "SELECT delq.verify_receipt('$receipt')"), 't',
	'a receipt issued before the dump verifies');
is($node->safe_psql('restored', "SELECT delq.was_erased('kept.subject\@example.com')"), 't',
	'the redacted subject is still found');
is($node->safe_psql('restored', "SELECT subject LIKE 'hmac:%' FROM delq.finished WHERE id = '$done'"),
	't', '... from its keyed hash');

# the chains go on where they ended
$node->safe_psql('restored', "
	SELECT delq.confirm('$open', 'crm');
	SELECT delq.submit('new.subject\@example.com', 'shop');
	SELECT * FROM delq.ledger_checkpoint();");
is($node->safe_psql('restored', 'SELECT count(*) FROM delq.verify_ledger()'), '0',
	'new events chain onto the restored heads');
is($node->safe_psql('restored',
		"SELECT count(*) FROM delq.event WHERE request_id = '$open'"),
	$node->safe_psql('restored',
		"SELECT events FROM delq.ledger_head WHERE chain = 'request:$open'"),
	'the head counts every event of the chain');
is($node->safe_psql('restored', "SELECT delq.verify_receipt(delq.receipt('$open'))"), 't',
	'a new receipt verifies');
is($node->safe_psql('restored',
		"SELECT count(*) FROM delq.event WHERE request_id = '$risk' AND kind = 'at_risk'"),
	'1', 'an alert was sent before the dump');
is($node->safe_psql('restored', "SELECT delq.check_deadlines()"), '0',
	'... and is not sent again');

done_testing();
