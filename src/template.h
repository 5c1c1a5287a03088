/*-------------------------------------------------------------------------
 *
 * template.h
 *	  Sending one step of a templated HTTP destination (docs/connectors.md).
 *
 * The step's request (method, URL, headers, body) is rendered in SQL by
 * delq._step_request (src/sql/72_steps.sql) when the delivery is claimed;
 * this module only sends it and keeps the whole answer, which
 * delq._record_step reads (items, cursors, job ids, tokens).
 *
 * src/template.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DELQ_TEMPLATE_H
#define DELQ_TEMPLATE_H

#include "webhook.h"

/*
 * Begin the request of a claimed templated delivery (xfer->method set,
 * no render error).  The answer's body is kept, up to
 * DELQ_HTTP_RESPONSE_MAX bytes, in memory of xfer->user's context.  The
 * client hands it back like a webhook; delq_webhook_finish fills in the
 * status, Retry-After and error text.
 */
extern void delq_template_start(DelqHttp *http, DelqTransfer *xfer);

/*
 * The answer's body as a palloc'd string safe for a text column, or NULL
 * when no whole answer arrived.
 */
extern char *delq_template_body(DelqTransfer *xfer);

#endif							/* DELQ_TEMPLATE_H */
