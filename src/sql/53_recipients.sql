-- Explainable routing and the recipients of a request (GDPR Art. 19:
-- the controller tells the person, if asked, who the recipients are).
-- delq.explain_routes() says, before anything is submitted, where a
-- request would go and why; delq.recipients() says where one went and
-- what each destination answered, from the same delivery summary that
-- the receipt and the archive show (delq._receipt_deliveries).
-- See docs/recipients.md.

-- Which destinations a request with these fields would be planned for,
-- by which routes, and why the others would be skipped; nothing is
-- written.  One row per (destination, route), and one row for a
-- destination without routes.  planned: a delivery would be queued (also
-- for a paused destination, whose delivery then waits until it is
-- enabled).
CREATE OR REPLACE FUNCTION delq.explain_routes(source text, reason text DEFAULT NULL,
                                    attributes jsonb DEFAULT '{}')
RETURNS TABLE (destination text, kind text, enabled boolean, planned boolean,
               route_id bigint, match jsonb, explanation text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r delq.pending;
    doc jsonb;
BEGIN
    r.source := delq._check_source(source);
    r.reason := delq._check_text('reason', reason, 1000, false, true);
    r.attributes := delq._check_attributes(attributes);
    doc := delq._routing_document(r);

    RETURN QUERY
    SELECT x.name, x.kind, x.enabled, bool_or(x.matches) OVER (PARTITION BY x.name),
           x.id, x.match,
           CASE WHEN x.id IS NULL THEN 'no route: nothing is ever planned for this destination'
                WHEN x.matches AND x.enabled THEN 'matches'
                WHEN x.matches THEN 'matches; the destination is paused: the delivery waits until it is enabled'
                ELSE 'does not match: ' || (
                    SELECT string_agg(CASE WHEN NOT doc ? m.key
                                           THEN format('needs %s: %s (the request has no %s)',
                                                       to_jsonb(m.key), m.value, to_jsonb(m.key))
                                           ELSE format('needs %s: %s (the request has %s)',
                                                       to_jsonb(m.key), m.value, doc -> m.key) END,
                                      '; ' ORDER BY m.key)
                      FROM jsonb_each(x.match) m
                     WHERE NOT delq._route_matches(doc, jsonb_build_object(m.key, m.value)))
           END
      FROM (SELECT d.name, d.kind, d.enabled, rt.id, rt.match,
                   coalesce(delq._route_matches(doc, rt.match), false) AS matches
              FROM delq.destination d
              LEFT JOIN delq.route rt ON rt.destination = d.name) x
     ORDER BY x.name, x.id;
END
$$;

-- Every destination a request (pending or archived, redacted or not) was
-- planned for, with the outcome, from the summary its receipt and the
-- archive hold: 'confirmed' (erased), 'not_held' (held nothing),
-- 'failed', 'cancelled', or 'pending' (not answered yet), and when.
-- kind is the destination's kind today (NULL once it is dropped).
CREATE OR REPLACE FUNCTION delq.recipients(id uuid)
RETURNS TABLE (destination text, kind text, outcome text, at timestamptz, state text,
               attempts integer, webhook_id text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM delq._not_null('id', recipients.id);
    IF NOT EXISTS (SELECT FROM delq.pending p WHERE p.id = recipients.id)
       AND NOT EXISTS (SELECT FROM delq.finished f WHERE f.id = recipients.id) THEN
        RAISE EXCEPTION 'request % does not exist', recipients.id
            USING ERRCODE = 'undefined_object',
                  HINT = 'Pass the id that delq.submit() returned.';
    END IF;

    RETURN QUERY
    SELECT s ->> 'destination', d.kind,
           CASE WHEN s ->> 'state' IN ('confirmed', 'not_held', 'failed', 'cancelled')
                THEN s ->> 'state' ELSE 'pending' END,
           CASE WHEN delq._delivery_done(s ->> 'state') THEN (s ->> 'confirmed_at')::timestamptz
                WHEN s ->> 'state' IN ('failed', 'cancelled')
                THEN (SELECT max(e.at) FROM delq.event e
                       WHERE e.request_id = recipients.id AND e.destination = s ->> 'destination'
                         AND e.kind = s ->> 'state')
           END,
           s ->> 'state', (s ->> 'attempts')::integer, s ->> 'webhook_id'
      FROM jsonb_array_elements(delq._receipt_deliveries(recipients.id)) s
      LEFT JOIN delq.destination d ON d.name = s ->> 'destination'
     ORDER BY 1;
END
$$;

GRANT EXECUTE ON FUNCTION delq.explain_routes(text, text, jsonb), delq.recipients(uuid)
    TO delq_operator;
