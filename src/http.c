/*-------------------------------------------------------------------------
 *
 * http.c
 *	  Webhook POSTs over libcurl's multi interface, driven by one
 *	  PostgreSQL WaitEventSet.
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
 * alive in the multi handle's connection cache.
 *
 * IDENTIFICATION
 *	  src/http.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include <curl/curl.h>

#include "lib/ilist.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "http.h"
#include "signing.h"

#define DELQ_USER_AGENT			"delq/1.0"
#define DELQ_PROTOCOLS			"http,https"
#define DELQ_DEFAULT_TIMEOUT_MS	30000
#define DELQ_DEFAULT_CONNECT_MS	10000
#define DELQ_RETRY_AFTER_MAX	86400	/* one day */
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

/* One easy handle and what a transfer on it has received so far. */
typedef struct DelqConn
{
	dlist_node	node;			/* in idle, waiting, active or finished */
	CURL	   *easy;
	DelqTransfer *xfer;			/* NULL while idle */
	struct curl_slist *headers;
	size_t		received;		/* response body bytes */
	bool		too_large;
	int			excerpt_len;
	char		excerpt[DELQ_RESPONSE_EXCERPT];
	int			retry_after_s;
	char		errbuf[CURL_ERROR_SIZE];
} DelqConn;

struct DelqHttp
{
	MemoryContext cxt;
	CURLM	   *multi;
	int			running;		/* started, not yet handed back */
	int			max_inflight;	/* transfers in curl at most (0: no cap) */
	int			ninflight;		/* transfers in curl */
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

/*
 * The outcome table of DESIGN.md, in one place so that the worker and
 * delq.dispatch() agree.  410 is a permanent failure; the caller reads
 * DelqTransfer.gone for the circuit breaker.
 */
DelqTransferOutcome
delq_http_classify(int http_status)
{
	if (http_status >= 200 && http_status <= 299)
		return DELQ_OUTCOME_CONFIRMED;
	if (http_status == 0 || http_status == 408 || http_status == 425 ||
		http_status == 429 || http_status >= 500)
		return DELQ_OUTCOME_RETRY;
	return DELQ_OUTCOME_FAILED;
}

/*
 * Transport errors are retried, except those that only a change of our
 * own configuration can cure (bad URL or scheme, unreadable local TLS
 * files): retrying those would burn the attempts for nothing.
 */
static DelqTransferOutcome
transport_outcome(CURLcode rc)
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
			return DELQ_OUTCOME_FAILED;
		default:
			return DELQ_OUTCOME_RETRY;
	}
}

/*
 * Copy text received from the network (or curl's message about it) into a
 * NUL-terminated buffer that is safe to store in a text column: control
 * characters become spaces, and bytes that are not valid in the database
 * encoding (anything non-ASCII unless it is UTF-8) become '?'.  Returns the
 * length written.  Never throws.
 */
static size_t
copy_text(char *dst, size_t dstsize, const char *src, size_t len)
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
 * Retry-After is either delta seconds or an HTTP date; both become seconds
 * from now, capped at a day so that a confused receiver cannot park a
 * delivery for months.  -1 when unparsable.
 */
static int
parse_retry_after(const char *value)
{
	const char *p;
	long		seconds;

	if (*value == '\0')
		return -1;
	for (p = value; *p >= '0' && *p <= '9'; p++)
		;
	if (*p == '\0')
	{
		if (p - value > 6)
			return DELQ_RETRY_AFTER_MAX;
		seconds = strtol(value, NULL, 10);
	}
	else
	{
		time_t		when = curl_getdate(value, NULL);

		if (when == (time_t) -1)
			return -1;
		seconds = (long) difftime(when, time(NULL));
	}
	return (int) Max(0, Min(seconds, DELQ_RETRY_AFTER_MAX));
}

/*
 * CURLOPT_HEADERFUNCTION: remember Retry-After of the final response (a
 * new status line forgets what an interim response said).
 */
static size_t
header_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
	DelqConn   *conn = (DelqConn *) userdata;
	size_t		len = size * nitems;
	const char *prefix = "Retry-After:";
	size_t		plen = strlen(prefix);
	char		value[64];
	size_t		start;
	size_t		end;

	if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0)
		conn->retry_after_s = -1;
	else if (len > plen && pg_strncasecmp(buf, prefix, plen) == 0)
	{
		start = plen;
		end = len;
		while (start < end && (buf[start] == ' ' || buf[start] == '\t'))
			start++;
		while (end > start && isspace((unsigned char) buf[end - 1]))
			end--;
		if (end - start < sizeof(value))
		{
			memcpy(value, buf + start, end - start);
			value[end - start] = '\0';
			conn->retry_after_s = parse_retry_after(value);
		}
	}
	return len;
}

