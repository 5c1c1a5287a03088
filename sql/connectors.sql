--
-- connectors: the shipped connector catalogue (connectors/*.json, loaded
-- into delq.connectors at install): every connector is there with its
-- documentation and a base_url setting, every template passes validation
-- through add_connector, settings are checked, and credentials stay with
-- delq_admin.  End to end against the vendors' doubles: test/t/086_connectors.pl.
--
\set SHOW_CONTEXT never
\set VERBOSITY default
\i sql/include/setup.sql

SELECT name, cardinality(documentation) AS docs,
       (SELECT string_agg(k || CASE WHEN (settings -> k ->> 'required')::boolean THEN '*' ELSE '' END
                            || CASE WHEN (settings -> k ->> 'secret')::boolean THEN '(secret)' ELSE '' END,
                          ', ' ORDER BY k)
          FROM jsonb_object_keys(settings) k) AS settings,
       settings -> 'base_url' ->> 'default' AS default_base_url
  FROM delq.connectors ORDER BY name;

-- every documentation link is https
SELECT count(*) AS non_https_docs FROM delq.connectors, unnest(documentation) d WHERE d NOT LIKE 'https://%';

-- Each connector makes a valid templated destination (add_connector validates
-- the template as add_destination does).
SELECT delq.add_connector('t85_stripe', 'stripe', '{"api_key": "sk_test_t85"}');
SELECT delq.add_connector('t85_auth0', 'auth0', '{"base_url": "https://t85.eu.auth0.com/",
       "client_id": "cid", "client_secret": "auth0-t85-secret"}');
SELECT delq.add_connector('t85_mailchimp', 'mailchimp', '{"base_url": "https://us6.api.mailchimp.com/3.0",
       "api_key": "0123-us6", "list_id": "a1b2c3"}');
SELECT delq.add_connector('t85_segment', 'segment', '{"token": "sgp_t85"}');
SELECT delq.add_connector('t85_hubspot', 'hubspot', '{"token": "pat-t85"}');
SELECT delq.add_connector('t85_zendesk', 'zendesk', '{"base_url": "https://t85.zendesk.com",
       "email": "agent@example.com", "api_token": "zd-t85"}');
SELECT delq.add_connector('t85_sendgrid', 'sendgrid', '{"api_key": "SG.t85"}');
SELECT delq.add_connector('t85_klaviyo', 'klaviyo', '{"api_key": "pk_t85"}');
SELECT name, url, (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(credentials) k) AS credential_keys
  FROM delq.destination WHERE name LIKE 't85\_%' ORDER BY name;
-- defaults filled in
SELECT credentials ->> 'regulation_type' AS regulation_type FROM delq.destination WHERE name = 't85_segment';
SELECT credentials ->> 'revision' AS revision FROM delq.destination WHERE name = 't85_klaviyo';
-- a default from the base URL (auth0's audience); one given wins
SELECT credentials ->> 'audience' AS audience FROM delq.destination WHERE name = 't85_auth0';
SELECT delq.add_connector('t85_auth0_custom', 'auth0', '{"base_url": "https://login.t85.example",
       "audience": "https://t85.eu.auth0.com/api/v2/", "client_id": "cid", "client_secret": "s"}');
SELECT credentials ->> 'audience' AS audience FROM delq.destination WHERE name = 't85_auth0_custom';
-- a regional base_url replaces the default
SELECT delq.add_connector('t85_segment_eu', 'segment', '{"token": "sgp_t85", "base_url": "https://eu1.api.segmentapis.com"}');
SELECT url FROM delq.destination WHERE name = 't85_segment_eu';

-- Errors, nothing written.
SELECT regress.snapshot();
SELECT regress.bad($$SELECT delq.add_connector('t85_x', 'stripe', '{}')$$);
SELECT regress.bad($$SELECT delq.add_connector('t85_x', 'stripe', '{"api_key": "k", "apikey": "k"}')$$);
SELECT regress.bad($$SELECT delq.add_connector('t85_x', 'stripe', '{"api_key": 42}')$$);
SELECT regress.bad($$SELECT delq.add_connector('t85_x', 'mailchimp', '{"api_key": "k", "list_id": "l"}')$$);
SELECT regress.bad($$SELECT delq.add_connector('t85_x', 'auth0', '{"client_id": "c", "client_secret": "s"}')$$);
SELECT regress.bad($$SELECT delq.add_connector('t85_x', 'nosuchvendor', '{}')$$);
SELECT regress.bad($$SELECT delq.add_connector('t85_x', 'stripe', '{"api_key": "k", "base_url": "ftp://api.stripe.com"}')$$);
SELECT regress.bad($$SELECT delq.add_connector('t85_stripe', 'stripe', '{"api_key": "k"}')$$);

-- delq_operator reads the catalogue, not the credentials.
SET ROLE delq_operator;
SELECT count(*) AS connectors FROM delq.connectors;
SELECT credentials FROM delq.destination WHERE name = 't85_stripe';
RESET ROLE;
