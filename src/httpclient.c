/*-------------------------------------------------------------------------
 *
 * httpclient.c
 *	  HTTP requests over libcurl's multi interface, driven by one
 *	  PostgreSQL WaitEventSet.  Nothing here knows about webhooks
 *	  (src/webhook.c builds and judges those).
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when
 * to call it back (CURLMOPT_TIMERFUNCTION); we wait for those sockets, the
 * process latch and postmaster death together in one WaitEventSet, with
 * curl's timer as the timeout, and hand socket activity back through
 * curl_multi_socket_action().  The process never polls on its own, so an
 * idle client costs no CPU and every wait stays interruptible.
 *
 * A PG15 WaitEventSet cannot forget a socket, so the set is rebuilt when
 * curl adds or removes one; a change of direction on a socket it already
 * holds is a cheap ModifyWaitEvent().
 *
 * curl calls our callbacks from inside its own functions.  Nothing in a
 * callback may throw (a longjmp through libcurl is undefined behaviour):
 * callbacks only record facts, allocate with MCXT_ALLOC_NO_OOM and defer
 * every WaitEventSet change; errors are reported once curl has returned.
 *
 * Bookkeeping lives in a memory context of its own under TopMemoryContext,
 * so it survives the caller's transactions; curl's handles are malloc'd by
 * curl.  Finished easy handles are pooled and reused; connections are kept
 * alive in the multi handle's connection cache.  Requests beyond
 * max_connections wait in a queue of our own (see delq_http_start).
 *
 * IDENTIFICATION
 *	  src/httpclient.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

#include <curl/curl.h>

#include "lib/ilist.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "httpclient.h"

#define DELQ_USER_AGENT			"delq/1.0"
#define DELQ_PROTOCOLS			"http,https"
#define DELQ_IDLE_HANDLES		64	/* pooled easy handles when uncapped */

/* One socket curl asked us to watch; curl_multi_assign'ed to its fd. */
typedef struct DelqSocket
{
	dlist_node	node;			/* in DelqHttp.sockets */
	curl_socket_t fd;
	int			what;			/* CURL_POLL_IN, _OUT or _INOUT */
	int			pos;			/* position in the WaitEventSet, or -1 */
	bool		changed;		/* what changed since the set saw it */
} DelqSocket;

/* One easy handle and what a request on it has received so far. */
typedef struct DelqConn
{
	dlist_node	node;			/* in idle, waiting, active or finished */
	CURL	   *easy;
	DelqHttpRequest *req;		/* NULL while idle */
	struct curl_slist *headers;
	size_t		received;		/* response body bytes */
	bool		too_large;
	char		denied[INET6_ADDRSTRLEN];	/* an address refused, or "" */
	char		errbuf[CURL_ERROR_SIZE];
} DelqConn;

static curl_socket_t open_socket(void *clientp, curlsocktype purpose,
								 struct curl_sockaddr *address);
#if LIBCURL_VERSION_NUM >= 0x075000
static int	check_reused(void *clientp, char *primary_ip, char *local_ip,
						 int primary_port, int local_port);
#endif

struct DelqHttp
{
	MemoryContext cxt;
	CURLM	   *multi;
	MemoryContext prepare_cxt;	/* for DelqHttpRequest.prepare, reset after */
	int			running;		/* started, not yet handed back */
	int			max_inflight;	/* requests in curl at most (0: no cap) */
	int			ninflight;		/* requests in curl */
	int			max_idle;		/* pooled easy handles kept at most */
	int			nidle;
	dlist_head	idle;			/* DelqConn, ready for reuse */
	dlist_head	waiting;		/* DelqConn, started, waiting for a slot */
	dlist_head	active;			/* DelqConn, in the multi handle */
	dlist_head	finished;		/* DelqConn, done, not yet handed back */

	dlist_head	sockets;		/* DelqSocket */
	int			nsockets;
	bool		sockets_dirty;	/* added or removed: rebuild the set */
	bool		sockets_changed;	/* directions changed: modify */
	bool		callback_oom;	/* a callback could not allocate */

	bool		timer_armed;
	TimestampTz timer_deadline;

	WaitEventSet *wes;
	Latch	   *wes_latch;		/* the MyLatch that wes waits on */
	WaitEvent  *events;			/* room for every event in wes */
	int			nevents;
};

static bool curl_ready = false;

/* curl derives these from the request; build_headers writes "Expect:" */
const char *const delq_http_reserved_headers[] = {
	"host", "content-length", "transfer-encoding", "connection", "expect",
	NULL
};

/*
 * A transport error may go away by itself, except those that only a change
 * of configuration can cure (bad URL or scheme, unreadable local TLS
 * files): retrying those would burn the attempts for nothing.
 */
