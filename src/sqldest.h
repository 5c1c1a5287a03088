/*-------------------------------------------------------------------------
 *
 * sqldest.h
 *	  SQL destinations: a function of this database called as its run_as
 *	  role in the transaction that records the delivery's outcome
 *	  (docs/sql-destinations.md).
 *
 * src/sqldest.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DELQ_SQLDEST_H
#define DELQ_SQLDEST_H

/*
 * Inside a transaction with an active snapshot: claim one due delivery of
 * a SQL destination, call its function and record the outcome, all in the
 * caller's transaction, so that the erasure and its record commit (or roll
 * back) together.  Returns 1 when a delivery was handled, 0 when none was
 * due.  The worker runs each in a transaction of its own; dispatch() runs
 * them in its caller's.
 */
extern int	delq_sql_run_one(void);

/* Inside a transaction: whether a delivery of a SQL destination is due. */
extern bool delq_sql_due(void);

#endif							/* DELQ_SQLDEST_H */
