/*-------------------------------------------------------------------------
 *
 * store.c
 *	  The forwarder's SQL, through SPI with plans prepared once per process.
 *
 * The rules (which deliveries are due, backoff, breaker, request status)
 * live in the SQL functions of src/sql/70_forwarding.sql; this file only
 * moves rows between them and the C structs the HTTP client works on.
 *
 * Every function and operator in these statements is schema-qualified, so
 * that no search_path changes what they run; the worker pins search_path
 * as well (src/worker.c), and dispatch() runs under the pinned path of its
 * SQL definition (docs/security.md, "Name resolution").
 *
 * src/store.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "storage/bufmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "store.h"
#include "template.h"

typedef enum DelqPlan
{
	PLAN_CLAIM,
	PLAN_RECORD,
	PLAN_RECORD_STEP,
	PLAN_REQUEUE,
	PLAN_RELEASE,
	PLAN_NEXT_DUE,
	PLAN_COUNT
} DelqPlan;

static DelqStatement statements[PLAN_COUNT] = {
	[PLAN_CLAIM] = {"SELECT * FROM delq._claim($1)", 1, {INT4OID}},
	/* the arguments are described next to delq._record (70_forwarding.sql) */
	[PLAN_RECORD] = {"SELECT delq._record($1, $2, $3, $4, $5, $6, $7)", 7,
		{INT8ARRAYOID, TEXTARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	INT4ARRAYOID, BOOLARRAYOID}},
	[PLAN_RECORD_STEP] = {"SELECT delq._record_step($1, $2, $3, $4, $5, $6)", 6,
	{INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID, TEXTARRAYOID}},
	[PLAN_REQUEUE] = {"SELECT delq._requeue_stale($1)", 1, {BOOLOID}},
	[PLAN_RELEASE] = {"SELECT delq._release_held($1)", 1, {INT4OID}},
	[PLAN_NEXT_DUE] = {"SELECT delq._next_due()", 0, {InvalidOid}},
};

/* Run a kept statement (prepared at first use); SPI is connected. */
void
delq_store_run(DelqStatement *stmt, Datum *values, int expected)
{
	int			rc;

	if (stmt->plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(stmt->sql, stmt->nargs, stmt->argtypes);

		if (plan == NULL)
			elog(ERROR, "delq: SPI_prepare failed for \"%s\": %s",
				 stmt->sql, SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		stmt->plan = plan;
	}
	rc = SPI_execute_plan(stmt->plan, values, NULL, false, 0);
	if (rc != expected)
		elog(ERROR, "delq: \"%s\" returned %s",
			 stmt->sql, SPI_result_code_string(rc));
}

/* delq_store_run() for one of this file's statements. */
static void
run_plan(DelqPlan which, Datum *values, int expected)
{
	delq_store_run(&statements[which], values, expected);
}

/* The int4 result of a one-row statement, connecting to SPI. */
int
delq_store_run_int(DelqStatement *stmt, Datum arg)
{
	bool		isnull;
	Datum		d;
	int			result;

	SPI_connect();
	delq_store_run(stmt, &arg, SPI_OK_SELECT);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	result = isnull ? 0 : DatumGetInt32(d);
	SPI_finish();
	return result;
}

/* The columns of delq._claim() that C reads, found by name. */
typedef struct ClaimColumns
{
	int			delivery_id;
	int			webhook_id;
	int			url;
	int			headers;
	int			secret;
	int			timeout_ms;
	int			connect_timeout_ms;
	int			ca_file;
	int			client_cert;
	int			client_key;
	int			body;
	int			method;
	int			render_error;
} ClaimColumns;

/* The number of the result column called name; an error if it is missing. */
static int
column(TupleDesc desc, const char *name)
{
	int			col = SPI_fnumber(desc, name);

	if (col <= 0)
		elog(ERROR, "delq: delq._claim() returns no column \"%s\"", name);
	return col;
}

static void
claim_columns(TupleDesc desc, ClaimColumns *c)
{
	c->delivery_id = column(desc, "delivery_id");
	c->webhook_id = column(desc, "webhook_id");
	c->url = column(desc, "url");
	c->headers = column(desc, "headers");
	c->secret = column(desc, "secret");
	c->timeout_ms = column(desc, "timeout_ms");
	c->connect_timeout_ms = column(desc, "connect_timeout_ms");
	c->ca_file = column(desc, "ca_file");
	c->client_cert = column(desc, "client_cert");
	c->client_key = column(desc, "client_key");
	c->body = column(desc, "body");
	c->method = column(desc, "method");
	c->render_error = column(desc, "render_error");
}

/* Column col of the current claim row as a string in cxt, or NULL. */
static char *
claim_text(HeapTuple tuple, TupleDesc desc, int col, MemoryContext cxt)
{
	char	   *value = SPI_getvalue(tuple, desc, col);

	return value ? MemoryContextStrdup(cxt, value) : NULL;
}

/* Column col of the current claim row as an int4 (0 when NULL). */
static int32
claim_int(HeapTuple tuple, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tuple, desc, col, &isnull);

	return isnull ? 0 : DatumGetInt32(d);
}