static DelqHttpResult
transport_result(CURLcode rc)
{
	switch (rc)
	{
		case CURLE_UNSUPPORTED_PROTOCOL:
		case CURLE_URL_MALFORMAT:
		case CURLE_NOT_BUILT_IN:
		case CURLE_BAD_FUNCTION_ARGUMENT:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_CRL_BADFILE:
		case CURLE_SSL_ENGINE_NOTFOUND:
		case CURLE_SSL_ENGINE_SETFAILED:
			return DELQ_HTTP_REFUSED;
		default:
			return DELQ_HTTP_NO_ANSWER;
	}
}

/*
 * Network text into a text column (httpclient.h): anything non-ASCII is
 * '?' unless the database is UTF-8 and it is valid UTF-8.
 */
size_t
delq_http_safe_text(char *dst, size_t dstsize, const char *src, size_t len)
{
	const unsigned char *s = (const unsigned char *) src;
	bool		utf8 = (GetDatabaseEncoding() == PG_UTF8);
	size_t		i = 0;
	size_t		o = 0;

	while (i < len && o + 1 < dstsize)
	{
		int			l;

		if (s[i] < 0x20 || s[i] == 0x7f)
			dst[o++] = ' ';
		else if (s[i] < 0x80)
			dst[o++] = s[i];
		else if (utf8 && (l = pg_utf_mblen(&s[i])) > (int) (len - i))
			break;				/* a character cut off by the excerpt */
		else if (utf8 && pg_utf8_islegal(&s[i], l))
		{
			if (o + l + 1 > dstsize)
				break;
			memcpy(&dst[o], &s[i], l);
			o += l;
			i += l;
			continue;
		}
		else
			dst[o++] = '?';
		i++;
	}
	while (o > 0 && dst[o - 1] == ' ')
		o--;
	dst[o] = '\0';
	return o;
}

/*
 * CURLOPT_HEADERFUNCTION: hand each header line of a response to the
 * request's header callback as name and value; a status line tells it to
 * forget what an interim response said.
 */
static size_t
header_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
	DelqConn   *conn = (DelqConn *) userdata;
	DelqHttpRequest *req = conn->req;
	size_t		len = size * nitems;
	const char *colon;
	size_t		start;
	size_t		end;

	if (req->header == NULL)
		return len;
	if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0)
	{
		req->header(req, NULL, 0, NULL, 0);
		return len;
	}
	colon = memchr(buf, ':', len);
	if (colon == NULL)
		return len;				/* the blank line that ends the headers */
	start = colon - buf + 1;
	end = len;
	while (start < end && (buf[start] == ' ' || buf[start] == '\t'))
		start++;
	while (end > start && isspace((unsigned char) buf[end - 1]))
		end--;
	req->header(req, buf, colon - buf, buf + start, end - start);
	return len;
}

/* The most response bytes a request reads. */
static size_t
response_max(DelqHttpRequest *req)
{
	return req->max_response > 0 ? req->max_response : DELQ_HTTP_RESPONSE_MAX;
}

/*
 * CURLOPT_WRITEFUNCTION: keep what the caller has room for, count the
 * rest, and abort an answer larger than the request allows.
 */
static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	DelqConn   *conn = (DelqConn *) userdata;
	DelqHttpRequest *req = conn->req;
	size_t		len = size * nmemb;
	size_t		room = req->response_size - req->response_len;

	if (conn->received + len > response_max(req))
	{
		conn->too_large = true;
		return 0;				/* curl fails with CURLE_WRITE_ERROR */
	}
	conn->received += len;
	if (req->response != NULL && room > 0)
	{
		memcpy(req->response + req->response_len, ptr, Min(room, len));
		req->response_len += Min(room, len);
	}
	return len;
}

/* WaitEventSet events for curl's CURL_POLL_* value. */
static uint32
socket_events(int what)
{
	uint32		events = 0;

	if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
		events |= WL_SOCKET_READABLE;
	if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
		events |= WL_SOCKET_WRITEABLE;
	return events;
}

/*
 * CURLMOPT_SOCKETFUNCTION: track the sockets curl wants watched.  The
 * WaitEventSet itself is only touched once curl has returned (see
 * prepare_wait_set); returning -1 on allocation failure makes curl abort
 * its transfers, and the error is raised after curl returns.
 */
static int
socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	DelqHttp   *http = (DelqHttp *) userp;
	DelqSocket *sock = (DelqSocket *) socketp;

	if (what == CURL_POLL_REMOVE)
	{
		if (sock != NULL)
		{
			dlist_delete(&sock->node);
			http->nsockets--;
			pfree(sock);
			http->sockets_dirty = true;
		}
		return 0;
	}

	if (sock == NULL)
	{
		sock = MemoryContextAllocExtended(http->cxt, sizeof(DelqSocket),
										  MCXT_ALLOC_NO_OOM | MCXT_ALLOC_ZERO);
		if (sock == NULL)
		{
			http->callback_oom = true;
			return -1;
		}
		sock->fd = fd;
		sock->pos = -1;
		dlist_push_tail(&http->sockets, &sock->node);
		http->nsockets++;
		curl_multi_assign(http->multi, fd, sock);
		http->sockets_dirty = true;
	}
	else if (sock->what != what)
	{
		sock->changed = true;
		http->sockets_changed = true;
	}
	sock->what = what;
	return 0;
}

