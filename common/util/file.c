/* file.c — whole-file reads, atomic replacement and mkdir (see sc_file.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sc_file.h"

sc_err sc_file_read(const char *path, size_t max_bytes, char **out, size_t *len)
{
	struct stat st;
	char *buf = NULL;
	size_t size, n = 0;
	sc_err rc;
	if (!out || !len)
		return sc_errf(SC_EINVAL, "sc_file_read: NULL argument");
	*out = NULL;
	*len = 0;
	if (!path)
		return sc_errf(SC_EINVAL, "sc_file_read: NULL argument");
	/* O_NONBLOCK: a FIFO at path is refused below rather than waited on. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return sc_errf(errno == ENOENT ? SC_ENOENT : SC_EIO, "%s: %s", path,
			       strerror(errno));
	if (fstat(fd, &st) != 0) {
		rc = sc_errf(SC_EIO, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = sc_errf(SC_EIO, "%s: not a regular file", path);
		goto fail;
	}
	if ((uintmax_t)st.st_size > max_bytes || (uintmax_t)st.st_size >= SIZE_MAX) {
		rc = sc_errf(SC_EFORMAT, "%s: %lld bytes, larger than %zu bytes", path,
			     (long long)st.st_size, max_bytes);
		goto fail;
	}
	size = (size_t)st.st_size;
	if (!(buf = malloc(size + 1))) {
		rc = sc_errf(SC_ENOMEM, "%s: cannot allocate %zu bytes", path, size + 1);
		goto fail;
	}
	while (n < size) {
		ssize_t k = read(fd, buf + n, size - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			rc = sc_errf(SC_EIO, "%s: read failed: %s", path, strerror(errno));
			goto fail;
		}
		if (k == 0) {
			rc = sc_errf(SC_EIO, "%s: short read (%zu of %zu bytes)", path, n, size);
			goto fail;
		}
		n += (size_t)k;
	}
	close(fd);
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return SC_OK;
fail:
	free(buf);
	close(fd);
	return rc;
}

struct sc_file_atomic {
	int fd;
	char *path; /* points into tmp's allocation: "<path>\0<path>.tmp\0" */
	char *tmp;
};

sc_err sc_file_begin(sc_file_atomic **out, const char *path)
{
	if (!out || !path)
		return sc_errf(SC_EINVAL, "sc_file_begin: NULL argument");
	*out = NULL;
	size_t plen = strlen(path);
	sc_file_atomic *f = malloc(sizeof(*f) + 2 * plen + 6);
	if (!f)
		return sc_errf(SC_ENOMEM, "%s: out of memory", path);
	f->path = (char *)(f + 1);
	f->tmp = f->path + plen + 1;
	memcpy(f->path, path, plen + 1);
	memcpy(f->tmp, path, plen);
	memcpy(f->tmp + plen, ".tmp", 5);
	f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (f->fd < 0) {
		sc_err rc = sc_errf(SC_EIO, "%s: %s", f->tmp, strerror(errno));
		free(f);
		return rc;
	}
	*out = f;
	return SC_OK;
}

sc_err sc_file_put(sc_file_atomic *f, const void *data, size_t len)
{
	const char *p = data;
	if (!f || (len && !data))
		return sc_errf(SC_EINVAL, "sc_file_put: NULL argument");
	while (len > 0) {
		ssize_t k = write(f->fd, p, len);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return sc_errf(SC_EIO, "%s: write: %s", f->tmp,
				       k < 0 ? strerror(errno) : "no progress");
		p += k;
		len -= (size_t)k;
	}
	return SC_OK;
}

/* fsync of the directory holding f->path, so that the rename survives a
 * crash. Best effort: the new file is in place either way. Clobbers f->tmp. */
