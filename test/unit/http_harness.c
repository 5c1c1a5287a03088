/*-------------------------------------------------------------------------
 *
 * http_harness.c
 *	  SQL-callable wrappers around src/httpclient.c, src/webhook.c and
 *	  src/signing.c, so that test/unit/run can drive the HTTP client and
 *	  the webhook requests made with it inside a real backend (latch,
 *	  WaitEventSet, interrupts) against a local test server.
 *
 * Built and loaded only by test/unit/run, never installed.
 *
 * IDENTIFICATION
 *	  test/unit/http_harness.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "signing.h"
#include "webhook.h"

PG_MODULE_MAGIC;

/* a client kept across calls (and so across transactions) */
static DelqHttp *persistent_http = NULL;

typedef struct RunState
{
	ReturnSetInfo *rsinfo;
	TimestampTz t0;
	double	   *start_ms;
	int			chain_left;		/* restarts still to do from done() */
	DelqHttp   *http;
} RunState;

static const char *
outcome_name(DelqTransferOutcome o)
{
	switch (o)
	{
		case DELQ_OUTCOME_PENDING:
			return "pending";
		case DELQ_OUTCOME_CONFIRMED:
			return "confirmed";
		case DELQ_OUTCOME_RETRY:
			return "retry";
		case DELQ_OUTCOME_FAILED:
			return "failed";
	}
	return "?";
}

static double
ms_since(TimestampTz t0)
{
	return (GetCurrentTimestamp() - t0) / 1000.0;
}

/* an optional setting "ht.<name>", NULL when unset or empty */
static const char *
harness_option(const char *name)
{
	const char *v = GetConfigOption(name, true, false);

	return (v != NULL && *v != '\0') ? v : NULL;
}

/* done(): one result row; restart the same transfer while chain_left */
static void
harness_done(DelqHttpRequest *req, void *arg)
{
	DelqTransfer *x = delq_webhook_finish(req);
	RunState   *st = (RunState *) arg;
	int			i = (int) x->delivery_id;
	Datum		v[9];
	bool		n[9] = {0};

	v[0] = Int32GetDatum(i);
	v[1] = CStringGetTextDatum(x->req.url);
	v[2] = CStringGetTextDatum(outcome_name(x->outcome));
	v[3] = Int32GetDatum(x->http_status);
	v[4] = Int32GetDatum(x->retry_after_s);
	v[5] = BoolGetDatum(x->gone);
	v[6] = CStringGetTextDatum(x->error);
	v[7] = Float8GetDatum(st->start_ms[i]);
	v[8] = Float8GetDatum(ms_since(st->t0));
	tuplestore_putvalues(st->rsinfo->setResult, st->rsinfo->setDesc, v, n);

	if (st->chain_left > 0)
	{
		st->chain_left--;
		st->start_ms[i] = ms_since(st->t0);
		delq_webhook_start(st->http, x);
	}
}

static char **
text_array(ArrayType *a, int *n)
{
	Datum	   *d;
	bool	   *nulls;
	char	  **out;
	int			i;

	deconstruct_array(a, TEXTOID, -1, false, TYPALIGN_INT, &d, &nulls, n);
	out = palloc(sizeof(char *) * (*n + 1));
	for (i = 0; i < *n; i++)
		out[i] = TextDatumGetCString(d[i]);
	return out;
}

/* the webhook body, padded to at least ht.pad extra bytes */
static char *
harness_body(int i)
{
	const char *pad = harness_option("ht.pad");
	int			npad = pad ? atoi(pad) : 0;
	char	   *p = palloc(npad + 1);

	memset(p, 'p', npad);
	p[npad] = '\0';
	return psprintf("{\"type\":\"erasure.requested\",\"n\":%d,"
					"\"s\":\"caf\xc3\xa9\",\"pad\":\"%s\"}", i, p);
}

PG_FUNCTION_INFO_V1(ht_run);

/*
 * ht_run(urls, secret, timeout_ms, connect_ms, max_conn, headers, chain,
 * persistent): POST to every URL at once, wait for all, one row each.
 */
