/*-------------------------------------------------------------------------
 *
 * ledger.c
 *	  delq._ledger_seal(): the BEFORE INSERT trigger that chains every row
 *	  of delq.event to the head of its chain (src/sql/81_ledger.sql).
 *
 * Every delivery writes three events, so this runs on the worker's hot
 * path; in PL/pgSQL it was a third of the worker's CPU (five statements
 * and a call with its own search_path per event).  Here it is at most two
 * statements with plans kept for the life of the backend:
 *
 *	- the subject lookup, only when the detail holds a string value that
 *	  could quote it (delq._scrub decides what to replace);
 *	- one UPDATE of the chain's head that locks it, moves it and computes
 *	  the event's hash from the head's previous hash (or, for a chain's
 *	  first event, one INSERT that starts the chain).
 *
 * The hash covers the canonical text of the row that delq._event_hash()
 * builds in SQL, which verify_ledger() recomputes for every event: a JSON
 * array of the columns, its last element the previous hash in hex.  This
 * file builds that text up to the previous hash (the prefix) and leaves
 * the rest to delq._ledger_link(prefix, prev), so that the head row lock
 * and the hash are taken in the same statement.
 *
 * The trigger runs as the inserting role (see 81_ledger.sql for why that
 * is safe), so its statements qualify every function and operator.
 *
 * IDENTIFICATION
 *	  src/ledger.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/rel.h"
#include "utils/uuid.h"

PG_FUNCTION_INFO_V1(delq_ledger_seal);

/* The columns of delq.event this trigger reads or sets. */
typedef enum EventColumn
{
	COL_ID,
	COL_AT,
	COL_ACTOR,
	COL_REQUEST_ID,
	COL_DESTINATION,
	COL_KIND,
	COL_DETAIL,
	COL_PREV_HASH,
	COL_HASH,
	COL_COUNT
} EventColumn;

static const char *const column_names[COL_COUNT] = {
	"id", "at", "actor", "request_id", "destination", "kind", "detail",
	"prev_hash", "hash"
};

typedef enum SealPlan
{
	SEAL_SUBJECT,
	SEAL_SCRUB,
	SEAL_ADVANCE,
	SEAL_START,
	SEAL_PLAN_COUNT
} SealPlan;

/* $1 request id: its subject, unless archived and redacted */
#define SUBJECT_SQL \
	"SELECT coalesce(" \
	"(SELECT p.subject FROM delq.pending p WHERE p.id OPERATOR(pg_catalog.=) $1), " \
	"(SELECT f.subject FROM delq.finished f WHERE f.id OPERATOR(pg_catalog.=) $1 AND f.redacted_at IS NULL))"

/* $1 detail, $2 subject */
#define SCRUB_SQL "SELECT delq._scrub($1, $2)"

/* $1 chain, $2 event id, $3 canonical prefix */
#define ADVANCE_SQL \
	"UPDATE delq.ledger_head h " \
	"SET events = h.events OPERATOR(pg_catalog.+) 1, last_id = $2, prev_hash = h.hash, " \
	"hash = delq._ledger_link($3, h.hash) " \
	"WHERE h.chain OPERATOR(pg_catalog.=) $1 RETURNING h.prev_hash, h.hash"

/* the same for a chain's first event ($4 its genesis hash); nothing if
 * another transaction started the chain meanwhile */
#define START_SQL \
	"INSERT INTO delq.ledger_head AS h (chain, events, last_id, prev_hash, hash) " \
	"VALUES ($1, 1, $2, $4, delq._ledger_link($3, $4)) " \
	"ON CONFLICT (chain) DO NOTHING RETURNING h.prev_hash, h.hash"

static const char *const plan_sql[SEAL_PLAN_COUNT] = {
	[SEAL_SUBJECT] = SUBJECT_SQL,
	[SEAL_SCRUB] = SCRUB_SQL,
	[SEAL_ADVANCE] = ADVANCE_SQL,
	[SEAL_START] = START_SQL,
};

static const int plan_nargs[SEAL_PLAN_COUNT] = {1, 2, 3, 4};
static const Oid plan_argtypes[SEAL_PLAN_COUNT][4] = {
	[SEAL_SUBJECT] = {UUIDOID},
	[SEAL_SCRUB] = {JSONBOID, TEXTOID},
	[SEAL_ADVANCE] = {TEXTOID, INT8OID, BYTEAOID},
	[SEAL_START] = {TEXTOID, INT8OID, BYTEAOID, BYTEAOID},
};

