/*-------------------------------------------------------------------------
 *
 * wake.c
 *	  Wake the worker when a transaction that made work commits.
 *
 * submit(), approve() and retry() call delq._wake_on_commit(); at commit
 * the worker's latch is set, so a new request is on the wire within
 * milliseconds instead of after a polling interval.  Setting the latch at
 * commit (not at call time) keeps the worker from looking before the rows
 * are visible.  Without shared_preload_libraries there is no worker and
 * this does nothing.
 *
 * src/wake.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "storage/spin.h"

#include "wake.h"

typedef struct DelqShared
{
	slock_t		mutex;
	Latch	   *worker_latch;	/* NULL while no worker runs */
	Oid			worker_database;	/* the database it serves */
} DelqShared;

static DelqShared *delq_shared = NULL;

/* This backend's transaction made work for the worker. */
static bool wake_at_commit = false;
static bool xact_callback_registered = false;

Size
delq_wake_shmem_size(void)
{
	return MAXALIGN(sizeof(DelqShared));
}

/* Called with AddinShmemInitLock held (src/delq.c). */
void
delq_wake_shmem_startup(void)
{
	bool		found;

	delq_shared = ShmemInitStruct("delq", sizeof(DelqShared), &found);
	if (!found)
	{
		SpinLockInit(&delq_shared->mutex);
		delq_shared->worker_latch = NULL;
		delq_shared->worker_database = InvalidOid;
	}
}

void
delq_wake_set_worker_latch(Latch *latch)
{
	if (delq_shared == NULL)
		return;
	SpinLockAcquire(&delq_shared->mutex);
	delq_shared->worker_latch = latch;
	delq_shared->worker_database = latch ? MyDatabaseId : InvalidOid;
	SpinLockRelease(&delq_shared->mutex);
}

/* Whether a worker serves this backend's database. */
bool
delq_worker_is_running(void)
{
	bool		running;

	if (delq_shared == NULL)
		return false;
	SpinLockAcquire(&delq_shared->mutex);
	running = delq_shared->worker_latch != NULL &&
		delq_shared->worker_database == MyDatabaseId;
	SpinLockRelease(&delq_shared->mutex);
	return running;
}

static void
delq_wake_worker(void)
{
	Latch	   *latch;

	if (delq_shared == NULL)
		return;
	SpinLockAcquire(&delq_shared->mutex);
	/* a commit in another database made no work for it */
	latch = delq_shared->worker_database == MyDatabaseId ?
		delq_shared->worker_latch : NULL;
	SpinLockRelease(&delq_shared->mutex);
	if (latch)
		SetLatch(latch);
}

static void
delq_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_at_commit)
				delq_wake_worker();
			wake_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* a prepared transaction is found by the idle poll */
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

PG_FUNCTION_INFO_V1(delq_wake_on_commit);

/*
 * delq._wake_on_commit(): wake the worker when this transaction commits.
 */
Datum
delq_wake_on_commit(PG_FUNCTION_ARGS)
{
	if (delq_shared != NULL)
	{
		if (!xact_callback_registered)
		{
			RegisterXactCallback(delq_xact_callback, NULL);
			xact_callback_registered = true;
		}
		wake_at_commit = true;
	}
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(delq_worker_running);

/*
 * delq.worker_running(): whether the background worker is up and serves
 * the database this is called in (delq.database).
 */
Datum
delq_worker_running(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(delq_worker_is_running());
}
