/*-------------------------------------------------------------------------
 *
 * ingress.c
 *	  The HTTP server worker: GNU libmicrohttpd in its external event loop.
 *
 * Started by delq's launcher (src/worker.c) only when delq.http_listen is
 * set, once delq.database exists, as the forwarding worker is.  The worker
 * connects to delq.database, waits quietly for CREATE EXTENSION delq (or
 * ALTER EXTENSION UPDATE to the library's version, delq_wait_for_schema),
 * and serves HTTP(S) from one thread, its own: libmicrohttpd runs without threads of its own (no
 * MHD_USE_INTERNAL_POLLING_THREAD), its sockets are waited on through a
 * WaitEventSet together with the latch and postmaster death, and
 * MHD_run_from_select() then calls the routes of src/api.c, which run
 * their SQL in this process, one short transaction per call.
 *
 * Limits (docs/http-api.md): a body larger than delq.http_max_body is
 * answered 413 before it is read; beyond delq.http_max_connections open
 * connections a request is answered 503 with Retry-After, beyond
 * delq.http_max_client_connections from one address 429; a request (from
 * its first byte, or the end of the previous one) that is not complete
 * within delq.http_request_timeout has its connection cut, so a slow
 * client cannot hold a connection.
 *
 * src/ingress.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/select.h>
#include <microhttpd.h>

#include "access/xact.h"
#include "lib/ilist.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/formatting.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "ingress.h"
#include "settings.h"
#include "worker.h"

/* Headers of one request, at most (libmicrohttpd answers 431 beyond). */
#define DELQ_HTTP_HEADER_MEMORY		(32 * 1024)

PGDLLEXPORT void delq_ingress_main(Datum arg);

/* One open connection, for the request timeout and the 503 count. */
typedef struct DelqConn
{
	dlist_node	node;
	int			fd;
	TimestampTz started;		/* of the request under way */
	char		client[INET6_ADDRSTRLEN];	/* the peer's address */
} DelqConn;

static dlist_head conns = DLIST_STATIC_INIT(conns);
static int	nconns = 0;

const char *
delq_http_header(DelqHttpCall *call, const char *name)
{
	ListCell   *lc;

	foreach(lc, call->headers)
	{
		DelqHttpPair *p = lfirst(lc);

		if (strcmp(p->name, name) == 0)
			return p->value;
	}
	return NULL;
}

const char *
delq_http_arg(DelqHttpCall *call, const char *name)
{
	ListCell   *lc;

	foreach(lc, call->args)
	{
		DelqHttpPair *p = lfirst(lc);

		if (strcmp(p->name, name) == 0)
			return p->value;
	}
	return NULL;
}

void
delq_http_add_header(DelqHttpCall *call, const char *name, const char *value)
{
	MemoryContext old = MemoryContextSwitchTo(call->cxt);
	DelqHttpPair *p = palloc(sizeof(DelqHttpPair));

	p->name = pstrdup(name);
	p->value = pstrdup(value);
	call->reply_headers = lappend(call->reply_headers, p);
	MemoryContextSwitchTo(old);
}

/* MHD_KeyValueIterator: collect headers (lower-cased) or query arguments. */
static enum MHD_Result
collect_pair(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	List	  **list = cls;
	DelqHttpPair *p = palloc(sizeof(DelqHttpPair));

	p->name = (kind == MHD_HEADER_KIND) ? asc_tolower(key, strlen(key)) : pstrdup(key);
	p->value = pstrdup(value ? value : "");
	*list = lappend(*list, p);
	return MHD_YES;
}

static DelqHttpCall *
new_call(struct MHD_Connection *conn, const char *url, const char *method)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "delq http call",
											  ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	DelqHttpCall *call = palloc0(sizeof(DelqHttpCall));

	call->cxt = cxt;
	call->method = pstrdup(method);
	call->path = pstrdup(url);
	MHD_get_connection_values(conn, MHD_HEADER_KIND, collect_pair, &call->headers);
	MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect_pair, &call->args);
	initStringInfo(&call->body);
	initStringInfo(&call->reply);
	call->status = 500;
	call->content_type = "application/json";
	MemoryContextSwitchTo(old);
	return call;
}

/* Hand the answer a route filled in to libmicrohttpd. */
static enum MHD_Result
send_reply(struct MHD_Connection *conn, DelqHttpCall *call)
{
	struct MHD_Response *response;
	enum MHD_Result ret;
	ListCell   *lc;

	delq_api_count(call);
	response = MHD_create_response_from_buffer(call->reply.len, call->reply.data,
											   MHD_RESPMEM_MUST_COPY);
	if (response == NULL)
		return MHD_NO;
	MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, call->content_type);
	MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	MHD_add_response_header(response, "X-Content-Type-Options", "nosniff");
	foreach(lc, call->reply_headers)
	{
		DelqHttpPair *p = lfirst(lc);

		MHD_add_response_header(response, p->name, p->value);
	}
	ret = MHD_queue_response(conn, call->status, response);
	MHD_destroy_response(response);
	return ret;
}

