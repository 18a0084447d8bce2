/* tcache.c — the worker's content-addressed tensor cache (tcache.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "sc_log.h"
#include "sc_manifest.h"
#include "tcache.h"

#define INDEX_VERSION 1

struct pin {
	char sha[SC_SHA256_HEX];
	int count;
};

struct sc_tcache {
	char *dir;
	uint64_t limit;     /* 0: none */
	pthread_mutex_t mu; /* guards everything below */
	sqlite3 *db;
	uint64_t used;
	struct pin *pins; /* (npins) tensors with an open ref */
	int npins, cappins;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void path_of(const sc_tcache *c, const char *sha, const char *suffix, char *buf, size_t size)
{
	snprintf(buf, size, "%s/%s%s", c->dir, sha, suffix);
}

/* Called with mu held. Runs text with up to two bindings (a text, an int). */
static sc_err exec(sc_tcache *c, const char *text, const char *s, int64_t v)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(c->db, text, -1, &st, NULL);
	if (rc == SQLITE_OK) {
		if (s)
			sqlite3_bind_text(st, 1, s, -1, SQLITE_STATIC);
		if (sqlite3_bind_parameter_count(st) >= 2)
			sqlite3_bind_int64(st, 2, v);
		rc = sqlite3_step(st);
		rc = rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
	}
	sqlite3_finalize(st);
	return rc == SQLITE_OK
		   ? SC_OK
		   : sc_errf(SC_EIO, "%s/index.sqlite: %s", c->dir, sqlite3_errmsg(c->db));
}

/* Called with mu held: the pin of sha, or NULL. */
static struct pin *pin_of(sc_tcache *c, const char *sha)
{
	for (int i = 0; i < c->npins; i++)
		if (!strcmp(c->pins[i].sha, sha))
			return &c->pins[i];
	return NULL;
}

/* Called with mu held: forgets sha (row and file). */
static void drop(sc_tcache *c, const char *sha, uint64_t nbytes)
{
	char path[4096];
	path_of(c, sha, "", path, sizeof(path));
	unlink(path);
	if (exec(c, "DELETE FROM tensors WHERE sha256 = ?1", sha, 0) == SC_OK)
		c->used -= nbytes <= c->used ? nbytes : c->used;
}

/* Drops rows whose file is missing or of the wrong size, removes files the
 * index does not list, and sums what is used. */
static sc_err reconcile(sc_tcache *c)
{
	sqlite3_stmt *st = NULL;
	char path[4096];
	struct stat sb;
	char(*gone)[SC_SHA256_HEX] = NULL;
	int ngone = 0, cap = 0;
	int rc = sqlite3_prepare_v2(c->db, "SELECT sha256, nbytes FROM tensors", -1, &st, NULL);
	c->used = 0;
	while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
		const char *sha = (const char *)sqlite3_column_text(st, 0);
		uint64_t n = (uint64_t)sqlite3_column_int64(st, 1);
		path_of(c, sha, "", path, sizeof(path));
		if (sc_sha256_hex_valid(sha) && stat(path, &sb) == 0 && (uint64_t)sb.st_size == n) {
			c->used += n;
			continue;
		}
		if (ngone == cap) {
			cap = cap ? 2 * cap : 16;
			void *p = realloc(gone, (size_t)cap * sizeof(*gone));
			if (!p)
				break;
			gone = p;
		}
		snprintf(gone[ngone++], SC_SHA256_HEX, "%s", sha ? sha : "");
	}
	sqlite3_finalize(st);
	for (int i = 0; i < ngone; i++) {
		sc_warn("tcache", "%s: cached tensor %s is missing or truncated: forgotten", c->dir,
			gone[i]);
		exec(c, "DELETE FROM tensors WHERE sha256 = ?1", gone[i], 0);
	}
	free(gone);
	DIR *d = opendir(c->dir);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (!sc_sha256_hex_valid(e->d_name))
			continue;
		sqlite3_stmt *q = NULL;
		int listed = 0;
		if (sqlite3_prepare_v2(c->db, "SELECT 1 FROM tensors WHERE sha256 = ?1", -1, &q,
				       NULL) == SQLITE_OK) {
			sqlite3_bind_text(q, 1, e->d_name, -1, SQLITE_STATIC);
			listed = sqlite3_step(q) == SQLITE_ROW;
		}
		sqlite3_finalize(q);
		if (!listed) {
			path_of(c, e->d_name, "", path, sizeof(path));
			unlink(path);
		}
	}
	if (d)
		closedir(d);
	return SC_OK;
}