/* The headers column (text[]) as a char** in cxt. */
static void
claim_headers(HeapTuple tuple, TupleDesc desc, int col, MemoryContext cxt,
			  DelqTransfer *t)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tuple, desc, col, &isnull);
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	t->req.headers = NULL;
	t->req.nheaders = 0;
	if (isnull)
		return;
	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	if (n == 0)
		return;
	t->req.headers = MemoryContextAlloc(cxt, sizeof(char *) * n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			t->req.headers[t->req.nheaders++] = MemoryContextStrdup(cxt, TextDatumGetCString(elems[i]));
}

int
delq_store_claim(int max_rows, MemoryContext parent, DelqTransfer ***transfers)
{
	Datum		arg = Int32GetDatum(max_rows);
	ClaimColumns c;
	uint64		n;

	SPI_connect();
	run_plan(PLAN_CLAIM, &arg, SPI_OK_SELECT);
	n = SPI_processed;
	*transfers = n ? MemoryContextAlloc(parent, sizeof(DelqTransfer *) * n) : NULL;
	if (n > 0)
		claim_columns(SPI_tuptable->tupdesc, &c);

	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MemoryContext cxt = AllocSetContextCreate(parent, "delq transfer",
												  ALLOCSET_SMALL_SIZES);
		DelqTransfer *t = MemoryContextAllocZero(cxt, sizeof(DelqTransfer));
		bool		isnull;

		t->delivery_id = DatumGetInt64(SPI_getbinval(tup, desc, c.delivery_id, &isnull));
		t->webhook_id = claim_text(tup, desc, c.webhook_id, cxt);
		t->req.url = claim_text(tup, desc, c.url, cxt);
		claim_headers(tup, desc, c.headers, cxt, t);
		t->secret = claim_text(tup, desc, c.secret, cxt);
		t->req.timeout_ms = claim_int(tup, desc, c.timeout_ms);
		t->req.connect_timeout_ms = claim_int(tup, desc, c.connect_timeout_ms);
		t->req.ca_file = claim_text(tup, desc, c.ca_file, cxt);
		t->req.client_cert = claim_text(tup, desc, c.client_cert, cxt);
		t->req.client_key = claim_text(tup, desc, c.client_key, cxt);
		t->body = claim_text(tup, desc, c.body, cxt);
		t->method = claim_text(tup, desc, c.method, cxt);
		t->render_error = claim_text(tup, desc, c.render_error, cxt);
		t->user = cxt;
		t->retry_after_s = -1;
		(*transfers)[i] = t;
	}
	SPI_finish();
	return (int) n;
}

static const char *
outcome_name(DelqTransferOutcome outcome)
{
	switch (outcome)
	{
		case DELQ_OUTCOME_CONFIRMED:
			return "confirmed";
		case DELQ_OUTCOME_FAILED:
			return "failed";
		default:
			return "retry";
	}
}

/* Whether a transfer is a templated destination's step (src/template.c). */
static bool
is_step(DelqTransfer *t)
{
	return t->method != NULL || t->render_error != NULL;
}

/* A one-dimensional array of n values of type elemtype (nulls: none). */
static Datum
array_datum(Datum *values, bool *nulls, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1];
	int			lbs[1];

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	dims[0] = n;
	lbs[0] = 1;
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs,
											  elemtype, typlen, typbyval,
											  typalign));
}