/* CURLMOPT_TIMERFUNCTION: remember when curl wants to be called back. */
static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	DelqHttp   *http = (DelqHttp *) userp;

	if (timeout_ms < 0)
		http->timer_armed = false;
	else
	{
		http->timer_armed = true;
		http->timer_deadline =
			TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	}
	return 0;
}

/*
 * Create a client.  curl_global_init is not thread-safe and must not run
 * in the postmaster, so it happens here, once per process, on first use.
 */
DelqHttp *
delq_http_create(int max_connections)
{
	MemoryContext cxt;
	DelqHttp   *http;

	if (!curl_ready)
	{
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			ereport(ERROR,
					(errcode(ERRCODE_SYSTEM_ERROR),
					 errmsg("could not initialize libcurl")));
		curl_ready = true;
	}

	cxt = AllocSetContextCreate(TopMemoryContext, "delq http",
								ALLOCSET_SMALL_SIZES);
	http = MemoryContextAllocZero(cxt, sizeof(DelqHttp));
	http->cxt = cxt;
	http->prepare_cxt = AllocSetContextCreate(cxt, "delq http prepare",
											  ALLOCSET_SMALL_SIZES);
	http->max_inflight = Max(max_connections, 0);
	http->max_idle = max_connections > 0 ? max_connections : DELQ_IDLE_HANDLES;
	dlist_init(&http->idle);
	dlist_init(&http->waiting);
	dlist_init(&http->active);
	dlist_init(&http->finished);
	dlist_init(&http->sockets);
	http->sockets_dirty = true;

	http->multi = curl_multi_init();
	if (http->multi == NULL)
	{
		MemoryContextDelete(cxt);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl multi handle")));
	}
	curl_multi_setopt(http->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(http->multi, CURLMOPT_SOCKETDATA, http);
	curl_multi_setopt(http->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(http->multi, CURLMOPT_TIMERDATA, http);
	if (max_connections > 0)
		curl_multi_setopt(http->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
						  (long) max_connections);
	return http;
}

/* Free an easy handle and its bookkeeping for good. */
static void
conn_free(DelqConn *conn)
{
	curl_slist_free_all(conn->headers);
	curl_easy_cleanup(conn->easy);
	pfree(conn);
}

/*
 * Free everything: requests still in flight are abandoned (their done()
 * is never called, their result stays PENDING).  Safe after an error
 * thrown out of delq_http_wait, e.g. in a PG_FINALLY block.
 */
void
delq_http_destroy(DelqHttp *http)
{
	dlist_mutable_iter iter;

	if (http == NULL)
		return;

	dlist_foreach_modify(iter, &http->active)
	{
		DelqConn   *conn = dlist_container(DelqConn, node, iter.cur);

		curl_multi_remove_handle(http->multi, conn->easy);
		conn->req->priv = NULL;
		conn_free(conn);
	}
	dlist_foreach_modify(iter, &http->waiting)
	{
		DelqConn   *conn = dlist_container(DelqConn, node, iter.cur);

		conn->req->priv = NULL;
		conn_free(conn);
	}
	dlist_foreach_modify(iter, &http->finished)
	{
		DelqConn   *conn = dlist_container(DelqConn, node, iter.cur);

		conn->req->priv = NULL;
		conn_free(conn);
	}
	dlist_foreach_modify(iter, &http->idle)
		conn_free(dlist_container(DelqConn, node, iter.cur));

	/* may still call socket_cb for cached connections: keep cxt till now */
	curl_multi_cleanup(http->multi);
	if (http->wes != NULL)
		FreeWaitEventSet(http->wes);
	MemoryContextDelete(http->cxt);
}

/* Requests started and not yet handed back to done(). */
int
delq_http_running(DelqHttp *http)
{
	return http->running;
}

/*
 * Take a pooled easy handle (reset to defaults, cached connections kept)
 * or make a new one.  Throws only when memory runs out.
 */
static DelqConn *
conn_acquire(DelqHttp *http)
{
	DelqConn   *conn;

	if (!dlist_is_empty(&http->idle))
	{
		conn = dlist_container(DelqConn, node,
							   dlist_pop_head_node(&http->idle));
		http->nidle--;
		curl_easy_reset(conn->easy);
	}
	else
	{
		conn = MemoryContextAllocZero(http->cxt, sizeof(DelqConn));
		conn->easy = curl_easy_init();
		if (conn->easy == NULL)
		{
			pfree(conn);
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not create a libcurl easy handle")));
		}
	}
	conn->req = NULL;
	conn->headers = NULL;
	conn->received = 0;
	conn->too_large = false;
	conn->errbuf[0] = '\0';
	return conn;
}

/* Return a handle that curl no longer holds to the pool (or free it). */
static void
conn_release(DelqHttp *http, DelqConn *conn)
{
	curl_slist_free_all(conn->headers);
	conn->headers = NULL;
	conn->req = NULL;
	if (http->nidle < http->max_idle)
	{
		dlist_push_head(&http->idle, &conn->node);
		http->nidle++;
	}
	else
		conn_free(conn);
}

/*
 * Append one "Name: value" line to the header list.  Refuses line breaks,
 * which would let a value smuggle in headers (or a body) of its own.
 * Never throws.
 */
static const char *
add_line(struct curl_slist **list, const char *line)
{
	struct curl_slist *next;

	if (strpbrk(line, "\r\n") != NULL)
		return "a request header contains a line break";
	next = curl_slist_append(*list, line);
	if (next == NULL)
		return "out of memory";
	*list = next;
	return NULL;
}

/*
 * The header list: prepare's lines, then the request's own, then an empty
 * "Expect:" (no 100-continue round trip before the body).  Returns NULL,
 * or why the request cannot be sent.  Never throws.
 */
static const char *
build_headers(DelqConn *conn, char **lines, int nlines)
{
	DelqHttpRequest *req = conn->req;
	const char *err = NULL;
	int			i;

	for (i = 0; i < nlines && err == NULL; i++)
		err = add_line(&conn->headers, lines[i]);
	for (i = 0; i < req->nheaders && err == NULL; i++)
		err = add_line(&conn->headers, req->headers[i]);
	if (err == NULL)
		err = add_line(&conn->headers, "Expect:");
	return err;
}

#define SETOPT(opt, val) \
	do { \
		if (rc == CURLE_OK) \
			rc = curl_easy_setopt(easy, (opt), (val)); \
	} while (0)

/*
 * Every option of a request: no signals (threads and PostgreSQL's
 * handlers), http(s) only and no redirects, a proxy only when the request
 * names one, TLS verified, bounded time and
 * response size, keepalive so pooled connections notice dead peers.
 */
static CURLcode
setup_easy(DelqConn *conn, DelqHttpRequest *req)
{
	CURL	   *easy = conn->easy;
	CURLcode	rc = CURLE_OK;
	long		timeout = DELQ_HTTP_DEFAULT_TIMEOUT_MS;
	long		connect_timeout = DELQ_HTTP_DEFAULT_CONNECT_MS;

	if (req->timeout_ms > 0)
		timeout = req->timeout_ms;
	if (req->connect_timeout_ms > 0)
		connect_timeout = req->connect_timeout_ms;

	SETOPT(CURLOPT_PRIVATE, conn);
	SETOPT(CURLOPT_ERRORBUFFER, conn->errbuf);
	SETOPT(CURLOPT_NOSIGNAL, 1L);
	SETOPT(CURLOPT_URL, req->url);
#if LIBCURL_VERSION_NUM >= 0x075500
	SETOPT(CURLOPT_PROTOCOLS_STR, DELQ_PROTOCOLS);
	SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, DELQ_PROTOCOLS);
#else
	SETOPT(CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
	SETOPT(CURLOPT_REDIR_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
	/* "" is no proxy: libcurl would otherwise honour the server's environment */
	SETOPT(CURLOPT_PROXY, req->proxy ? req->proxy : "");
	SETOPT(CURLOPT_OPENSOCKETFUNCTION, open_socket);
	SETOPT(CURLOPT_OPENSOCKETDATA, conn);
#if LIBCURL_VERSION_NUM >= 0x075000
	SETOPT(CURLOPT_PREREQFUNCTION, check_reused);
	SETOPT(CURLOPT_PREREQDATA, conn);
#endif
	if (req->body != NULL)
	{
		SETOPT(CURLOPT_POST, 1L);
		SETOPT(CURLOPT_POSTFIELDS, req->body);
		SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen(req->body));
	}
	else
		SETOPT(CURLOPT_HTTPGET, 1L);
	if (req->method != NULL && strcmp(req->method, "HEAD") == 0)
		SETOPT(CURLOPT_NOBODY, 1L);
	else if (req->method != NULL)
		SETOPT(CURLOPT_CUSTOMREQUEST, req->method);
	SETOPT(CURLOPT_HTTPHEADER, conn->headers);
	SETOPT(CURLOPT_USERAGENT, DELQ_USER_AGENT);
	SETOPT(CURLOPT_TIMEOUT_MS, timeout);
	SETOPT(CURLOPT_CONNECTTIMEOUT_MS, connect_timeout);
	SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
	SETOPT(CURLOPT_TCP_KEEPIDLE, 60L);
	SETOPT(CURLOPT_TCP_KEEPINTVL, 30L);
	SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
	SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
	if (req->ca_file)
		SETOPT(CURLOPT_CAINFO, req->ca_file);
	if (req->client_cert)
	{
		SETOPT(CURLOPT_SSLCERT, req->client_cert);
		SETOPT(CURLOPT_SSLCERTTYPE, "PEM");
	}
	if (req->client_key)
		SETOPT(CURLOPT_SSLKEY, req->client_key);
	SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) response_max(req));
	SETOPT(CURLOPT_WRITEFUNCTION, write_cb);
	SETOPT(CURLOPT_WRITEDATA, conn);
	SETOPT(CURLOPT_HEADERFUNCTION, header_cb);
	SETOPT(CURLOPT_HEADERDATA, conn);
	return rc;
}

