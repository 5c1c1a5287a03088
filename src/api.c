/*-------------------------------------------------------------------------
 *
 * api.c
 *	  The routes of the HTTP ingress, each mapped to one SQL call.
 *
 * A route names its SQL (a function of src/sql/88_http.sql returning the
 * HTTP status, the body and, for a new request, its location), the
 * parameters it takes from the path, query, headers and body, and how the
 * caller is authenticated.  Each call is one transaction: the token is
 * looked up, the worker takes the token's role
 * (SetUserIdAndSecContext), so the SQL privileges of that role apply
 * exactly, runs the SQL and commits; only then is the answer handed back,
 * so a 2xx is sent for committed work only.  An error rolls everything
 * back and becomes an RFC 9457 problem (application/problem+json) with
 * its SQLSTATE and hint.  The OpenAPI document src/openapi.json
 * describes every route (docs/http-api.md).
 *
 * src/api.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/base64.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "ingress.h"

typedef enum DelqAuth
{
	AUTH_NONE,					/* runs as the worker's role */
	AUTH_BEARER,				/* Authorization: Bearer <token> */
	AUTH_BASIC					/* Authorization: Basic, the token as password */
} DelqAuth;

typedef enum DelqParam
{
	P_NONE,
	P_SEGMENT,					/* the {...} of the path */
	P_BODY,						/* the body as text */
	P_BODY_BYTES,				/* the body as bytea (signatures) */
	P_HEADERS,					/* every header, a JSON object */
	P_IDEMPOTENCY_KEY,
	P_ARG_STATUS,
	P_ARG_SOURCE,
	P_ARG_LIMIT,
	P_ARG_AFTER
} DelqParam;

#define DELQ_MAX_PARAMS 4

typedef struct DelqRoute
{
	const char *method;
	const char *pattern;		/* as in the OpenAPI document; "{x}" is one
								 * segment */
	DelqAuth	auth;
	const char *content_type;	/* of a successful answer */
	const char *sql;			/* returns (status int, body text, location
								 * text) */
	DelqParam	params[DELQ_MAX_PARAMS];
} DelqRoute;

#define JSON_TYPE "application/json"

static const DelqRoute routes[] = {
	{"GET", "/", AUTH_BASIC, "text/html; charset=utf-8",
	"SELECT 200, delq.status_page(), NULL", {P_NONE}},
	{"GET", "/metrics", AUTH_BEARER, "text/plain; version=0.0.4; charset=utf-8",
	"SELECT 200, delq.metrics(), NULL", {P_NONE}},
	{"GET", "/v1/healthz", AUTH_NONE, JSON_TYPE,
		"SELECT 200, pg_catalog.jsonb_build_object('status', 'ok', 'worker_running', "
	"delq.worker_running())::text, NULL", {P_NONE}},
	{"GET", "/v1/openapi.json", AUTH_NONE, JSON_TYPE, NULL, {P_NONE}},
	{"POST", "/v1/requests", AUTH_BEARER, JSON_TYPE,
		"SELECT CASE WHEN (r OPERATOR(pg_catalog.->>) 'created')::boolean THEN 201 ELSE 200 END, "
		"(r OPERATOR(pg_catalog.->) 'request')::text, "
		"'/v1/requests/' OPERATOR(pg_catalog.||) (r OPERATOR(pg_catalog.#>>) '{request,id}') "
		"FROM delq.http_submit($1, $2) r",
	{P_BODY, P_IDEMPOTENCY_KEY}},
	{"GET", "/v1/requests", AUTH_BEARER, JSON_TYPE,
		"SELECT 200, delq.http_list($1, $2, $3, $4)::text, NULL",
	{P_ARG_STATUS, P_ARG_SOURCE, P_ARG_LIMIT, P_ARG_AFTER}},
	{"GET", "/v1/requests/{id}", AUTH_BEARER, JSON_TYPE,
	"SELECT 200, delq.http_request($1)::text, NULL", {P_SEGMENT}},
	{"POST", "/v1/requests/{id}/approve", AUTH_BEARER, JSON_TYPE,
	"SELECT 200, delq.http_approve($1, $2)::text, NULL", {P_SEGMENT, P_BODY}},
	{"POST", "/v1/requests/{id}/reject", AUTH_BEARER, JSON_TYPE,
	"SELECT 200, delq.http_reject($1, $2)::text, NULL", {P_SEGMENT, P_BODY}},
	{"POST", "/v1/requests/{id}/extend", AUTH_BEARER, JSON_TYPE,
	"SELECT 200, delq.http_extend($1, $2)::text, NULL", {P_SEGMENT, P_BODY}},
	{"GET", "/v1/requests/{id}/receipt", AUTH_BEARER, JSON_TYPE,
	"SELECT 200, delq.http_receipt($1)::text, NULL", {P_SEGMENT}},
	{"POST", "/v1/confirm/{token}", AUTH_NONE, JSON_TYPE,
	"SELECT 200, delq._http_confirm($1, $2)::text, NULL", {P_SEGMENT, P_BODY}},
	{"POST", "/v1/hooks/{name}", AUTH_NONE, JSON_TYPE,
		"SELECT CASE WHEN (r OPERATOR(pg_catalog.->>) 'created')::boolean THEN 201 ELSE 200 END, "
		"COALESCE(r OPERATOR(pg_catalog.->) 'request', r)::text, "
		"'/v1/requests/' OPERATOR(pg_catalog.||) (r OPERATOR(pg_catalog.#>>) '{request,id}') "
		"FROM delq._hook_receive($1, $2::jsonb, $3) r",
	{P_SEGMENT, P_HEADERS, P_BODY_BYTES}},
};

