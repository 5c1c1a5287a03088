/*-------------------------------------------------------------------------
 *
 * upkeep.h
 *	  The worker's privacy upkeep: deadline alerts, redaction and the
 *	  ledger checkpoint (docs/worker.md, "Privacy upkeep").
 *
 * src/upkeep.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DELQ_UPKEEP_H
#define DELQ_UPKEEP_H

#include "datatype/timestamp.h"

/*
 * Inside a transaction: run every upkeep task, each in a subtransaction of
 * its own.  Returns when to run them again.
 */
extern TimestampTz delq_upkeep_round(void);

#endif							/* DELQ_UPKEEP_H */
