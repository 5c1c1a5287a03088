/*-------------------------------------------------------------------------
 *
 * webhook.c
 *	  Webhook delivery policy on top of the generic HTTP client: the
 *	  Standard Webhooks request (headers, signature over the time it is
 *	  sent) and the meaning of the answer (outcome, Retry-After, 410 Gone,
 *	  error text).  The table of outcomes is in docs/destinations.md
 *	  ("Answering").
 *
 * IDENTIFICATION
 *	  src/webhook.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include <curl/curl.h>

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "webhook.h"
#include "signing.h"

#define DELQ_RETRY_AFTER_MAX	86400	/* one day */

/*
 * The outcome table, in one place so that the worker and delq.dispatch()
 * agree.  410 is a permanent failure; the caller reads DelqTransfer.gone
 * for the circuit breaker.
 */
DelqTransferOutcome
delq_webhook_classify(int http_status)
{
	if (http_status >= 200 && http_status <= 299)
		return DELQ_OUTCOME_CONFIRMED;
	if (http_status == 0 || http_status == 408 || http_status == 425 ||
		http_status == 429 || http_status >= 500)
		return DELQ_OUTCOME_RETRY;
	return DELQ_OUTCOME_FAILED;
}

/*
 * Retry-After is either delta seconds or an HTTP date; both become seconds
 * from now, capped at a day so that a confused receiver cannot park a
 * delivery for months.  -1 when unparsable.  Never throws.
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
 * DelqHttpHeader: remember Retry-After of the final response (a new status
 * line forgets what an interim response said).  Runs inside libcurl.
 * Templated requests (src/template.c) use it too.
 */
void
delq_webhook_header(DelqHttpRequest *req, const char *name, size_t namelen,
					const char *value, size_t valuelen)
{
	DelqTransfer *xfer = (DelqTransfer *) req;
	char		buf[64];

	if (name == NULL)
		xfer->retry_after_s = -1;
	else if (namelen == strlen("Retry-After") &&
			 pg_strncasecmp(name, "Retry-After", namelen) == 0 &&
			 valuelen < sizeof(buf))
	{
		memcpy(buf, value, valuelen);
		buf[valuelen] = '\0';
		xfer->retry_after_s = parse_retry_after(buf);
	}
}

/*
 * The headers a webhook destination may not set besides the HTTP client's
 * own (delq_http_reserved_headers): those webhook_prepare writes, and the
 * User-Agent the client sends.
 */
static const char *const webhook_headers[] = {
	"content-type", "webhook-id", "webhook-timestamp", "webhook-signature",
	"idempotency-key", "user-agent", NULL
};

PG_FUNCTION_INFO_V1(delq_reserved_headers);

/*
 * delq._reserved_headers(webhook): the header names, lower case, that a
 * destination may not set, for a webhook or (false) a templated request:
 * delq._check_header_name (src/sql/30_validate.sql) refuses them.  Not
 * STRICT (see delq._secret_valid): NULL for NULL.
 */
Datum
delq_reserved_headers(PG_FUNCTION_ARGS)
{
	Datum		names[16];
	int			n = 0;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	for (int i = 0; delq_http_reserved_headers[i] != NULL; i++)
		names[n++] = CStringGetTextDatum(delq_http_reserved_headers[i]);
	for (int i = 0; PG_GETARG_BOOL(0) && webhook_headers[i] != NULL; i++)
		names[n++] = CStringGetTextDatum(webhook_headers[i]);
	Assert(n <= lengthof(names));
	PG_RETURN_ARRAYTYPE_P(construct_array(names, n, TEXTOID,
										  -1, false, TYPALIGN_INT));
}

/*
 * The webhook-signature header: one "v1,<base64>" per secret of the
 * space-separated list delq._signing_secrets() gave (the new secret and,
 * while a rotation overlaps, the previous one), separated by spaces as
 * Standard Webhooks specifies, so that a receiver that knows either verifies.
 */
static const char *
webhook_signatures(DelqTransfer *xfer, int64 ts, char **line)
{
	StringInfoData sigs;
	char	   *list = pstrdup(xfer->secret);
	size_t		len = strlen(list);
	char	   *save = NULL;
	const char *err = NULL;

	initStringInfo(&sigs);
	appendStringInfoString(&sigs, "webhook-signature:");
	for (char *secret = strtok_r(list, " ", &save); secret != NULL;
		 secret = strtok_r(NULL, " ", &save))
	{
		char	   *signature = delq_signature(secret, xfer->webhook_id, ts,
											   xfer->body, strlen(xfer->body));

		if (signature == NULL)
		{
			err = "signing secret is not \"whsec_\" and base64 of 24 to 64 bytes";
			break;
		}
		appendStringInfo(&sigs, " %s", signature);
	}
	explicit_bzero(list, len);
	pfree(list);
	*line = sigs.data;
	return err;
}

