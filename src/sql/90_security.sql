-- Roles and privileges.  PUBLIC gets nothing.  Each role includes the one
-- below it: delq_admin > delq_operator > delq_submitter.  Tables and views
-- are granted next to their definition; functions here or next to theirs.

REVOKE ALL ON SCHEMA delq FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA delq FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA delq FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA delq FROM PUBLIC;

GRANT USAGE ON SCHEMA delq TO delq_submitter;

-- submitters: file requests and read their status
GRANT EXECUTE ON FUNCTION delq.submit(text, text, text, jsonb, text, timestamptz) TO delq_submitter;

-- operators: act on requests and read everything but secrets
GRANT EXECUTE ON FUNCTION delq.approve(uuid) TO delq_operator;
GRANT EXECUTE ON FUNCTION delq.reject(uuid, text) TO delq_operator;
GRANT EXECUTE ON FUNCTION delq.retry(uuid, text) TO delq_operator;
GRANT EXECUTE ON FUNCTION delq.confirm(uuid, text) TO delq_operator;
GRANT EXECUTE ON FUNCTION delq.archive(interval) TO delq_operator;
GRANT EXECUTE ON FUNCTION delq.worker_running() TO delq_operator;
GRANT EXECUTE ON FUNCTION delq.dispatch(integer) TO delq_operator;
REVOKE ALL ON PROCEDURE delq.dispatch_pass(integer) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE delq.dispatch_pass(integer) TO delq_operator;

-- admins: destinations and routes, including their secrets
GRANT EXECUTE ON FUNCTION
    delq.add_destination(text, text, jsonb, text, interval, interval, integer, integer,
                         text, interval, interval, boolean, text, text, text, jsonb, jsonb),
    delq.alter_destination(text, text, jsonb, text, interval, interval, integer, integer,
                           text, interval, interval, boolean, text, text, text, jsonb, jsonb),
    delq.drop_destination(text, boolean),
    delq.add_connector(text, text, jsonb),
    delq.add_route(text, jsonb),
    delq.drop_route(bigint)
    TO delq_admin;