/* Open connections from the address of c, c included. */
static int
connections_of(DelqConn *c)
{
	dlist_iter	iter;
	int			n = 0;

	dlist_foreach(iter, &conns)
	{
		DelqConn   *other = dlist_container(DelqConn, node, iter.cur);

		if (strcmp(other->client, c->client) == 0)
			n++;
	}
	return n;
}

/*
 * A limit answered before the body is read: overload (503), one client
 * address holding more than delq.http_max_client_connections (429), and
 * a body announced larger than delq.http_max_body (413).  Returns whether
 * it answered.
 */
static bool
refuse_early(struct MHD_Connection *conn, DelqHttpCall *call)
{
	const char *length = delq_http_header(call, "content-length");
	const union MHD_ConnectionInfo *info;
	DelqConn   *c;

	info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	c = info ? info->socket_context : NULL;

	if (nconns > delq_http_max_connections)
	{
		call->route = "overload";
		delq_http_add_header(call, "Retry-After", "1");
		delq_http_add_header(call, MHD_HTTP_HEADER_CONNECTION, "close");
		delq_api_problem(call, 503, NULL, "The server has too many open connections.",
						 "Retry after the number of seconds in Retry-After.");
		return true;
	}
	if (c != NULL && delq_http_max_client_connections > 0 &&
		connections_of(c) > delq_http_max_client_connections)
	{
		call->route = "overload";
		delq_http_add_header(call, "Retry-After", "1");
		delq_http_add_header(call, MHD_HTTP_HEADER_CONNECTION, "close");
		delq_api_problem(call, 429, NULL, "This client has too many open connections.",
						 "Use fewer connections at once (delq.http_max_client_connections); retry after Retry-After.");
		return true;
	}
	if (length != NULL && strtoull(length, NULL, 10) > (unsigned long long) delq_http_max_body)
	{
		call->route = "too_large";
		delq_http_add_header(call, MHD_HTTP_HEADER_CONNECTION, "close");
		delq_api_problem(call, 413, NULL,
						 psprintf("The request body is larger than %d bytes.", delq_http_max_body),
						 "Send a smaller body (delq.http_max_body).");
		return true;
	}
	return false;
}

/*
 * MHD_AccessHandlerCallback: called once when the headers are in, then for
 * each piece of the body, then once more with none when it is complete.
 * All on this process's only thread, from MHD_run_from_select().
 */
static enum MHD_Result
answer(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
	   const char *version, const char *upload_data, size_t *upload_data_size,
	   void **req_cls)
{
	DelqHttpCall *call = *req_cls;

	if (call == NULL)
	{
		call = new_call(conn, url, method);
		*req_cls = call;
		if (refuse_early(conn, call))
			return send_reply(conn, call);
		return MHD_YES;
	}
	if (*upload_data_size > 0)
	{
		/* chunked bodies have no length to refuse early: close at once */
		if (call->body.len + *upload_data_size > (size_t) delq_http_max_body)
			return MHD_NO;
		appendBinaryStringInfo(&call->body, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}
	delq_api_serve(call);
	MemoryContextSwitchTo(TopMemoryContext);
	return send_reply(conn, call);
}

/* MHD_RequestCompletedCallback: free the call; the next request's clock. */
static void
completed(void *cls, struct MHD_Connection *conn, void **req_cls,
		  enum MHD_RequestTerminationCode toe)
{
	DelqHttpCall *call = *req_cls;
	const union MHD_ConnectionInfo *info;

	if (call != NULL)
		MemoryContextDelete(call->cxt);
	*req_cls = NULL;
	info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	if (info != NULL && info->socket_context != NULL)
		((DelqConn *) info->socket_context)->started = GetCurrentTimestamp();
}

/* MHD_NotifyConnectionCallback: keep the list of open connections. */
static void
connection_event(void *cls, struct MHD_Connection *conn, void **socket_context,
				 enum MHD_ConnectionNotificationCode toe)
{
	if (toe == MHD_CONNECTION_NOTIFY_STARTED)
	{
		DelqConn   *c = MemoryContextAlloc(TopMemoryContext, sizeof(DelqConn));
		const union MHD_ConnectionInfo *info;

		info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		c->fd = info ? info->connect_fd : -1;
		c->started = GetCurrentTimestamp();
		c->client[0] = '\0';
		info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		if (info != NULL && info->client_addr != NULL)
		{
			const struct sockaddr *sa = info->client_addr;

			if (sa->sa_family == AF_INET)
				inet_ntop(AF_INET, &((const struct sockaddr_in *) sa)->sin_addr,
						  c->client, sizeof(c->client));
			else if (sa->sa_family == AF_INET6)
				inet_ntop(AF_INET6, &((const struct sockaddr_in6 *) sa)->sin6_addr,
						  c->client, sizeof(c->client));
		}
		dlist_push_tail(&conns, &c->node);
		nconns++;
		*socket_context = c;
	}
	else if (*socket_context != NULL)
	{
		DelqConn   *c = *socket_context;

		dlist_delete(&c->node);
		nconns--;
		pfree(c);
		*socket_context = NULL;
	}
}

/*
 * Cut connections whose request has taken longer than
 * delq.http_request_timeout: shutting the socket down makes
 * libmicrohttpd see the end of the connection and close it.
 */
static void
cut_slow_connections(void)
{
	dlist_iter	iter;
	TimestampTz now = GetCurrentTimestamp();

	dlist_foreach(iter, &conns)
	{
		DelqConn   *c = dlist_container(DelqConn, node, iter.cur);

		if (c->fd >= 0 &&
			TimestampDifferenceExceeds(c->started, now, delq_http_request_timeout_ms))
		{
			shutdown(c->fd, SHUT_RDWR);
			c->fd = -1;			/* once */
		}
	}
}

static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	char		buf[512];

	vsnprintf(buf, sizeof(buf), fmt, ap);
	ereport(DEBUG1, (errmsg_internal("delq http: %s", buf)));
}

