/*-------------------------------------------------------------------------
 *
 * template.c
 *	  Sending the rendered request of a templated destination's step and
 *	  keeping its whole answer.  No Standard Webhooks headers, no
 *	  signature: the request is exactly what the template says
 *	  (docs/connectors.md); what the answer means is decided in SQL
 *	  (delq._record_step, src/sql/72_steps.sql).
 *
 * IDENTIFICATION
 *	  src/template.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"

#include "template.h"

void
delq_template_start(DelqHttp *http, DelqTransfer *xfer)
{
	MemoryContext cxt = (MemoryContext) xfer->user;

	xfer->req.method = xfer->method;
	xfer->req.body = xfer->body;
	xfer->req.max_response = DELQ_HTTP_RESPONSE_MAX;
	xfer->req.response = MemoryContextAlloc(cxt, DELQ_HTTP_RESPONSE_MAX);
	xfer->req.response_size = DELQ_HTTP_RESPONSE_MAX;
	xfer->req.prepare = NULL;
	xfer->req.header = delq_webhook_header;
	delq_transfer_send(http, xfer);
}

char *
delq_template_body(DelqTransfer *xfer)
{
	char	   *text;

	if (xfer->req.result != DELQ_HTTP_ANSWERED || xfer->req.response == NULL)
		return NULL;
	/* control characters become blanks: JSON stays JSON */
	text = palloc(xfer->req.response_len + 1);

	delq_http_safe_text(text, xfer->req.response_len + 1,
						xfer->req.response, xfer->req.response_len);
	return text;
}