/* The outcome columns of n finished transfers, for _record or _record_step. */
typedef struct OutcomeColumns
{
	Datum	   *ids;
	Datum	   *outcomes;
	Datum	   *statuses;
	Datum	   *classes;
	Datum	   *errors;
	Datum	   *retry_after;
	Datum	   *gone;
} OutcomeColumns;

static void
outcome_columns(DelqTransfer **done, int n, OutcomeColumns *c)
{
	c->ids = palloc(sizeof(Datum) * n);
	c->outcomes = palloc(sizeof(Datum) * n);
	c->statuses = palloc(sizeof(Datum) * n);
	c->classes = palloc(sizeof(Datum) * n);
	c->errors = palloc(sizeof(Datum) * n);
	c->retry_after = palloc(sizeof(Datum) * n);
	c->gone = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
	{
		c->ids[i] = Int64GetDatum(done[i]->delivery_id);
		c->outcomes[i] = CStringGetTextDatum(outcome_name(done[i]->outcome));
		c->statuses[i] = Int32GetDatum(done[i]->http_status);
		c->classes[i] = CStringGetTextDatum(done[i]->error_class);
		c->errors[i] = CStringGetTextDatum(done[i]->error);
		c->retry_after[i] = Int32GetDatum(done[i]->retry_after_s);
		c->gone[i] = BoolGetDatum(done[i]->gone);
	}
}

/*
 * Templated steps' outcomes, with their answers' bodies, through
 * delq._record_step (src/sql/72_steps.sql), which decides what each answer
 * means for its delivery.
 */
static void
record_steps(DelqTransfer **done, int n)
{
	OutcomeColumns c;
	Datum	   *bodies = palloc(sizeof(Datum) * n);
	bool	   *nobody = palloc0(sizeof(bool) * n);
	Datum		args[6];

	outcome_columns(done, n, &c);
	for (int i = 0; i < n; i++)
	{
		char	   *body = delq_template_body(done[i]);

		nobody[i] = (body == NULL);
		bodies[i] = body ? CStringGetTextDatum(body) : (Datum) 0;
	}
	args[0] = array_datum(c.ids, NULL, n, INT8OID);
	args[1] = array_datum(c.statuses, NULL, n, INT4OID);
	args[2] = array_datum(c.outcomes, NULL, n, TEXTOID);
	args[3] = array_datum(c.errors, NULL, n, TEXTOID);
	args[4] = array_datum(c.retry_after, NULL, n, INT4OID);
	args[5] = array_datum(bodies, nobody, n, TEXTOID);

	SPI_connect();
	run_plan(PLAN_RECORD_STEP, args, SPI_OK_SELECT);
	SPI_finish();
}

/* Webhooks' outcomes through delq._record (src/sql/70_forwarding.sql). */
static void
record_webhooks(DelqTransfer **done, int n)
{
	OutcomeColumns c;
	Datum		args[7];

	outcome_columns(done, n, &c);
	args[0] = array_datum(c.ids, NULL, n, INT8OID);
	args[1] = array_datum(c.outcomes, NULL, n, TEXTOID);
	args[2] = array_datum(c.statuses, NULL, n, INT4OID);
	args[3] = array_datum(c.classes, NULL, n, TEXTOID);
	args[4] = array_datum(c.errors, NULL, n, TEXTOID);
	args[5] = array_datum(c.retry_after, NULL, n, INT4OID);
	args[6] = array_datum(c.gone, NULL, n, BOOLOID);

	SPI_connect();
	run_plan(PLAN_RECORD, args, SPI_OK_SELECT);
	SPI_finish();
}

/* Record n outcomes: webhooks with one statement, templated steps with another. */
static void
record_batch(DelqTransfer **done, int n)
{
	DelqTransfer **some = palloc(sizeof(DelqTransfer *) * n);

	for (int steps = 0; steps <= 1; steps++)
	{
		int			k = 0;

		for (int i = 0; i < n; i++)
			if (is_step(done[i]) == (steps == 1))
				some[k++] = done[i];
		if (k > 0 && steps)
			record_steps(some, k);
		else if (k > 0)
			record_webhooks(some, k);
	}
	pfree(some);
}

