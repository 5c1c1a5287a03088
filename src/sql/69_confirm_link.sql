-- Confirmation links for destinations in 'callback' mode (docs/http-api.md):
-- the webhook body (delq._webhook_body, 70_forwarding.sql) carries
-- confirm_url = delq.http_public_url || '/v1/confirm/' || token, where
-- token = webhook id '.' base64url(HMAC-SHA-256(key 'confirm', 'confirm:'
-- || webhook id)).  The link confirms that one delivery and nothing else
-- (delq._http_confirm, 88_http.sql).  PL/pgSQL, so that this file may come
-- before the key table (80_privacy.sql) the functions read when called.

CREATE OR REPLACE FUNCTION delq._confirm_token(webhook_id text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN webhook_id || '.' ||
           translate(encode(delq._hmac_sha256(delq._secret('confirm'),
                                              convert_to('confirm:' || webhook_id, 'UTF8')),
                            'base64'), '+/=', '-_');
END
$$;

-- The link, or NULL while delq.http_public_url is not set.
CREATE OR REPLACE FUNCTION delq._confirm_url(webhook_id text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    base text := nullif(current_setting('delq.http_public_url', true), '');
BEGIN
    IF base IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN rtrim(base, '/') || '/v1/confirm/' || delq._confirm_token(webhook_id);
END
$$;