/*
 * The plans of the routes' SQL and of the token lookup, prepared at their
 * first call and kept for the worker's life (SPI_keepplan): planning
 * alone took about 30 us of a submit's 1.5 ms here (bench/http-plans.md).
 * Keeping them across the role switches of become() is safe: privileges
 * (EXECUTE on the route function, and everything it touches) are checked
 * by the executor at each run as the current role, not when planning;
 * nothing in these plans depends on the role (no row security; the route
 * functions all have SET clauses, so none is inlined into the plan with
 * the planning role's rights); and the plan cache plans again when a
 * function they name is replaced or dropped (ALTER EXTENSION UPDATE) or
 * the search_path differs, which the session pins (src/ingress.c).
 */
static SPIPlanPtr route_plans[lengthof(routes)];
static SPIPlanPtr token_plan = NULL;

/* The kept plan of sql in *plan, prepared now if it is not yet. */
static SPIPlanPtr
kept_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	p;

	if (*plan != NULL)
		return *plan;
	p = SPI_prepare(sql, nargs, types);
	if (p == NULL)
		elog(ERROR, "delq http: could not prepare \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(p) != 0)
		elog(ERROR, "delq http: could not keep the plan of \"%s\"", sql);
	*plan = p;
	return p;
}

/* The OpenAPI document, read once at start from the extension directory. */
static char *openapi_doc = NULL;

/* Calls answered, by route and status, for GET /metrics. */
typedef struct DelqCounter
{
	const char *route;
	int			status;
	int64		count;
} DelqCounter;

static List *counters = NIL;

void
delq_api_start(void)
{
	char		share[MAXPGPATH];
	char		path[MAXPGPATH];
	FILE	   *f;
	StringInfoData buf;
	char		chunk[4096];
	size_t		n;

	get_share_path(my_exec_path, share);
	snprintf(path, sizeof(path), "%s/extension/delq-openapi.json", share);
	f = AllocateFile(path, "r");
	if (f == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("delq could not read \"%s\": %m", path),
				 errhint("Install delq again (make install).")));
	initStringInfo(&buf);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		appendBinaryStringInfo(&buf, chunk, n);
	FreeFile(f);
	openapi_doc = buf.data;
}

void
delq_api_count(DelqHttpCall *call)
{
	ListCell   *lc;
	DelqCounter *c;
	MemoryContext old;
	const char *route = call->route ? call->route : "unknown";

	foreach(lc, counters)
	{
		c = lfirst(lc);
		if (c->status == call->status && strcmp(c->route, route) == 0)
		{
			c->count++;
			return;
		}
	}
	c = MemoryContextAlloc(TopMemoryContext, sizeof(DelqCounter));
	c->route = MemoryContextStrdup(TopMemoryContext, route);
	c->status = call->status;
	c->count = 1;
	old = MemoryContextSwitchTo(TopMemoryContext);
	counters = lappend(counters, c);
	MemoryContextSwitchTo(old);
}