/*
 * Run fn(arg) in an internal subtransaction of its own.  NULL when it
 * committed; else its error, copied into the caller's memory context,
 * once the subtransaction is rolled back.  A cancel or a shutdown is not
 * swallowed: it is thrown again.
 */
ErrorData *
delq_store_subxact(void (*fn) (void *arg), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_OPERATOR_INTERVENTION)
			ReThrowError(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return edata;
}

typedef struct RecordBatch
{
	DelqTransfer **done;
	int			n;
} RecordBatch;

static void
record_batch_fn(void *arg)
{
	RecordBatch *b = (RecordBatch *) arg;

	record_batch(b->done, b->n);
}

/*
 * Record n outcomes in a subtransaction of their own.  False if that
 * failed: the error is logged as a WARNING when it concerned one delivery,
 * and nothing of it stays written.
 */
static bool
record_in_subxact(DelqTransfer **done, int n)
{
	RecordBatch b = {done, n};
	ErrorData  *edata = delq_store_subxact(record_batch_fn, &b);

	if (edata == NULL)
		return true;
	if (n == 1)
		ereport(WARNING,
				(errmsg("delq could not record the outcome of delivery %lld: %s",
						(long long) done[0]->delivery_id, edata->message),
				 errdetail("Its other outcomes were recorded."),
				 errhint("The delivery stays in flight until its lease expires; then it is sent again.")));
	FreeErrorData(edata);
	return false;
}

/*
 * Record a batch at once; if any of it fails, one by one, so that a single
 * outcome that cannot be recorded costs only itself (its delivery is sent
 * again after its lease), never the batch.
 */
void
delq_store_record(DelqTransfer **done, int n)
{
	if (record_in_subxact(done, n))
		return;
	for (int i = 0; i < n; i++)
		(void) record_in_subxact(&done[i], 1);
}

int
delq_store_requeue_stale(bool all_sending)
{
	return delq_store_run_int(&statements[PLAN_REQUEUE], BoolGetDatum(all_sending));
}

int
delq_store_release_held(int max_requests)
{
	return delq_store_run_int(&statements[PLAN_RELEASE], Int32GetDatum(max_requests));
}

bool
delq_store_next_due(TimestampTz *when)
{
	bool		isnull;
	Datum		d;

	SPI_connect();
	run_plan(PLAN_NEXT_DUE, NULL, SPI_OK_SELECT);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		*when = DatumGetTimestampTz(d);
	SPI_finish();
	return !isnull;
}

/* Blocks of delq.<name>, 0 if it is missing. */
static BlockNumber
table_blocks(Oid namespace, const char *name)
{
	Oid			relid = get_relname_relid(name, namespace);
	Relation	rel;
	BlockNumber blocks;

	if (!OidIsValid(relid))
		return 0;
	rel = table_open(relid, AccessShareLock);
	blocks = RelationGetNumberOfBlocks(rel);
	table_close(rel, AccessShareLock);
	return blocks;
}

/*
 * The plans this process keeps (here and in the PL/pgSQL functions it
 * calls) are made again only after an ANALYZE of a table they read.  Plans
 * made while the queue was small (a new installation, a restore, before
 * the first burst) can join by reading whole tables, and cost four to five
 * times as much once the tables have grown, until autovacuum's next ANALYZE
 * (docs/performance.md).  So when delq.pending and delq.delivery together
 * have doubled or halved since the plans were last reset, every plan is
 * made again at its next use, for the tables as they are.  Looked at no
 * more than once a second: a turn takes milliseconds.
 */
void
delq_store_replan_if_resized(void)
{
	static BlockNumber planned_for = 0;
	static TimestampTz looked_at = 0;
	TimestampTz now = GetCurrentTimestamp();
	Oid			namespace;
	BlockNumber blocks;

	if (!TimestampDifferenceExceeds(looked_at, now, 1000))
		return;
	looked_at = now;
	namespace = get_namespace_oid("delq", true);
	if (!OidIsValid(namespace))
		return;
	blocks = table_blocks(namespace, "pending") + table_blocks(namespace, "delivery");
	if (blocks > 2 * planned_for + 16 || 2 * blocks + 16 < planned_for)
	{
		ResetPlanCache();
		planned_for = blocks;
	}
}
