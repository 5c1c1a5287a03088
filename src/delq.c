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

#include "settings.h"
#include "wake.h"
#include "worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	delq_define_settings();

	/* Shared memory and the worker exist only when preloaded. */
	if (!process_shared_preload_libraries_in_progress)
		return;

	delq_wake_shmem_init();
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
