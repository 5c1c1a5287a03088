/*-------------------------------------------------------------------------
 *
 * httpclient.h
 *	  Many HTTP requests at once over libcurl's multi interface, waiting on
 *	  one WaitEventSet together with the process latch and postmaster death.
 *
 * The client knows nothing of webhooks: a request is a method, a URL,
 * header lines and a body; an answer is a status, the response's headers
 * (through a callback) and as much of its body as the caller has room for.
 * What an answer means is the caller's business (src/webhook.c for
 * webhook deliveries).
 *
 * The caller owns every DelqHttpRequest; the client only fills in the
 * output fields and hands the request back through the done callback of
 * delq_http_wait.  No database access happens here.
 *
 * src/httpclient.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DELQ_HTTPCLIENT_H
#define DELQ_HTTPCLIENT_H

#include "postgres.h"

/* Response bytes read at most by default; beyond, the transfer is aborted. */
#define DELQ_HTTP_RESPONSE_MAX	(64 * 1024)
/*
 * Timeouts when a request leaves them 0.  Twins: the defaults of
 * delq.destination's timeout_ms and connect_timeout_ms (src/sql/10_tables.sql).
 */
#define DELQ_HTTP_DEFAULT_TIMEOUT_MS	30000
#define DELQ_HTTP_DEFAULT_CONNECT_MS	10000

typedef enum DelqHttpResult
{
	DELQ_HTTP_PENDING = 0,		/* not finished yet */
	DELQ_HTTP_ANSWERED,			/* a whole answer arrived: see status */
	DELQ_HTTP_TOO_LARGE,		/* answer over max_response bytes, not read;
								 * status is set if the status line came */
	DELQ_HTTP_NO_ANSWER,		/* connection, DNS, TLS, timeout, reset:
								 * another try may work */
	DELQ_HTTP_REFUSED			/* cannot be sent as configured (URL, scheme,
								 * local TLS files, a header line break, or
								 * prepare's error): another try will not work */
} DelqHttpResult;

typedef struct DelqHttpRequest DelqHttpRequest;

/* An IP network (address and prefix length) a request may not connect to. */
typedef struct DelqNetwork
{
	int			family;			/* AF_INET or AF_INET6 */
	unsigned char addr[16];		/* 4 or 16 bytes, network byte order */
	int			bits;			/* prefix length */
} DelqNetwork;

/*
 * Called when the request goes to curl (now, or when it leaves the queue),
 * in a memory context reset after each call: sets *lines / *nlines to
 * header lines sent before req->headers (e.g. a signature over the current
 * time).  Returns NULL, or why the request cannot be sent (it then ends as
 * DELQ_HTTP_REFUSED with that text).  May throw: the request then stays
 * queued, untouched.
 */
typedef const char *(*DelqHttpPrepare) (DelqHttpRequest *req,
										char ***lines, int *nlines);

/*
 * Called for each header of a response (name and value without the
 * colon, surrounding blanks or line end; not NUL-terminated), and with
 * name NULL when a new status line starts (an interim 1xx answer's headers
 * are to be forgotten).  Runs inside libcurl: must not throw or allocate
 * with palloc.
 */
typedef void (*DelqHttpHeader) (DelqHttpRequest *req,
								const char *name, size_t namelen,
								const char *value, size_t valuelen);

struct DelqHttpRequest
{
	/* --- input: set by the caller, must stay valid until completion --- */
	const char *method;			/* NULL: POST with a body, GET without */
	const char *url;			/* http or https only, never redirected */
	const char *body;			/* NUL-terminated, or NULL */
	char	  **headers;		/* "Name: value" lines, or NULL */
	int			nheaders;
	int			timeout_ms;		/* whole transfer; 0: default */
	int			connect_timeout_ms; /* 0: default */
	const char *ca_file;		/* NULL: system CA bundle */
	const char *client_cert;	/* PEM file, or NULL */
	const char *client_key;		/* PEM file, or NULL */
	const char *proxy;			/* proxy URL, or NULL: none (the process's
								 * http_proxy etc. are ignored) */
	const char *refuse;			/* NULL, or why not to send: the request then
								 * ends DELQ_HTTP_REFUSED with it */
	const DelqNetwork *denied;	/* addresses never connected to (checked after
								 * name resolution, before the socket is
								 * made): DELQ_HTTP_REFUSED */
	int			ndenied;
	size_t		max_response;	/* 0: DELQ_HTTP_RESPONSE_MAX */
	char	   *response;		/* room for the body's first bytes, or NULL */
	size_t		response_size;
	DelqHttpPrepare prepare;	/* or NULL */
	DelqHttpHeader header;		/* or NULL */
	void	   *user;			/* for the caller */

	/* --- output: set by the client when the request completes --- */
	DelqHttpResult result;
	int			status;			/* HTTP status; 0 when none arrived */
	size_t		response_len;	/* bytes kept in response (not terminated) */
	char		error[256];		/* why, unless ANSWERED; "" otherwise */

	/* --- private to the client --- */
	void	   *priv;
};

typedef struct DelqHttp DelqHttp;

/*
 * Header names (lower case, NULL-terminated) that the client or curl write
 * for every request, so that a caller's own would clash: Host,
 * Content-Length, Transfer-Encoding, Connection, Expect.
 */
extern const char *const delq_http_reserved_headers[];

typedef void (*DelqHttpDone) (DelqHttpRequest *req, void *arg);

/*
 * Create a client.  max_connections caps open sockets and requests in
 * flight (0: no cap); further requests wait in a queue inside the client,
 * and their timeout_ms only starts when they leave it.  Calls
 * curl_global_init on first use in this process.  All bookkeeping lives in
 * a memory context under TopMemoryContext, so a client survives the
 * caller's transactions; delq_http_destroy frees it.
 */
extern DelqHttp *delq_http_create(int max_connections);

/*
 * Parse a comma-separated list of networks ("169.254.0.0/16, fe80::/10",
 * an address alone is one host) into a palloc'd array.  Returns NULL, or
 * what is wrong (a static string); *nets is then NULL.
 */
extern const char *delq_http_parse_networks(const char *list,
											DelqNetwork **nets, int *n);
extern void delq_http_destroy(DelqHttp *http);

/*
 * Begin one request.  Never blocks.  May be called from done().  A request
 * that cannot be built completes through done() with DELQ_HTTP_REFUSED.
 */
extern void delq_http_start(DelqHttp *http, DelqHttpRequest *req);

/* Requests started and not yet handed back. */
extern int	delq_http_running(DelqHttp *http);

/*
 * Wait up to timeout_ms (-1: until something happens) for socket activity,
 * curl's timers or the process latch, drive curl, and hand every finished
 * request to done().  Returns true when the latch was set (the latch is
 * reset before returning), so the caller can look for new work.  Exits the
 * process on postmaster death.  wait_event_info names the wait in
 * pg_stat_activity.
 */
extern bool delq_http_wait(DelqHttp *http, long timeout_ms,
						   DelqHttpDone done, void *arg,
						   uint32 wait_event_info);

/*
 * Copy text received from the network into dst (NUL-terminated), safe to
 * store in a text column: control characters become spaces, bytes not
 * valid in the database encoding become '?'.  Returns the length written.
 * Never throws.
 */
extern size_t delq_http_safe_text(char *dst, size_t dstsize,
								  const char *src, size_t len);

#endif							/* DELQ_HTTPCLIENT_H */