/*
 * A request that ends before it reaches curl: queue it so that the next
 * delq_http_wait hands it back like any other.
 */
static void
finish_early(DelqHttp *http, DelqConn *conn, DelqHttpResult result,
			 const char *error)
{
	conn->req->result = result;
	strlcpy(conn->req->error, error, sizeof(conn->req->error));
	dlist_push_tail(&http->finished, &conn->node);
}

/*
 * The request's prepare callback, in prepare_cxt (reset by launch).  May
 * throw, so callers prepare before they change any state.  Returns NULL
 * or why the request cannot be sent.
 */
static const char *
prepare_request(DelqHttp *http, DelqHttpRequest *req, char ***lines,
				int *nlines)
{
	MemoryContext old;
	const char *err;

	*lines = NULL;
	*nlines = 0;
	if (req->prepare == NULL)
		return NULL;
	MemoryContextReset(http->prepare_cxt);
	old = MemoryContextSwitchTo(http->prepare_cxt);
	err = req->prepare(req, lines, nlines);
	MemoryContextSwitchTo(old);
	return err;
}

/*
 * Hand a counted request to curl with prepare's outcome (err, or the
 * extra header lines).  A request that cannot be built ends through
 * done() instead.  Never throws.
 */
static void
launch(DelqHttp *http, DelqConn *conn, const char *err, char **lines,
	   int nlines)
{
	DelqHttpRequest *req = conn->req;
	CURLcode	rc;
	CURLMcode	mc;

	if (err == NULL)
		err = req->refuse;
	if (err == NULL)
		err = build_headers(conn, lines, nlines);
	if (err != NULL)
	{
		finish_early(http, conn, DELQ_HTTP_REFUSED, err);
		MemoryContextReset(http->prepare_cxt);
		return;
	}
	MemoryContextReset(http->prepare_cxt);

	if ((rc = setup_easy(conn, req)) != CURLE_OK)
	{
		finish_early(http, conn, DELQ_HTTP_REFUSED, curl_easy_strerror(rc));
		return;
	}
	if ((mc = curl_multi_add_handle(http->multi, conn->easy)) != CURLM_OK)
	{
		finish_early(http, conn, DELQ_HTTP_NO_ANSWER, curl_multi_strerror(mc));
		return;
	}
	dlist_push_tail(&http->active, &conn->node);
	http->ninflight++;
}