static SPIPlanPtr plans[SEAL_PLAN_COUNT];

/*
 * The columns' numbers in delq.event, looked up again when the relation
 * or its number of attributes changes (a column dropped and added again
 * gets a new number).
 */
static Oid	columns_relid = InvalidOid;
static int	columns_natts;
static int	column_attnums[COL_COUNT];

static void
find_columns(Relation rel, const int **attnums)
{
	if (columns_relid != RelationGetRelid(rel) ||
		columns_natts != RelationGetDescr(rel)->natts)
	{
		columns_relid = InvalidOid;
		for (int i = 0; i < COL_COUNT; i++)
		{
			column_attnums[i] = SPI_fnumber(RelationGetDescr(rel), column_names[i]);
			if (column_attnums[i] <= 0)
				elog(ERROR, "delq: delq.event has no column \"%s\"", column_names[i]);
		}
		columns_relid = RelationGetRelid(rel);
		columns_natts = RelationGetDescr(rel)->natts;
	}
	*attnums = column_attnums;
}

/*
 * Plans are kept for the life of the backend.  A plan cache invalidation
 * (DROP and CREATE EXTENSION) replans them; a plan that names dropped
 * objects fails with an error and is made again on the next call.
 */
static int
run_plan(SealPlan which, Datum *values, const char *nulls)
{
	int			rc;

	if (plans[which] == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(plan_sql[which], plan_nargs[which],
									   (Oid *) plan_argtypes[which]);

		if (plan == NULL)
			elog(ERROR, "delq: SPI_prepare failed for \"%s\": %s",
				 plan_sql[which], SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		plans[which] = plan;
	}
	rc = SPI_execute_plan(plans[which], values, nulls, false, 0);
	if (rc < 0)
		elog(ERROR, "delq: \"%s\" failed: %s", plan_sql[which],
			 SPI_result_code_string(rc));
	return SPI_processed;
}

/*
 * Whether hay holds needle, ignoring ASCII letter case as delq._scrub()
 * does; a needle with other characters may match in ways only SQL's
 * lower() knows, so it always "matches" and _scrub decides.
 */
static bool
contains_ignoring_case(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
	for (size_t i = 0; i < nlen; i++)
		if (IS_HIGHBIT_SET(needle[i]))
			return true;
	for (size_t i = 0; i + nlen <= hlen; i++)
		if (pg_strncasecmp(hay + i, needle, nlen) == 0)
			return true;
	return false;
}

/*
 * Whether a string value of a jsonb (keys do not count: delq._scrub only
 * rewrites values) holds needle, in any letter case; with needle NULL,
 * whether it has string values at all.  Most events hold numbers only and
 * need no subject.
 */
static bool
jsonb_value_contains(Jsonb *jb, const char *needle)
{
	JsonbIterator *it = JsonbIteratorInit(&jb->root);
	JsonbValue	v;
	JsonbIteratorToken tok;
	size_t		nlen = needle ? strlen(needle) : 0;

	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if ((tok != WJB_VALUE && tok != WJB_ELEM) || v.type != jbvString)
			continue;
		if (needle == NULL)
			return true;
		if (v.val.string.len >= nlen &&
			contains_ignoring_case(v.val.string.val, v.val.string.len, needle, nlen))
			return true;
	}
	return false;
}

/*
 * The detail with every copy of the request's subject replaced, by
 * delq._scrub() (which also knows which values are left alone); the
 * detail itself when it holds none, which is found here without a call.
 * Runs inside SPI; the result is in the caller's memory.
 */
static Datum
scrub_detail(Datum detail, Datum request_id, bool *changed)
{
	Jsonb	   *jb = DatumGetJsonbP(detail);
	Datum		args[2];
	bool		isnull;
	Datum		subject;
	char	   *subject_str;

	*changed = false;
	if (!jsonb_value_contains(jb, NULL))
		return detail;

	args[0] = request_id;
	run_plan(SEAL_SUBJECT, args, NULL);
	subject = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		return detail;
	subject_str = TextDatumGetCString(subject);
	/* _scrub leaves subjects shorter than 4 characters alone */
	if (pg_mbstrlen(subject_str) < 4 || !jsonb_value_contains(jb, subject_str))
		return detail;

	args[0] = PointerGetDatum(jb);
	args[1] = subject;
	run_plan(SEAL_SCRUB, args, NULL);
	detail = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		elog(ERROR, "delq: delq._scrub() returned NULL");
	*changed = true;
	/* copied out of SPI's memory: the new row is built after SPI_finish */
	return SPI_datumTransfer(detail, false, -1);
}

