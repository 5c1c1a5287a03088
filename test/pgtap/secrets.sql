-- secrets.sql: a destination's signing secret and header values (API
-- tokens) are readable by delq_admin only.  delq_operator reads
-- delq.destinations, which shows header names and whether a destination
-- signs, and delq.event, which never holds a secret or header value; error
-- messages do not echo them either.

\set ON_ERROR_STOP 1
SET client_min_messages = warning;

BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS delq;

SELECT plan(28);

CREATE ROLE alice LOGIN IN ROLE delq_submitter;
CREATE ROLE bob LOGIN IN ROLE delq_operator;
CREATE ROLE carol LOGIN IN ROLE delq_admin;

-- Every secret value used below matches this pattern.
CREATE TEMP TABLE secret_pattern (re text NOT NULL);
INSERT INTO secret_pattern VALUES
    ('TOPSECRET|whsec_|p2GvH\+EFQYum2Dvi4ffgW92gAdVBUeUZbS|ud7\+5RzEcatXoBUkWUuYNnbQ5pJ5vI|Ajcj3xS42hgOmWNedNy|client-key\.pem');
GRANT SELECT ON secret_pattern TO PUBLIC;

-- The message, detail and hint of the error q raises (NULL if none).
CREATE FUNCTION pg_temp.error_text(q text)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    m text;
    d text;
    h text;
BEGIN
    EXECUTE q;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
    RETURN concat_ws(' | ', m, d, h);
END
$$;

-- ----------------------------------------------------------------------
-- carol sets up destinations with secrets, changes them and drops one.

SET SESSION AUTHORIZATION carol;
SELECT lives_ok($$SELECT delq.add_destination('vault', 'https://vault.example.com/erase',
                      headers => '{"Authorization": "Bearer TOPSECRET-1", "X-Api-Key": "TOPSECRET-2"}',
                      secret => 'whsec_p2GvH+EFQYum2Dvi4ffgW92gAdVBUeUZbS+XLTpD2fE=',
                      client_cert => '/etc/delq/client.pem',
                      client_key => '/etc/delq/client-key.pem')$$,
                'carol adds a destination with a secret, headers and a client key');
SELECT lives_ok($$SELECT delq.add_route('vault')$$, 'carol routes everything to it');
SELECT lives_ok($$SELECT delq.alter_destination('vault',
                      headers => '{"Authorization": "Bearer TOPSECRET-3"}',
                      secret => 'whsec_ud7+5RzEcatXoBUkWUuYNnbQ5pJ5vIQU1oUIZIihuGs=')$$,
                'carol rotates the secret and the token');
SELECT lives_ok($$SELECT delq.add_destination('old', 'https://old.example.com/',
                      headers => '{"Authorization": "Bearer TOPSECRET-4"}',
                      secret => 'whsec_Ajcj3xS42hgOmWNedNy/OgFVIN1XNQM6dFVdAg8Q828=')$$,
                'carol adds another signed destination');
SELECT lives_ok($$SELECT delq.drop_destination('old')$$, 'and drops it');
SELECT is((SELECT secret FROM delq.destination WHERE name = 'vault'),
          'whsec_ud7+5RzEcatXoBUkWUuYNnbQ5pJ5vIQU1oUIZIihuGs=',
          'carol reads the current secret');
SELECT is((SELECT headers ->> 'Authorization' FROM delq.destination WHERE name = 'vault'),
          'Bearer TOPSECRET-3', 'carol reads the current header value');

-- Invalid values are refused without being repeated in the error.
SELECT unalike(pg_temp.error_text($$SELECT delq.add_destination('bad', 'https://bad.example.com/',
                                     secret => 'whsec_TOPSECRET')$$),
              '%TOPSECRET%', 'an invalid secret is not echoed in the error');
SELECT unalike(pg_temp.error_text(format('SELECT delq.add_destination(%L, %L, headers => %L)',
                                        'bad', 'https://bad.example.com/',
                                        jsonb_build_object('Authorization', E'Bearer TOPSECRET\n'))),
              '%TOPSECRET%', 'an invalid header value is not echoed in the error');