/* A file the server needs whole (certificate, key), or an error. */
static char *
read_whole_file(const char *setting, const char *path)
{
	FILE	   *f = AllocateFile(path, "r");
	StringInfoData buf;
	char		chunk[4096];
	size_t		n;

	if (f == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("delq could not read %s file \"%s\": %m", setting, path),
				 errhint("Set %s to a PEM file readable by the server.", setting)));
	initStringInfo(&buf);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		appendBinaryStringInfo(&buf, chunk, n);
	FreeFile(f);
	return buf.data;
}

/* Resolve delq.http_listen ("host:port", "[v6]:port") to an address. */
static struct addrinfo *
listen_address(void)
{
	char	   *spec = pstrdup(delq_http_listen);
	char	   *colon = strrchr(spec, ':');
	char	   *host = spec;
	struct addrinfo hints;
	struct addrinfo *res = NULL;
	int			rc;

	if (colon == NULL || colon[1] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("delq.http_listen \"%s\" has no port", delq_http_listen),
				 errhint("Write host:port, e.g. 127.0.0.1:8080 or [::1]:8080.")));
	*colon = '\0';
	if (host[0] == '[' && host[strlen(host) - 1] == ']')
	{
		host++;
		host[strlen(host) - 1] = '\0';
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
	if (rc != 0 || res == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("delq.http_listen \"%s\" is not an address: %s",
						delq_http_listen, gai_strerror(rc)),
				 errhint("Write host:port, e.g. 127.0.0.1:8080 or [::1]:8080.")));
	return res;
}

static struct MHD_Daemon *
start_daemon(void)
{
	struct addrinfo *addr = listen_address();
	unsigned int flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
	bool		tls = delq_http_tls_cert[0] != '\0' || delq_http_tls_key[0] != '\0';
	struct MHD_OptionItem tls_opts[3];
	struct MHD_Daemon *d;
	unsigned int hard_limit = Max(4 * delq_http_max_connections,
								  delq_http_max_connections + 64);

	memset(tls_opts, 0, sizeof(tls_opts));
	tls_opts[0].option = MHD_OPTION_END;
	if (tls)
	{
		if (delq_http_tls_cert[0] == '\0' || delq_http_tls_key[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("delq.http_tls_cert and delq.http_tls_key must be set together")));
		flags |= MHD_USE_TLS;
		tls_opts[0].option = MHD_OPTION_HTTPS_MEM_KEY;
		tls_opts[0].ptr_value = read_whole_file("delq.http_tls_key", delq_http_tls_key);
		tls_opts[1].option = MHD_OPTION_HTTPS_MEM_CERT;
		tls_opts[1].ptr_value = read_whole_file("delq.http_tls_cert", delq_http_tls_cert);
		tls_opts[2].option = MHD_OPTION_END;
	}
	if (addr->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;

	d = MHD_start_daemon(flags, 0, NULL, NULL, answer, NULL,
						 MHD_OPTION_SOCK_ADDR, addr->ai_addr,
						 MHD_OPTION_CONNECTION_LIMIT, hard_limit,
						 MHD_OPTION_CONNECTION_TIMEOUT,
						 (unsigned int) Max(1, delq_http_request_timeout_ms / 1000),
						 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) DELQ_HTTP_HEADER_MEMORY,
						 MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
						 MHD_OPTION_NOTIFY_CONNECTION, connection_event, NULL,
						 MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
						 MHD_OPTION_ARRAY, tls_opts,
						 MHD_OPTION_END);
	freeaddrinfo(addr);
	if (d == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("delq could not serve HTTP on \"%s\"", delq_http_listen),
				 errhint("Check that the address is free and, with TLS, that the key matches the certificate.")));
	ereport(LOG,
			(errmsg("delq http serving %s on %s", tls ? "HTTPS" : "HTTP", delq_http_listen)));
	return d;
}

