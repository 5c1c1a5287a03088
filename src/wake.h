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

/* Shared memory: its size, and attaching to it (shmem_startup_hook). */
extern Size delq_wake_shmem_size(void);
extern void delq_wake_shmem_startup(void);

/* The worker announces (or withdraws, with NULL) the latch to set. */
extern void delq_wake_set_worker_latch(Latch *latch);

/* True while a worker has announced itself. */
extern bool delq_worker_is_running(void);

#endif							/* DELQ_WAKE_H */
