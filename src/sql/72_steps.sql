-- Templated HTTP destinations at send and record time (docs/connectors.md):
-- which step a delivery is at, the request that step sends, and what its
-- answer means.  _claim (70_forwarding.sql) asks _step_request for the
-- request of each claimed templated delivery; the C code sends it and
-- hands the answer to _record_step, which moves the delivery on to its
-- next step or to a final outcome through _record.

-- Where a templated delivery is.  Changed in the transaction that records
-- each answer, so a crash repeats at most the call that was in flight.
-- Items may identify the person at the destination: only the owner reads
-- this table, and the row goes when the delivery is done.
CREATE TABLE IF NOT EXISTS delq.delivery_step (
    delivery_id bigint PRIMARY KEY REFERENCES delq.delivery (id) ON DELETE CASCADE,
    phase text NOT NULL CHECK (phase IN ('lookup', 'erase', 'poll')),
    -- what the last claim sent: token, lookup, erase or poll
    in_flight text,
    -- lookup: pages read, the next page's cursor or link, the items so far
    page integer NOT NULL DEFAULT 0,
    next_page jsonb,
    items jsonb,
    -- erase and poll: the item (0-based) and what became of the items before it
    item integer NOT NULL DEFAULT 0,
    erased integer NOT NULL DEFAULT 0,
    not_held integer NOT NULL DEFAULT 0,
    job_id jsonb,
    poll_started_at timestamptz,
    -- a 401 already led to a new OAuth2 token for this call
    auth_retried boolean NOT NULL DEFAULT false
);

SELECT pg_catalog.pg_extension_config_dump('delq.delivery_step', '');

-- OAuth2 access tokens per destination, until shortly before they expire.
-- Not dumped, readable by the owner only: a token is fetched again.
CREATE TABLE IF NOT EXISTS delq.oauth_token (
    destination text PRIMARY KEY REFERENCES delq.destination (name) ON DELETE CASCADE,
    access_token text NOT NULL,
    expires_at timestamptz NOT NULL
);

