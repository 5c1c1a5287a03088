/*-------------------------------------------------------------------------
 *
 * dispatch.c
 *	  Forwarding passes in the calling session, through the same engine as
 *	  the worker, for installations without it (pg_cron):
 *
 *	  CALL delq.dispatch_pass()	commits each claim before sending and each
 *								batch of outcomes after: like the worker, a
 *								session that dies mid-flight leaves its
 *								deliveries 'sending' (recorded as attempted,
 *								so reject() knows), and their leases bring
 *								them back;
 *	  SELECT delq.dispatch()	deprecated: everything happens in the
 *								statement's transaction, so a session that
 *								dies after a send rolls its record back.
 *								Refused inside a transaction block, where a
 *								ROLLBACK would do the same.
 *
 * src/dispatch.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/guc.h"
#include "utils/syscache.h"

#include "forward.h"
#include "settings.h"
#include "sqldest.h"
#include "store.h"
#include "version.h"

/*
 * How the steps of a pass run.  dispatch() runs them in its caller's
 * transaction, as the owner its SECURITY DEFINER gives it.  dispatch_pass()
 * cannot be SECURITY DEFINER (a procedure that commits may not be), so each
 * of its steps takes the extension owner's identity and a pinned
 * search_path itself, as fmgr does for SECURITY DEFINER, and commits.
 */
typedef struct DelqSteps
{
	bool		commit;			/* dispatch_pass(): commit after each step */
	Oid			owner;
	Oid			save_user;
	int			save_sec;
	int			nestlevel;
} DelqSteps;

static void
step_begin(DelqSteps *st)
{
	if (!st->commit)
		return;
	GetUserIdAndSecContext(&st->save_user, &st->save_sec);
	SetUserIdAndSecContext(st->owner, st->save_sec | SECURITY_LOCAL_USERID_CHANGE);
	st->nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
}

static void
step_end(DelqSteps *st)
{
	if (!st->commit)
		return;
	AtEOXact_GUC(true, st->nestlevel);
	SetUserIdAndSecContext(st->save_user, st->save_sec);
	SPI_commit();
}

/*
 * One pass: claim, send and record until max deliveries are done or nothing
 * more is due.  A claim can come back short because destinations are at
 * their concurrency cap; it is tried again whenever transfers finish, so the
 * cap limits how many are in flight at once, not how many a pass handles.
 */
static int
dispatch_pass(DelqForwarder *fw, int max, DelqSteps *st)
{
	int			sql_done = 0;

	step_begin(st);
	delq_store_release_held(delq_batch_size);
	delq_store_requeue_stale(false);
	step_end(st);

	/*
	 * SQL destinations (src/sqldest.c), a step each: the function's work
	 * commits, or rolls back, with its outcome (in dispatch(), with the
	 * caller's transaction).
	 */
	while (sql_done < max)
	{
		int			n;

		step_begin(st);
		n = delq_sql_run_one();
		step_end(st);
		if (n == 0)
			break;
		sql_done++;
		CHECK_FOR_INTERRUPTS();
	}
	max -= sql_done;

	for (;;)
	{
		int			room = Min(delq_max_in_flight - fw->running, delq_batch_size);

		room = Min(room, max - (int) fw->claimed);
		if (room > 0)
		{
			step_begin(st);
			(void) delq_forwarder_claim(fw, room);
			step_end(st);		/* committed before anything is sent */
		}
		if (fw->running == 0)
			break;				/* nothing more due, or max reached */
		delq_forwarder_wait(fw, -1);
		step_begin(st);
		delq_forwarder_record(fw);
		step_end(st);
		CHECK_FOR_INTERRUPTS();
	}
	step_begin(st);
	delq_forwarder_record(fw);
	step_end(st);
	return sql_done;
}

/* Run a pass; returns the number of outcomes recorded. */
static int
run_pass(int max, DelqSteps *st)
{
	DelqForwarder *fw;
	volatile int sql_done = 0;
	int			recorded;

	/* the forwarding queries are this version's (src/version.c) */
	delq_require_current_schema();
	fw = delq_forwarder_create();

	PG_TRY();
	{
		sql_done = dispatch_pass(fw, max, st);
	}
	PG_FINALLY();
	{
		recorded = (int) fw->recorded + sql_done;
		delq_forwarder_destroy(fw);
	}
	PG_END_TRY();
	return recorded;
}

PG_FUNCTION_INFO_V1(delq_dispatch);

/* delq._dispatch(max), for delq.dispatch() (src/sql/70_forwarding.sql) */
Datum
delq_dispatch(PG_FUNCTION_ARGS)
{
	DelqSteps	st = {0};

	if (IsTransactionBlock())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("delq.dispatch() cannot run inside a transaction block"),
				 errdetail("A rollback would undo the record of webhooks already sent."),
				 errhint("Run CALL delq.dispatch_pass() on its own, outside BEGIN ... COMMIT.")));
	ereport(NOTICE,
			(errmsg("delq.dispatch() is deprecated"),
			 errdetail("If the session ends before the statement does, the record of what it sent is lost."),
			 errhint("Use CALL delq.dispatch_pass(), which commits each claim before sending.")));
	PG_RETURN_INT32(run_pass(PG_GETARG_INT32(0), &st));
}

/* The owner of the function being called: the extension's. */
static Oid
function_owner(Oid fn)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fn);
	owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
	ReleaseSysCache(tup);
	return owner;
}

/* Check max_deliveries as dispatch() does (delq._check_max_deliveries). */
static void
check_max(Datum max, bool isnull, DelqSteps *st)
{
	Oid			argtypes[1] = {INT4OID};
	char		nulls[1] = {isnull ? 'n' : ' '};

	step_begin(st);
	if (SPI_execute_with_args("SELECT delq._check_max_deliveries($1)", 1, argtypes,
							  &max, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "delq: checking max_deliveries failed");
	step_end(st);
}

PG_FUNCTION_INFO_V1(delq_dispatch_pass);

/* CALL delq.dispatch_pass(max_deliveries) */
Datum
delq_dispatch_pass(PG_FUNCTION_ARGS)
{
	DelqSteps	st = {0};
	CallContext *call = (CallContext *) fcinfo->context;

	if (call == NULL || !IsA(call, CallContext) || call->atomic)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("delq.dispatch_pass() cannot run inside a transaction block"),
				 errdetail("It commits each claim before sending and each batch of outcomes after."),
				 errhint("Run CALL delq.dispatch_pass() on its own, outside BEGIN ... COMMIT and not from a function.")));

	st.commit = true;
	st.owner = function_owner(fcinfo->flinfo->fn_oid);
	SPI_connect_ext(SPI_OPT_NONATOMIC);
	check_max(PG_GETARG_DATUM(0), PG_ARGISNULL(0), &st);
	(void) run_pass(PG_GETARG_INT32(0), &st);
	SPI_finish();
	PG_RETURN_VOID();
}