/* Whether a request may go to curl now rather than wait for a slot. */
static bool
have_slot(DelqHttp *http)
{
	return http->max_inflight <= 0 || http->ninflight < http->max_inflight;
}

/*
 * Begin one request.  Everything that can throw (prepare, a new handle)
 * happens before the request is counted, so an error leaves no trace.
 *
 * With max_connections set, requests beyond it wait in our own queue, not
 * in curl's: curl would count the time spent queued against timeout_ms,
 * and what prepare made (a signature's timestamp) would age.  A queued
 * request is prepared when it is launched.
 */
void
delq_http_start(DelqHttp *http, DelqHttpRequest *req)
{
	bool		now = have_slot(http) && dlist_is_empty(&http->waiting);
	char	  **lines = NULL;
	int			nlines = 0;
	const char *err = NULL;
	DelqConn   *conn;

	if (now)
		err = prepare_request(http, req, &lines, &nlines);
	conn = conn_acquire(http);

	/* nothing below throws */
	conn->req = req;
	conn->denied[0] = '\0';
	req->priv = conn;
	req->result = DELQ_HTTP_PENDING;
	req->status = 0;
	req->response_len = 0;
	req->error[0] = '\0';
	http->running++;

	if (now)
		launch(http, conn, err, lines, nlines);
	else
		dlist_push_tail(&http->waiting, &conn->node);
}

/*
 * Launch queued requests while there are free slots.  A request leaves
 * the queue only once it is prepared, so an error thrown by prepare leaves
 * it queued.
 */
static void
launch_waiting(DelqHttp *http)
{
	while (have_slot(http) && !dlist_is_empty(&http->waiting))
	{
		DelqConn   *conn = dlist_head_element(DelqConn, node, &http->waiting);
		char	  **lines;
		int			nlines;
		const char *err = prepare_request(http, conn->req, &lines, &nlines);

		dlist_delete(&conn->node);
		launch(http, conn, err, lines, nlines);
	}
}

/*
 * Overwrite with '*' every occurrence of val in buf, and a start of val of
 * at least 4 bytes that the end of buf cuts off.
 */
static void
mask_value(char *buf, size_t len, const char *val, size_t vlen)
{
	size_t		i;

	if (vlen < 4)
		return;
	for (i = 0; i < len; i++)
	{
		size_t		n = Min(vlen, len - i);

		if (n >= 4 && memcmp(buf + i, val, n) == 0)
		{
			memset(buf + i, '*', n);
			i += n - 1;
		}
	}
}