SELECT unalike(pg_temp.error_text($$SELECT delq.alter_destination('vault',
                                     secret => 'whsec_TOPSECRET')$$),
              '%TOPSECRET%', 'an invalid new secret is not echoed in the error');
RESET SESSION AUTHORIZATION;

-- A submitter sees no destination at all.
SET SESSION AUTHORIZATION alice;
SELECT lives_ok($$SELECT delq.submit('jane.doe@example.com', 'shop')$$, 'alice submits a request');
SELECT throws_ok($$SELECT * FROM delq.destination$$, '42501', NULL,
                 'alice cannot read delq.destination');
SELECT throws_ok($$SELECT * FROM delq.destinations$$, '42501', NULL,
                 'alice cannot read delq.destinations');
RESET SESSION AUTHORIZATION;

-- ----------------------------------------------------------------------
-- bob, delq_operator.

SET SESSION AUTHORIZATION bob;
SELECT throws_ok($$SELECT secret FROM delq.destination$$, '42501', NULL,
                 'bob cannot read the secret column');
SELECT throws_ok($$SELECT headers FROM delq.destination$$, '42501', NULL,
                 'bob cannot read the headers column');
SELECT throws_ok($$SELECT count(*) FROM delq.destination$$, '42501', NULL,
                 'bob cannot even count delq.destination');
SELECT is((SELECT header_names FROM delq.destinations WHERE name = 'vault'),
          ARRAY['Authorization'], 'bob sees header names in delq.destinations');
SELECT is((SELECT signed FROM delq.destinations WHERE name = 'vault'), true,
          'bob sees that the destination signs');
SELECT is((SELECT count(*)::integer FROM delq.destinations d, secret_pattern p
            WHERE d::text ~ p.re), 0,
          'no value in delq.destinations is a secret, a header value or a key path');
SELECT is((SELECT count(*)::integer FROM delq.event e, secret_pattern p
            WHERE e::text ~ p.re), 0,
          'no event holds a secret, a header value or a key path');
SELECT ok((SELECT count(*) FROM delq.event WHERE destination IN ('vault', 'old')) >= 5,
          'bob does see the destinations'' events');
SELECT is((SELECT count(*)::integer FROM delq.delivery dl, secret_pattern p
            WHERE dl::text ~ p.re), 0,
          'no delivery holds a secret');
RESET SESSION AUTHORIZATION;

-- The catalog view of the same: no column of delq.destinations, and no
-- column that bob may read anywhere, carries the secrets.
SELECT is((SELECT array_agg(attname::text ORDER BY attname) FROM pg_attribute
            WHERE attrelid = 'delq.destinations'::regclass AND attnum > 0
              AND attname IN ('secret', 'headers', 'client_key')), NULL,
          'delq.destinations has no secret, headers or client_key column');
SELECT is((SELECT array_agg(format('%s.%s', c.relname, a.attname) ORDER BY 1)
             FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
            WHERE c.relnamespace = 'delq'::regnamespace AND a.attnum > 0
              AND a.attname IN ('secret', 'headers', 'client_key')
              AND has_column_privilege('delq_operator', c.oid, a.attnum, 'SELECT')), NULL,
          'delq_operator may read no column named secret, headers or client_key');
SELECT ok(NOT has_column_privilege('delq_operator', 'delq.destination', 'secret', 'SELECT'),
          'delq_operator lacks SELECT on delq.destination.secret');
SELECT ok(has_column_privilege('delq_admin', 'delq.destination', 'secret', 'SELECT'),
          'delq_admin has SELECT on delq.destination.secret');

-- Removing the secret is visible as "not signed".
SET SESSION AUTHORIZATION carol;
SELECT lives_ok($$SELECT delq.alter_destination('vault', secret => '')$$,
                'carol removes the secret');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION bob;
SELECT is((SELECT signed FROM delq.destinations WHERE name = 'vault'), false,
          'bob sees that the destination no longer signs');
RESET SESSION AUTHORIZATION;

SELECT * FROM finish();
ROLLBACK;