/*
 * One wait: libmicrohttpd's sockets (with MHD_USE_EPOLL, its one epoll
 * descriptor), the latch and postmaster death, at most until its timeout
 * or the next request deadline; then let it run on what is ready.
 */
static void
serve_once(struct MHD_Daemon *d, MemoryContext loop_cxt)
{
	fd_set		rs,
				ws,
				es,
				ready_r,
				ready_w,
				ready_e;
	MHD_socket	max_fd = 0;
	MHD_UNSIGNED_LONG_LONG mhd_timeout;
	long		timeout = -1;
	WaitEventSet *set;
	WaitEvent	events[64];
	int			n;
	int			i;
	MemoryContext old = MemoryContextSwitchTo(loop_cxt);

	FD_ZERO(&rs);
	FD_ZERO(&ws);
	FD_ZERO(&es);
	if (MHD_get_fdset(d, &rs, &ws, &es, &max_fd) != MHD_YES)
		elog(ERROR, "delq http: MHD_get_fdset failed");
	if (MHD_get_timeout(d, &mhd_timeout) == MHD_YES)
		timeout = (long) Min(mhd_timeout, (MHD_UNSIGNED_LONG_LONG) LONG_MAX);
	if (nconns > 0)				/* request deadlines: look each second */
		timeout = (timeout < 0) ? 1000 : Min(timeout, 1000);

	set = CreateWaitEventSet(loop_cxt, max_fd + 3);
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (i = 0; i <= max_fd; i++)
	{
		uint32		ev = 0;

		if (FD_ISSET(i, &rs))
			ev |= WL_SOCKET_READABLE;
		if (FD_ISSET(i, &ws))
			ev |= WL_SOCKET_WRITEABLE;

		if (ev != 0)
			AddWaitEventToSet(set, ev, i, NULL, NULL);
	}
	n = WaitEventSetWait(set, timeout, events, lengthof(events), PG_WAIT_EXTENSION);

	FD_ZERO(&ready_r);
	FD_ZERO(&ready_w);
	FD_ZERO(&ready_e);
	for (i = 0; i < n; i++)
	{
		if (events[i].events & WL_LATCH_SET)
			ResetLatch(MyLatch);
		if (events[i].events & WL_SOCKET_READABLE)
			FD_SET(events[i].fd, &ready_r);
		if (events[i].events & WL_SOCKET_WRITEABLE)
			FD_SET(events[i].fd, &ready_w);
	}
	FreeWaitEventSet(set);
	MemoryContextSwitchTo(old);

	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
	MHD_run_from_select(d, &ready_r, &ready_w, &ready_e);
	MemoryContextSwitchTo(old);
	cut_slow_connections();
	MemoryContextReset(loop_cxt);
}

/*
 * Session settings of the server: nothing found through the search path,
 * a statement or lock wait cannot hold the only thread long, and a
 * commit is flushed before the 2xx that acknowledges it.
 */
static void
session_settings(void)
{
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "5s", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", "2s", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	if (strcmp(GetConfigOption("synchronous_commit", false, false), "off") == 0)
		SetConfigOption("synchronous_commit", "local", PGC_SUSET, PGC_S_OVERRIDE);
}

void
delq_ingress_main(Datum arg)
{
	struct MHD_Daemon *d;
	MemoryContext loop_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	delq_worker_take_slot(DELQ_WORKER_HTTP);

	BackgroundWorkerInitializeConnection(delq_database,
										 delq_worker_role[0] ? delq_worker_role : NULL,
										 0);
	pgstat_report_appname("delq http");
	session_settings();

	delq_wait_for_schema("delq http", "serving");

	delq_api_start();
	d = start_daemon();
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "delq http loop",
									 ALLOCSET_DEFAULT_SIZES);
	for (;;)
		serve_once(d, loop_cxt);
}