/*
 * CURLOPT_WRITEFUNCTION: keep the start of the body for error messages,
 * count the rest, and abort a response that is larger than any answer a
 * webhook receiver has reason to send.
 */
static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	DelqConn   *conn = (DelqConn *) userdata;
	size_t		len = size * nmemb;
	size_t		room = sizeof(conn->excerpt) - conn->excerpt_len;

	if (conn->received + len > DELQ_RESPONSE_MAX)
	{
		conn->too_large = true;
		return 0;				/* curl fails with CURLE_WRITE_ERROR */
	}
	conn->received += len;
	if (room > 0)
	{
		memcpy(conn->excerpt + conn->excerpt_len, ptr, Min(room, len));
		conn->excerpt_len += Min(room, len);
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
 * Free everything: transfers still in flight are abandoned (their done()
 * is never called, their outcome stays PENDING).  Safe after an error
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
		conn->xfer->priv = NULL;
		conn_free(conn);
	}
	dlist_foreach_modify(iter, &http->waiting)
	{
		DelqConn   *conn = dlist_container(DelqConn, node, iter.cur);

		conn->xfer->priv = NULL;
		conn_free(conn);
	}
	dlist_foreach_modify(iter, &http->finished)
	{
		DelqConn   *conn = dlist_container(DelqConn, node, iter.cur);

		conn->xfer->priv = NULL;
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

/* Transfers started and not yet handed back to done(). */
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
	conn->xfer = NULL;
	conn->headers = NULL;
	conn->received = 0;
	conn->too_large = false;
	conn->excerpt_len = 0;
	conn->retry_after_s = -1;
	conn->errbuf[0] = '\0';
	return conn;
}

/* Return a handle that curl no longer holds to the pool (or free it). */
static void
conn_release(DelqHttp *http, DelqConn *conn)
{
	curl_slist_free_all(conn->headers);
	conn->headers = NULL;
	conn->xfer = NULL;
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

/* add_line() for a header made of name and value.  Never throws. */
static const char *
add_header(struct curl_slist **list, const char *name, const char *value)
{
	size_t		len = strlen(name) + 2 + strlen(value) + 1;
	char	   *line = malloc(len);
	const char *err;

	if (line == NULL)
		return "out of memory";
	snprintf(line, len, "%s: %s", name, value);
	err = add_line(list, line);
	free(line);
	return err;
}

/*
 * The request headers of DESIGN.md, then the destination's own lines.
 * Returns NULL, or why the request cannot be sent.  Never throws.
 */
static const char *
build_headers(DelqConn *conn, DelqTransfer *xfer, int64 ts,
			  const char *signature)
{
	char		tsbuf[32];
	const char *names[] = {"Content-Type", "webhook-id", "webhook-timestamp",
	"webhook-signature", "Idempotency-Key"};
	const char *values[] = {"application/json", xfer->webhook_id, tsbuf,
	signature, xfer->webhook_id};
	const char *err = NULL;
	int			i;

	snprintf(tsbuf, sizeof(tsbuf), INT64_FORMAT, ts);
	for (i = 0; i < lengthof(names) && err == NULL; i++)
	{
		if (values[i] != NULL)	/* no signature without a secret */
			err = add_header(&conn->headers, names[i], values[i]);
	}
	for (i = 0; i < xfer->nheaders && err == NULL; i++)
		err = add_line(&conn->headers, xfer->headers[i]);

	/* no "Expect: 100-continue" round trip before the body */
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
 * Every option of a webhook POST: no signals (threads and PostgreSQL's
 * handlers), http(s) only and no redirects, TLS verified, bounded time and
 * response size, keepalive so pooled connections notice dead peers.
 */
static CURLcode
setup_easy(DelqConn *conn, DelqTransfer *xfer)
{
	CURL	   *easy = conn->easy;
	CURLcode	rc = CURLE_OK;
	long		timeout = xfer->timeout_ms > 0 ?
		xfer->timeout_ms : DELQ_DEFAULT_TIMEOUT_MS;
	long		connect_timeout = xfer->connect_timeout_ms > 0 ?
		xfer->connect_timeout_ms : DELQ_DEFAULT_CONNECT_MS;

	SETOPT(CURLOPT_PRIVATE, conn);
	SETOPT(CURLOPT_ERRORBUFFER, conn->errbuf);
	SETOPT(CURLOPT_NOSIGNAL, 1L);
	SETOPT(CURLOPT_URL, xfer->url);
#if LIBCURL_VERSION_NUM >= 0x075500
	SETOPT(CURLOPT_PROTOCOLS_STR, DELQ_PROTOCOLS);
	SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, DELQ_PROTOCOLS);
#else
	SETOPT(CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
	SETOPT(CURLOPT_REDIR_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
	SETOPT(CURLOPT_POST, 1L);
	SETOPT(CURLOPT_POSTFIELDS, xfer->body);
	SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen(xfer->body));
	SETOPT(CURLOPT_HTTPHEADER, conn->headers);
	SETOPT(CURLOPT_USERAGENT, DELQ_USER_AGENT);
	SETOPT(CURLOPT_TIMEOUT_MS, timeout);
	SETOPT(CURLOPT_CONNECTTIMEOUT_MS, connect_timeout);
	SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
	SETOPT(CURLOPT_TCP_KEEPIDLE, 60L);
	SETOPT(CURLOPT_TCP_KEEPINTVL, 30L);
	SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
	SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
	if (xfer->ca_file)
		SETOPT(CURLOPT_CAINFO, xfer->ca_file);
	if (xfer->client_cert)
	{
		SETOPT(CURLOPT_SSLCERT, xfer->client_cert);
		SETOPT(CURLOPT_SSLCERTTYPE, "PEM");
	}
	if (xfer->client_key)
		SETOPT(CURLOPT_SSLKEY, xfer->client_key);
	SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) DELQ_RESPONSE_MAX);
	SETOPT(CURLOPT_WRITEFUNCTION, write_cb);
	SETOPT(CURLOPT_WRITEDATA, conn);
	SETOPT(CURLOPT_HEADERFUNCTION, header_cb);
	SETOPT(CURLOPT_HEADERDATA, conn);
	return rc;
}

