/*-------------------------------------------------------------------------
 *
 * wake.h
 *	  Wake the worker when a transaction that made work commits.
 *
 * src/wake.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DELQ_WAKE_H
#define DELQ_WAKE_H

#include "storage/latch.h"

/* Called from _PG_init while preloading. */
extern void delq_wake_shmem_init(void);

/* The worker announces (or withdraws, with NULL) the latch to set. */
extern void delq_wake_set_worker_latch(Latch *latch);

/* True while a worker has announced itself. */
extern bool delq_worker_is_running(void);

#endif							/* DELQ_WAKE_H */
