/*-------------------------------------------------------------------------
 *
 * forward.h
 *	  One forwarding engine for the worker and delq.dispatch(): claim due
 *	  deliveries, send them, collect outcomes, record them in batches.
 *
 * src/forward.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DELQ_FORWARD_H
#define DELQ_FORWARD_H

#include "webhook.h"

typedef struct DelqForwarder
{
	MemoryContext cxt;			/* transfers and the done list */
	DelqHttp   *http;
	int			running;		/* transfers started, not yet finished */
	DelqTransfer **done;		/* finished, outcome not yet recorded */
	int			ndone;
	int			done_size;
	uint64		claimed;		/* totals, for dispatch()'s result */
	uint64		recorded;
} DelqForwarder;

extern DelqForwarder *delq_forwarder_create(void);
extern void delq_forwarder_destroy(DelqForwarder *fw);

/* Inside a transaction: claim up to max deliveries and start sending. */
extern int	delq_forwarder_claim(DelqForwarder *fw, int max);

/* Inside a transaction: record every finished transfer, then free them. */
extern int	delq_forwarder_record(DelqForwarder *fw);

/*
 * Outside any transaction (the worker) or inside one (dispatch): wait up
 * to timeout_ms for answers or the latch; true when the latch was set.
 */
extern bool delq_forwarder_wait(DelqForwarder *fw, long timeout_ms);

#endif							/* DELQ_FORWARD_H */
