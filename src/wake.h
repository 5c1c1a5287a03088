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

/*
 * The one worker slot: the worker takes it at start (false: another worker
 * holds it) and frees it at exit; the launcher starts no worker while it is
 * taken, so a restarted launcher does not start a second worker beside the
 * one its predecessor started.
 */
extern bool delq_worker_take_slot(void);
extern bool delq_worker_slot_taken(void);

#endif							/* DELQ_WAKE_H */
