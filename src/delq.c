/*-------------------------------------------------------------------------
 *
 * delq.c
 *	  Library entry point: settings, shared memory and the background
 *	  worker's registration.
 *
 * src/delq.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "settings.h"
#include "wake.h"
#include "worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* One request for the shared memory of every module. */
static void
delq_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(add_size(delq_wake_shmem_size(),
									delq_worker_shmem_size()));
}

static void
delq_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	delq_wake_shmem_startup();
	delq_worker_shmem_startup();
	LWLockRelease(AddinShmemInitLock);
}

void
_PG_init(void)
{
	delq_define_settings();

	/* Shared memory and the worker exist only when preloaded. */
	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = delq_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = delq_shmem_startup;
	/* its launcher starts the HTTP worker too, with delq.http_listen set */
	delq_worker_register();
}

PG_FUNCTION_INFO_V1(delq_load);

/*
 * delq._load(): does nothing; calling it loads the library, which defines
 * the delq.* settings that the SQL functions read.
 */
Datum
delq_load(PG_FUNCTION_ARGS)
{
	PG_RETURN_VOID();
}