sc_err sc_tcache_open(sc_tcache **out, const char *dir, uint64_t limit)
{
	char path[4096];
	sc_tcache *c;
	sc_err rc;
	*out = NULL;
	if (mkdir(dir, 0755) != 0 && errno != EEXIST)
		return sc_errf(SC_EIO, "cache directory %s: %s", dir, strerror(errno));
	if (!(c = calloc(1, sizeof(*c))) || !(c->dir = strdup(dir))) {
		free(c);
		return sc_errf(SC_ENOMEM, "out of memory");
	}
	c->limit = limit;
	pthread_mutex_init(&c->mu, NULL);
	snprintf(path, sizeof(path), "%s/index.sqlite", dir);
	if (sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
	    SQLITE_OK) {
		rc = sc_errf(SC_EIO, "%s: %s", path, c->db ? sqlite3_errmsg(c->db) : "cannot open");
		goto fail;
	}
	sqlite3_busy_timeout(c->db, 5000);
	sqlite3_stmt *st = NULL;
	int version = -1;
	if (sqlite3_prepare_v2(c->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	if (version != 0 && version != INDEX_VERSION) {
		rc = sc_errf(SC_ENOTSUP, "%s: index version %d, this worker knows %d", path,
			     version, INDEX_VERSION);
		goto fail;
	}
	if ((rc = exec(c, "PRAGMA journal_mode = WAL", NULL, 0)) ||
	    (rc = exec(c,
		       "CREATE TABLE IF NOT EXISTS tensors (sha256 TEXT PRIMARY KEY,"
		       " nbytes INTEGER NOT NULL, last_used_ms INTEGER NOT NULL)",
		       NULL, 0)) ||
	    (rc = exec(c, "PRAGMA user_version = 1", NULL, 0)) || (rc = reconcile(c)))
		goto fail;
	*out = c;
	return SC_OK;
fail:
	sc_tcache_close(c);
	return rc;
}

void sc_tcache_close(sc_tcache *c)
{
	if (!c)
		return;
	sqlite3_close(c->db);
	pthread_mutex_destroy(&c->mu);
	free(c->pins);
	free(c->dir);
	free(c);
}

/* Called with mu held: pins sha (one more user). */
static sc_err pin(sc_tcache *c, const char *sha)
{
	struct pin *p = pin_of(c, sha);
	if (p) {
		p->count++;
		return SC_OK;
	}
	if (c->npins == c->cappins) {
		int nc = c->cappins ? 2 * c->cappins : 16;
		struct pin *q = realloc(c->pins, (size_t)nc * sizeof(*q));
		if (!q)
			return sc_errf(SC_ENOMEM, "out of memory");
		c->pins = q;
		c->cappins = nc;
	}
	p = &c->pins[c->npins++];
	snprintf(p->sha, sizeof(p->sha), "%s", sha);
	p->count = 1;
	return SC_OK;
}

/* Called with mu held. */
static void unpin(sc_tcache *c, const char *sha)
{
	struct pin *p = pin_of(c, sha);
	if (p && --p->count == 0)
		*p = c->pins[--c->npins];
}

static const char empty[1];

sc_err sc_tcache_get(sc_tcache *c, const char *sha, uint64_t nbytes, int verify,
		     sc_tcache_ref **out)
{
	char path[4096], got[SC_SHA256_HEX];
	uint8_t d[SC_SHA256_BYTES];
	sc_tcache_ref *r;
	sqlite3_stmt *st = NULL;
	int listed = 0;
	sc_err rc;

	*out = NULL;
	if (!(r = calloc(1, sizeof(*r))))
		return sc_errf(SC_ENOMEM, "out of memory");
	pthread_mutex_lock(&c->mu);
	if (sqlite3_prepare_v2(c->db, "SELECT nbytes FROM tensors WHERE sha256 = ?1", -1, &st,
			       NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, sha, -1, SQLITE_STATIC);
		listed = sqlite3_step(st) == SQLITE_ROW &&
			 (uint64_t)sqlite3_column_int64(st, 0) == nbytes;
	}
	sqlite3_finalize(st);
	rc = listed ? pin(c, sha) : sc_errf(SC_ENOENT, "tensor %s is not cached", sha);
	pthread_mutex_unlock(&c->mu);
	if (rc) {
		free(r);
		return rc;
	}
	snprintf(r->sha256, sizeof(r->sha256), "%s", sha);
	r->nbytes = nbytes;
	r->data = empty;
	path_of(c, sha, "", path, sizeof(path));
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat sb;
	int bad = fd < 0 || fstat(fd, &sb) != 0 || (uint64_t)sb.st_size != nbytes;
	if (!bad && nbytes) {
		void *m = mmap(NULL, nbytes, PROT_READ, MAP_SHARED, fd, 0);
		bad = m == MAP_FAILED;
		if (!bad)
			r->data = m;
	}
	if (fd >= 0)
		close(fd);
	if (!bad && verify) {
		sc_sha256(r->data, nbytes, d);
		sc_sha256_hex(d, got);
		bad = strcmp(got, sha) != 0;
	}
	if (bad) {
		if (r->data != empty)
			munmap((void *)r->data, nbytes);
		sc_warn("tcache",
			"%s: cached tensor %s is corrupted (%s): removed, to be fetched "
			"again",
			c->dir, sha,
			verify && fd >= 0 ? "its bytes hash differently" : "unreadable");
		pthread_mutex_lock(&c->mu);
		unpin(c, sha);
		if (!pin_of(c, sha))
			drop(c, sha, nbytes);
		pthread_mutex_unlock(&c->mu);
		free(r);
		return sc_errf(SC_ENOENT, "cached tensor %s was corrupted: removed", sha);
	}
	pthread_mutex_lock(&c->mu);
	exec(c, "UPDATE tensors SET last_used_ms = ?2 WHERE sha256 = ?1", sha, now_ms());
	pthread_mutex_unlock(&c->mu);
	*out = r;
	return SC_OK;
}

sc_err sc_tcache_size(sc_tcache *c, const char *sha, uint64_t *nbytes)
{
	sqlite3_stmt *st = NULL;
	int found = 0;
	pthread_mutex_lock(&c->mu);
	if (sqlite3_prepare_v2(c->db, "SELECT nbytes FROM tensors WHERE sha256 = ?1", -1, &st,
			       NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, sha, -1, SQLITE_STATIC);
		if ((found = sqlite3_step(st) == SQLITE_ROW))
			*nbytes = (uint64_t)sqlite3_column_int64(st, 0);
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&c->mu);
	return found ? SC_OK : sc_errf(SC_ENOENT, "tensor %s is not cached", sha);
}

void sc_tcache_release(sc_tcache *c, sc_tcache_ref *ref)
{
	if (!ref)
		return;
	if (ref->data != empty)
		munmap((void *)ref->data, ref->nbytes);
	pthread_mutex_lock(&c->mu);
	unpin(c, ref->sha256);
	pthread_mutex_unlock(&c->mu);
	free(ref);
}

/* Called with mu held: evicts least recently used unpinned tensors until
 * need more bytes fit. */
static sc_err make_room(sc_tcache *c, uint64_t need)
{
	while (c->limit && c->used + need > c->limit) {
		sqlite3_stmt *st = NULL;
		char victim[SC_SHA256_HEX] = "";
		uint64_t vbytes = 0;
		if (sqlite3_prepare_v2(c->db,
				       "SELECT sha256, nbytes FROM tensors ORDER BY last_used_ms",
				       -1, &st, NULL) == SQLITE_OK)
			while (sqlite3_step(st) == SQLITE_ROW) {
				const char *s = (const char *)sqlite3_column_text(st, 0);
				if (!pin_of(c, s)) {
					snprintf(victim, sizeof(victim), "%s", s);
					vbytes = (uint64_t)sqlite3_column_int64(st, 1);
					break;
				}
			}
		sqlite3_finalize(st);
		if (!victim[0])
			return sc_errf(SC_ERANGE,
				       "cache %s: a tensor of %llu bytes does not fit in its limit "
				       "of %llu bytes (%llu in use by tensors that cannot be "
				       "evicted): raise --cache-limit",
				       c->dir, (unsigned long long)need,
				       (unsigned long long)c->limit, (unsigned long long)c->used);
		sc_info("tcache", "%s: evicting %s (%llu bytes, least recently used)", c->dir,
			victim, (unsigned long long)vbytes);
		drop(c, victim, vbytes);
	}
	return SC_OK;
}

sc_err sc_tcache_fill_begin(sc_tcache *c, const char *sha, uint64_t nbytes, uint32_t chunk,
			    sc_tcache_fill **out)
{
	char path[4096];
	sc_tcache_fill *f;
	struct stat sb;
	sc_err rc;

	*out = NULL;
	if (!sc_sha256_hex_valid(sha) || chunk == 0)
		return sc_errf(SC_EINVAL, "sc_tcache_fill_begin: bad hash or chunk size");
	pthread_mutex_lock(&c->mu);
	rc = make_room(c, nbytes);
	pthread_mutex_unlock(&c->mu);
	if (rc)
		return rc;
	if (!(f = calloc(1, sizeof(*f))))
		return sc_errf(SC_ENOMEM, "out of memory");
	snprintf(f->sha256, sizeof(f->sha256), "%s", sha);
	f->nbytes = nbytes;
	f->chunk = chunk;
	f->nchunks = (uint32_t)((nbytes + chunk - 1) / chunk);
	f->fd = f->map_fd = -1;
	if (!(f->done = calloc((size_t)f->nchunks + 1, 1))) {
		free(f);
		return sc_errf(SC_ENOMEM, "out of memory");
	}
	path_of(c, sha, ".part", path, sizeof(path));
	f->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (f->fd < 0 || ftruncate(f->fd, (off_t)nbytes) != 0) {
		rc = sc_errf(SC_EIO, "%s: %s", path, strerror(errno));
		goto fail;
	}
	path_of(c, sha, ".map", path, sizeof(path));
	f->map_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (f->map_fd < 0 || fstat(f->map_fd, &sb) != 0) {
		rc = sc_errf(SC_EIO, "%s: %s", path, strerror(errno));
		goto fail;
	}
	/* A map of another chunk size (or none) starts the fill afresh. */
	if ((uint64_t)sb.st_size == f->nchunks &&
	    pread(f->map_fd, f->done, f->nchunks, 0) == (ssize_t)f->nchunks) {
		for (uint32_t i = 0; i < f->nchunks; i++)
			f->ndone += f->done[i] == 1;
	} else if (ftruncate(f->map_fd, 0) != 0 || ftruncate(f->map_fd, f->nchunks) != 0) {
		rc = sc_errf(SC_EIO, "%s: %s", path, strerror(errno));
		goto fail;
	}
	for (uint32_t i = 0; i < f->nchunks; i++)
		f->done[i] = f->done[i] == 1;
	*out = f;
	return SC_OK;
fail:
	if (f->fd >= 0)
		close(f->fd);
	if (f->map_fd >= 0)
		close(f->map_fd);
	free(f->done);
	free(f);
	return rc;
}

static sc_err pwrite_all(int fd, const void *p, size_t n, uint64_t at)
{
	const char *s = p;
	while (n) {
		ssize_t k = pwrite(fd, s, n, (off_t)at);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return sc_errf(SC_EIO, "writing the cache: %s", strerror(errno));
		s += k;
		n -= (size_t)k;
		at += (uint64_t)k;
	}
	return SC_OK;
}

sc_err sc_tcache_fill_write(sc_tcache_fill *f, uint32_t i, const void *data, size_t len)
{
	static const uint8_t one = 1;
	uint64_t at = (uint64_t)i * f->chunk;
	if (i >= f->nchunks || at + len > f->nbytes)
		return sc_errf(SC_EINVAL, "chunk %u (%zu bytes) is outside tensor %s", i, len,
			       f->sha256);
	SC_TRY(pwrite_all(f->fd, data, len, at));
	SC_TRY(pwrite_all(f->map_fd, &one, 1, i));
	f->done[i] = 1;
	return SC_OK;
}

/* Called with mu held: indexes sha, used now. */
static sc_err index_add(sc_tcache *c, const char *sha, uint64_t nbytes)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(c->db,
				    "INSERT OR REPLACE INTO tensors (sha256, nbytes, last_used_ms)"
				    " VALUES (?1, ?2, ?3)",
				    -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, sha, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)nbytes);
		sqlite3_bind_int64(st, 3, now_ms());
		rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
	}
	sqlite3_finalize(st);
	return rc == SQLITE_OK
		   ? SC_OK
		   : sc_errf(SC_EIO, "%s/index.sqlite: %s", c->dir, sqlite3_errmsg(c->db));
}