-- The values placeholders render from.
CREATE OR REPLACE FUNCTION delq._step_context(p delq.pending, webhook_id text, credentials jsonb,
                                              item jsonb, job_id jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'subject', p.subject, 'request_id', p.id, 'webhook_id', webhook_id,
        'source', p.source, 'reason', p.reason, 'external_id', p.external_id,
        'due_at', to_char(p.due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'submitted_at', to_char(p.submitted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'attributes', p.attributes, 'credentials', coalesce(credentials, '{}'),
        'item', item, 'job_id', job_id)
$$;

-- Rendered headers (an object of values) of the auth document, or for
-- OAuth2 the bearer token.
CREATE OR REPLACE FUNCTION delq._step_auth(auth jsonb, token text, ctx jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF auth IS NULL THEN
        RETURN '{}'::jsonb;
    ELSIF auth ? 'bearer' THEN
        RETURN jsonb_build_object('Authorization',
                                  'Bearer ' || delq._tpl_text(auth ->> 'bearer', ctx, 'auth.bearer', 'header'));
    ELSIF auth ? 'basic' THEN
        RETURN jsonb_build_object('Authorization', 'Basic ' || delq._tpl_filter(
            delq._tpl_text(auth -> 'basic' ->> 'username', ctx, 'auth.basic.username', 'text') || ':'
            || delq._tpl_text(coalesce(auth -> 'basic' ->> 'password', ''), ctx, 'auth.basic.password', 'text'),
            'base64'));
    ELSIF auth ? 'headers' THEN
        RETURN delq._tpl_header_values(auth -> 'headers', ctx, 'auth.headers');
    ELSE
        RETURN jsonb_build_object('Authorization', 'Bearer ' || token);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION delq._tpl_header_values(j jsonb, ctx jsonb, at text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(jsonb_object_agg(e.key, delq._tpl_text(e.value #>> '{}', ctx, at || '.' || e.key, 'header')), '{}')
      FROM jsonb_each(coalesce(j, '{}')) e
$$;

-- The token request of OAuth2 client credentials (RFC 6749 4.4).
CREATE OR REPLACE FUNCTION delq._step_token_request(o jsonb, base_url text, ctx jsonb,
                                                    OUT method text, OUT url text,
                                                    OUT headers jsonb, OUT body text)
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    form jsonb := jsonb_build_object('grant_type', 'client_credentials');
BEGIN
    method := 'POST';
    url := delq._tpl_url(o ->> 'token_url', NULL, base_url, ctx, 'auth.oauth2.token_url');
    headers := jsonb_build_object('Content-Type', 'application/x-www-form-urlencoded',
                                  'Accept', 'application/json');
    IF coalesce(o ->> 'client_auth', 'body') = 'basic' THEN
        -- RFC 6749 2.3.1: each part form-encoded before base64
        headers := headers || jsonb_build_object('Authorization', 'Basic ' || delq._tpl_filter(
            delq._tpl_text(o ->> 'client_id', ctx, 'auth.oauth2.client_id', 'form') || ':'
            || delq._tpl_text(o ->> 'client_secret', ctx, 'auth.oauth2.client_secret', 'form'), 'base64'));
    ELSE
        form := form || jsonb_build_object('client_id', o ->> 'client_id', 'client_secret', o ->> 'client_secret');
    END IF;
    IF o ? 'scope' THEN
        form := form || jsonb_build_object('scope', o ->> 'scope');
    END IF;
    body := delq._tpl_form(coalesce(o -> 'params', '{}') || form, ctx, 'auth.oauth2');
END
$$;

-- The request of a claimed templated delivery's current step (or of the
-- OAuth2 token it needs first), and what it is, in delivery_step.in_flight.
-- A render error comes back in error (the delivery then fails for good).
CREATE OR REPLACE FUNCTION delq._step_request(delivery_id bigint, webhook_id text, d delq.destination,
                                              p delq.pending)
RETURNS TABLE (method text, url text, headers text[], body text, error text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    req jsonb := d.request;
    s delq.delivery_step;
    st jsonb;
    step text;
    ctx jsonb;
    token text;
    h jsonb;
    sep text;
BEGIN
    IF req IS NULL THEN
        RETURN;     -- a webhook destination (the claim's lateral join)
    END IF;
    INSERT INTO delq.delivery_step AS x (delivery_id, phase)
    VALUES (_step_request.delivery_id, CASE WHEN req ? 'lookup' THEN 'lookup' ELSE 'erase' END)
    ON CONFLICT ON CONSTRAINT delivery_step_pkey DO NOTHING;
    SELECT * INTO s FROM delq.delivery_step x WHERE x.delivery_id = _step_request.delivery_id FOR UPDATE;
    -- the template changed under a delivery in progress
    IF (s.phase = 'lookup' AND NOT req ? 'lookup') OR (s.phase = 'poll' AND NOT req ? 'poll') THEN
        s.phase := 'erase';
    END IF;
    ctx := delq._step_context(p, webhook_id, d.credentials, s.items -> s.item, s.job_id);
    BEGIN
        IF req -> 'auth' ? 'oauth2' THEN
            SELECT t.access_token INTO token FROM delq.oauth_token t
             WHERE t.destination = d.name AND t.expires_at > now();
            IF token IS NULL THEN
                step := 'token';
                SELECT r.method, r.url, r.headers, r.body INTO method, url, h, body
                  FROM delq._step_token_request(req -> 'auth' -> 'oauth2', d.url, ctx) r;
            END IF;
        END IF;
        IF step IS NULL THEN
            step := s.phase;
            st := req -> step;
            method := coalesce(st ->> 'method', CASE step WHEN 'erase' THEN 'DELETE' ELSE 'GET' END);
            IF step = 'lookup' AND s.next_page IS NOT NULL AND st -> 'next' ? 'link' THEN
                url := s.next_page #>> '{}';
            ELSE
                url := delq._tpl_url(st ->> 'url', st -> 'query', d.url, ctx, step);
                IF step = 'lookup' AND s.next_page IS NOT NULL THEN
                    sep := CASE WHEN url LIKE '%?%' THEN '&' ELSE '?' END;
                    url := url || sep || delq._urlencode(st -> 'next' ->> 'param') || '='
                           || delq._urlencode(CASE jsonb_typeof(s.next_page) WHEN 'string' THEN s.next_page #>> '{}'
                                                   ELSE s.next_page::text END);
                END IF;
            END IF;
            -- later sources win: the destination's, the document's, auth, the step's
            h := jsonb_build_object('Accept', 'application/json') || d.headers
                 || delq._tpl_header_values(req -> 'headers', ctx, 'headers')
                 || delq._step_auth(req -> 'auth', token, ctx)
                 || delq._tpl_header_values(st -> 'headers', ctx, step || '.headers');
            IF st ? 'json' THEN
                body := delq._tpl_json(st -> 'json', ctx, step || '.json')::text;
                h := jsonb_build_object('Content-Type', 'application/json') || h;
            ELSIF st ? 'form' THEN
                body := coalesce(delq._tpl_form(st -> 'form', ctx, step || '.form'), '');
                h := jsonb_build_object('Content-Type', 'application/x-www-form-urlencoded') || h;
            END IF;
        END IF;
        headers := ARRAY(SELECT e.key || ': ' || e.value FROM jsonb_each_text(h) e ORDER BY e.key);
    EXCEPTION WHEN SQLSTATE 'DQ001' THEN
        method := NULL;
        url := NULL;
        headers := NULL;
        body := NULL;
        error := SQLERRM;
        step := coalesce(step, s.phase);
    END;
    UPDATE delq.delivery_step x SET in_flight = step, phase = s.phase
     WHERE x.delivery_id = _step_request.delivery_id;
    RETURN NEXT;
END
$$;

-- How a step's answers map a status: an exact code in any class, then a
-- class string, then the webhook rules.  0 (no answer) retries.
CREATE OR REPLACE FUNCTION delq._step_class(answers jsonb, status integer)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(
        (SELECT a.key FROM jsonb_each(answers) a WHERE a.value @> to_jsonb(status) LIMIT 1),
        (SELECT a.key FROM jsonb_each(answers) a WHERE a.value @> to_jsonb(left(status::text, 1) || 'xx') LIMIT 1),
        CASE WHEN status BETWEEN 200 AND 299 THEN 'done'
             WHEN status IN (0, 408, 425, 429) OR status BETWEEN 500 AND 599 THEN 'retry'
             ELSE 'fail' END)
$$;

-- An answer body as JSON, NULL when it is not JSON.
CREATE OR REPLACE FUNCTION delq._step_json(body text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN body::jsonb;
EXCEPTION WHEN invalid_text_representation THEN
    RETURN NULL;
END
$$;

-- An answer excerpt without the secrets and the subject that it may echo.
CREATE OR REPLACE FUNCTION delq._step_scrub(excerpt text, credentials jsonb, token text, subject text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v text;
BEGIN
    IF excerpt IS NULL OR excerpt = '' THEN
        RETURN NULL;
    END IF;
    FOR v IN SELECT e.value FROM jsonb_each_text(coalesce(credentials, '{}')) e
              UNION ALL SELECT token UNION ALL SELECT subject
              ORDER BY 1 DESC LOOP
        IF length(v) >= 3 THEN
            excerpt := replace(excerpt, v, '[redacted]');
        END IF;
    END LOOP;
    RETURN left(excerpt, 200);
END
$$;

-- A step event of a delivery: what answered and what it meant, never a value.
CREATE OR REPLACE FUNCTION delq._step_event(dl delq.delivery, detail jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO delq.event (kind, request_id, destination, detail, actor)
    VALUES ('step', dl.request_id, dl.destination, jsonb_strip_nulls(detail), 'delq');
END
$$;

-- Keep where a delivery is, with nothing in flight.
CREATE OR REPLACE FUNCTION delq._step_save(s delq.delivery_step)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE delq.delivery_step x SET
        phase = s.phase, in_flight = NULL, page = s.page, next_page = s.next_page, items = s.items,
        item = s.item, erased = s.erased, not_held = s.not_held, job_id = s.job_id,
        poll_started_at = s.poll_started_at, auth_retried = s.auth_retried
     WHERE x.delivery_id = s.delivery_id;
END
$$;

-- Move a delivery to its next call (not an attempt of the step that
-- answered): queued at when, with a step event when detail is given.
CREATE OR REPLACE FUNCTION delq._step_next(dl delq.delivery, s delq.delivery_step, answered integer,
                                           at timestamptz, detail jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq._step_save(s);
    UPDATE delq.delivery x SET state = 'queued', next_attempt_at = at, lease_until = NULL,
                               attempts_base = x.attempts, last_status = nullif(answered, 0),
                               last_error = NULL
     WHERE x.id = dl.id;
    IF detail IS NOT NULL THEN
        PERFORM delq._step_event(dl, detail);
    END IF;
END
$$;

-- The answer of an OAuth2 token request (RFC 6749 5.1): the token is
-- cached until shortly before expires_in runs out (an hour without it).
CREATE OR REPLACE FUNCTION delq._step_token_answer(dl delq.delivery, d delq.destination, s delq.delivery_step,
                                                   status integer, cls text, body text, error text,
                                                   OUT verdict text, OUT why text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    answer jsonb := delq._step_json(body);
    ttl double precision := 3600;
BEGIN
    IF status BETWEEN 200 AND 299 AND answer ->> 'access_token' IS NOT NULL THEN
        IF (answer ->> 'expires_in') ~ '^[0-9]{1,9}(\.[0-9]+)?$' THEN
            ttl := (answer ->> 'expires_in')::double precision;
        END IF;
        INSERT INTO delq.oauth_token AS t (destination, access_token, expires_at)
        VALUES (d.name, answer ->> 'access_token', now() + make_interval(secs => ttl - least(60, ttl / 10)))
        ON CONFLICT (destination) DO UPDATE SET access_token = excluded.access_token,
                                                expires_at = excluded.expires_at;
        PERFORM delq._step_next(dl, s, status, now(), jsonb_build_object('step', 'token', 'status', status));
        verdict := 'advanced';
        RETURN;
    END IF;
    PERFORM delq._step_save(s);
    verdict := CASE WHEN cls = 'retry' THEN 'retry' ELSE 'failed' END;
    why := format('auth: token request answered %s', CASE WHEN status = 0 THEN error ELSE 'HTTP ' || status END);
END
$$;

-- A lookup page that answered done: its items, then the next page, the
-- erase of the first item, or not held.
CREATE OR REPLACE FUNCTION delq._step_lookup_answer(dl delq.delivery, d delq.destination, s delq.delivery_step,
                                                    status integer, answer jsonb,
                                                    OUT verdict text, OUT why text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st jsonb := d.request -> 'lookup';
    found jsonb := coalesce(jsonb_path_query_array(answer, (st ->> 'items')::jsonpath, silent => true), '[]');
    nxt jsonb;
BEGIN
    s.items := coalesce(s.items, '[]') || found;
    s.page := s.page + 1;
    IF st ? 'next' AND jsonb_array_length(found) > 0
       AND (NOT st -> 'next' ? 'while'
            OR coalesce(jsonb_path_match(answer, (st -> 'next' ->> 'while')::jsonpath, silent => true), false)) THEN
        nxt := jsonb_path_query_first(answer, coalesce(st -> 'next' ->> 'cursor', st -> 'next' ->> 'link')::jsonpath,
                                      silent => true);
        IF nxt IN ('null'::jsonb, '""'::jsonb) THEN
            nxt := NULL;
        END IF;
    END IF;
    IF nxt IS NOT NULL AND st -> 'next' ? 'link' AND nxt #>> '{}' LIKE '/%' THEN
        -- an absolute path (RFC 3986 4.2): on the destination's host
        nxt := to_jsonb(substring(d.url from '(?i)^(https?://[^/?#]+)') || (nxt #>> '{}'));
    END IF;
    PERFORM delq._step_event(dl, jsonb_build_object('step', 'lookup', 'page', s.page, 'status', status,
                                                    'found', jsonb_array_length(found)));
    IF nxt IS NOT NULL AND st -> 'next' ? 'link'
       AND substring(nxt #>> '{}' from '(?i)^(https?://[^/?#]+)') IS DISTINCT FROM
           substring(d.url from '(?i)^(https?://[^/?#]+)') THEN
        -- credentials never go to another host
        why := 'lookup: the next link points to another host';
    ELSIF nxt IS NOT NULL AND s.page >= coalesce((st ->> 'max_pages')::integer, 10) THEN
        why := 'lookup: more than max_pages pages';
    ELSIF jsonb_array_length(s.items) > 1000 THEN
        why := 'lookup: more than 1000 items';
    ELSIF nxt IS NOT NULL THEN
        s.next_page := nxt;
        PERFORM delq._step_next(dl, s, status, now(), NULL);
        verdict := 'advanced';
        RETURN;
    ELSIF jsonb_array_length(s.items) = 0 THEN
        PERFORM delq._step_event(dl, '{"step": "lookup", "found": 0, "outcome": "not_held"}');
        verdict := 'not_held';
        RETURN;
    ELSE
        s.phase := 'erase';
        s.item := 0;
        s.next_page := NULL;
        s.auth_retried := false;
        PERFORM delq._step_next(dl, s, status, now(), NULL);
        verdict := 'advanced';
        RETURN;
    END IF;
    -- failed: delq.retry looks up again from the first page
    s.page := 0;
    s.items := NULL;
    s.next_page := NULL;
    PERFORM delq._step_save(s);
    verdict := 'failed';
END
$$;

-- An erase or poll that answered done or not_held: a job to poll, a job
-- still pending, failed or finished, or the item done; then the next
-- item or the delivery's outcome.
CREATE OR REPLACE FUNCTION delq._step_item_answer(dl delq.delivery, d delq.destination, s delq.delivery_step,
                                                  status integer, cls text, answer jsonb,
                                                  OUT verdict text, OUT why text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    poll jsonb := d.request -> 'poll';
    n_items integer := coalesce(jsonb_array_length(s.items), 1);
    item jsonb := jsonb_build_object('step', s.in_flight, 'item', s.item + 1, 'of', n_items, 'status', status);
    interval_ interval := delq._tpl_interval(poll -> 'interval', 'interval', '1 minute', '1 second', '1 day');
BEGIN
    IF s.in_flight = 'erase' AND cls = 'done' AND poll IS NOT NULL THEN
        s.job_id := nullif(jsonb_path_query_first(answer, (poll ->> 'job_id')::jsonpath, silent => true), 'null');
        IF s.job_id IS NULL THEN
            PERFORM delq._step_save(s);
            verdict := 'failed';
            why := format('erase: no job id at %s', poll ->> 'job_id');
            RETURN;
        END IF;
        s.phase := 'poll';
        s.poll_started_at := now();
        s.auth_retried := false;
        PERFORM delq._step_next(dl, s, status, now() + interval_, item || '{"outcome": "pending"}');
        verdict := 'advanced';
        RETURN;
    END IF;
    IF s.in_flight = 'poll' AND cls = 'done'
       AND NOT coalesce(jsonb_path_match(answer, (poll ->> 'finished')::jsonpath, silent => true), false) THEN
        IF coalesce(jsonb_path_match(answer, (poll ->> 'failed')::jsonpath, silent => true), false) THEN
            PERFORM delq._step_event(dl, item || '{"outcome": "failed"}');
            why := 'poll: job failed';
        ELSIF now() >= s.poll_started_at
                       + delq._tpl_interval(poll -> 'max_time', 'max_time', '30 days', '1 minute', '400 days') THEN
            why := 'poll: not finished within max_time';
        ELSE
            s.auth_retried := false;
            PERFORM delq._step_next(dl, s, status, now() + interval_, item || '{"outcome": "pending"}');
            verdict := 'advanced';
            RETURN;
        END IF;
        -- failed: delq.retry erases this item again
        s.phase := 'erase';
        s.job_id := NULL;
        PERFORM delq._step_save(s);
        verdict := 'failed';
        RETURN;
    END IF;
    -- this item is done: erased (or its job finished), or not held
    IF cls = 'done' THEN
        s.erased := s.erased + 1;
    ELSE
        s.not_held := s.not_held + 1;
    END IF;
    PERFORM delq._step_event(dl, item || jsonb_build_object(
        'outcome', CASE WHEN cls = 'not_held' THEN 'not_held' WHEN s.in_flight = 'poll' THEN 'finished' ELSE 'done' END));
    s.item := s.item + 1;
    s.phase := 'erase';
    s.job_id := NULL;
    s.poll_started_at := NULL;
    s.auth_retried := false;
    IF s.item < n_items THEN
        PERFORM delq._step_next(dl, s, status, now(), NULL);
        verdict := 'advanced';
    ELSE
        verdict := CASE WHEN s.erased > 0 THEN 'confirmed' ELSE 'not_held' END;
    END IF;
END
$$;

-- What one answer means for a templated delivery in 'sending' (its
-- request and step row locked by the caller).  verdict: 'advanced' (on to
-- its next call, queued), 'unrenderable', or an outcome for _record:
-- 'confirmed', 'not_held', 'retry' or 'failed', with why (the step and the
-- status, never a value).
CREATE OR REPLACE FUNCTION delq._step_answer(dl delq.delivery, d delq.destination, s delq.delivery_step,
                                             status integer, outcome text, error text, body text,
                                             OUT verdict text, OUT why text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st jsonb := CASE WHEN s.in_flight = 'token' THEN NULL ELSE d.request -> s.in_flight END;
    -- this call repeats one that a 401 answered
    after_401 boolean := s.auth_retried;
    cls text;
    answer jsonb;
BEGIN
    -- no answer: the client's verdict (a refused request fails); the
    -- client's own retries of an answer (oversized) stay retries
    cls := CASE WHEN status = 0 THEN CASE WHEN outcome = 'failed' THEN 'fail' ELSE 'retry' END
                WHEN outcome = 'retry' AND delq._step_class(NULL, status) <> 'retry' THEN 'retry'
                ELSE delq._step_class(st -> 'answers', status) END;
    answer := CASE WHEN cls = 'done' THEN delq._step_json(body) END;
    -- a 401 is answered with a new token once: the mark stays through the
    -- token's fetch, until the repeated call answers
    IF s.in_flight <> 'token' THEN
        s.auth_retried := false;
    END IF;

    IF coalesce(error, '') LIKE 'render: %' THEN
        PERFORM delq._step_save(s);
        verdict := 'unrenderable';
        why := error;
    ELSIF status = 401 AND d.request -> 'auth' ? 'oauth2' AND NOT after_401 THEN
        -- a token the system no longer takes: a new one, once
        DELETE FROM delq.oauth_token t WHERE t.destination = d.name;
        s.auth_retried := true;
        PERFORM delq._step_next(dl, s, status, now(),
                                jsonb_build_object('step', s.in_flight, 'status', status, 'outcome', 'new_token'));
        verdict := 'new_token';
    ELSIF s.in_flight = 'token' THEN
        SELECT * INTO verdict, why FROM delq._step_token_answer(dl, d, s, status, cls, body, error);
    ELSIF cls = 'done' AND answer IS NULL
          AND (s.in_flight IN ('lookup', 'poll') OR (s.in_flight = 'erase' AND d.request ? 'poll')) THEN
        PERFORM delq._step_save(s);
        verdict := 'failed';
        why := format('%s: HTTP %s answered without a JSON body', s.in_flight, status);
    ELSIF cls IN ('retry', 'fail') THEN
        IF s.in_flight IN ('erase', 'poll') THEN
            PERFORM delq._step_event(dl, jsonb_build_object('step', s.in_flight, 'item', s.item + 1,
                                                            'of', jsonb_array_length(s.items),
                                                            'status', nullif(status, 0), 'outcome', cls));
        END IF;
        PERFORM delq._step_save(s);
        verdict := CASE cls WHEN 'retry' THEN 'retry' ELSE 'failed' END;
        why := s.in_flight || ': ' || CASE WHEN status = 0 THEN coalesce(error, 'no answer') ELSE 'HTTP ' || status END;
    ELSIF s.in_flight = 'lookup' AND cls = 'not_held' THEN
        PERFORM delq._step_event(dl, '{"step": "lookup", "found": 0, "outcome": "not_held"}');
        verdict := 'not_held';
    ELSIF s.in_flight = 'lookup' THEN
        SELECT * INTO verdict, why FROM delq._step_lookup_answer(dl, d, s, status, answer);
    ELSE
        SELECT * INTO verdict, why FROM delq._step_item_answer(dl, d, s, status, cls, answer);
    END IF;
    IF verdict IN ('confirmed', 'not_held') THEN
        -- done: what was found goes (minimisation)
        DELETE FROM delq.delivery_step x WHERE x.delivery_id = s.delivery_id;
    END IF;
END
$$;

-- A step that could not be rendered: the request's fault, not the
-- system's; the delivery fails at once, without retries or the breaker.
CREATE OR REPLACE FUNCTION delq._step_unrenderable(dl delq.delivery, why text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE delq.delivery x SET state = 'failed', last_status = NULL, last_error = why, lease_until = NULL
     WHERE x.id = dl.id;
    INSERT INTO delq.event (kind, request_id, destination, detail, actor)
    VALUES ('failed', dl.request_id, dl.destination, jsonb_build_object('attempt', dl.attempts, 'error', why), 'delq');
    PERFORM delq._refresh_status(ARRAY[dl.request_id], 'delq');
END
$$;

-- Record the answers of templated deliveries: one per delivery id, with
-- the HTTP status (0: none), the client's outcome, its error text (a
-- transport error, or the body excerpt), Retry-After seconds and the
-- whole body (up to the client's limit).  Each answer moves its delivery
-- on (_step_answer); outcomes go through _record (backoff, breaker,
-- events, request status) like webhooks'.
CREATE OR REPLACE FUNCTION delq._record_step(ids bigint[], statuses integer[], outcomes text[],
                                             errors text[], retry_after integer[], bodies text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    dl delq.delivery;
    d delq.destination;
    s delq.delivery_step;
    a record;
    excerpt text;
    -- outcomes for _record, in parallel arrays
    fin_ids bigint[] := '{}'::bigint[];
    fin_outcomes text[] := '{}'::text[];
    fin_statuses integer[] := '{}'::integer[];
    fin_classes text[] := '{}'::text[];
    fin_errors text[] := '{}'::text[];
    fin_retry integer[] := '{}'::integer[];
    -- moved on to their next call after a successful answer
    advanced bigint[] := '{}'::bigint[];
BEGIN
    PERFORM delq._lock_requests_of(ids);
    FOR i IN 1 .. coalesce(array_length(ids, 1), 0) LOOP
        SELECT * INTO dl FROM delq.delivery x WHERE x.id = ids[i] FOR UPDATE;
        CONTINUE WHEN dl.id IS NULL OR dl.state <> 'sending';
        SELECT * INTO d FROM delq.destination x WHERE x.name = dl.destination;
        SELECT * INTO s FROM delq.delivery_step x WHERE x.delivery_id = dl.id FOR UPDATE;
        CONTINUE WHEN d.name IS NULL OR d.request IS NULL OR s.delivery_id IS NULL;
        a := delq._step_answer(dl, d, s, coalesce(statuses[i], 0), outcomes[i], errors[i], bodies[i]);
        IF a.verdict = 'advanced' THEN
            advanced := advanced || dl.id;
        ELSIF a.verdict = 'unrenderable' THEN
            PERFORM delq._step_unrenderable(dl, a.why);
        ELSIF a.verdict <> 'new_token' THEN
            -- the answer's excerpt, without what it may echo, for last_error only
            excerpt := CASE WHEN coalesce(statuses[i], 0) <> 0 AND a.why IS NOT NULL
                            THEN delq._step_scrub(regexp_replace(errors[i], '^HTTP [0-9]+(: )?', ''),
                                                  d.credentials,
                                                  (SELECT t.access_token FROM delq.oauth_token t
                                                    WHERE t.destination = d.name),
                                                  (SELECT x.subject FROM delq.pending x WHERE x.id = dl.request_id))
                       END;
            fin_ids := fin_ids || dl.id;
            fin_outcomes := fin_outcomes || a.verdict;
            fin_statuses := fin_statuses || coalesce(statuses[i], 0);
            fin_classes := fin_classes || coalesce(a.why, '');
            fin_errors := fin_errors || coalesce(a.why || coalesce(': ' || excerpt, ''), '');
            fin_retry := fin_retry || coalesce(retry_after[i], -1);
        END IF;
    END LOOP;

    -- The destinations' health: the state rows in name order first (the
    -- lock order of _record), as two calls below take them.
    PERFORM 1 FROM delq.destination_state t
     WHERE t.name IN (SELECT x.destination FROM delq.delivery x WHERE x.id = ANY (advanced || fin_ids))
     ORDER BY t.name
       FOR UPDATE OF t;
    IF cardinality(advanced) > 0 THEN
        -- a step that answered as it should is a success of the system:
        -- it closes a probing breaker and resets the failure count
        PERFORM delq._breaker_record(advanced, array_fill('confirmed'::text, ARRAY[cardinality(advanced)]),
                                     array_fill(''::text, ARRAY[cardinality(advanced)]),
                                     array_fill(false, ARRAY[cardinality(advanced)]));
    END IF;
    IF cardinality(fin_ids) > 0 THEN
        -- events and health get the step and status only (the classes);
        -- last_error also the scrubbed excerpt
        PERFORM delq._record(fin_ids, fin_outcomes, fin_statuses, fin_classes, fin_errors, fin_retry,
                             array_fill(false, ARRAY[cardinality(fin_ids)]));
    END IF;
    RETURN coalesce(array_length(ids, 1), 0);
END
$$;