static void sync_parent(sc_file_atomic *f)
{
	const char *slash = strrchr(f->path, '/');
	const char *dir = ".";
	if (slash) {
		size_t n = slash == f->path ? 1 : (size_t)(slash - f->path);
		memcpy(f->tmp, f->path, n);
		f->tmp[n] = '\0';
		dir = f->tmp;
	}
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

sc_err sc_file_commit(sc_file_atomic *f)
{
	sc_err rc;
	if (!f)
		return sc_errf(SC_EINVAL, "sc_file_commit: NULL argument");
	if (fsync(f->fd) != 0) {
		rc = sc_errf(SC_EIO, "%s: fsync: %s", f->tmp, strerror(errno));
		goto fail;
	}
	int crc = close(f->fd);
	f->fd = -1;
	if (crc != 0) {
		rc = sc_errf(SC_EIO, "%s: close: %s", f->tmp, strerror(errno));
		goto fail;
	}
	if (rename(f->tmp, f->path) != 0) {
		rc = sc_errf(SC_EIO, "%s: rename from %s: %s", f->path, f->tmp, strerror(errno));
		goto fail;
	}
	sync_parent(f);
	free(f);
	return SC_OK;
fail:
	sc_file_abort(f);
	return rc;
}

void sc_file_abort(sc_file_atomic *f)
{
	if (!f)
		return;
	if (f->fd >= 0)
		close(f->fd);
	unlink(f->tmp);
	free(f);
}

sc_err sc_file_write_atomic(const char *path, const void *data, size_t len)
{
	sc_file_atomic *f;
	SC_TRY(sc_file_begin(&f, path));
	sc_err rc = sc_file_put(f, data, len);
	if (rc != SC_OK) {
		sc_file_abort(f);
		return rc;
	}
	return sc_file_commit(f);
}

sc_err sc_file_mkdir(const char *dir)
{
	struct stat st;
	if (!dir)
		return sc_errf(SC_EINVAL, "sc_file_mkdir: NULL argument");
	if (mkdir(dir, 0755) == 0)
		return SC_OK;
	if (errno != EEXIST)
		return sc_errf(SC_EIO, "%s: mkdir: %s", dir, strerror(errno));
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return sc_errf(SC_EIO, "%s: exists and is not a directory", dir);
	return SC_OK;
}

sc_err sc_file_under(const char *dir, const char *rel, const char *what, char *out, size_t size)
{
	char root[PATH_MAX], joined[PATH_MAX * 2], real[PATH_MAX];
	const char *p = rel;

	if (!rel || !rel[0])
		return sc_errf(SC_EINVAL, "an empty path under %s", what);
	if (rel[0] == '/')
		return sc_errf(SC_EINVAL,
			       "path '%s' is absolute: only paths relative to %s are read", rel,
			       what);
	/* No component may be "..": the path stays under the root by name. */
	while (*p) {
		size_t n = strcspn(p, "/");
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return sc_errf(SC_EINVAL, "path '%s' leaves %s", rel, what);
		p += n;
		while (*p == '/')
			p++;
	}
	if (!realpath(dir, root))
		return sc_errf(SC_EIO, "%s %s: %s", what, dir, strerror(errno));
	snprintf(joined, sizeof(joined), "%s/%s", root, rel);
	if (!realpath(joined, real))
		return sc_errf(errno == ENOENT ? SC_ENOENT : SC_EIO, "'%s' under %s: %s", rel, what,
			       strerror(errno));
	/* ... and by what it resolves to: no symbolic link out of it. */
	size_t rl = strlen(root);
	if (strncmp(real, root, rl) != 0 ||
	    (real[rl] != '/' && real[rl] != '\0' && !(rl == 1 && root[0] == '/')))
		return sc_errf(SC_EINVAL, "'%s' resolves outside %s (a symbolic link out of it)",
			       rel, what);
	if (strlen(real) >= size)
		return sc_errf(SC_ERANGE, "path '%s' is too long", rel);
	memcpy(out, real, strlen(real) + 1);
	return SC_OK;
}
