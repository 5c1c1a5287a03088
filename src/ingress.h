/*-------------------------------------------------------------------------
 *
 * ingress.h
 *	  The HTTP ingress: one call as the server (src/ingress.c) hands it to
 *	  the routes (src/api.c), and the answer the routes fill in.
 *
 * src/ingress.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DELQ_INGRESS_H
#define DELQ_INGRESS_H

#include "lib/stringinfo.h"
#include "nodes/pg_list.h"

typedef struct DelqHttpPair
{
	char	   *name;			/* header names in lower case */
	char	   *value;
} DelqHttpPair;

typedef struct DelqHttpCall
{
	MemoryContext cxt;			/* everything of this call; deleted after it */
	const char *method;
	char	   *path;
	List	   *headers;		/* DelqHttpPair */
	List	   *args;			/* DelqHttpPair, the query string */
	StringInfoData body;

	/* the answer */
	int			status;
	const char *content_type;
	const char *route;			/* the route's pattern, for metrics */
	StringInfoData reply;
	List	   *reply_headers;	/* DelqHttpPair */
} DelqHttpCall;

/* src/ingress.c */
extern const char *delq_http_header(DelqHttpCall *call, const char *name);
extern const char *delq_http_arg(DelqHttpCall *call, const char *name);
extern void delq_http_add_header(DelqHttpCall *call, const char *name, const char *value);

/* src/api.c */
extern void delq_api_start(void);
extern void delq_api_serve(DelqHttpCall *call);
extern void delq_api_problem(DelqHttpCall *call, int status, const char *sqlstate,
							 const char *detail, const char *hint);
extern void delq_api_count(DelqHttpCall *call);

#endif							/* DELQ_INGRESS_H */
