/*-------------------------------------------------------------------------
 *
 * signing.c
 *	  Standard Webhooks v1 signatures for the webhooks delq sends.
 *
 * A destination's secret is "whsec_" followed by the standard base64 of a
 * 24..64 byte key, "=" padding included: receivers decode it with
 * standard base64 decoders, some of which (Python's) refuse a missing
 * padding, so delq refuses it too.  This file is the one home of that
 * format: delq._check_secret (src/sql/30_validate.sql) asks
 * delq._secret_valid, below.  Each request carries
 *
 *		webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<ts>.<body>")>
 *
 * so the receiver can check that the request came from us and was not
 * replayed with another timestamp.  HMAC and base64 come from PostgreSQL's
 * own src/common (no extra crypto library); the decoded key is wiped as soon
 * as the MAC is computed.
 *
 * IDENTIFICATION
 *	  src/signing.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/base64.h"
#include "common/hmac.h"
#include "common/sha2.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/resowner.h"

#include "signing.h"

#define SECRET_PREFIX		"whsec_"
#define SECRET_PREFIX_LEN	(sizeof(SECRET_PREFIX) - 1)
#define KEY_MIN_LEN			24
#define KEY_MAX_LEN			64
/* base64 of the longest key, padded */
#define KEY_B64_MAX_LEN		(((KEY_MAX_LEN + 2) / 3) * 4)

/*
 * With OpenSSL, pg_hmac_create() registers its context with
 * CurrentResourceOwner, which is NULL between transactions in a background
 * worker.  Signing happens there, so it uses an owner of its own.
 */
static ResourceOwner signing_owner = NULL;

/*
 * Copy the base64 part of a secret into buf (KEY_B64_MAX_LEN + 1 bytes) and
 * check that it is canonical: a multiple of four characters, alphabet
 * characters, then at most two "=" at the very end.  Returns the length,
 * or -1 when the text cannot be a valid key.
 */
static int
secret_b64_canonical(const char *b64, char *buf)
{
	size_t		len = strlen(b64);
	size_t		i;
	size_t		npad = 0;

	if (len == 0 || len > KEY_B64_MAX_LEN || len % 4 != 0)
		return -1;
	memcpy(buf, b64, len);
	buf[len] = '\0';

	for (i = 0; i < len; i++)
	{
		char		c = buf[i];

		if (c == '=')
			npad++;
		else if (npad > 0 ||
				 !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
				   (c >= '0' && c <= '9') || c == '+' || c == '/'))
			return -1;
	}
	if (npad > 2)
		return -1;
	return (int) len;
}

/*
 * Decode the key of a "whsec_<base64>" secret into buf (KEY_MAX_LEN bytes
 * or more), without allocating, so that callers can wipe it reliably.
 * Returns the key length, or -1 when the secret is malformed.
 */
static int
secret_decode_into(const char *secret, uint8 *buf)
{
	char		b64[KEY_B64_MAX_LEN + 1];
	char		dec[KEY_B64_MAX_LEN];
	int			b64len;
	int			n;

	if (secret == NULL ||
		strncmp(secret, SECRET_PREFIX, SECRET_PREFIX_LEN) != 0)
		return -1;

	b64len = secret_b64_canonical(secret + SECRET_PREFIX_LEN, b64);
	if (b64len < 0)
		return -1;

	n = pg_b64_decode(b64, b64len, dec, sizeof(dec));
	if (n >= KEY_MIN_LEN && n <= KEY_MAX_LEN)
		memcpy(buf, dec, n);
	else
		n = -1;
	explicit_bzero(b64, sizeof(b64));
	explicit_bzero(dec, sizeof(dec));
	return n;
}

/*
 * Decode "whsec_<base64>" into a palloc'd key of 24..64 bytes, for callers
 * that validate a secret.  The caller wipes and frees the key.
 */
bool
delq_secret_decode(const char *secret, uint8 **key, size_t *keylen)
{
	uint8		buf[KEY_MAX_LEN];
	int			n;

	*key = NULL;
	*keylen = 0;
	n = secret_decode_into(secret, buf);
	if (n < 0)
		return false;

	*key = palloc(n);
	memcpy(*key, buf, n);
	*keylen = (size_t) n;
	explicit_bzero(buf, sizeof(buf));
	return true;
}