/*
 * A transfer that ends before it reaches curl: queue it so that the next
 * delq_http_wait hands it back like any other.
 */
static void
finish_early(DelqHttp *http, DelqConn *conn, DelqTransferOutcome outcome,
			 const char *error)
{
	conn->xfer->outcome = outcome;
	strlcpy(conn->xfer->error, error, sizeof(conn->xfer->error));
	dlist_push_tail(&http->finished, &conn->node);
}

/*
 * The signature for a request sent now (NULL without a secret).  May
 * throw, so callers sign before they change any state.
 */
static char *
sign_transfer(DelqTransfer *xfer, int64 ts)
{
	if (xfer->secret == NULL)
		return NULL;
	return delq_signature(xfer->secret, xfer->webhook_id, ts,
						  xfer->body, strlen(xfer->body));
}

/*
 * Hand a counted transfer to curl, with the signature made for ts (freed
 * here).  A request that cannot be built fails through done() instead.
 * Never throws.
 */
static void
launch_signed(DelqHttp *http, DelqConn *conn, int64 ts, char *signature)
{
	DelqTransfer *xfer = conn->xfer;
	const char *err;
	CURLcode	rc;
	CURLMcode	mc;

	if (xfer->secret != NULL && signature == NULL)
		err = "signing secret is not \"whsec_\" and base64 of 24 to 64 bytes";
	else
		err = build_headers(conn, xfer, ts, signature);
	if (signature != NULL)
		pfree(signature);
	if (err != NULL)
	{
		finish_early(http, conn, DELQ_OUTCOME_FAILED, err);
		return;
	}

	if ((rc = setup_easy(conn, xfer)) != CURLE_OK)
	{
		finish_early(http, conn, DELQ_OUTCOME_FAILED, curl_easy_strerror(rc));
		return;
	}
	if ((mc = curl_multi_add_handle(http->multi, conn->easy)) != CURLM_OK)
	{
		finish_early(http, conn, DELQ_OUTCOME_RETRY, curl_multi_strerror(mc));
		return;
	}
	dlist_push_tail(&http->active, &conn->node);
	http->ninflight++;
}

/* Whether a transfer may go to curl now rather than wait for a slot. */
static bool
have_slot(DelqHttp *http)
{
	return http->max_inflight <= 0 || http->ninflight < http->max_inflight;
}

/*
 * Begin one POST.  Everything that can throw (signing, a new handle)
 * happens before the transfer is counted, so an error leaves no trace.
 *
 * With max_connections set, transfers beyond it wait in our own queue, not
 * in curl's: curl would count the time spent queued against timeout_ms,
 * and the signature's timestamp would age.  A queued transfer is signed
 * when it is launched.
 */