static void
append_counters(StringInfo out)
{
	ListCell   *lc;

	appendStringInfoString(out, "# HELP delq_http_requests_total HTTP calls answered, by route and status.\n"
						   "# TYPE delq_http_requests_total counter\n");
	foreach(lc, counters)
	{
		DelqCounter *c = lfirst(lc);

		appendStringInfo(out, "delq_http_requests_total{route=\"%s\",code=\"%d\"} " INT64_FORMAT "\n",
						 c->route, c->status, c->count);
	}
}

static const char *
status_title(int status)
{
	switch (status)
	{
		case 400:
			return "Bad Request";
		case 401:
			return "Unauthorized";
		case 403:
			return "Forbidden";
		case 404:
			return "Not Found";
		case 405:
			return "Method Not Allowed";
		case 409:
			return "Conflict";
		case 413:
			return "Content Too Large";
		case 415:
			return "Unsupported Media Type";
		case 429:
			return "Too Many Requests";
		case 503:
			return "Service Unavailable";
		default:
			return "Internal Server Error";
	}
}

/*
 * Answer with an RFC 9457 problem: type about:blank, the status's title,
 * what went wrong, and delq's members sqlstate and hint.
 */
void
delq_api_problem(DelqHttpCall *call, int status, const char *sqlstate,
				 const char *detail, const char *hint)
{
	MemoryContext old = MemoryContextSwitchTo(call->cxt);

	call->status = status;
	call->content_type = "application/problem+json";
	resetStringInfo(&call->reply);
	appendStringInfo(&call->reply, "{\"type\":\"about:blank\",\"title\":\"%s\",\"status\":%d",
					 status_title(status), status);
	if (detail)
	{
		appendStringInfoString(&call->reply, ",\"detail\":");
		escape_json(&call->reply, detail);
	}
	if (sqlstate)
	{
		appendStringInfoString(&call->reply, ",\"sqlstate\":");
		escape_json(&call->reply, sqlstate);
	}
	if (hint)
	{
		appendStringInfoString(&call->reply, ",\"hint\":");
		escape_json(&call->reply, hint);
	}
	appendStringInfoChar(&call->reply, '}');
	MemoryContextSwitchTo(old);
}

/* The HTTP status of an SQL error (docs/http-api.md, "Errors"). */
static int
status_of_error(int code)
{
	switch (code)
	{
		case ERRCODE_UNDEFINED_OBJECT:
			return 404;
		case ERRCODE_INSUFFICIENT_PRIVILEGE:
			return 403;
		case ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION:
			return 401;
		case ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE:
		case ERRCODE_UNIQUE_VIOLATION:
			return 409;
		case ERRCODE_LOCK_NOT_AVAILABLE:
		case ERRCODE_QUERY_CANCELED:
		case ERRCODE_T_R_SERIALIZATION_FAILURE:
		case ERRCODE_T_R_DEADLOCK_DETECTED:
			return 503;
	}

	/*
	 * Class 54 (a body nested past the stack depth, a JSON value past its
	 * size limit) comes of what the caller sent: 400, not a 500 that anyone
	 * could make the server log at will.
	 */
	if (ERRCODE_TO_CATEGORY(code) == ERRCODE_DATA_EXCEPTION ||
		ERRCODE_TO_CATEGORY(code) == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION ||
		ERRCODE_TO_CATEGORY(code) == ERRCODE_PROGRAM_LIMIT_EXCEEDED)
		return 400;
	if (ERRCODE_TO_CATEGORY(code) == ERRCODE_INSUFFICIENT_RESOURCES)
		return 503;
	return 500;
}