PG_FUNCTION_INFO_V1(delq_secret_valid);

/*
 * delq._secret_valid(secret): whether the worker can sign with secret
 * (NULL for NULL).
 */
Datum
delq_secret_valid(PG_FUNCTION_ARGS)
{
	char	   *secret;
	uint8		buf[KEY_MAX_LEN];
	bool		valid;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	secret = text_to_cstring(PG_GETARG_TEXT_PP(0));
	valid = secret_decode_into(secret, buf) >= 0;

	explicit_bzero(buf, sizeof(buf));
	explicit_bzero(secret, strlen(secret));
	pfree(secret);
	PG_RETURN_BOOL(valid);
}

/*
 * pg_hmac_create() under our own resource owner, whatever the caller's is.
 * The context remembers its owner, so pg_hmac_free() needs no switch.
 */
static pg_hmac_ctx *
signing_hmac_create(void)
{
	ResourceOwner saved = CurrentResourceOwner;
	pg_hmac_ctx *ctx;

	if (signing_owner == NULL)
		signing_owner = ResourceOwnerCreate(NULL, "delq signing");

	CurrentResourceOwner = signing_owner;
	PG_TRY();
	{
		ctx = pg_hmac_create(PG_SHA256);
	}
	PG_FINALLY();
	{
		CurrentResourceOwner = saved;
	}
	PG_END_TRY();

	if (ctx == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	return ctx;
}

/*
 * HMAC-SHA256(key, "<id>.<ts>.<body>") into mac, fed piece by piece so the
 * body is never copied.  Returns NULL on success, else the reason.  Nothing
 * here throws, so the context is always freed (which wipes it).
 */
static const char *
signing_hmac(pg_hmac_ctx *ctx, const uint8 *key, size_t keylen,
			 const char *webhook_id, const char *ts,
			 const char *body, size_t body_len, uint8 *mac)
{
	if (pg_hmac_init(ctx, key, keylen) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) webhook_id,
					   strlen(webhook_id)) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) ".", 1) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) ts, strlen(ts)) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) ".", 1) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) body, body_len) < 0 ||
		pg_hmac_final(ctx, mac, PG_SHA256_DIGEST_LENGTH) < 0)
		return pg_hmac_error(ctx);	/* a static string */
	return NULL;
}

/*
 * The webhook-signature header value, "v1,<base64 MAC>", palloc'd in the
 * current memory context; NULL when the secret is malformed.  The key lives
 * only on the stack, between two points where nothing can throw.
 */
char *
delq_signature(const char *secret, const char *webhook_id,
			   int64 timestamp, const char *body, size_t body_len)
{
	pg_hmac_ctx *ctx;
	uint8		key[KEY_MAX_LEN];
	int			keylen;
	uint8		mac[PG_SHA256_DIGEST_LENGTH];
	char		ts[32];
	char	   *result;
	int			enclen;
	const char *err;

	snprintf(ts, sizeof(ts), INT64_FORMAT, timestamp);
	result = palloc(3 + pg_b64_enc_len(sizeof(mac)) + 1);
	ctx = signing_hmac_create();

	keylen = secret_decode_into(secret, key);
	err = NULL;
	if (keylen >= 0)
		err = signing_hmac(ctx, key, keylen, webhook_id, ts, body, body_len,
						   mac);
	pg_hmac_free(ctx);
	explicit_bzero(key, sizeof(key));

	if (keylen < 0)
	{
		pfree(result);
		return NULL;
	}
	if (err != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute webhook signature: %s", err)));

	memcpy(result, "v1,", 3);
	enclen = pg_b64_encode((const char *) mac, sizeof(mac), result + 3,
						   pg_b64_enc_len(sizeof(mac)));
	explicit_bzero(mac, sizeof(mac));
	if (enclen < 0)
		elog(ERROR, "could not encode webhook signature");
	result[3 + enclen] = '\0';
	return result;
}