void
delq_http_start(DelqHttp *http, DelqTransfer *xfer)
{
	bool		now = have_slot(http) && dlist_is_empty(&http->waiting);
	int64		ts = (int64) time(NULL);
	char	   *signature = NULL;
	DelqConn   *conn;

	if (now)
		signature = sign_transfer(xfer, ts);
	conn = conn_acquire(http);

	/* nothing below throws */
	conn->xfer = xfer;
	xfer->priv = conn;
	xfer->outcome = DELQ_OUTCOME_PENDING;
	xfer->http_status = 0;
	xfer->retry_after_s = -1;
	xfer->gone = false;
	xfer->error[0] = '\0';
	http->running++;

	if (now)
		launch_signed(http, conn, ts, signature);
	else
		dlist_push_tail(&http->waiting, &conn->node);
}

/*
 * Launch queued transfers while there are free slots.  A transfer leaves
 * the queue only once it is signed, so an error thrown while signing
 * leaves it queued.
 */
static void
launch_waiting(DelqHttp *http)
{
	while (have_slot(http) && !dlist_is_empty(&http->waiting))
	{
		DelqConn   *conn = dlist_head_element(DelqConn, node, &http->waiting);
		int64		ts = (int64) time(NULL);
		char	   *signature = sign_transfer(conn->xfer, ts);

		dlist_delete(&conn->node);
		launch_signed(http, conn, ts, signature);
	}
}

/*
 * Fill in the outcome fields of a transfer curl has finished, following
 * the table of DESIGN.md.  Never throws.
 */
static void
record_outcome(DelqConn *conn, CURLcode result)
{
	DelqTransfer *xfer = conn->xfer;
	long		code = 0;
	size_t		n;

	curl_easy_getinfo(conn->easy, CURLINFO_RESPONSE_CODE, &code);
	xfer->http_status = (int) code;
	xfer->retry_after_s = conn->retry_after_s;
	xfer->gone = false;
	xfer->error[0] = '\0';

	if (conn->too_large || result == CURLE_FILESIZE_EXCEEDED)
	{
		/*
		 * The status line arrived before the oversized body, and it is the
		 * answer: a 2xx still confirms.  Without one, try again.
		 */
		xfer->outcome = code ? delq_http_classify((int) code) : DELQ_OUTCOME_RETRY;
		xfer->gone = (code == 410);
		n = snprintf(xfer->error, sizeof(xfer->error),
					 "response larger than %d bytes, not read", DELQ_RESPONSE_MAX);
		if (code != 0)
			snprintf(xfer->error + n, sizeof(xfer->error) - n, " (HTTP %ld)", code);
	}
	else if (result != CURLE_OK)
	{
		const char *msg = conn->errbuf[0] ? conn->errbuf :
			curl_easy_strerror(result);

		xfer->outcome = transport_outcome(result);
		copy_text(xfer->error, sizeof(xfer->error), msg, strlen(msg));
	}
	else
	{
		xfer->outcome = delq_http_classify((int) code);
		xfer->gone = (code == 410);
		if (xfer->outcome != DELQ_OUTCOME_CONFIRMED)
		{
			n = snprintf(xfer->error, sizeof(xfer->error), "HTTP %ld: ", code);
			if (copy_text(xfer->error + n, sizeof(xfer->error) - n,
						  conn->excerpt, conn->excerpt_len) == 0)
				xfer->error[n - 2] = '\0';	/* no body: "HTTP 503" */
		}
	}
}

/*
 * Move every transfer curl reports done from the multi handle to the
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
		record_outcome(conn, result);
		dlist_delete(&conn->node);
		dlist_push_tail(&http->finished, &conn->node);
	}
}

/*
 * Hand finished transfers to done(), one at a time.  The handle goes back
 * to the pool first, so done() may start the next transfer at once.  A
 * NULL done() just drops them (the caller reads the DelqTransfer itself).
 */
static int
hand_back(DelqHttp *http, DelqTransferDone done, void *arg)
{
	int			n = 0;

	while (!dlist_is_empty(&http->finished))
	{
		DelqConn   *conn = dlist_container(DelqConn, node,
										   dlist_pop_head_node(&http->finished));
		DelqTransfer *xfer = conn->xfer;

		conn_release(http, conn);
		xfer->priv = NULL;
		http->running--;
		n++;
		if (done != NULL)
			done(xfer, arg);
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
delq_http_wait(DelqHttp *http, long timeout_ms, DelqTransferDone done,
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
