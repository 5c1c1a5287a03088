/*-------------------------------------------------------------------------
 *
 * sqldest.c
 *	  SQL destinations: call function(request jsonb) as the destination's
 *	  run_as role, in the transaction that records the outcome, so that the
 *	  erasure and its proof commit together: exactly once, also across a
 *	  crash (docs/sql-destinations.md).
 *
 * Which delivery is due, whether run_as may be used, which errors are
 * retried, and the outcome's record are SQL (src/sql/51_sql_destinations.sql);
 * this file makes the call.  The function runs
 *	- with run_as's privileges only: the user id is switched as VACUUM and
 *	  REFRESH MATERIALIZED VIEW do for the code of a table's owner, in a
 *	  security-restricted operation, so the function can neither SET ROLE
 *	  nor SET SESSION AUTHORIZATION back to the worker's superuser (or to
 *	  the owner of delq.dispatch()), nor leave temporary objects behind;
 *	- with search_path = pg_catalog, pg_temp, unless it sets its own; every
 *	  setting it changes is undone after the call;
 *	- in a subtransaction of its own, so that an error undoes its work and
 *	  is recorded (with its SQLSTATE) instead of ending the transaction;
 *	- at most the destination's timeout, after which it is cancelled as a
 *	  statement timeout would cancel it (57014, retried).
 *
 * src/sqldest.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timeout.h"

#include "sqldest.h"
#include "store.h"

static DelqStatement claim_stmt =
{"SELECT * FROM delq._claim_sql()", 0, {InvalidOid}};
static DelqStatement outcome_stmt =
{"SELECT delq._sql_outcome($1, $2, $3, $4)", 4, {INT8OID, TEXTOID, TEXTOID, TEXTOID}};
static DelqStatement due_stmt =
{"SELECT pg_catalog.int4(delq._sql_due())", 0, {InvalidOid}};

/* One call: what delq._claim_sql() returned, and what came of it. */
typedef struct SqlCall
{
	int64		delivery_id;
	Oid			fn;
	Oid			run_as;
	int			timeout_ms;
	Datum		body;			/* jsonb */
	char	   *problem_code;	/* NULL: the call may be made */
	char	   *problem;
	/* the result: an outcome, or the error's SQLSTATE and message */
	const char *outcome;		/* "confirmed", "not_held" or NULL */
	char		sqlstate[6];
	char	   *message;
} SqlCall;

static bool timeout_registered = false;
static TimeoutId call_timeout;
static volatile sig_atomic_t call_timed_out = false;

/* The destination's timeout passed: cancel as a statement timeout does. */
static void
call_timeout_handler(void)
{
	call_timed_out = true;
	QueryCancelPending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

/* Column name of the claim row as text in cxt, or NULL. */
static char *
claim_text(HeapTuple tup, TupleDesc desc, const char *name, MemoryContext cxt)
{
	char	   *value = SPI_getvalue(tup, desc, SPI_fnumber(desc, name));

	return value ? MemoryContextStrdup(cxt, value) : NULL;
}

static Datum
claim_datum(HeapTuple tup, TupleDesc desc, const char *name, bool *isnull)
{
	int			col = SPI_fnumber(desc, name);

	if (col <= 0)
		elog(ERROR, "delq: delq._claim_sql() returns no column \"%s\"", name);
	return SPI_getbinval(tup, desc, col, isnull);
}

/* Claim one due delivery (delq._claim_sql); false when none is due. */
static bool
claim(SqlCall *c)
{
	MemoryContext cxt = CurrentMemoryContext;
	bool		found;

	SPI_connect();
	delq_store_run(&claim_stmt, NULL, SPI_OK_SELECT);
	found = SPI_processed > 0;
	if (found)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d;

		c->delivery_id = DatumGetInt64(claim_datum(tup, desc, "delivery_id", &isnull));
		d = claim_datum(tup, desc, "function_oid", &isnull);
		c->fn = isnull ? InvalidOid : DatumGetObjectId(d);
		d = claim_datum(tup, desc, "run_as", &isnull);
		c->run_as = isnull ? InvalidOid : DatumGetObjectId(d);
		c->timeout_ms = DatumGetInt32(claim_datum(tup, desc, "timeout_ms", &isnull));
		d = claim_datum(tup, desc, "body", &isnull);
		c->body = SPI_datumTransfer(d, false, -1);
		c->problem_code = claim_text(tup, desc, "problem_code", cxt);
		c->problem = claim_text(tup, desc, "problem", cxt);
	}
	SPI_finish();
	return found;
}