static void
problem_from_error(DelqHttpCall *call, ErrorData *edata)
{
	int			status = status_of_error(edata->sqlerrcode);
	const char *sqlstate = unpack_sql_state(edata->sqlerrcode);

	if (status == 500)
	{
		/* not the caller's doing: the log tells, the caller learns little */
		ereport(WARNING,
				(errmsg("delq http: %s %s failed: %s (SQLSTATE %s)",
						call->method, call->route, edata->message, sqlstate)));
		delq_api_problem(call, 500, sqlstate, "The server could not answer this call.", NULL);
		return;
	}
	if (status == 503)
		delq_http_add_header(call, "Retry-After", "1");
	if (status == 401)
		delq_http_add_header(call, "WWW-Authenticate", "Bearer realm=\"delq\"");
	/* its hint speaks of the server's max_stack_depth, not of the body */
	if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_PROGRAM_LIMIT_EXCEEDED)
		edata->hint = pstrdup("Send a smaller, less deeply nested body.");
	/* PostgreSQL's own input errors (bad JSON, uuid, timestamp) have none */
	if (edata->hint == NULL && status == 400)
		edata->hint = pstrdup("Send the values as GET /v1/openapi.json describes them.");
	delq_api_problem(call, status, sqlstate, edata->message, edata->hint);
}

/*
 * Match path against pattern, "{x}" matching one non-empty segment, which
 * is copied to *segment.
 */
static bool
path_matches(const char *pattern, const char *path, char **segment)
{
	while (*pattern && *path)
	{
		if (pattern[0] == '{')
		{
			const char *end = strchr(path, '/');
			int			len = end ? end - path : strlen(path);

			if (len == 0)
				return false;
			*segment = pnstrdup(path, len);
			path += len;
			pattern = strchr(pattern, '}') + 1;
			continue;
		}
		if (*pattern++ != *path++)
			return false;
	}
	return *pattern == '\0' && *path == '\0';
}

/* The token of an Authorization header, or NULL. */
static char *
credential(DelqHttpCall *call, DelqAuth auth)
{
	const char *h = delq_http_header(call, "authorization");

	if (h == NULL)
		return NULL;
	if (auth == AUTH_BEARER && pg_strncasecmp(h, "Bearer ", 7) == 0)
		return pstrdup(h + 7);
	if (auth == AUTH_BASIC && pg_strncasecmp(h, "Basic ", 6) == 0)
	{
		const char *enc = h + 6;
		int			len = strlen(enc);
		char	   *dec = palloc(pg_b64_dec_len(len) + 1);
		int			n = pg_b64_decode(enc, len, dec, pg_b64_dec_len(len));
		char	   *colon;

		if (n < 0)
			return NULL;
		dec[n] = '\0';
		colon = strchr(dec, ':');
		return colon ? colon + 1 : NULL;
	}
	return NULL;
}

/*
 * The role of the caller's token (in the current transaction, as the
 * worker's own role), or InvalidOid.  Every failure looks the same.
 */