Datum
ht_run(PG_FUNCTION_ARGS)
{
	int			nurls;
	int			nh = 0;
	int			i;
	char	  **urls = text_array(PG_GETARG_ARRAYTYPE_P(0), &nurls);
	char	   *secret = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	  **hdrs = PG_ARGISNULL(5) ? NULL : text_array(PG_GETARG_ARRAYTYPE_P(5), &nh);
	bool		persistent = PG_GETARG_BOOL(7);
	DelqTransfer *xs;
	RunState	st;
	DelqHttp   *volatile http;

	InitMaterializedSRF(fcinfo, 0);
	st.rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	st.chain_left = PG_GETARG_INT32(6);
	st.start_ms = palloc0(sizeof(double) * nurls);
	xs = palloc0(sizeof(DelqTransfer) * nurls);

	if (persistent && persistent_http == NULL)
		persistent_http = delq_http_create(PG_GETARG_INT32(4));
	http = persistent ? persistent_http : delq_http_create(PG_GETARG_INT32(4));
	st.http = http;
	st.t0 = GetCurrentTimestamp();

	PG_TRY();
	{
		for (i = 0; i < nurls; i++)
		{
			xs[i].delivery_id = i;
			xs[i].req.url = urls[i];
			xs[i].body = harness_body(i);
			xs[i].webhook_id = psprintf("msg_test_%d", i);
			xs[i].secret = secret;
			xs[i].req.headers = hdrs;
			xs[i].req.nheaders = nh;
			xs[i].req.timeout_ms = PG_GETARG_INT32(2);
			xs[i].req.connect_timeout_ms = PG_GETARG_INT32(3);
			xs[i].req.ca_file = harness_option("ht.ca_file");
			xs[i].req.client_cert = harness_option("ht.client_cert");
			xs[i].req.client_key = harness_option("ht.client_key");
			st.start_ms[i] = ms_since(st.t0);
			delq_webhook_start(http, &xs[i]);
		}
		while (delq_http_running(http) > 0)
			delq_http_wait(http, -1, harness_done, &st, PG_WAIT_EXTENSION);
	}
	PG_FINALLY();
	{
		if (!persistent)
			delq_http_destroy(http);
	}
	PG_END_TRY();
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(ht_wait);

/* ht_wait(timeout_ms): wait with nothing in flight; "latch=<0|1> ms=<n>" */
Datum
ht_wait(PG_FUNCTION_ARGS)
{
	DelqHttp   *volatile http = delq_http_create(0);
	TimestampTz t0 = GetCurrentTimestamp();
	bool		latch;

	/* a new backend starts with its latch set (SwitchToSharedLatch) */
	ResetLatch(MyLatch);
	PG_TRY();
	{
		latch = delq_http_wait(http, PG_GETARG_INT64(0), NULL, NULL,
							   PG_WAIT_EXTENSION);
	}
	PG_FINALLY();
	{
		delq_http_destroy(http);
	}
	PG_END_TRY();
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("latch=%d ms=%.0f", latch,
											  ms_since(t0))));
}

PG_FUNCTION_INFO_V1(ht_abandon);

/* ht_abandon(url, wait_ms): destroy the client with a transfer in flight */
Datum
ht_abandon(PG_FUNCTION_ARGS)
{
	DelqHttp   *http = delq_http_create(0);
	DelqTransfer x = {0};
	bool		latch;

	x.req.url = text_to_cstring(PG_GETARG_TEXT_PP(0));
	x.body = "{}";
	x.webhook_id = "msg_abandon";
	x.req.timeout_ms = 60000;
	ResetLatch(MyLatch);
	delq_webhook_start(http, &x);
	latch = delq_http_wait(http, PG_GETARG_INT32(1), NULL, NULL,
						   PG_WAIT_EXTENSION);
	delq_http_destroy(http);
	/* done() was NULL: read the outcome from the request itself */
	if (x.req.result != DELQ_HTTP_PENDING)
		delq_webhook_finish(&x.req);
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("latch=%d outcome=%s priv=%s",
											  latch, outcome_name(x.outcome),
											  x.req.priv ? "set" : "null")));
}

PG_FUNCTION_INFO_V1(ht_sign);

/*
 * ht_sign(secret, id, ts, body, no_owner): delq_signature, optionally with
 * CurrentResourceOwner NULL as in a worker between transactions.
 */
Datum
ht_sign(PG_FUNCTION_ARGS)
{
	char	   *secret = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *id = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *body = text_to_cstring(PG_GETARG_TEXT_PP(3));
	ResourceOwner saved = CurrentResourceOwner;
	char	   *sig;

	if (PG_GETARG_BOOL(4))
		CurrentResourceOwner = NULL;
	sig = delq_signature(secret, id, PG_GETARG_INT64(2), body, strlen(body));
	CurrentResourceOwner = saved;
	if (sig == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(sig));
}

PG_FUNCTION_INFO_V1(ht_decode);

/* ht_decode(secret): the key as bytea, NULL when malformed */
Datum
ht_decode(PG_FUNCTION_ARGS)
{
	uint8	   *key;
	size_t		len;
	bytea	   *b;

	if (!delq_secret_decode(text_to_cstring(PG_GETARG_TEXT_PP(0)), &key, &len))
		PG_RETURN_NULL();
	b = palloc(VARHDRSZ + len);
	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), key, len);
	PG_RETURN_BYTEA_P(b);
}

PG_FUNCTION_INFO_V1(ht_classify);

/* ht_classify(status): delq_webhook_classify as text */
Datum
ht_classify(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(outcome_name(delq_webhook_classify(PG_GETARG_INT32(0)))));
}
