/* sc_token.h — secrets that prove who calls: API tokens, join tokens,
 * session credentials and the keyed tickets derived from them.
 *
 * A token is a prefix and 64 lower-case hex digits of getrandom(2) bytes
 * ("sct_..." for a user, "scs_..." for a worker's session). Only its
 * SHA-256 is ever stored; tokens are compared in constant time.
 */
#ifndef SC_TOKEN_H
#define SC_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "sc_err.h"
#include "sc_sha256.h"

#define SC_TOKEN_RANDOM 32 /* random bytes in a token */
#define SC_TOKEN_MAX    80 /* room for a token: a prefix of up to 8, 64 hex digits, a NUL */

/* out (SC_TOKEN_MAX bytes) = prefix then SC_TOKEN_RANDOM random bytes in
 * hex. prefix is borrowed, at most 8 characters. SC_EIO when the system
 * has no randomness to give. */
sc_err sc_token_new(const char *prefix, char out[SC_TOKEN_MAX]);

/* hex = SHA-256 of the len bytes at token, in hex (what is stored). */
void sc_token_hash_hex(const void *token, size_t len, char hex[SC_SHA256_HEX]);

/* 1 when a and b (n bytes each) are equal, in time independent of where
 * they differ. */
int sc_token_equal(const void *a, const void *b, size_t n);

/* out = HMAC-SHA-256 of msg (len bytes) under key (key_len bytes). */
void sc_token_hmac(const void *key, size_t key_len, const void *msg, size_t len,
		   uint8_t out[SC_SHA256_BYTES]);

/* out = the ticket for generating with model_path / model (NULL: "") on
 * the worker whose secret is secret: "scg_" and the hex HMAC of both under
 * the secret. The coordinator hands it to a job's owner; the worker checks
 * it against its Worker.GenOpen. */
void sc_token_gen_ticket(const char *secret, const char *model_path, const char *model,
			 char out[SC_TOKEN_MAX]);

/* out = the credential the cluster's workers present to each other: "scp_"
 * and the hex HMAC of a fixed text under the join token. */
void sc_token_peer(const char *join_token, char out[SC_TOKEN_MAX]);

/* Reads the secret in the file at path into out (size bytes) as one line,
 * spaces and line ends around it dropped. private_only: refuse (SC_EINVAL,
 * the detail telling the user to chmod 600) a file that the group or others
 * may read. SC_EINVAL for an empty file or one longer than size - 1;
 * SC_ENOENT / SC_EIO when it cannot be read. Borrows path. */
sc_err sc_token_read_file(const char *path, int private_only, char *out, size_t size);

#endif