/*
 * DelqHttpPrepare: the Standard Webhooks headers (docs/destinations.md),
 * signed over the time the request leaves now.  Allocates in the client's
 * short-lived context.
 */
static const char *
webhook_prepare(DelqHttpRequest *req, char ***lines, int *nlines)
{
	DelqTransfer *xfer = (DelqTransfer *) req;
	int64		ts = (int64) time(NULL);
	char	  **out = palloc(sizeof(char *) * 5);
	int			n = 0;

	out[n++] = "Content-Type: application/json";
	out[n++] = psprintf("webhook-id: %s", xfer->webhook_id);
	out[n++] = psprintf("webhook-timestamp: " INT64_FORMAT, ts);
	if (xfer->secret != NULL)	/* no signature without a secret */
	{
		const char *err = webhook_signatures(xfer, ts, &out[n]);

		if (err != NULL)
			return err;
		n++;
	}
	out[n++] = psprintf("Idempotency-Key: %s", xfer->webhook_id);
	*lines = out;
	*nlines = n;
	return NULL;
}

void
delq_transfer_send(DelqHttp *http, DelqTransfer *xfer)
{
	xfer->outcome = DELQ_OUTCOME_PENDING;
	xfer->http_status = 0;
	xfer->retry_after_s = -1;
	xfer->gone = false;
	xfer->error[0] = '\0';
	xfer->error_class[0] = '\0';
	delq_http_start(http, &xfer->req);
}

void
delq_webhook_start(DelqHttp *http, DelqTransfer *xfer)
{
	xfer->req.method = NULL;	/* a POST: there is a body */
	xfer->req.body = xfer->body;
	xfer->req.response = xfer->excerpt;
	xfer->req.response_size = sizeof(xfer->excerpt);
	xfer->req.max_response = DELQ_HTTP_RESPONSE_MAX;
	xfer->req.prepare = webhook_prepare;
	xfer->req.header = delq_webhook_header;
	delq_transfer_send(http, xfer);
}

DelqTransfer *
delq_webhook_finish(DelqHttpRequest *req)
{
	DelqTransfer *xfer = (DelqTransfer *) req;
	int			code = req->status;
	size_t		n;

	xfer->http_status = code;
	xfer->gone = false;
	xfer->error[0] = '\0';
	xfer->error_class[0] = '\0';
	switch (req->result)
	{
		case DELQ_HTTP_PENDING:
			xfer->outcome = DELQ_OUTCOME_PENDING;
			break;
		case DELQ_HTTP_TOO_LARGE:

			/*
			 * The status line arrived before the oversized body, and it is
			 * the answer: a 2xx still confirms.  Without one, try again.
			 */
			xfer->outcome = code ? delq_webhook_classify(code) : DELQ_OUTCOME_RETRY;
			xfer->gone = (code == 410);
			n = strlcpy(xfer->error, req->error, sizeof(xfer->error));
			if (code != 0 && n < sizeof(xfer->error))
				snprintf(xfer->error + n, sizeof(xfer->error) - n,
						 " (HTTP %d)", code);
			break;
		case DELQ_HTTP_NO_ANSWER:
		case DELQ_HTTP_REFUSED:
			xfer->outcome = req->result == DELQ_HTTP_REFUSED ?
				DELQ_OUTCOME_FAILED : DELQ_OUTCOME_RETRY;
			strlcpy(xfer->error, req->error, sizeof(xfer->error));
			break;
		case DELQ_HTTP_ANSWERED:
			xfer->outcome = delq_webhook_classify(code);
			xfer->gone = (code == 410);
			if (xfer->outcome != DELQ_OUTCOME_CONFIRMED)
			{
				snprintf(xfer->error_class, sizeof(xfer->error_class),
						 "HTTP %d", code);
				n = snprintf(xfer->error, sizeof(xfer->error), "%s: ",
							 xfer->error_class);
				if (delq_http_safe_text(xfer->error + n, sizeof(xfer->error) - n,
										req->response, req->response_len) == 0)
					xfer->error[n - 2] = '\0';	/* no body: "HTTP 503" */
			}
			return xfer;
	}
	/* no answer body in the error: the class is all of it */
	strlcpy(xfer->error_class, xfer->error, sizeof(xfer->error_class));
	return xfer;
}