/*
 * A receiver may echo what it got, e.g. the Authorization header in the
 * text of a 401, and the answer's first bytes are stored in last_error,
 * which operators read.  So every value of a header this request sent is
 * masked there, and each word of 8 bytes or more of it (the token of
 * "Bearer <token>" echoed alone).  Never throws.
 */
static void
mask_sent_values(DelqHttpRequest *req)
{
	int			i;

	if (req->response == NULL || req->response_len == 0)
		return;
	for (i = 0; i < req->nheaders; i++)
	{
		const char *colon = strchr(req->headers[i], ':');
		const char *v;
		const char *w;

		if (colon == NULL)
			continue;
		v = colon + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		mask_value(req->response, req->response_len, v, strlen(v));
		for (w = v; *w;)
		{
			size_t		wlen = strcspn(w, " \t");

			if (wlen >= 8)
				mask_value(req->response, req->response_len, w, wlen);
			w += wlen;
			w += strspn(w, " \t");
		}
	}
}

/* Whether the first bits of a and b (bytes) are equal. */
static bool
prefix_equal(const unsigned char *a, const unsigned char *b, int bits)
{
	int			whole = bits / 8;
	int			rest = bits % 8;

	if (memcmp(a, b, whole) != 0)
		return false;
	return rest == 0 ||
		((a[whole] ^ b[whole]) & (unsigned char) (0xff << (8 - rest))) == 0;
}

/*
 * Whether a resolved address is in one of the request's denied networks;
 * an IPv4-mapped IPv6 address counts as the IPv4 address it maps.
 */
static bool
address_denied(const DelqHttpRequest *req, const struct sockaddr *sa)
{
	const unsigned char *a;
	int			family = sa->sa_family;
	static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	if (family == AF_INET)
		a = (const unsigned char *) &((const struct sockaddr_in *) sa)->sin_addr;
	else if (family == AF_INET6)
	{
		a = (const unsigned char *) &((const struct sockaddr_in6 *) sa)->sin6_addr;
		if (memcmp(a, v4mapped, 12) == 0)
		{
			a += 12;
			family = AF_INET;
		}
	}
	else
		return false;
	for (int i = 0; i < req->ndenied; i++)
		if (req->denied[i].family == family &&
			prefix_equal(a, req->denied[i].addr, req->denied[i].bits))
			return true;
	return false;
}

/*
 * CURLOPT_OPENSOCKETFUNCTION: the one place every connection starts, after
 * name resolution, so a host name that resolves into a denied network (a
 * cloud's metadata address, say) is refused before any packet is sent.
 */
static curl_socket_t
open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	DelqConn   *conn = (DelqConn *) clientp;

	if (conn->req != NULL && address_denied(conn->req, &address->addr))
	{
		const struct sockaddr *sa = &address->addr;
		const void *a = &((const struct sockaddr_in6 *) sa)->sin6_addr;

		if (sa->sa_family == AF_INET)
			a = &((const struct sockaddr_in *) sa)->sin_addr;
		if (inet_ntop(sa->sa_family, a, conn->denied, sizeof(conn->denied)) == NULL)
			strlcpy(conn->denied, "?", sizeof(conn->denied));
		return CURL_SOCKET_BAD;
	}
	return socket(address->family, address->socktype, address->protocol);
}

#if LIBCURL_VERSION_NUM >= 0x075000
/*
 * CURLOPT_PREREQFUNCTION: a pooled connection is reused without a new
 * socket, so the address is checked again before the request goes out
 * (the list may have changed since the connection was made).
 */
static int
check_reused(void *clientp, char *primary_ip, char *local_ip,
			 int primary_port, int local_port)
{
	DelqConn   *conn = (DelqConn *) clientp;
	struct sockaddr_in6 sa6;
	struct sockaddr_in sa4;

	if (conn->req == NULL || conn->req->ndenied == 0 || primary_ip == NULL)
		return CURL_PREREQFUNC_OK;
	memset(&sa4, 0, sizeof(sa4));
	memset(&sa6, 0, sizeof(sa6));
	if (inet_pton(AF_INET, primary_ip, &sa4.sin_addr) == 1)
		sa4.sin_family = AF_INET;
	else if (inet_pton(AF_INET6, primary_ip, &sa6.sin6_addr) == 1)
		sa6.sin6_family = AF_INET6;
	else
		return CURL_PREREQFUNC_OK;
	if (address_denied(conn->req, sa4.sin_family == AF_INET ?
					   (struct sockaddr *) &sa4 : (struct sockaddr *) &sa6))
	{
		strlcpy(conn->denied, primary_ip, sizeof(conn->denied));
		return CURL_PREREQFUNC_ABORT;
	}
	return CURL_PREREQFUNC_OK;
}
#endif

