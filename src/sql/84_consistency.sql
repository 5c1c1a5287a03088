-- delq.check_consistency(): what the tables lost that the ledger knows
-- existed.  For operators after a restore (docs/operations.md, "Backups and
-- restores"): a parallel pg_restore can fail to load a table whose rows
-- reference another one (delq.delivery), and verify_ledger() checks the
-- events, not the tables they describe.  Reads delq.event through (every
-- 'submitted', 'queued' and admin event), so it takes as long as a count of
-- the event table; the worker never runs it.

CREATE OR REPLACE FUNCTION delq.check_consistency()
RETURNS TABLE (problem text, request_id uuid, destination text, detail text)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    -- a request the ledger saw submitted, in neither pending nor finished
    SELECT 'request missing', e.request_id, NULL::text,
           'submitted at ' || e.at::text || '; not in delq.pending nor delq.finished'
      FROM delq.event e
     WHERE e.kind OPERATOR(pg_catalog.=) 'submitted'
       AND NOT EXISTS (SELECT FROM delq.pending p WHERE p.id OPERATOR(pg_catalog.=) e.request_id)
       AND NOT EXISTS (SELECT FROM delq.finished f WHERE f.id OPERATOR(pg_catalog.=) e.request_id)
    UNION ALL
    -- a delivery planned for a pending request, without its row
    SELECT DISTINCT 'delivery missing', e.request_id, e.destination,
           'planned (event queued); not in delq.delivery'
      FROM delq.event e
      JOIN delq.pending p ON p.id OPERATOR(pg_catalog.=) e.request_id
     WHERE e.kind OPERATOR(pg_catalog.=) 'queued' AND e.destination IS NOT NULL
       AND NOT EXISTS (SELECT FROM delq.delivery dl
                        WHERE dl.request_id OPERATOR(pg_catalog.=) e.request_id
                          AND dl.destination OPERATOR(pg_catalog.=) e.destination)
    UNION ALL
    -- ... or for an archived one, without its entry in the summary
    SELECT DISTINCT 'delivery missing', e.request_id, e.destination,
           'planned (event queued); not in delq.finished.deliveries'
      FROM delq.event e
      JOIN delq.finished f ON f.id OPERATOR(pg_catalog.=) e.request_id
     WHERE e.kind OPERATOR(pg_catalog.=) 'queued' AND e.destination IS NOT NULL
       AND NOT EXISTS (SELECT FROM pg_catalog.jsonb_array_elements(f.deliveries) x
                        WHERE (x OPERATOR(pg_catalog.->>) 'destination') OPERATOR(pg_catalog.=) e.destination)
    UNION ALL
    -- a destination added and never dropped, without its row
    SELECT 'destination missing', NULL::uuid, e.destination,
           'added at ' || e.at::text || '; not in delq.destination'
      FROM delq.event e
     WHERE e.kind OPERATOR(pg_catalog.=) 'destination_added' AND e.request_id IS NULL
       AND NOT EXISTS (SELECT FROM delq.event x
                        WHERE x.kind OPERATOR(pg_catalog.=) 'destination_dropped'
                          AND x.request_id IS NULL
                          AND x.destination OPERATOR(pg_catalog.=) e.destination
                          AND x.id OPERATOR(pg_catalog.>) e.id)
       AND NOT EXISTS (SELECT FROM delq.destination d WHERE d.name OPERATOR(pg_catalog.=) e.destination)
    UNION ALL
    -- a route added and never dropped (nor its destination), without its row
    SELECT 'route missing', NULL::uuid, e.destination,
           'route ' || (e.detail OPERATOR(pg_catalog.->>) 'route_id') || ' matching '
           || (e.detail OPERATOR(pg_catalog.->>) 'match') || '; not in delq.route'
      FROM delq.event e
     WHERE e.kind OPERATOR(pg_catalog.=) 'route_added' AND e.request_id IS NULL
       AND NOT EXISTS (SELECT FROM delq.event x
                        WHERE x.request_id IS NULL
                          AND x.destination OPERATOR(pg_catalog.=) e.destination
                          AND x.id OPERATOR(pg_catalog.>) e.id
                          AND (x.kind OPERATOR(pg_catalog.=) 'destination_dropped'
                               OR (x.kind OPERATOR(pg_catalog.=) 'route_dropped'
                                   AND (x.detail OPERATOR(pg_catalog.->) 'route_id')
                                       OPERATOR(pg_catalog.=) (e.detail OPERATOR(pg_catalog.->) 'route_id'))))
       AND NOT EXISTS (SELECT FROM delq.route r
                        WHERE r.id::text OPERATOR(pg_catalog.=) (e.detail OPERATOR(pg_catalog.->>) 'route_id'))
    ORDER BY 1, 2, 3;
$$;

-- The worker's cheap probe at start (src/worker.c): open requests whose
-- deliveries the ledger saw planned but that have none left, which is what
-- a restore that lost delq.delivery leaves.  Index probes per open request.
CREATE OR REPLACE FUNCTION delq._requests_without_deliveries()
RETURNS integer
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(*)::integer FROM delq.pending p
     WHERE p.status IN ('forwarding', 'failed')
       AND NOT EXISTS (SELECT FROM delq.delivery d WHERE d.request_id = p.id)
       AND EXISTS (SELECT FROM delq.event e WHERE e.request_id = p.id AND e.kind = 'queued');
$$;

REVOKE ALL ON FUNCTION delq.check_consistency() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION delq.check_consistency() TO delq_operator;
