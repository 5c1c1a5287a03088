
# 070_security_search_path.pl
#     No code of an ordinary role runs as the extension's owner through name
#     resolution (issue 9, high).  The attacker is a role with delq_admin
#     and the database's ownership, no superuser: it plants functions,
#     aggregates and operators in schema public that shadow the built-ins
#     delq uses (each records current_user in public.shadow_hits and then
#     does what the built-in does), sets ALTER DATABASE ... SET search_path
#     = public, pg_catalog, and, in its own sessions, temporary views named
#     like every delq table and view.  Then the worker (restarted, so that
#     it inherits the database's settings) forwards, records outcomes,
#     raises deadline alerts, redacts and takes ledger checkpoints; the
#     attacker calls every SECURITY DEFINER function of the extension
#     (walked from pg_proc, so functions added later are covered), and
#     delq.dispatch() and delq.dispatch_pass() run on a node without the
#     worker.  No shadow may
#     run as anyone but the attacker.  First, the shadows are shown to work
#     in the attacker's own session, so the test can fail.
#     See docs/security.md, "Name resolution".

use strict;
use warnings;

use DelqTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $sink = start_sink();

# Shadows of the built-ins that delq's SQL and C code use.  Each is created
# in public by the attacker and calls the pg_catalog original.
my $plant = <<'SQL';
CREATE TABLE public.shadow_hits (what text, by_role name DEFAULT current_user);
GRANT INSERT ON public.shadow_hits TO PUBLIC;
CREATE FUNCTION public.hit(what text) RETURNS boolean
LANGUAGE sql AS $$ INSERT INTO public.shadow_hits (what) VALUES (what) RETURNING true $$;

CREATE FUNCTION public.count_final(bigint) RETURNS bigint
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('count(*)'); RETURN $1; END $$;
CREATE FUNCTION public.count_step(bigint) RETURNS bigint
LANGUAGE sql AS $$ SELECT $1 OPERATOR(pg_catalog.+) 1 $$;
CREATE AGGREGATE public.count(*) (sfunc = public.count_step, stype = bigint,
                                  initcond = '0', finalfunc = public.count_final);
CREATE FUNCTION public.max_final(timestamptz) RETURNS timestamptz
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('max(timestamptz)'); RETURN $1; END $$;
CREATE AGGREGATE public.max(timestamptz) (sfunc = pg_catalog.timestamptz_larger,
                                          stype = timestamptz, finalfunc = public.max_final);

CREATE FUNCTION public.now() RETURNS timestamptz
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('now()'); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION public.clock_timestamp() RETURNS timestamptz
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('clock_timestamp()'); RETURN pg_catalog.clock_timestamp(); END $$;
CREATE FUNCTION public.lower(text) RETURNS text
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('lower(text)'); RETURN pg_catalog.lower($1); END $$;
CREATE FUNCTION public.length(text) RETURNS integer
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('length(text)'); RETURN pg_catalog.length($1); END $$;
CREATE FUNCTION public.jsonb_typeof(jsonb) RETURNS text
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('jsonb_typeof(jsonb)'); RETURN pg_catalog.jsonb_typeof($1); END $$;
CREATE FUNCTION public.to_jsonb(text) RETURNS jsonb
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('to_jsonb(text)'); RETURN pg_catalog.to_jsonb($1); END $$;
CREATE FUNCTION public.jsonb_build_object(text, text) RETURNS jsonb
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('jsonb_build_object(text, text)'); RETURN pg_catalog.jsonb_build_object($1, $2); END $$;
CREATE FUNCTION public.encode(bytea, text) RETURNS text
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('encode(bytea, text)'); RETURN pg_catalog.encode($1, $2); END $$;
CREATE FUNCTION public.sha256(bytea) RETURNS bytea
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('sha256(bytea)'); RETURN pg_catalog.sha256($1); END $$;
CREATE FUNCTION public.gen_random_uuid() RETURNS uuid
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('gen_random_uuid()'); RETURN pg_catalog.gen_random_uuid(); END $$;
CREATE FUNCTION public.current_setting(text) RETURNS text
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('current_setting(text)'); RETURN pg_catalog.current_setting($1); END $$;

