/*-------------------------------------------------------------------------
 *
 * signing.h
 *	  Standard Webhooks v1 signatures: HMAC-SHA256 over "<id>.<ts>.<body>"
 *	  with the key inside a "whsec_<base64>" secret.
 *
 * src/signing.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DELQ_SIGNING_H
#define DELQ_SIGNING_H

#include "postgres.h"

/*
 * Decode "whsec_<base64>" into a palloc'd key.  Returns false (and leaves
 * *key NULL) when the secret is malformed or the key is not 24..64 bytes.
 */
extern bool delq_secret_decode(const char *secret, uint8 **key, size_t *keylen);

/*
 * "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>", palloc'd in the
 * current memory context; NULL when the secret is malformed.
 */
extern char *delq_signature(const char *secret, const char *webhook_id,
							int64 timestamp, const char *body, size_t body_len);

#endif							/* DELQ_SIGNING_H */