static void
append_json_string_or_null(StringInfo buf, bool isnull, const char *s)
{
	if (isnull)
		appendStringInfoString(buf, "null");
	else
		escape_json(buf, s);
}

/*
 * The canonical text of the event up to its previous hash, exactly as
 * delq._event_hash() writes it: jsonb_build_array(id, at as integer
 * microseconds since 1970, actor, request_id, destination, kind, detail,
 * prev_hash in hex)::text, in UTF-8.  Returns it as a bytea.
 */
static bytea *
canonical_prefix(Datum *values, bool *isnull, const char *request_id, Jsonb *detail)
{
	StringInfoData buf;
	int64		at_us;
	char	   *utf8;
	bytea	   *result;
	int			len;

	/* the timestamp columns are NOT NULL, id is an identity */
	at_us = DatumGetTimestampTz(values[COL_AT]) +
		((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE)) * SECS_PER_DAY * USECS_PER_SEC;

	initStringInfo(&buf);
	appendStringInfo(&buf, "[" INT64_FORMAT ", " INT64_FORMAT ", ",
					 DatumGetInt64(values[COL_ID]), at_us);
	append_json_string_or_null(&buf, isnull[COL_ACTOR],
							   isnull[COL_ACTOR] ? NULL : TextDatumGetCString(values[COL_ACTOR]));
	appendStringInfoString(&buf, ", ");
	append_json_string_or_null(&buf, request_id == NULL, request_id);
	appendStringInfoString(&buf, ", ");
	append_json_string_or_null(&buf, isnull[COL_DESTINATION],
							   isnull[COL_DESTINATION] ? NULL :
							   TextDatumGetCString(values[COL_DESTINATION]));
	appendStringInfoString(&buf, ", ");
	append_json_string_or_null(&buf, isnull[COL_KIND],
							   isnull[COL_KIND] ? NULL : TextDatumGetCString(values[COL_KIND]));
	appendStringInfoString(&buf, ", ");
	if (detail == NULL)
		appendStringInfoString(&buf, "null");
	else
		(void) JsonbToCString(&buf, &detail->root, VARSIZE(detail));
	appendStringInfoString(&buf, ", \"");

	utf8 = pg_server_to_any(buf.data, buf.len, PG_UTF8);
	len = (utf8 == buf.data) ? buf.len : strlen(utf8);
	result = (bytea *) palloc(VARHDRSZ + len);
	SET_VARSIZE(result, VARHDRSZ + len);
	memcpy(VARDATA(result), utf8, len);
	return result;
}

/* SHA-256 over up to three pieces, as a new bytea. */
static bytea *
sha256_of(const char *a, size_t alen, const char *b, size_t blen,
		  const char *c, size_t clen)
{
	bytea	   *result = palloc(VARHDRSZ + PG_SHA256_DIGEST_LENGTH);
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);
	const char *err = NULL;

	if (ctx == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	if (pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) a, alen) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) b, blen) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) c, clen) < 0 ||
		pg_cryptohash_final(ctx, (uint8 *) VARDATA(result), PG_SHA256_DIGEST_LENGTH) < 0)
		err = pg_cryptohash_error(ctx); /* a static string */
	pg_cryptohash_free(ctx);
	if (err != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute SHA-256: %s", err)));
	SET_VARSIZE(result, VARHDRSZ + PG_SHA256_DIGEST_LENGTH);
	return result;
}

/* delq._ledger_genesis(chain), computed here. */
static bytea *
genesis_hash(const char *chain)
{
	static const char tag[] = "delq ledger genesis ";
	char	   *utf8 = pg_server_to_any(chain, strlen(chain), PG_UTF8);

	return sha256_of(tag, sizeof(tag) - 1, utf8, strlen(utf8), "", 0);
}

/*
 * delq._ledger_link(prefix bytea, prev bytea) RETURNS bytea: the hash of
 * an event from its canonical text before the previous hash and that
 * hash, sha256(prefix || hex(prev) || '"]').  In C rather than SQL: a SQL
 * body needs convert_to(), which is not immutable, so it is never inlined
 * and costs a SQL function call per event.  NULL for NULL input, without
 * being STRICT (see hmac.c: it is granted to nobody).
 */
PG_FUNCTION_INFO_V1(delq_ledger_link);

