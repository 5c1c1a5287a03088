/*-------------------------------------------------------------------------
 *
 * http.h
 *	  Many webhook POSTs at once over libcurl's multi interface, waiting on
 *	  one WaitEventSet together with the process latch and postmaster death.
 *
 * The caller (worker loop or delq.dispatch()) owns every DelqTransfer; this
 * module only fills in the outcome fields and hands the transfer back
 * through the completion callback.  No database access happens here.
 *
 * src/http.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DELQ_HTTP_H
#define DELQ_HTTP_H

#include "postgres.h"

/* How much of a response body is kept (the rest is read and discarded). */
#define DELQ_RESPONSE_EXCERPT 200
/* Response bytes read at most; beyond this the transfer is aborted. */
#define DELQ_RESPONSE_MAX	(64 * 1024)

typedef enum DelqTransferOutcome
{
	DELQ_OUTCOME_PENDING = 0,	/* not finished yet */
	DELQ_OUTCOME_CONFIRMED,		/* 2xx */
	DELQ_OUTCOME_RETRY,			/* 408, 425, 429, 5xx, timeout, connection or
								 * DNS error, reset, oversized answer */
	DELQ_OUTCOME_FAILED			/* any other 3xx/4xx (1xx too): permanent */
} DelqTransferOutcome;

typedef struct DelqTransfer
{
	/* --- input: set by the caller, must stay valid until completion --- */
	int64		delivery_id;
	const char *url;
	const char *body;			/* JSON, NUL-terminated */
	const char *webhook_id;		/* webhook-id and Idempotency-Key */
	const char *secret;			/* "whsec_<base64>" or NULL: no signature */
	char	  **headers;		/* extra "Name: value" lines, or NULL */
	int			nheaders;
	int			timeout_ms;		/* whole transfer */
	int			connect_timeout_ms;
	const char *ca_file;		/* NULL: system CA bundle */
	const char *client_cert;	/* PEM file, or NULL */
	const char *client_key;		/* PEM file, or NULL */
	void	   *user;			/* for the caller */

	/* --- output: set by http.c when the transfer completes --- */
	DelqTransferOutcome outcome;
	int			http_status;	/* 0 when no HTTP answer arrived */
	int			retry_after_s;	/* Retry-After in seconds from now; -1 absent */
	bool		gone;			/* 410 Gone: opens the circuit breaker */
	char		error[DELQ_RESPONSE_EXCERPT + 64];	/* curl error text or
													 * body excerpt; "" if
													 * none */

	/* --- private to http.c --- */
	void	   *priv;
} DelqTransfer;

typedef struct DelqHttp DelqHttp;

typedef void (*DelqTransferDone) (DelqTransfer *transfer, void *arg);

/*
 * Create a client.  max_connections caps open sockets and transfers in
 * flight (0: no cap); further transfers wait in a queue inside the client,
 * and their timeout_ms only starts when they leave it.  Calls
 * curl_global_init on first use in this process.  All bookkeeping lives in
 * a memory context under TopMemoryContext, so a client survives the
 * caller's transactions; delq_http_destroy frees it.
 */
extern DelqHttp *delq_http_create(int max_connections);
extern void delq_http_destroy(DelqHttp *http);

/*
 * Begin one POST.  The webhook-timestamp is taken, and the signature
 * computed over it, when the request goes to curl: now, or when a slot
 * frees up under max_connections.  Never blocks.  May be called from
 * done().  A request that cannot be built (malformed secret, line break in
 * a header) completes through done() with DELQ_OUTCOME_FAILED.
 */
extern void delq_http_start(DelqHttp *http, DelqTransfer *transfer);

/* Transfers started and not yet handed back. */
extern int	delq_http_running(DelqHttp *http);

/*
 * Wait up to timeout_ms (-1: until something happens) for socket activity,
 * curl's timers or the process latch, drive curl, and hand every finished
 * transfer to done().  Returns true when the latch was set (the latch is
 * reset before returning), so the caller can look for new work.  Exits the
 * process on postmaster death.  wait_event_info names the wait in
 * pg_stat_activity.
 */
extern bool delq_http_wait(DelqHttp *http, long timeout_ms,
						   DelqTransferDone done, void *arg,
						   uint32 wait_event_info);

/* Classify an HTTP status the way DESIGN.md says. */
extern DelqTransferOutcome delq_http_classify(int http_status);

#endif							/* DELQ_HTTP_H */