CREATE FUNCTION public.eq_text(text, text) RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('=(text, text)'); RETURN pg_catalog.texteq($1, $2); END $$;
CREATE OPERATOR public.= (leftarg = text, rightarg = text, function = public.eq_text);
CREATE FUNCTION public.eq_uuid(uuid, uuid) RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('=(uuid, uuid)'); RETURN pg_catalog.uuid_eq($1, $2); END $$;
CREATE OPERATOR public.= (leftarg = uuid, rightarg = uuid, function = public.eq_uuid);
CREATE FUNCTION public.eq_int8(bigint, bigint) RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('=(bigint, bigint)'); RETURN pg_catalog.int8eq($1, $2); END $$;
CREATE OPERATOR public.= (leftarg = bigint, rightarg = bigint, function = public.eq_int8);
CREATE FUNCTION public.eq_int4(integer, integer) RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('=(integer, integer)'); RETURN pg_catalog.int4eq($1, $2); END $$;
CREATE OPERATOR public.= (leftarg = integer, rightarg = integer, function = public.eq_int4);
CREATE FUNCTION public.plus_int4(integer, integer) RETURNS integer
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('+(integer, integer)'); RETURN pg_catalog.int4pl($1, $2); END $$;
CREATE OPERATOR public.+ (leftarg = integer, rightarg = integer, function = public.plus_int4);
CREATE FUNCTION public.le_tstz(timestamptz, timestamptz) RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('<=(timestamptz, timestamptz)'); RETURN pg_catalog.timestamptz_le($1, $2); END $$;
CREATE OPERATOR public.<= (leftarg = timestamptz, rightarg = timestamptz, function = public.le_tstz);
CREATE FUNCTION public.lt_tstz(timestamptz, timestamptz) RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('<(timestamptz, timestamptz)'); RETURN pg_catalog.timestamptz_lt($1, $2); END $$;
CREATE OPERATOR public.< (leftarg = timestamptz, rightarg = timestamptz, function = public.lt_tstz);
CREATE FUNCTION public.contains_jsonb(jsonb, jsonb) RETURNS boolean
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('@>(jsonb, jsonb)'); RETURN pg_catalog.jsonb_contains($1, $2); END $$;
CREATE OPERATOR public.@> (leftarg = jsonb, rightarg = jsonb, function = public.contains_jsonb);
CREATE FUNCTION public.concat_text(text, text) RETURNS text
LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hit('||(text, text)'); RETURN pg_catalog.textcat($1, $2); END $$;
CREATE OPERATOR public.|| (leftarg = text, rightarg = text, function = public.concat_text);
SQL