sc_err sc_tcache_fill_end(sc_tcache *c, sc_tcache_fill *f, int complete)
{
	char part[4096], map[4096], final[4096], got[SC_SHA256_HEX];
	uint8_t d[SC_SHA256_BYTES];
	sc_err rc = SC_OK;

	if (!f)
		return SC_OK;
	path_of(c, f->sha256, ".part", part, sizeof(part));
	path_of(c, f->sha256, ".map", map, sizeof(map));
	path_of(c, f->sha256, "", final, sizeof(final));
	if (complete) {
		if (fsync(f->fd) != 0)
			rc = sc_errf(SC_EIO, "%s: %s", part, strerror(errno));
		else if (!(rc = sc_sha256_file(part, d))) {
			sc_sha256_hex(d, got);
			if (strcmp(got, f->sha256) != 0) {
				rc = sc_errf(SC_EFORMAT, "the bytes fetched hash to %s, not %s",
					     got, f->sha256);
				unlink(part);
				unlink(map);
			} else if (rename(part, final) != 0) {
				rc = sc_errf(SC_EIO, "%s: %s", final, strerror(errno));
			} else {
				unlink(map);
				pthread_mutex_lock(&c->mu);
				rc = index_add(c, f->sha256, f->nbytes);
				if (!rc)
					c->used += f->nbytes;
				pthread_mutex_unlock(&c->mu);
			}
		}
	}
	close(f->fd);
	close(f->map_fd);
	free(f->done);
	free(f);
	return rc;
}

