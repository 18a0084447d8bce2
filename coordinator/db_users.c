/* db_users.c — the users table (db_users.h). Statements are prepared per
 * call: these are rare, and the token lookup is one indexed read. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_impl.h"
#include "db_users.h"
#include "sc_token.h"

static sc_err prepare(sc_db *db, const char *text, sqlite3_stmt **st)
{
	int rc = sqlite3_prepare_v2(db->h, text, -1, st, NULL);
	return rc == SQLITE_OK ? SC_OK : db_fail(db, rc, "preparing a users statement");
}

sc_err sc_db_user_name_check(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n > SC_USER_NAME_MAX || name[0] == '-')
		return sc_errf(SC_EINVAL,
			       "a user name has 1 to %d characters and does not start with '-'",
			       SC_USER_NAME_MAX);
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)name[i]) && !strchr("._-", name[i]))
			return sc_errf(SC_EINVAL,
				       "user name '%s': only letters, digits, '.', '_' and '-'",
				       name);
	return SC_OK;
}

static void read_user(sqlite3_stmt *st, sc_db_user *u)
{
	const unsigned char *name = sqlite3_column_text(st, 1);
	u->id = sqlite3_column_int64(st, 0);
	snprintf(u->name, sizeof(u->name), "%s", name ? (const char *)name : "");
	u->admin = sqlite3_column_int(st, 2) != 0;
	u->created_ms = sqlite3_column_int64(st, 3);
	u->revoked_ms = sqlite3_column_int64(st, 4);
}

sc_err sc_db_user_add(sc_db *db, const char *name, int admin, char *token, int64_t *id_out)
{
	char hash[SC_SHA256_HEX];
	sqlite3_stmt *st = NULL;
	sc_err err;
	int rc;

	SC_TRY(sc_db_user_name_check(name));
	SC_TRY(sc_token_new("sct_", token));
	sc_token_hash_hex(token, strlen(token), hash);
	pthread_mutex_lock(&db->mu);
	if ((err = db_set_sync(db, 1)) == SC_OK &&
	    (err = prepare(db,
			   "INSERT INTO users (name, token_sha256, admin, created_ms)"
			   " VALUES (?1, ?2, ?3, ?4)",
			   &st)) == SC_OK) {
		db_bind_text(st, 1, name);
		db_bind_text(st, 2, hash);
		sqlite3_bind_int(st, 3, admin != 0);
		sqlite3_bind_int64(st, 4, sc_db_now_ms());
		rc = sqlite3_step(st);
		if (rc == SQLITE_DONE) {
			if (id_out)
				*id_out = sqlite3_last_insert_rowid(db->h);
		} else if (sqlite3_extended_errcode(db->h) == SQLITE_CONSTRAINT_UNIQUE) {
			err = sc_errf(SC_EINVAL, "user '%s' exists already", name);
		} else {
			err = db_fail(db, rc, "adding a user");
		}
		sqlite3_finalize(st);
	}
	pthread_mutex_unlock(&db->mu);
	if (err)
		memset(token, 0, SC_TOKEN_MAX);
	return err;
}

#define USER_COLS "id, name, admin, created_ms, coalesce(revoked_ms, 0)"

sc_err sc_db_user_by_token(sc_db *db, const char *token_sha256, sc_db_user *out)
{
	sqlite3_stmt *st = NULL;
	sc_err err;
	int rc;

	pthread_mutex_lock(&db->mu);
	if ((err = prepare(db,
			   "SELECT " USER_COLS " FROM users WHERE token_sha256 = ?1"
			   " AND revoked_ms IS NULL",
			   &st)) == SC_OK) {
		db_bind_text(st, 1, token_sha256);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			read_user(st, out);
		else if (rc == SQLITE_DONE)
			err = sc_errf(SC_ENOENT, "no such token");
		else
			err = db_fail(db, rc, "looking a token up");
		sqlite3_finalize(st);
	}
	pthread_mutex_unlock(&db->mu);
	return err;
}

sc_err sc_db_users_list(sc_db *db, sc_db_user **out, int *n)
{
	sqlite3_stmt *st = NULL;
	sc_db_user *v = NULL;
	int cap = 0, rc;
	sc_err err;

	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&db->mu);
	if ((err = prepare(db, "SELECT " USER_COLS " FROM users ORDER BY id", &st)) == SC_OK) {
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			if (*n == cap) {
				sc_db_user *g =
				    realloc(v, (size_t)(cap = cap ? 2 * cap : 8) * sizeof(*v));
				if (!g) {
					err = sc_errf(SC_ENOMEM, "out of memory listing users");
					break;
				}
				v = g;
			}
			read_user(st, &v[(*n)++]);
		}
		if (!err && rc != SQLITE_DONE)
			err = db_fail(db, rc, "listing users");
		sqlite3_finalize(st);
	}
	pthread_mutex_unlock(&db->mu);
	if (err) {
		free(v);
		*n = 0;
		return err;
	}
	*out = v;
	return SC_OK;
}

sc_err sc_db_user_revoke(sc_db *db, const char *name)
{
	sqlite3_stmt *st = NULL;
	sc_err err;

	pthread_mutex_lock(&db->mu);
	if ((err = db_set_sync(db, 1)) == SC_OK &&
	    (err = prepare(
		 db, "UPDATE users SET revoked_ms = ?2 WHERE name = ?1 AND revoked_ms IS NULL",
		 &st)) == SC_OK) {
		db_bind_text(st, 1, name);
		sqlite3_bind_int64(st, 2, sc_db_now_ms());
		int rc = sqlite3_step(st);
		if (rc != SQLITE_DONE)
			err = db_fail(db, rc, "revoking a user");
		else if (sqlite3_changes(db->h) == 0)
			err = sc_errf(SC_ENOENT, "no user '%s' with a valid token", name);
		sqlite3_finalize(st);
	}
	pthread_mutex_unlock(&db->mu);
	return err;
}

void sc_db_user_name(sc_db *db, int64_t id, char *out, size_t size)
{
	sqlite3_stmt *st = NULL;

	out[0] = '\0';
	pthread_mutex_lock(&db->mu);
	if (prepare(db, "SELECT name FROM users WHERE id = ?1", &st) == SC_OK) {
		sqlite3_bind_int64(st, 1, id);
		if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
			snprintf(out, size, "%s", (const char *)sqlite3_column_text(st, 0));
		sqlite3_finalize(st);
	}
	pthread_mutex_unlock(&db->mu);
}
