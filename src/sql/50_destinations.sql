-- Destinations (the systems that hold personal data) and routes (which
-- requests go to which destination).  Only delq_admin manages them.

CREATE OR REPLACE FUNCTION delq._destination(name text, lock boolean)
RETURNS delq.destination
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d delq.destination;
BEGIN
    PERFORM delq._not_null('destination', name);
    IF lock THEN
        SELECT * INTO d FROM delq.destination t WHERE t.name = _destination.name FOR UPDATE;
    ELSE
        SELECT * INTO d FROM delq.destination t WHERE t.name = _destination.name;
    END IF;
    IF d.name IS NULL THEN
        RAISE EXCEPTION 'destination % does not exist', quote_literal(name)
            USING ERRCODE = 'undefined_object',
                  HINT = 'See delq.destinations for the names; add one with delq.add_destination().';
    END IF;
    RETURN d;
END
$$;

-- Apply options to a destination row and check the result; shared by
-- add_destination (on a fresh row) and alter_destination (on the stored
-- one), and by the other kinds' add functions.  Only HTTP kinds have a url;
-- a request template (docs/connectors.md) makes a webhook destination
-- 'http', and its removal makes it a webhook again.  NULL keeps a value;
-- '' (secret, TLS paths), 0 (max_attempts), '0' (retry_base, retry_max),
-- 'null' (request) and '{}' (credentials) return to the default.
CREATE OR REPLACE FUNCTION delq._merge_destination(d delq.destination, url text, headers jsonb,
                                        secret text, timeout interval,
                                        connect_timeout interval, max_attempts integer,
                                        concurrency integer, confirm text,
                                        retry_base interval, retry_max interval,
                                        enabled boolean, ca_file text, client_cert text,
                                        client_key text, request jsonb DEFAULT NULL,
                                        credentials jsonb DEFAULT NULL)
