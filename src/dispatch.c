/*-------------------------------------------------------------------------
 *
 * dispatch.c
 *	  delq.dispatch(): one forwarding pass in the calling session, through
 *	  the same engine as the worker, for installations without it
 *	  (pg_cron runs SELECT delq.dispatch()).
 *
 * Everything happens inside the caller's transaction: if the session dies
 * mid-flight, its claims roll back and the deliveries are sent again by
 * the next pass: a resend, never a loss.  The claimed rows stay locked
 * until the caller commits, so concurrent passes and the worker skip them.
 *
 * src/dispatch.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "forward.h"
#include "settings.h"
#include "store.h"
#include "version.h"

/*
 * One pass: claim, send and record until max deliveries are done or nothing
 * more is due.  A claim can come back short because destinations are at
 * their concurrency cap; it is tried again whenever transfers finish, so the
 * cap limits how many are in flight at once, not how many a pass handles.
 */
static void
dispatch_pass(DelqForwarder *fw, int max)
{
	delq_store_release_held(delq_batch_size);
	delq_store_requeue_stale(false);

	for (;;)
	{
		int			room = Min(delq_max_in_flight - fw->running, delq_batch_size);

		room = Min(room, max - (int) fw->claimed);
		if (room > 0)
			(void) delq_forwarder_claim(fw, room);
		if (fw->running == 0)
			break;				/* nothing more due, or max reached */
		delq_forwarder_wait(fw, -1);
		delq_forwarder_record(fw);
		CHECK_FOR_INTERRUPTS();
	}
	delq_forwarder_record(fw);
}

PG_FUNCTION_INFO_V1(delq_dispatch);

Datum
delq_dispatch(PG_FUNCTION_ARGS)
{
	int			max = PG_GETARG_INT32(0);
	DelqForwarder *fw;
	int			recorded;

	/* the forwarding queries are this version's (src/version.c) */
	delq_require_current_schema();
	fw = delq_forwarder_create();

	PG_TRY();
	{
		dispatch_pass(fw, max);
	}
	PG_FINALLY();
	{
		recorded = (int) fw->recorded;
		delq_forwarder_destroy(fw);
	}
	PG_END_TRY();

	PG_RETURN_INT32(recorded);
}
