/*-------------------------------------------------------------------------
 *
 * upkeep.c
 *	  The worker's privacy upkeep: NOTIFY for requests newly at risk or
 *	  overdue, redaction of subjects past their retention, and the hourly
 *	  ledger checkpoint (docs/worker.md, "Privacy upkeep").
 *
 * The rules live in the SQL functions called here (src/sql/80_privacy.sql,
 * 81_ledger.sql, 82_deadlines.sql); this file runs them on the worker's
 * clock so that one failing task stops neither the others nor forwarding.
 *
 * src/upkeep.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/timestamp.h"

#include "settings.h"
#include "store.h"
#include "upkeep.h"

static DelqStatement alerts_stmt =
{"SELECT delq.check_deadlines($1)", 1, {INT4OID}};
static DelqStatement redact_stmt =
{"SELECT pg_catalog.int4(delq.redact(NULL, $1))", 1, {INT4OID}};
static DelqStatement checkpoint_stmt =
{"SELECT pg_catalog.int4(pg_catalog.count(*)) FROM delq.ledger_checkpoint('1 hour')", 0, {InvalidOid}};

/* Pause between two batches of a redaction backlog. */
#define DELQ_UPKEEP_AGAIN_MS	50

/* Deadline alerts: NOTIFY delq_alerts for requests newly at risk/overdue. */
static void
deadline_alerts(void *arg)
{
	(void) delq_store_run_int(&alerts_stmt, Int32GetDatum(delq_batch_size));
}

/*
 * Replace subjects of requests finished longer ago than the retention, at
 * most a batch (delq.redact(), max_requests); *arg: how many.
 */
static void
redaction(void *arg)
{
	*(int *) arg = delq_store_run_int(&redact_stmt, Int32GetDatum(delq_batch_size));
}

/* Chain the ledger's heads, at most once an hour. */
static void
ledger_checkpoint(void *arg)
{
	(void) delq_store_run_int(&checkpoint_stmt, (Datum) 0);
}

/*
 * Run one privacy task in a subtransaction of its own: a failure is logged
 * and retried at the next housekeeping, and stops neither the other tasks
 * nor forwarding.
 */
static void
upkeep(void (*task) (void *arg), void *arg, const char *what)
{
	ErrorData  *edata = delq_store_subxact(task, arg);

	if (edata == NULL)
		return;
	ereport(WARNING,
			(errmsg("delq worker could not run %s: %s", what, edata->message),
			 errhint("It is retried at the next housekeeping.")));
	FreeErrorData(edata);
}

/*
 * Run on its own clock, at most once per idle timeout, not on every look
 * for due work: under a steady load the worker looks every few
 * milliseconds, and the upkeep would then cost more than the claims.
 * A backlog of redaction (a full batch of delq.batch_size) brings the next
 * round forward: each batch commits with its own turn, so a large backlog
 * is never one long transaction, and forwarding goes on between batches.
 */
TimestampTz
delq_upkeep_round(void)
{
	int			redacted = 0;

	upkeep(deadline_alerts, NULL, "deadline alerts");
	upkeep(redaction, &redacted, "redaction");
	upkeep(ledger_checkpoint, NULL, "the ledger checkpoint");
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
									   redacted >= delq_batch_size ?
									   DELQ_UPKEEP_AGAIN_MS : delq_idle_timeout_ms);
}
