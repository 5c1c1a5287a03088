/*-------------------------------------------------------------------------
 *
 * hmac.c
 *	  delq._hmac_sha256(key bytea, data bytea): HMAC-SHA-256 for SQL.
 *
 * Receipts are signed, and subjects are replaced by a keyed hash once
 * their retention ends (src/sql/80_privacy.sql).  Both need a keyed MAC,
 * which core SQL lacks (sha256() has no key, and pgcrypto is not a
 * dependency).  PostgreSQL's own src/common HMAC is used, as in
 * signing.c, so there is no extra crypto library.
 *
 * The function is immutable: the same key and data always give the same
 * 32 bytes.  It returns NULL when either argument is NULL, like a strict
 * function, but is not declared STRICT: the planner folds a strict call
 * with a NULL constant to NULL without checking EXECUTE, and this function
 * is granted to nobody (the SECURITY DEFINER functions that read the key
 * call it), which test/pgtap/privileges.sql checks by calling it with NULLs.
 *
 * IDENTIFICATION
 *	  src/hmac.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hmac.h"
#include "common/sha2.h"
#include "fmgr.h"

PG_FUNCTION_INFO_V1(delq_hmac_sha256);

/*
 * HMAC-SHA-256(key, data) as a new bytea.  Nothing between create and
 * free can throw, so the context (which holds the key) is always freed,
 * and freeing wipes it.  With OpenSSL the context is registered with
 * CurrentResourceOwner, which is always set inside a SQL function call.
 */
Datum
delq_hmac_sha256(PG_FUNCTION_ARGS)
{
	bytea	   *key;
	bytea	   *data;
	bytea	   *result;
	pg_hmac_ctx *ctx;
	const char *err = NULL;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	key = PG_GETARG_BYTEA_PP(0);
	data = PG_GETARG_BYTEA_PP(1);
	result = palloc(VARHDRSZ + PG_SHA256_DIGEST_LENGTH);

	ctx = pg_hmac_create(PG_SHA256);
	if (ctx == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));

	if (pg_hmac_init(ctx, (const uint8 *) VARDATA_ANY(key),
					 VARSIZE_ANY_EXHDR(key)) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) VARDATA_ANY(data),
					   VARSIZE_ANY_EXHDR(data)) < 0 ||
		pg_hmac_final(ctx, (uint8 *) VARDATA(result),
					  PG_SHA256_DIGEST_LENGTH) < 0)
		err = pg_hmac_error(ctx);	/* a static string */
	pg_hmac_free(ctx);

	if (err != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute HMAC-SHA-256: %s", err)));

	SET_VARSIZE(result, VARHDRSZ + PG_SHA256_DIGEST_LENGTH);
	PG_FREE_IF_COPY(key, 0);
	PG_FREE_IF_COPY(data, 1);
	PG_RETURN_BYTEA_P(result);
}
