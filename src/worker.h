/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The delq background worker.
 *
 * src/worker.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DELQ_WORKER_H
#define DELQ_WORKER_H

extern void delq_worker_register(void);

/* Shared memory of the worker slot: its size, and attaching to it. */
extern Size delq_worker_shmem_size(void);
extern void delq_worker_shmem_startup(void);

#endif							/* DELQ_WORKER_H */