Datum
delq_ledger_link(PG_FUNCTION_ARGS)
{
	bytea	   *prefix;
	bytea	   *prev;
	char	   *hex;
	size_t		hexlen;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	prefix = PG_GETARG_BYTEA_PP(0);
	prev = PG_GETARG_BYTEA_PP(1);
	hex = palloc(VARSIZE_ANY_EXHDR(prev) * 2 + 1);
	hexlen = hex_encode(VARDATA_ANY(prev), VARSIZE_ANY_EXHDR(prev), hex);
	PG_RETURN_BYTEA_P(sha256_of(VARDATA_ANY(prefix), VARSIZE_ANY_EXHDR(prefix),
								hex, hexlen, "\"]", 2));
}

/* The chain an event belongs to, as delq._ledger_chain() names it. */
static char *
chain_of(Datum *values, bool *isnull, const char *request_id)
{
	if (request_id != NULL)
		return psprintf("request:%s", request_id);
	if (!isnull[COL_DESTINATION])
		return psprintf("destination:%s", TextDatumGetCString(values[COL_DESTINATION]));
	return pstrdup("admin");
}

Datum
delq_ledger_seal(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	tupdesc;
	HeapTuple	tuple;
	const int  *attnums;
	Datum		values[COL_COUNT];
	bool		isnull[COL_COUNT];
	bool		replace[COL_COUNT] = {0};
	Jsonb	   *detail = NULL;
	Datum		args[4];
	char	   *request_id = NULL;
	char	   *chain;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("delq._ledger_seal() must run as a BEFORE INSERT row trigger")));

	tuple = trigdata->tg_trigtuple;
	tupdesc = RelationGetDescr(trigdata->tg_relation);
	find_columns(trigdata->tg_relation, &attnums);
	for (int i = 0; i < COL_COUNT; i++)
		values[i] = heap_getattr(tuple, attnums[i], tupdesc, &isnull[i]);

	/* restored or replicated with its chain: verify_ledger() checks it */
	if (!isnull[COL_HASH])
		return PointerGetDatum(tuple);

	if (!isnull[COL_DETAIL])
		detail = DatumGetJsonbP(values[COL_DETAIL]);

	SPI_connect();

	/* delq.event can never be erased: keep the subject out of it */
	if (detail != NULL && !isnull[COL_REQUEST_ID])
	{
		values[COL_DETAIL] = scrub_detail(values[COL_DETAIL], values[COL_REQUEST_ID],
										  &replace[COL_DETAIL]);
		detail = DatumGetJsonbP(values[COL_DETAIL]);
	}

	if (!isnull[COL_REQUEST_ID])
		request_id = DatumGetCString(DirectFunctionCall1(uuid_out, values[COL_REQUEST_ID]));
	chain = chain_of(values, isnull, request_id);
	args[0] = CStringGetTextDatum(chain);
	args[1] = values[COL_ID];
	args[2] = PointerGetDatum(canonical_prefix(values, isnull, request_id, detail));

	/* Lock and move the head; start the chain if it has none yet. */
	if (run_plan(SEAL_ADVANCE, args, NULL) == 0)
	{
		args[3] = PointerGetDatum(genesis_hash(chain));
		if (run_plan(SEAL_START, args, NULL) == 0 &&
			run_plan(SEAL_ADVANCE, args, NULL) == 0)
			elog(ERROR, "delq: the ledger head of chain \"%s\" could not be found or started",
				 chain);
	}

	{
		bool		n1,
					n2;
		Datum		prev = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &n1);
		Datum		hash = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &n2);

		if (n1 || n2)
			elog(ERROR, "delq: the ledger head of chain \"%s\" has no hash", chain);
		values[COL_PREV_HASH] = SPI_datumTransfer(prev, false, -1);
		values[COL_HASH] = SPI_datumTransfer(hash, false, -1);
		isnull[COL_PREV_HASH] = isnull[COL_HASH] = false;
		replace[COL_PREV_HASH] = replace[COL_HASH] = true;
	}
	SPI_finish();

	{
		int			ncols = 0;
		int			cols[COL_COUNT];
		Datum		newvals[COL_COUNT];
		bool		newnulls[COL_COUNT];

		for (int i = 0; i < COL_COUNT; i++)
		{
			if (!replace[i])
				continue;
			cols[ncols] = attnums[i];
			newvals[ncols] = values[i];
			newnulls[ncols] = isnull[i];
			ncols++;
		}
		tuple = heap_modify_tuple_by_cols(tuple, tupdesc, ncols, cols, newvals, newnulls);
	}
	return PointerGetDatum(tuple);
}