sc_err sc_tcache_list(sc_tcache *c, char ***shas, size_t *n)
{
	sqlite3_stmt *st = NULL;
	size_t cap = 0;
	sc_err rc = SC_OK;
	*shas = NULL;
	*n = 0;
	pthread_mutex_lock(&c->mu);
	if (sqlite3_prepare_v2(c->db, "SELECT sha256 FROM tensors ORDER BY sha256", -1, &st,
			       NULL) != SQLITE_OK)
		rc = sc_errf(SC_EIO, "%s/index.sqlite: %s", c->dir, sqlite3_errmsg(c->db));
	while (!rc && sqlite3_step(st) == SQLITE_ROW) {
		if (*n == cap) {
			cap = cap ? 2 * cap : 64;
			char **p = realloc(*shas, cap * sizeof(*p));
			if (!p) {
				rc = sc_errf(SC_ENOMEM, "out of memory");
				break;
			}
			*shas = p;
		}
		if (!((*shas)[*n] = strdup((const char *)sqlite3_column_text(st, 0)))) {
			rc = sc_errf(SC_ENOMEM, "out of memory");
			break;
		}
		(*n)++;
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&c->mu);
	if (rc) {
		sc_tcache_list_free(*shas, *n);
		*shas = NULL;
		*n = 0;
	}
	return rc;
}

void sc_tcache_list_free(char **shas, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(shas[i]);
	free(shas);
}

uint64_t sc_tcache_used(sc_tcache *c)
{
	pthread_mutex_lock(&c->mu);
	uint64_t u = c->used;
	pthread_mutex_unlock(&c->mu);
	return u;
}
