
# 095_doc_examples.pl
#     Every SQL example in README.md and docs/*.md runs (issue 10): a wrong
#     example fails the build.  Each ```sql block is one example, run by psql
#     with ON_ERROR_STOP in a fresh copy of a fixture database, inside
#     BEGIN ... ROLLBACK (roles are cluster-wide), and must succeed.
#
#     What the fixture holds, and how a block says what it needs: an HTML
#     comment on the line just before its fence (invisible when rendered),
#         <!-- example: request=failed -->
#     with any of
#         request=forwarding|failed|held|completed
#                         a request id written in the block ('<request id>',
#                         a uuid, or an abbreviation such as '3f0c2a6e-...')
#                         becomes the id of the fixture's request in that
#                         state (default: forwarding);
#         db=empty        a database with only the extension (the block
#                         creates its own destinations); db=bare: not even
#                         that (the block runs CREATE EXTENSION);
#         roles=a+b       login roles the block takes as existing, created
#                         in its transaction first;
#         no-transaction  not wrapped in BEGIN ... ROLLBACK (CALL
#                         dispatch_pass, ALTER SYSTEM, ...);
#         skip: <reason>  not run; the reason says why and where it is
#                         tested instead.
#     A block without a semicolon is a signature or a fragment, not an
#     example, and is not run.  The fixture (below): destinations crm,
#     segment (callback), analytics (callback), legacy_crm, old_newsletter,
#     eu_warehouse, mailer, all at 127.0.0.1:9 (the worker serves another
#     database, so nothing is sent); routes 1 to 4; requests of source
#     'shop' in each state; roles alice, bob, support_desk, intake_admin;
#     table app.users; database app.

use strict;
use warnings;

use DelqTest;
use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $top = dirname(__FILE__) . '/../..';
my $node = delq_node('docs', extension => 0);
sub sql { my ($db, $q) = @_; return $node->safe_psql($db, $q) }

# --- the fixture ----------------------------------------------------------------
sql('postgres', 'CREATE ROLE alice; CREATE ROLE bob; CREATE ROLE support_desk; CREATE ROLE intake_admin;
                 CREATE DATABASE app; CREATE DATABASE doc_bare; CREATE DATABASE doc_empty;
                 CREATE DATABASE doc_fixture;');
sql('doc_empty', 'CREATE EXTENSION delq');
sql('doc_fixture', q{
    CREATE EXTENSION delq;
    CREATE SCHEMA app;
    CREATE TABLE app.users (id integer, email text);
    SELECT delq.add_destination(d, 'http://127.0.0.1:9/' || d,
                                confirm => CASE WHEN d IN ('segment', 'analytics') THEN 'callback'
                                                ELSE 'response' END)
      FROM unnest(ARRAY['crm', 'segment', 'analytics', 'legacy_crm', 'old_newsletter',
                        'eu_warehouse', 'mailer']) d;
    SELECT delq.add_route('crm', '{"source": "shop"}');
    SELECT delq.add_route('segment', '{"source": "shop"}');
    SELECT delq.add_route('legacy_crm', '{"source": "shop"}');
    SELECT delq.add_route('analytics', '{"region": "eu"}');
    CREATE TABLE public.doc_request (state text PRIMARY KEY, id uuid NOT NULL);
    INSERT INTO doc_request
    SELECT 'forwarding', delq.submit('fwd@example.com', 'shop', attributes => '{"region": "eu"}')
    UNION ALL SELECT 'failed', delq.submit('failed@example.com', 'shop')
    UNION ALL SELECT 'completed', delq.submit('done@example.com', 'shop');
    UPDATE delq.delivery SET state = 'failed', attempts = 1, last_status = 410, last_error = 'HTTP 410'
     WHERE request_id = (SELECT id FROM doc_request WHERE state = 'failed')
       AND destination IN ('crm', 'segment');
    SELECT delq._refresh_status(ARRAY(SELECT id FROM doc_request WHERE state = 'failed'));
    SELECT delq.confirm(r.id, d) FROM doc_request r, unnest(ARRAY['crm', 'segment', 'legacy_crm']) d
     WHERE r.state = 'completed';
    SET delq.require_approval = on;
    INSERT INTO doc_request SELECT 'held', delq.submit('held@example.com', 'shop');
});
is(sql('doc_fixture', "SELECT string_agg(r.state || ':' || p.status, ',' ORDER BY r.state)
                         FROM doc_request r JOIN delq.pending p USING (id)"),
	'completed:completed,failed:failed,forwarding:forwarding,held:held', 'the fixture requests');
my %ids = map { split /\|/ } split /\n/, sql('doc_fixture', 'SELECT state, id FROM doc_request');

# --- the examples -----------------------------------------------------------------
my @files = ("$top/README.md", sort glob("$top/docs/*.md"));
my ($run, $skipped, $copy) = (0, 0, 0);
for my $file (@files)
{
	open(my $fh, '<', $file) or die "$file: $!";
	my @lines = <$fh>;
	close $fh;
	(my $name = $file) =~ s{^\Q$top\E/}{};
	for (my $i = 0; $i < @lines; $i++)
	{
		next unless $lines[$i] =~ /^```sql\s*$/;
		my $at = $i + 1;
		my $note = $i > 0 && $lines[ $i - 1 ] =~ /^<!-- example: (.*?) -->\s*$/ ? $1 : '';
		my $block = '';
		$block .= $lines[$i] while ++$i < @lines && $lines[$i] !~ /^```\s*$/;
		next unless $block =~ /;/;    # a signature or a fragment
		if ($note =~ /\bskip: (.+)/)
		{
			note("$name:$at skipped: $1");
			$skipped++;
			next;
		}
		my %opt = map { /^([\w-]+)(?:=(\S+))?$/ ? ($1 => $2 // 1) : () } split /[\s,]+/, $note;
		my $state = $opt{request} // 'forwarding';
		die "$name:$at: no fixture request '$state'" unless $ids{$state};
		(my $sql = $block) =~
		  s/'(?:<request id>|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{4,8}-?\.\.\.)'/'$ids{$state}'/g;
		my $template = { empty => 'doc_empty', bare => 'doc_bare' }->{ $opt{db} // '' } // 'doc_fixture';
		my $db = 'doc_example_' . ++$copy;
		sql('postgres', "CREATE DATABASE $db TEMPLATE $template");
		my $roles = join '', map { "CREATE ROLE $_ LOGIN;\n" } split /\+/, $opt{roles} // '';
		my $script = "\\set ON_ERROR_STOP 1\n\\set VERBOSITY verbose\n"
		  . ($opt{'no-transaction'} ? $sql : "BEGIN;\n$roles$sql\nROLLBACK;\n");
		my ($ret, $out, $err) = $node->psql($db, $script);
		ok($ret == 0, "$name:$at runs")
		  or diag("$name:$at failed:\n$sql\n--- psql said:\n$err");
		$run++;
		sql('postgres', "DROP DATABASE $db");
	}
}
cmp_ok($run, '>=', 40, "$run examples ran ($skipped skipped, each with its reason)");

$node->stop;
done_testing();