static Oid
token_role(DelqHttpCall *call, DelqAuth auth)
{
	char	   *token = credential(call, auth);
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	bool		isnull;
	Datum		role;

	if (token == NULL || token[0] == '\0')
		return InvalidOid;
	values[0] = CStringGetTextDatum(token);
	if (SPI_execute_plan(kept_plan(&token_plan,
								   "SELECT delq._api_token_role(pg_catalog.sha256("
								   "pg_catalog.convert_to($1, 'UTF8')))",
								   1, argtypes),
						 values, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		return InvalidOid;
	role = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		return InvalidOid;
	return get_role_oid(TextDatumGetCString(role), true);
}

static Datum
param_value(DelqHttpCall *call, DelqParam p, const char *segment, Oid *type, bool *isnull)
{
	const char *s = NULL;

	*type = TEXTOID;
	*isnull = false;
	switch (p)
	{
		case P_SEGMENT:
			s = segment;
			break;
		case P_BODY:
			s = call->body.data;
			break;
		case P_BODY_BYTES:
			{
				bytea	   *b = palloc(VARHDRSZ + call->body.len);

				SET_VARSIZE(b, VARHDRSZ + call->body.len);
				memcpy(VARDATA(b), call->body.data, call->body.len);
				*type = BYTEAOID;
				return PointerGetDatum(b);
			}
		case P_HEADERS:
			{
				StringInfoData js;
				ListCell   *lc;

				initStringInfo(&js);
				appendStringInfoChar(&js, '{');
				foreach(lc, call->headers)
				{
					DelqHttpPair *h = lfirst(lc);

					if (js.len > 1)
						appendStringInfoChar(&js, ',');
					escape_json(&js, h->name);
					appendStringInfoChar(&js, ':');
					escape_json(&js, h->value);
				}
				appendStringInfoChar(&js, '}');
				s = js.data;
				break;
			}
		case P_IDEMPOTENCY_KEY:
			s = delq_http_header(call, "idempotency-key");
			break;
		case P_ARG_STATUS:
			s = delq_http_arg(call, "status");
			break;
		case P_ARG_SOURCE:
			s = delq_http_arg(call, "source");
			break;
		case P_ARG_LIMIT:
			s = delq_http_arg(call, "limit");
			break;
		case P_ARG_AFTER:
			s = delq_http_arg(call, "after");
			break;
		case P_NONE:
			break;
	}
	if (s == NULL)
	{
		*isnull = true;
		return (Datum) 0;
	}
	return CStringGetTextDatum(s);
}

/*
 * Take the token's role for the rest of the transaction.  A superuser
 * server (the default, delq.worker_role) takes it as SET SESSION
 * AUTHORIZATION does, so that session_user, the actor of the events the
 * call writes, is the token's role too; undo() gives it back after the
 * transaction.  Otherwise only the current user changes (the transaction's
 * end restores it).  Either way the SQL privileges are the role's own.
 */
static bool
become(Oid role, int save_sec)
{
	if (superuser_arg(GetSessionUserId()))
	{
		SetSessionAuthorization(role, false);
		return true;
	}
	SetUserIdAndSecContext(role, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	return false;
}

static void
undo(bool session_changed, Oid save_session, Oid save_user, int save_sec)
{
	if (session_changed)
		SetSessionAuthorization(save_session, true);
	SetUserIdAndSecContext(save_user, save_sec);
}

/*
 * Run a route's SQL, in a transaction of its own, as the token's role.
 * Fills in the answer; on an error, the problem.
 */
static void
run_route(DelqHttpCall *call, const DelqRoute *r, const char *segment)
{
	Oid			save_user;
	int			save_sec;
	Oid			save_session = GetSessionUserId();
	volatile bool session_changed = false;
	Oid			types[DELQ_MAX_PARAMS];
	Datum		values[DELQ_MAX_PARAMS];
	char		nulls[DELQ_MAX_PARAMS];
	int			nargs = 0;

	GetUserIdAndSecContext(&save_user, &save_sec);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		bool		authorized = true;

		MemoryContextSwitchTo(call->cxt);
		while (nargs < DELQ_MAX_PARAMS && r->params[nargs] != P_NONE)
		{
			bool		isnull;

			values[nargs] = param_value(call, r->params[nargs], segment, &types[nargs], &isnull);
			nulls[nargs] = isnull ? 'n' : ' ';
			nargs++;
		}
		pgstat_report_activity(STATE_RUNNING, r->pattern);
		PushActiveSnapshot(GetTransactionSnapshot());
		SPI_connect();
		if (r->auth != AUTH_NONE)
		{
			Oid			role = token_role(call, r->auth);

			if (OidIsValid(role))
				session_changed = become(role, save_sec);
			else
				authorized = false;
		}
		if (!authorized)
		{
			delq_http_add_header(call, "WWW-Authenticate",
								 r->auth == AUTH_BASIC ? "Basic realm=\"delq\", charset=\"UTF-8\""
								 : "Bearer realm=\"delq\"");
			delq_api_problem(call, 401, NULL, "A valid API token is required.",
							 r->auth == AUTH_BASIC ? "Sign in with any user name and an API token as the password."
							 : "Send Authorization: Bearer <token> (delq.add_api_token()).");
		}
		else
		{
			bool		isnull;
			Datum		d;
			TupleDesc	td;
			HeapTuple	tup;

			SPIPlanPtr	plan = kept_plan(&route_plans[r - routes], r->sql, nargs, types);

			if (SPI_execute_plan(plan, values, nulls, false, 1) != SPI_OK_SELECT ||
				SPI_processed != 1)
				elog(ERROR, "delq http: %s returned no row", r->pattern);
			td = SPI_tuptable->tupdesc;
			tup = SPI_tuptable->vals[0];
			MemoryContextSwitchTo(call->cxt);
			call->status = DatumGetInt32(SPI_getbinval(tup, td, 1, &isnull));
			call->content_type = r->content_type;
			d = SPI_getbinval(tup, td, 2, &isnull);
			if (!isnull)
				appendStringInfoString(&call->reply, TextDatumGetCString(d));
			d = SPI_getbinval(tup, td, 3, &isnull);
			if (!isnull && call->status == 201)
				delq_http_add_header(call, "Location", TextDatumGetCString(d));
		}
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		undo(session_changed, save_session, save_user, save_sec);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(call->cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		undo(session_changed, save_session, save_user, save_sec);
		resetStringInfo(&call->reply);
		call->reply_headers = NIL;
		problem_from_error(call, edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(call->cxt);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* A request body, when there is one, must be JSON in UTF-8. */
static bool
body_acceptable(DelqHttpCall *call)
{
	const char *ct = delq_http_header(call, "content-type");

	if (call->body.len == 0)
		return true;
	if (ct == NULL || pg_strncasecmp(ct, "application/json", 16) != 0 ||
		(ct[16] != '\0' && ct[16] != ';' && ct[16] != ' '))
	{
		delq_api_problem(call, 415, NULL, "The body must be application/json.",
						 "Send Content-Type: application/json.");
		return false;
	}
	if (!pg_verifymbstr(call->body.data, call->body.len, true) ||
		memchr(call->body.data, '\0', call->body.len) != NULL)
	{
		delq_api_problem(call, 400, "22021", "The body is not valid UTF-8.",
						 "Encode the JSON body in UTF-8.");
		return false;
	}
	return true;
}

/*
 * Serve one complete call: find its route, check the body, run the SQL.
 */
void
delq_api_serve(DelqHttpCall *call)
{
	const DelqRoute *found = NULL;
	bool		path_known = false;
	char	   *segment = NULL;
	int			i;

	MemoryContextSwitchTo(call->cxt);
	for (i = 0; i < lengthof(routes); i++)
	{
		char	   *seg = NULL;

		if (!path_matches(routes[i].pattern, call->path, &seg))
			continue;
		path_known = true;
		call->route = routes[i].pattern;
		if (strcmp(routes[i].method, call->method) == 0)
		{
			found = &routes[i];
			segment = seg;
			break;
		}
	}
	if (found == NULL)
	{
		if (path_known)
		{
			StringInfoData allow;
			char	   *seg = NULL;

			initStringInfo(&allow);
			for (i = 0; i < lengthof(routes); i++)
				if (path_matches(routes[i].pattern, call->path, &seg))
					appendStringInfo(&allow, "%s%s", allow.len ? ", " : "", routes[i].method);
			delq_http_add_header(call, "Allow", allow.data);
			delq_api_problem(call, 405, NULL,
							 psprintf("%s is not allowed on %s.", call->method, call->route),
							 "See GET /v1/openapi.json for the methods of each route.");
		}
		else
		{
			call->route = "unknown";
			delq_api_problem(call, 404, NULL, "There is no such route.",
							 "See GET /v1/openapi.json for the routes.");
		}
		return;
	}
	if (found->sql == NULL)
	{
		call->status = 200;
		call->content_type = found->content_type;
		appendStringInfoString(&call->reply, openapi_doc);
		return;
	}
	if (!body_acceptable(call))
		return;
	run_route(call, found, segment);

	/*
	 * The status page escapes every value (delq.html); should one slip
	 * through, the browser still runs no script, loads nothing and shows the
	 * page in no frame of another site.
	 */
	if (strncmp(call->content_type, "text/html", 9) == 0)
		delq_http_add_header(call, "Content-Security-Policy",
							 "default-src 'none'; style-src 'unsafe-inline'; "
							 "frame-ancestors 'none'; form-action 'none'; base-uri 'none'");
	if (call->status == 200 && strcmp(found->pattern, "/metrics") == 0)
		append_counters(&call->reply);
}