RETURNS delq.destination
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF d.kind IN ('sql', 'pull') THEN
        IF url IS NOT NULL THEN
            PERFORM delq._invalid('url', format('is not used by a %s destination', d.kind),
                                  'Only webhook and templated HTTP destinations have a url; pass NULL.');
        END IF;
    ELSE
        d.url := delq._check_url(coalesce(url, d.url));
    END IF;
    d.headers := delq._check_headers(coalesce(headers, d.headers));
    d.secret := delq._check_secret(CASE WHEN secret = '' THEN NULL ELSE coalesce(secret, d.secret) END);
    IF timeout IS NOT NULL THEN
        d.timeout_ms := delq._check_duration('timeout', timeout, '100 milliseconds', '10 minutes');
    END IF;
    PERFORM delq._not_null('timeout', d.timeout_ms);
    IF connect_timeout IS NOT NULL THEN
        d.connect_timeout_ms := delq._check_duration('connect_timeout', connect_timeout,
                                                     '100 milliseconds', '5 minutes');
    END IF;
    PERFORM delq._not_null('connect_timeout', d.connect_timeout_ms);
    d.max_attempts := delq._check_range('max_attempts',
        CASE WHEN max_attempts = 0 THEN NULL ELSE coalesce(max_attempts, d.max_attempts) END, 1, 1000);
    d.concurrency := delq._check_range('concurrency',
        delq._not_null('concurrency', coalesce(concurrency, d.concurrency)), 1, 10000);
    d.confirm := delq._not_null('confirm', coalesce(confirm, d.confirm));
    IF d.confirm NOT IN ('response', 'callback') THEN
        PERFORM delq._invalid('confirm', format('%s is not a confirm mode', quote_literal(d.confirm)),
                              'Use ''response'' (a 2xx answer confirms) or ''callback'' (2xx accepts; delq.confirm() confirms).');
    END IF;
    IF retry_base = interval '0' THEN
        d.retry_base_ms := NULL;
    ELSIF retry_base IS NOT NULL THEN
        d.retry_base_ms := delq._check_duration('retry_base', retry_base, '1 millisecond', '1 day');
    END IF;
    IF retry_max = interval '0' THEN
        d.retry_max_ms := NULL;
    ELSIF retry_max IS NOT NULL THEN
        d.retry_max_ms := delq._check_duration('retry_max', retry_max, '1 second', '30 days');
    END IF;
    IF d.retry_base_ms > d.retry_max_ms THEN
        PERFORM delq._invalid('retry_base', 'is longer than retry_max', 'retry_base must not exceed retry_max.');
    END IF;
    d.enabled := delq._not_null('enabled', coalesce(enabled, d.enabled));
    d.ca_file := delq._check_path('ca_file', CASE WHEN ca_file = '' THEN NULL ELSE coalesce(ca_file, d.ca_file) END);
    d.client_cert := delq._check_path('client_cert',
        CASE WHEN client_cert = '' THEN NULL ELSE coalesce(client_cert, d.client_cert) END);
    d.client_key := delq._check_path('client_key',
        CASE WHEN client_key = '' THEN NULL ELSE coalesce(client_key, d.client_key) END);
    IF (d.client_cert IS NULL) <> (d.client_key IS NULL) THEN
        PERFORM delq._invalid('client_cert', 'and client_key must be given together',
                              'Pass both the client certificate and its key, or neither.');
    END IF;
    d.request := CASE WHEN request = 'null'::jsonb THEN NULL ELSE coalesce(request, d.request) END;
    d.credentials := delq._check_credentials(
        CASE WHEN credentials = '{}'::jsonb THEN NULL ELSE coalesce(credentials, d.credentials) END);
    IF d.kind IN ('sql', 'pull') AND d.request IS NOT NULL THEN
        PERFORM delq._invalid('request', format('is not used by a %s destination', d.kind),
                              'Only HTTP destinations have a request template; pass NULL.');
    ELSIF d.kind IN ('webhook', 'http') THEN
        d.kind := CASE WHEN d.request IS NULL THEN 'webhook' ELSE 'http' END;
    END IF;
    IF d.request IS NULL AND d.credentials IS NOT NULL THEN
        PERFORM delq._invalid('credentials', 'are for templated destinations only',
                              'Pass request => a template (docs/connectors.md), or put a webhook''s credentials in headers.');
    END IF;
    IF d.request IS NOT NULL THEN
        IF d.secret IS NOT NULL THEN
            PERFORM delq._invalid('secret', 'signs webhooks; a templated destination cannot have one',
                                  'Leave secret NULL (alter_destination: secret => '''') and put the system''s keys in credentials.');
        END IF;
        IF d.confirm <> 'response' THEN
            PERFORM delq._invalid('confirm', 'must be ''response'' for a templated destination',
                                  'The system''s own answers (and polls) decide when it is done.');
        END IF;
        PERFORM delq._check_request(d.request, d.credentials, d.url);
    END IF;
    d.updated_at := now();
    RETURN d;
END
$$;

-- Store a new destination of any kind, checked by the caller, and log
-- 'destination_added' with detail (never a secret).  A name taken, also
-- by a concurrent add, is a clear 23505.
CREATE OR REPLACE FUNCTION delq._insert_destination(d delq.destination, detail jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM delq.destination t WHERE t.name = d.name) THEN
        RAISE EXCEPTION 'destination % already exists', quote_literal(d.name)
            USING ERRCODE = 'unique_violation',
                  HINT = 'Change it with delq.alter_destination(), or choose another name.';
    END IF;
    INSERT INTO delq.destination SELECT d.*;
    PERFORM delq._log('destination_added', NULL, d.name,
                      jsonb_build_object('kind', d.kind) || detail);
EXCEPTION
    WHEN unique_violation THEN
        -- a concurrent add of the same name won
        RAISE EXCEPTION 'destination % already exists', quote_literal(d.name)
            USING ERRCODE = 'unique_violation',
                  HINT = 'Change it with delq.alter_destination(), or choose another name.';
END
$$;

CREATE OR REPLACE FUNCTION delq.add_destination(name text, url text,
                                     headers jsonb DEFAULT '{}',
                                     secret text DEFAULT NULL,
                                     timeout interval DEFAULT '30 seconds',
                                     connect_timeout interval DEFAULT '10 seconds',
                                     max_attempts integer DEFAULT NULL,
                                     concurrency integer DEFAULT 16,
                                     confirm text DEFAULT 'response',
                                     retry_base interval DEFAULT NULL,
                                     retry_max interval DEFAULT NULL,
                                     enabled boolean DEFAULT true,
                                     ca_file text DEFAULT NULL,
                                     client_cert text DEFAULT NULL,
                                     client_key text DEFAULT NULL,
                                     request jsonb DEFAULT NULL,
                                     credentials jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- a failing call must not write its statement, with the secret and the
-- header values, into the server log (docs/security.md, "Secrets")
SET log_min_error_statement = panic
AS $$
DECLARE
    d delq.destination;
BEGIN
    d.name := delq._check_name('name', name);
    d.kind := 'webhook';
    d.created_at := now();
    -- What alter_destination reads as "back to the default" ('' and 0) is
    -- a mistake here (an empty secret would silently send unsigned).
    PERFORM delq._not_null('headers', headers);
    PERFORM delq._check_secret(secret);
    PERFORM delq._check_range('max_attempts', max_attempts, 1, 1000);
    IF retry_base = interval '0' THEN
        PERFORM delq._check_duration('retry_base', retry_base, '1 millisecond', '1 day');
    END IF;
    IF retry_max = interval '0' THEN
        PERFORM delq._check_duration('retry_max', retry_max, '1 second', '30 days');
    END IF;
    PERFORM delq._check_path('ca_file', ca_file), delq._check_path('client_cert', client_cert),
            delq._check_path('client_key', client_key);
    d := delq._merge_destination(d, url, headers, secret, timeout, connect_timeout,
                                 max_attempts, concurrency, confirm, retry_base, retry_max,
                                 enabled, ca_file, client_cert, client_key, request, credentials);

    PERFORM delq._insert_destination(d, jsonb_build_object('url', d.url, 'confirm', d.confirm,
                                                           'enabled', d.enabled,
                                                           'signed', d.secret IS NOT NULL));
END
$$;

-- Change a destination: NULL leaves a setting as it is; see
-- _merge_destination for the values that return to a default.
CREATE OR REPLACE FUNCTION delq.alter_destination(name text,
                                       url text DEFAULT NULL,
                                       headers jsonb DEFAULT NULL,
                                       secret text DEFAULT NULL,
                                       timeout interval DEFAULT NULL,
                                       connect_timeout interval DEFAULT NULL,
                                       max_attempts integer DEFAULT NULL,
                                       concurrency integer DEFAULT NULL,
                                       confirm text DEFAULT NULL,
                                       retry_base interval DEFAULT NULL,
                                       retry_max interval DEFAULT NULL,
                                       enabled boolean DEFAULT NULL,
                                       ca_file text DEFAULT NULL,
                                       client_cert text DEFAULT NULL,
                                       client_key text DEFAULT NULL,
                                       request jsonb DEFAULT NULL,
                                       credentials jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
AS $$
DECLARE
    old delq.destination := delq._destination(name, true);
    d delq.destination;
    changed text[];
    fixes text[];
BEGIN
    d := delq._merge_destination(old, url, headers, secret, timeout, connect_timeout,
                                 max_attempts, concurrency, confirm, retry_base, retry_max,
                                 enabled, ca_file, client_cert, client_key, request, credentials);

    -- names of changed settings only: values may be secrets
    SELECT array_agg(n.key ORDER BY n.key) INTO changed
      FROM jsonb_each(to_jsonb(d)) n JOIN jsonb_each(to_jsonb(old)) o USING (key)
     WHERE n.value IS DISTINCT FROM o.value AND n.key <> 'updated_at';

    -- Secret rotation (docs/destinations.md): the previous secret signs too,
    -- for delq.secret_overlap, so receivers can switch without a gap.
    IF 'secret' = ANY (changed) THEN
        IF d.secret IS NOT NULL AND old.secret IS NOT NULL THEN
            d.previous_secret := old.secret;
            d.previous_secret_until := now() + delq._setting_interval('delq.secret_overlap');
        ELSE
            d.previous_secret := NULL;
            d.previous_secret_until := NULL;
        END IF;
    END IF;

    UPDATE delq.destination t SET
        url = d.url, headers = d.headers, secret = d.secret, timeout_ms = d.timeout_ms,
        connect_timeout_ms = d.connect_timeout_ms, max_attempts = d.max_attempts,
        concurrency = d.concurrency, confirm = d.confirm, retry_base_ms = d.retry_base_ms,
        retry_max_ms = d.retry_max_ms, enabled = d.enabled, ca_file = d.ca_file,
        client_cert = d.client_cert, client_key = d.client_key, kind = d.kind,
        request = d.request, credentials = d.credentials, updated_at = d.updated_at,
        previous_secret = d.previous_secret, previous_secret_until = d.previous_secret_until
     WHERE t.name = d.name;
    IF changed && ARRAY['url', 'request', 'credentials'] THEN
        -- a token of the old client or template goes
        DELETE FROM delq.oauth_token o WHERE o.destination = d.name;
    END IF;
    -- What an operator changes to fix a destination, and enabling it, is
    -- tried at once: an open breaker lets a probe through and the queue is
    -- due now (75_breaker.sql).  Before this function's own event: one lock
    -- order with the worker.
    fixes := ARRAY(SELECT c FROM unnest(changed) c
                    WHERE c IN ('url', 'headers', 'secret', 'ca_file', 'client_cert', 'client_key',
                                'request', 'credentials')
                    ORDER BY c);
    IF d.enabled AND (cardinality(fixes) > 0 OR enabled) THEN
        PERFORM delq._breaker_reset(d.name,
                                    CASE WHEN cardinality(fixes) > 0
                                         THEN array_to_string(fixes, ', ') || ' changed'
                                         ELSE 'enabled' END,
                                    false, true);
    END IF;
    PERFORM delq._log('destination_altered', NULL, d.name,
                      jsonb_strip_nulls(jsonb_build_object(
                          'changed', coalesce(changed, '{}'),
                          'previous_secret_signs_s',
                          CASE WHEN 'secret' = ANY (changed) AND d.previous_secret IS NOT NULL
                               THEN round(extract(epoch FROM d.previous_secret_until - now())) END)));
END
$$;

-- Drop a destination and its routes.  Refused while it has open
-- deliveries, unless cancel_deliveries is true.
CREATE OR REPLACE FUNCTION delq.drop_destination(name text, cancel_deliveries boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d delq.destination := delq._destination(name, true);
    open_count bigint;
    touched uuid[];
BEGIN
    PERFORM delq._not_null('cancel_deliveries', cancel_deliveries);
    SELECT count(*) INTO open_count FROM delq.delivery dl
     WHERE dl.destination = d.name AND dl.state IN ('queued', 'sending', 'awaiting_confirmation', 'failed');
    IF open_count > 0 AND NOT cancel_deliveries THEN
        RAISE EXCEPTION 'destination % has % open deliveries', quote_literal(d.name), open_count
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Pause it with delq.alter_destination(name, enabled => false), or pass cancel_deliveries => true to cancel them.';
    END IF;
    IF open_count > 0 THEN
        -- lock order: requests, then deliveries, as everywhere else
        PERFORM 1 FROM delq.pending p
         WHERE p.id IN (SELECT dl.request_id FROM delq.delivery dl
                         WHERE dl.destination = d.name
                           AND dl.state IN ('queued', 'sending', 'awaiting_confirmation', 'failed'))
         ORDER BY p.id
           FOR UPDATE OF p;
        -- a delivery in flight may still arrive; its answer is then ignored
        WITH cancelled AS (
            UPDATE delq.delivery dl SET state = 'cancelled', lease_until = NULL
             WHERE dl.destination = d.name
               AND dl.state IN ('queued', 'sending', 'awaiting_confirmation', 'failed')
            RETURNING dl.request_id
        ), logged AS (
            INSERT INTO delq.event (kind, request_id, destination, detail)
            SELECT 'cancelled', c.request_id, d.name, '{"because": "destination dropped"}'
              FROM cancelled c
             ORDER BY c.request_id
            RETURNING request_id
        )
        SELECT array_agg(request_id) INTO touched FROM logged;
        PERFORM delq._refresh_status(touched);
    END IF;
    DELETE FROM delq.destination t WHERE t.name = d.name;
    IF d.kind = 'pull' THEN
        PERFORM delq._revoke_consumer(d.consumer);  -- 52_pull.sql
    END IF;
    PERFORM delq._log('destination_dropped', NULL, d.name,
                      jsonb_build_object('cancelled_deliveries', open_count));
END
$$;

CREATE OR REPLACE FUNCTION delq.add_route(destination text, match jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d delq.destination := delq._destination(destination, true);
    new_id bigint;
BEGIN
    PERFORM delq._check_object('match', match, 16384);
    IF EXISTS (SELECT 1 FROM delq.route r WHERE r.destination = d.name AND r.match = add_route.match) THEN
        RAISE EXCEPTION 'destination % already has a route matching %', quote_literal(d.name), match
            USING ERRCODE = 'unique_violation',
                  HINT = 'See delq.route; a route is needed only once.';
    END IF;
    INSERT INTO delq.route (destination, match) VALUES (d.name, add_route.match)
    RETURNING id INTO new_id;
    PERFORM delq._log('route_added', NULL, d.name,
                      jsonb_build_object('route_id', new_id, 'match', match));
    RETURN new_id;
END
$$;

CREATE OR REPLACE FUNCTION delq.drop_route(id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r delq.route;
BEGIN
    PERFORM delq._not_null('id', id);
    DELETE FROM delq.route rt WHERE rt.id = drop_route.id RETURNING * INTO r;
    IF r.id IS NULL THEN
        RAISE EXCEPTION 'route % does not exist', id
            USING ERRCODE = 'undefined_object',
                  HINT = 'See delq.route for the ids.';
    END IF;
    PERFORM delq._log('route_dropped', NULL, r.destination,
                      jsonb_build_object('route_id', r.id, 'match', r.match));
END
$$;
