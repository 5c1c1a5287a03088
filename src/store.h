/*-------------------------------------------------------------------------
 *
 * store.h
 *	  The forwarder's SQL: claim due deliveries, record outcomes, requeue
 *	  stale claims, release held requests.
 *
 * Every function runs inside the caller's transaction (the worker opens a
 * short one around each call; delq.dispatch() uses its own) with an active
 * snapshot, and connects to SPI itself.
 *
 * src/store.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DELQ_STORE_H
#define DELQ_STORE_H

#include "datatype/timestamp.h"
#include "executor/spi.h"

#include "webhook.h"

/* A statement kept prepared for the life of the process. */
typedef struct DelqStatement
{
	const char *sql;
	int			nargs;
	Oid			argtypes[8];
	SPIPlanPtr	plan;			/* NULL until first use */
} DelqStatement;

/* Run a kept statement; the caller has connected to SPI. */
extern void delq_store_run(DelqStatement *stmt, Datum *values, int expected);

/* The int4 result of a one-row kept statement (connects to SPI itself). */
extern int	delq_store_run_int(DelqStatement *stmt, Datum arg);

/*
 * Run fn(arg) in a subtransaction of its own: NULL, or its error once it is
 * rolled back (a cancel or shutdown is thrown again).
 */
extern ErrorData *delq_store_subxact(void (*fn) (void *arg), void *arg);

/*
 * Claim up to max_rows due deliveries.  Each claimed delivery becomes a
 * DelqTransfer allocated in its own memory context under parent (so that
 * it can be freed on its own); *transfers is palloc'd in parent.
 */
extern int	delq_store_claim(int max_rows, MemoryContext parent,
							 DelqTransfer ***transfers);

/* Record the outcomes of n finished transfers. */
extern void delq_store_record(DelqTransfer **done, int n);

/* Requeue 'sending' deliveries: all of them, or those whose lease expired. */
extern int	delq_store_requeue_stale(bool all_sending);

/* Plan deliveries of held requests whose hold period is over. */
extern int	delq_store_release_held(int max_requests);

/* When the next retry, held request or breaker probe falls due. */
extern bool delq_store_next_due(TimestampTz *when);

/* Make the kept plans again if the queue's tables grew or shrank a lot. */
extern void delq_store_replan_if_resized(void);

#endif							/* DELQ_STORE_H */
