
# 025_secret_rotation.pl
#     Secret rotation (issue 10, docs/destinations.md "Rotating the secret"):
#     after alter_destination(secret => <new>), each webhook carries two
#     signatures, space-separated as Standard Webhooks specifies ("v1,<new>
#     v1,<old>"), so a receiver that still knows only the old secret and
#     one that already has the new one both verify; once
#     delq.secret_overlap has passed, only the new one signs; removing the
#     secret removes both.  Signatures are checked by DelqTest's
#     verify_signature, written apart from the C signer.

use strict;
use warnings;

use DelqTest;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $sink = start_sink();
my $node = delq_node('rotation');
sub sql { return $node->safe_psql('postgres', shift) }

my $old = 'whsec_' . encode_base64('o' x 32, '');
my $new = 'whsec_' . encode_base64('n' x 32, '');

sql("SELECT delq.add_destination('rot', '" . $sink->url('rot', '/hook') . "', secret => '$old');
     SELECT delq.add_route('rot');");

sub send_one
{
	my ($subject) = @_;
	my $before = $sink->count('rot');
	my $rid = sql("SELECT delq.submit('$subject', 'app')");
	ok(poll_until($node, "SELECT status FROM delq.pending WHERE id = '$rid'", 'completed', 30),
		"$subject delivered");
	my @r = $sink->requests('rot');
	return $r[-1];
}

sub check
{
	my ($r, $secret) = @_;
	return verify_signature($secret, $r->{headers}{'webhook-id'}, $r->{headers}{'webhook-timestamp'},
		$r->{body}, $r->{headers}{'webhook-signature'});
}

my $r = send_one('before@example.com');
is(scalar(split(' ', $r->{headers}{'webhook-signature'})), 1, 'one signature before the rotation');
ok(check($r, $old), 'it verifies with the old secret');

sql("SELECT delq.alter_destination('rot', secret => '$new')");
is(sql("SELECT previous_secret_until BETWEEN now() + interval '23 hours' AND now() + interval '25 hours'
          FROM delq.destination WHERE name = 'rot'"), 't',
	'the old secret signs for delq.secret_overlap (24 h by default)');
like(sql("SELECT detail FROM delq.event WHERE destination = 'rot' AND kind = 'destination_altered'"),
	qr/"previous_secret_signs_s": 86400\b/, 'the event says for how long (and no secret)');
unlike(sql("SELECT string_agg(detail::text, ' ') FROM delq.event"), qr/whsec_/, 'no secret in any event');

$r = send_one('during@example.com');
my @sigs = split ' ', $r->{headers}{'webhook-signature'};
is(scalar(@sigs), 2, 'during the overlap: two space-separated signatures');
like($r->{headers}{'webhook-signature'}, qr/^v1,\S+ v1,\S+$/, 'each "v1,<base64>"');
ok(check($r, $new), 'a receiver with the new secret verifies');
ok(check($r, $old), 'a receiver still on the old secret verifies');

# the overlap has passed
sql("UPDATE delq.destination SET previous_secret_until = now() WHERE name = 'rot'");
$r = send_one('after@example.com');
is(scalar(split(' ', $r->{headers}{'webhook-signature'})), 1, 'after the overlap: one signature');
ok(check($r, $new), 'with the new secret');
ok(!check($r, $old), 'not the old one any more');

# a rotation with no overlap
sql("ALTER SYSTEM SET delq.secret_overlap = 0; SELECT pg_reload_conf()");
sleep 1;
sql("SELECT delq.alter_destination('rot', secret => '$old')");
$r = send_one('nooverlap@example.com');
is(scalar(split(' ', $r->{headers}{'webhook-signature'})), 1, 'delq.secret_overlap = 0: one signature at once');
ok(check($r, $old), 'with the newest secret');

# stopping signing drops the previous secret too
sql("ALTER SYSTEM RESET delq.secret_overlap; SELECT pg_reload_conf()");
sleep 1;
sql("SELECT delq.alter_destination('rot', secret => '$new')");
sql("SELECT delq.alter_destination('rot', secret => '')");
is(sql("SELECT coalesce(previous_secret, 'none') FROM delq.destination WHERE name = 'rot'"), 'none',
	'secret => \'\' forgets the previous secret');
$r = send_one('unsigned@example.com');
ok(!defined $r->{headers}{'webhook-signature'}, 'and nothing is signed');

$node->stop;
done_testing();
