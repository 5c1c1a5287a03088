/*-------------------------------------------------------------------------
 *
 * webhook.h
 *	  One webhook delivery as an HTTP request: Standard Webhooks headers
 *	  and signature, and what the receiver's answer means for the delivery.
 *
 * A DelqTransfer wraps a DelqHttpRequest (src/httpclient.h) as its first
 * member, so the request handed back by the client is the transfer.
 *
 * src/webhook.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DELQ_WEBHOOK_H
#define DELQ_WEBHOOK_H

#include "httpclient.h"

/* How much of a response body is kept for the error text. */
#define DELQ_RESPONSE_EXCERPT 200

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
	DelqHttpRequest req;		/* first: url, headers, timeouts, TLS files;
								 * method, body and callbacks are set by
								 * delq_webhook_start */

	/* --- input: set by the caller, must stay valid until completion --- */
	int64		delivery_id;
	const char *body;			/* JSON, NUL-terminated */
	const char *webhook_id;		/* webhook-id and Idempotency-Key */
	const char *secret;			/* "whsec_<base64>" or NULL: no signature */
	void	   *user;			/* for the caller */

	/*
	 * A templated destination's step (src/template.c): its method, or NULL
	 * for a webhook; render_error when the step could not be rendered (the
	 * request is then not sent).
	 */
	const char *method;
	const char *render_error;

	/* --- output: set by delq_webhook_finish --- */
	DelqTransferOutcome outcome;
	int			http_status;	/* 0 when no HTTP answer arrived */
	int			retry_after_s;	/* Retry-After in seconds from now; -1 absent */
	bool		gone;			/* 410 Gone: opens the circuit breaker */
	/* what went wrong, without the answer's body: "HTTP 503", curl's text */
	char		error_class[DELQ_RESPONSE_EXCERPT + 64];
	/* error_class, then ": " and the body's first bytes if it had one */
	char		error[DELQ_RESPONSE_EXCERPT + 64];

	/* --- private to webhook.c --- */
	char		excerpt[DELQ_RESPONSE_EXCERPT];
} DelqTransfer;

/*
 * Begin one webhook POST on the client.  The webhook-timestamp is taken,
 * and the signature computed over it, when the request goes to curl: now,
 * or when a slot frees up under max_connections.  A request that cannot
 * be built (malformed secret, line break in a header) comes back with
 * DELQ_OUTCOME_FAILED.
 */
extern void delq_webhook_start(DelqHttp *http, DelqTransfer *xfer);

/*
 * Send a transfer whose request (req) the caller has filled in: clears the
 * outcome fields and starts it on the client.  delq_webhook_start and
 * src/template.c use it.
 */
extern void delq_transfer_send(DelqHttp *http, DelqTransfer *xfer);

/*
 * A request the client handed back: fill in the outcome fields.  Returns
 * the transfer.  Never throws.
 */
extern DelqTransfer *delq_webhook_finish(DelqHttpRequest *req);

/* DelqHttpHeader that keeps Retry-After in DelqTransfer.retry_after_s. */
extern void delq_webhook_header(DelqHttpRequest *req, const char *name, size_t namelen,
								const char *value, size_t valuelen);

/* What an HTTP status means for a delivery: docs/destinations.md. */
extern DelqTransferOutcome delq_webhook_classify(int http_status);

#endif							/* DELQ_WEBHOOK_H */