const char *
delq_http_parse_networks(const char *list, DelqNetwork **nets, int *n)
{
	char	   *copy = pstrdup(list);
	char	   *save = NULL;
	int			size = 4;

	*n = 0;
	*nets = palloc(sizeof(DelqNetwork) * size);
	for (char *item = strtok_r(copy, ", \t", &save); item != NULL;
		 item = strtok_r(NULL, ", \t", &save))
	{
		DelqNetwork *net;
		char	   *slash = strchr(item, '/');
		char	   *end;

		if (*n == size)
		{
			size *= 2;
			*nets = repalloc(*nets, sizeof(DelqNetwork) * size);
		}
		net = &(*nets)[(*n)++];
		if (slash)
			*slash = '\0';
		net->family = strchr(item, ':') ? AF_INET6 : AF_INET;
		if (inet_pton(net->family, item, net->addr) != 1)
			goto bad;
		net->bits = net->family == AF_INET ? 32 : 128;
		if (slash)
		{
			long		bits = strtol(slash + 1, &end, 10);

			if (*end != '\0' || end == slash + 1 || bits < 0 || bits > net->bits)
				goto bad;
			net->bits = (int) bits;
		}
	}
	pfree(copy);
	return NULL;

bad:
	pfree(copy);
	pfree(*nets);
	*nets = NULL;
	*n = 0;
	return "not a comma-separated list of IP networks such as 169.254.0.0/16, fe80::/10";
}

/* Fill in the output fields of a request curl has finished.  Never throws. */
static void
record_result(DelqConn *conn, CURLcode result)
{
	DelqHttpRequest *req = conn->req;
	long		code = 0;

	curl_easy_getinfo(conn->easy, CURLINFO_RESPONSE_CODE, &code);
	req->status = (int) code;
	req->error[0] = '\0';

	if (conn->denied[0] != '\0')
	{
		req->result = DELQ_HTTP_REFUSED;
		snprintf(req->error, sizeof(req->error),
				 "address %s is in a denied network (delq.denied_networks)",
				 conn->denied);
	}
	else if (conn->too_large || result == CURLE_FILESIZE_EXCEEDED)
	{
		req->result = DELQ_HTTP_TOO_LARGE;
		snprintf(req->error, sizeof(req->error),
				 "response larger than %zu bytes, not read", response_max(req));
	}
	else if (result != CURLE_OK)
	{
		const char *msg = conn->errbuf;

		if (msg[0] == '\0')
			msg = curl_easy_strerror(result);
		req->result = transport_result(result);
		delq_http_safe_text(req->error, sizeof(req->error), msg, strlen(msg));
	}
	else
		req->result = DELQ_HTTP_ANSWERED;
	mask_sent_values(req);
}

/*
 * Move every request curl reports done from the multi handle to the
 * finished queue.  The queue, not the callback, is what done() is fed
 * from, so an error thrown by done() loses nothing that is queued.
 */
static void
collect_finished(DelqHttp *http)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(http->multi, &left)) != NULL)
	{
		CURL	   *easy = msg->easy_handle;
		CURLcode	result = msg->data.result;
		char	   *priv = NULL;
		DelqConn   *conn;

		if (msg->msg != CURLMSG_DONE)
			continue;
		/* msg is invalid once the handle is removed */
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
		conn = (DelqConn *) priv;
		curl_multi_remove_handle(http->multi, easy);
		http->ninflight--;
		record_result(conn, result);
		dlist_delete(&conn->node);
		dlist_push_tail(&http->finished, &conn->node);
	}
}

/*
 * Hand finished transfers to done(), one at a time.  The handle goes back
 * to the pool first, so done() may start the next transfer at once.  A
 * NULL done() just drops them (the caller reads the request itself).
 */
static int
hand_back(DelqHttp *http, DelqHttpDone done, void *arg)
{
	int			n = 0;

	while (!dlist_is_empty(&http->finished))
	{
		DelqConn   *conn = dlist_container(DelqConn, node,
										   dlist_pop_head_node(&http->finished));
		DelqHttpRequest *req = conn->req;

		conn_release(http, conn);
		req->priv = NULL;
		http->running--;
		n++;
		if (done != NULL)
			done(req, arg);
	}
	return n;
}

/*
 * Tell curl about socket activity or its timer, then raise what the
 * callbacks could not.
 */
static void
drive_curl(DelqHttp *http, curl_socket_t fd, int flags)
{
	int			still_running;
	CURLMcode	mc;

	mc = curl_multi_socket_action(http->multi, fd, flags, &still_running);
	if (http->callback_oom)
	{
		http->callback_oom = false;
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("libcurl's socket callback could not allocate.")));
	}
	if (mc != CURLM_OK && mc != CURLM_BAD_SOCKET)
		elog(ERROR, "curl_multi_socket_action failed: %s",
			 curl_multi_strerror(mc));
}

/* Run curl's timer if it is due. */
static void
run_due_timer(DelqHttp *http)
{
	if (http->timer_armed && GetCurrentTimestamp() >= http->timer_deadline)
	{
		http->timer_armed = false;	/* curl may re-arm it right away */
		drive_curl(http, CURL_SOCKET_TIMEOUT, 0);
	}
}

/*
 * A fresh WaitEventSet with the latch, postmaster death and every socket
 * curl watches.  On error the old state stays "dirty" and is retried.
 */
