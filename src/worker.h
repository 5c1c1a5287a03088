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

#endif							/* DELQ_WORKER_H */
