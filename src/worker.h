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

/* The workers the launcher keeps running, one of each. */
typedef enum DelqWorkerKind
{
	DELQ_WORKER_FORWARDING,		/* src/worker.c */
	DELQ_WORKER_HTTP,			/* src/ingress.c, with delq.http_listen */
	DELQ_WORKER_KINDS
} DelqWorkerKind;

extern void delq_worker_register(void);
extern void delq_worker_take_slot(DelqWorkerKind kind);
extern void delq_wait_for_schema(const char *who, const char *what);

/* Shared memory of the worker slot: its size, and attaching to it. */
extern Size delq_worker_shmem_size(void);
extern void delq_worker_shmem_startup(void);

#endif							/* DELQ_WORKER_H */
