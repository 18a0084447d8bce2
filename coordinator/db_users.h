/* db_users.h — the users table (schema version 11, docs/state.md): who may
 * call the coordinator's CLI-facing methods, by API token. Only a token's
 * SHA-256 is stored; the token itself is printed once, when it is made.
 * Thread-safe like the rest of sc_db; works beside a running daemon on the
 * same file (WAL, busy timeout). */
#ifndef SC_DB_USERS_H
#define SC_DB_USERS_H

#include <stdint.h>

#include "db.h"
#include "sc_sha256.h"

#define SC_USER_NAME_MAX 63 /* letters, digits, '.', '_', '-'; not starting with '-' */

typedef struct sc_db_user {
	int64_t id;
	char name[SC_USER_NAME_MAX + 1];
	int admin;
	int64_t created_ms;
	int64_t revoked_ms; /* 0: valid */
} sc_db_user;

/* SC_OK when name may name a user; SC_EINVAL (the detail says why) if not. */
sc_err sc_db_user_name_check(const char *name);

/* Adds user name with a new token, written into token (SC_TOKEN_MAX bytes,
 * sc_token.h) for the caller to print once; only its hash is stored.
 * SC_EINVAL for a bad name or one already taken (revoked or not). Durable. */
sc_err sc_db_user_add(sc_db *db, const char *name, int admin, char *token, int64_t *id_out);

/* The user whose token hashes to token_sha256 (hex): SC_ENOENT when none
 * or when that user is revoked (the detail does not say which). */
sc_err sc_db_user_by_token(sc_db *db, const char *token_sha256, sc_db_user *out);

/* Every user in id order; *out = new array of *n (NULL when none): free(). */
sc_err sc_db_users_list(sc_db *db, sc_db_user **out, int *n);

/* Revokes name's token for good. SC_ENOENT for an unknown or already
 * revoked user. Durable. */
sc_err sc_db_user_revoke(sc_db *db, const char *name);

/* The name of user id into out (size bytes); "" when unknown. */
void sc_db_user_name(sc_db *db, int64_t id, char *out, size_t size);

#endif