static void
rebuild_wait_set(DelqHttp *http)
{
	int			size = 2 + http->nsockets;
	dlist_iter	iter;

	if (http->wes != NULL)
		FreeWaitEventSet(http->wes);
	http->wes = NULL;
	http->sockets_dirty = true;

	if (http->events == NULL || http->nevents < size)
	{
		if (http->events != NULL)
			pfree(http->events);
		http->events = NULL;
		http->events = MemoryContextAlloc(http->cxt, sizeof(WaitEvent) * size);
		http->nevents = size;
	}

	http->wes = CreateWaitEventSet(http->cxt, size);
	http->wes_latch = MyLatch;
	AddWaitEventToSet(http->wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch,
					  NULL);
	if (IsUnderPostmaster)
		AddWaitEventToSet(http->wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET,
						  NULL, NULL);
	dlist_foreach(iter, &http->sockets)
	{
		DelqSocket *sock = dlist_container(DelqSocket, node, iter.cur);
		uint32		events = socket_events(sock->what);

		sock->pos = -1;
		sock->changed = false;
		if (events != 0)
			sock->pos = AddWaitEventToSet(http->wes, events, sock->fd,
										  NULL, NULL);
	}
	http->sockets_dirty = false;
	http->sockets_changed = false;
}

/*
 * Bring the WaitEventSet in line with what curl asked for since the last
 * wait: ModifyWaitEvent when only directions changed, else rebuild (also
 * when MyLatch is no longer the latch the set was built with).
 */
static void
prepare_wait_set(DelqHttp *http)
{
	dlist_iter	iter;

	if (!http->sockets_dirty && http->sockets_changed && http->wes != NULL)
	{
		dlist_foreach(iter, &http->sockets)
		{
			DelqSocket *sock = dlist_container(DelqSocket, node, iter.cur);
			uint32		events = socket_events(sock->what);

			if (!sock->changed)
				continue;
			if (sock->pos < 0 || events == 0)
			{
				http->sockets_dirty = true;
				break;
			}
			ModifyWaitEvent(http->wes, sock->pos, events, NULL);
			sock->changed = false;
		}
		http->sockets_changed = false;
	}
	if (http->sockets_dirty || http->wes == NULL || http->wes_latch != MyLatch)
		rebuild_wait_set(http);
}

/*
 * How long the next wait may last: until curl's timer or the caller's
 * deadline, whichever is first (-1: no limit).
 */
static long
next_wait_ms(DelqHttp *http, bool has_deadline, TimestampTz deadline)
{
	TimestampTz now = GetCurrentTimestamp();
	long		ms = -1;

	if (http->timer_armed)
		ms = TimestampDifferenceMilliseconds(now, http->timer_deadline);
	if (has_deadline)
	{
		long		left = TimestampDifferenceMilliseconds(now, deadline);

		if (ms < 0 || left < ms)
			ms = left;
	}
	return ms;
}

/*
 * Sleep once on the WaitEventSet and pass what happened to curl.  Returns
 * true when the latch was set (and resets it).
 */
static bool
wait_once(DelqHttp *http, long wait_ms, uint32 wait_event_info)
{
	bool		latch_set = false;
	int			n;
	int			i;

	prepare_wait_set(http);
	n = WaitEventSetWait(http->wes, wait_ms, http->events, http->nevents,
						 wait_event_info);
	for (i = 0; i < n; i++)
	{
		WaitEvent  *ev = &http->events[i];
		int			flags = 0;

		if (ev->events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			latch_set = true;
			continue;
		}
		if (ev->events & WL_SOCKET_READABLE)
			flags |= CURL_CSELECT_IN;
		if (ev->events & WL_SOCKET_WRITEABLE)
			flags |= CURL_CSELECT_OUT;
		/* by fd, not user_data: curl may have dropped a socket meanwhile */
		if (flags != 0)
			drive_curl(http, ev->fd, flags);
	}
	return latch_set;
}

/*
 * Drive transfers until at least one is handed back, the latch is set or
 * timeout_ms passes.  Interrupts are checked on every round, so query
 * cancel works when this runs in a backend for delq.dispatch().
 */
bool
delq_http_wait(DelqHttp *http, long timeout_ms, DelqHttpDone done,
			   void *arg, uint32 wait_event_info)
{
	bool		has_deadline = (timeout_ms >= 0);
	TimestampTz deadline = 0;
	bool		latch_set = false;
	bool		waited = false;
	int			ndone = 0;

	if (has_deadline)
		deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
											   timeout_ms);
	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		run_due_timer(http);
		collect_finished(http);
		launch_waiting(http);
		ndone += hand_back(http, done, arg);
		if (ndone > 0 || latch_set)
			break;
		if (waited && has_deadline && GetCurrentTimestamp() >= deadline)
			break;
		latch_set = wait_once(http,
							  next_wait_ms(http, has_deadline, deadline),
							  wait_event_info);
		waited = true;
	}
	return latch_set;
}