/*
 * What the function's result says: false or 0 is "the subject is not
 * held here"; anything else (true, another number, NULL, void) is
 * "erased".
 */
static const char *
result_outcome(Oid rettype, Datum result, bool isnull)
{
	if (isnull)
		return "confirmed";
	switch (rettype)
	{
		case BOOLOID:
			return DatumGetBool(result) ? "confirmed" : "not_held";
		case INT4OID:
			return DatumGetInt32(result) == 0 ? "not_held" : "confirmed";
		case INT8OID:
			return DatumGetInt64(result) == 0 ? "not_held" : "confirmed";
		default:
			return "confirmed";
	}
}

/* The call itself, as run_as; throws what the function throws. */
static const char *
invoke(SqlCall *c, Oid rettype, Oid save_userid, int save_sec)
{
	LOCAL_FCINFO(fcinfo, 1);
	FmgrInfo	flinfo;
	Datum		result;
	int			nestlevel;

	SetUserIdAndSecContext(c->run_as, save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);

	/* _claim_sql checked these in this transaction; a cheap second look */
	if (superuser_arg(c->run_as))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("run_as is a superuser")));
	if (pg_proc_aclcheck(c->fn, c->run_as, ACL_EXECUTE) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, get_func_name(c->fn));
	InvokeFunctionExecuteHook(c->fn);

	fmgr_info(c->fn, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = c->body;
	fcinfo->args[0].isnull = false;

	call_timed_out = false;
	enable_timeout_after(call_timeout, c->timeout_ms);
	result = FunctionCallInvoke(fcinfo);
	disable_timeout(call_timeout, false);
	if (call_timed_out)
		QueryCancelPending = false; /* it fired as the function returned */

	AtEOXact_GUC(false, nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec);
	return result_outcome(rettype, result, fcinfo->isnull);
}

/*
 * Call the function in a subtransaction: its work stays (for the caller
 * to commit) when it returns, and is undone when it raises, which is then
 * kept as SQLSTATE and message.  A cancel or shutdown that is not the
 * destination's timeout goes on up.
 */
static void
call_function(SqlCall *c)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	Oid			rettype = get_func_rettype(c->fn);
	Oid			save_userid;
	int			save_sec;

	if (!timeout_registered)
	{
		call_timeout = RegisterTimeout(USER_TIMEOUT, call_timeout_handler);
		timeout_registered = true;
	}
	GetUserIdAndSecContext(&save_userid, &save_sec);

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		c->outcome = invoke(c, rettype, save_userid, save_sec);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		bool		timed_out = call_timed_out;

		disable_timeout(call_timeout, false);
		call_timed_out = false;
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		/* also restores the user id and the settings */
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (timed_out)
		{
			QueryCancelPending = false;
			strlcpy(c->sqlstate, "57014", sizeof(c->sqlstate));
			c->message = psprintf("the function ran longer than the destination's timeout (%d ms)",
								  c->timeout_ms);
		}
		else if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_OPERATOR_INTERVENTION)
			ReThrowError(edata);
		else
		{
			strlcpy(c->sqlstate, unpack_sql_state(edata->sqlerrcode), sizeof(c->sqlstate));
			c->message = pstrdup(edata->message ? edata->message : "");
		}
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
}

/* Record the outcome (delq._sql_outcome), in the caller's transaction. */
static void
record(SqlCall *c)
{
	Datum		args[4];

	args[0] = Int64GetDatum(c->delivery_id);
	args[1] = CStringGetTextDatum(c->outcome ? c->outcome : "");
	args[2] = CStringGetTextDatum(c->sqlstate);
	args[3] = CStringGetTextDatum(c->message ? c->message : "");
	SPI_connect();
	delq_store_run(&outcome_stmt, args, SPI_OK_SELECT);
	SPI_finish();
}

int
delq_sql_run_one(void)
{
	SqlCall		c;

	memset(&c, 0, sizeof(c));
	if (!claim(&c))
		return 0;
	if (c.problem_code == NULL)
		call_function(&c);
	else
	{
		/* run_as or the function is no longer safe to use: not called */
		strlcpy(c.sqlstate, c.problem_code, sizeof(c.sqlstate));
		c.message = c.problem;
	}
	record(&c);
	return 1;
}

bool
delq_sql_due(void)
{
	return delq_store_run_int(&due_stmt, (Datum) 0) != 0;
}