# Temporary views named like every table and view of schema delq, in the
# calling session: a SECURITY DEFINER function that named one without its
# schema would read (or fail to write) the attacker's view.
sub temp_shadows
{
	my ($node, $db) = @_;
	my $names = $node->safe_psql($db,
		"SET search_path = pg_catalog, pg_temp;
		 SELECT string_agg(format('CREATE TEMP VIEW %I AS SELECT public.hit(%L) AS hit;',
		                          c.relname, 'pg_temp.' || c.relname), E'\n' ORDER BY c.relname)
		   FROM pg_class c
		  WHERE c.relnamespace = 'delq'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p', 'f')");
	return $names;
}

# The attacker's role and shadows on $node; the worker (if any) restarts
# afterwards so that it starts with the database's search_path.
sub plant
{
	my ($node) = @_;
	$node->safe_psql('postgres',
		"CREATE ROLE attacker LOGIN;
		 GRANT delq_admin TO attacker;
		 ALTER DATABASE postgres OWNER TO attacker;");
	$node->safe_psql('postgres', $plant, extra_params => [ '-U', 'attacker' ]);
	$node->safe_psql('postgres',
		"ALTER DATABASE postgres SET search_path = public, pg_catalog",
		extra_params => [ '-U', 'attacker' ]);
	return;
}

# As the attacker, in a session with the database's search_path and the
# temporary shadows.
sub as_attacker
{
	my ($node, $sql) = @_;
	return $node->safe_psql('postgres', temp_shadows($node, 'postgres') . "\n" . $sql,
		extra_params => [ '-U', 'attacker' ]);
}

# Our own queries: pinned, so that they do not run the shadows themselves.
sub pinned
{
	my ($node, $sql) = @_;
	return $node->safe_psql('postgres', "SET search_path = pg_catalog, pg_temp;\n$sql");
}

sub hits_by_others
{
	my ($node) = @_;
	return pinned($node,
		"SELECT coalesce(string_agg(DISTINCT what || ' as ' || by_role, ', '), '')
		   FROM public.shadow_hits WHERE by_role <> 'attacker'");
}

# Every SECURITY DEFINER function of the extension, called with NULLs by
# the attacker (errors are expected and caught: what matters is what runs
# before them).
my $walk = <<'SQL';
DO $walk$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT p.oid::regprocedure AS sig,
                    format('SELECT %s(%s)', p.oid::regproc,
                           (SELECT string_agg('NULL::' || format_type(t, NULL), ', ' ORDER BY n)
                              FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY a(t, n))) AS call
               FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'delq'::regnamespace AND p.prosecdef
                AND p.prorettype <> 'trigger'::regtype
                AND pg_catalog.has_function_privilege(p.oid, 'EXECUTE')
    LOOP
        BEGIN
            EXECUTE f.call;
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
    END LOOP;
END
$walk$;
SQL

# --- the worker --------------------------------------------------------------

my $node = delq_node('worker',
	conf => "delq.subject_retention = 0\ndelq.warn_before = '40 days'\n");
plant($node);

# The shadows work: in the attacker's own session (its search_path is the
# database's), they run.
as_attacker($node,
	"SELECT pg_catalog.count(*) FROM pg_class WHERE relname = 'pg_class';
	 SELECT count(*) FROM pg_class WHERE now() <= now() AND 'a'::text = 'a'::text;");
is( pinned($node,
		"SELECT string_agg(DISTINCT what COLLATE \"C\", ', ' ORDER BY what COLLATE \"C\") FROM public.shadow_hits"),
	'<=(timestamptz, timestamptz), =(text, text), count(*), now()',
	'the shadows run in a session that has the database\'s search_path');
pinned($node, 'TRUNCATE public.shadow_hits');

$node->restart;
poll_until($node,
	"SET search_path = pg_catalog, pg_temp; SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'delq worker'",
	'1', 30);
is($node->safe_psql('postgres', 'SHOW search_path'),
	'public, pg_catalog',
	'a new session gets the database\'s search_path (the worker must not use it)');

as_attacker($node,
	"SELECT delq.add_destination('crm', '" . $sink->url('crm', '/hook') . "');
	 SELECT delq.add_route('crm', '{}');
	 SELECT delq.submit('user-' || g || '\@example.com', 'shop', 'asked', '{\"plan\": \"pro\"}', 'ext-' || g)
	   FROM generate_series(1, 4) g;");
ok( poll_until(
		$node,
		"SET search_path = pg_catalog, pg_temp;
		 SELECT count(*) FROM delq.delivery WHERE state = 'confirmed'",
		'4', 60),
	'the worker confirmed 4 deliveries');
is($sink->count('crm'), 4, 'the worker forwarded 4 requests');

as_attacker($node, "SELECT delq.archive();");
ok( poll_until(
		$node,
		"SET search_path = pg_catalog, pg_temp;
		 SELECT count(*) FROM delq.finished WHERE redacted_at IS NOT NULL",
		'4', 30),
	'the worker redacted the archived requests');
ok(poll_until($node,
	"SET search_path = pg_catalog, pg_temp;
	 SELECT count(*) > 0 FROM delq.ledger_checkpoint WHERE actor <> 'attacker'",
	't', 30), 'the worker took a ledger checkpoint');

# a request the destination refuses for a while (8 answers 503, some
# seconds of backoff): the worker retries it and raises a deadline alert
$sink->control('crm', { status => 503, times => 8 });
as_attacker($node,
	"SELECT delq.submit('late\@example.com', 'shop', NULL, '{}', 'late-1', now() + interval '2 days');");
ok( poll_until(
		$node,
		"SET search_path = pg_catalog, pg_temp;
		 SELECT count(*) > 0 FROM delq.event WHERE kind = 'at_risk'",
		't', 30),
	'the worker raised a deadline alert');
ok( poll_until(
		$node,
		"SET search_path = pg_catalog, pg_temp;
		 SELECT count(*) FROM delq.delivery d JOIN delq.pending p ON p.id = d.request_id
		  WHERE p.external_id = 'late-1' AND d.state = 'confirmed' AND d.attempts > 1",
		'1', 60),
	'the worker retried the 503s until the destination confirmed');

is(hits_by_others($node), '', 'no shadow ran in the worker');

# every SECURITY DEFINER function, called by the attacker
as_attacker($node, $walk);
my $id = pinned($node, "SELECT id FROM delq.finished ORDER BY id LIMIT 1");
as_attacker($node,
	"SELECT delq.receipt('$id') IS NOT NULL;
	 SELECT delq.verify_receipt(delq.receipt('$id'));
	 SELECT delq.was_erased('user-1\@example.com');
	 SELECT delq.report(now() - interval '1 day', now() + interval '1 day') IS NOT NULL;
	 SELECT delq.verify_ledger() IS NOT NULL;
	 SELECT delq.ledger_checkpoint('0');
	 SELECT delq.check_deadlines();
	 SELECT delq.submit('held\@example.com', 'shop', NULL, '{}', 'held-1');
	 SELECT delq.alter_destination('crm', enabled => false);
	 SELECT delq.alter_destination('crm', enabled => true);");
is(hits_by_others($node), '', 'no shadow ran in any SECURITY DEFINER function');

# --- delq.dispatch(), without the worker -----------------------------------

my $plain = delq_node('plain', preload => 0);
plant($plain);
as_attacker($plain,
	"SELECT delq.add_destination('erp', '" . $sink->url('erp', '/hook') . "');
	 SELECT delq.add_route('erp', '{}');
	 SELECT delq.submit('p-' || g || '\@example.com', 'shop') FROM generate_series(1, 3) g;");
is(as_attacker($plain, 'SELECT delq.dispatch();'), '3', 'dispatch() forwarded 3 requests');
is($sink->count('erp'), 3, 'the sink got them');
as_attacker($plain,
	"SELECT delq.submit('q-' || g || '\@example.com', 'shop') FROM generate_series(1, 2) g;
	 CALL delq.dispatch_pass();");
is($sink->count('erp'), 5, 'dispatch_pass() forwarded 2 more');
as_attacker($plain, 'SELECT delq.archive(); SELECT delq.redact(\'0\');');
as_attacker($plain, $walk);
is(hits_by_others($plain), '',
	'no shadow ran in dispatch(), dispatch_pass() or another SECURITY DEFINER function');

done_testing();
