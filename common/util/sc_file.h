/* sc_file.h — whole small files read into memory, files replaced atomically,
 * and directories made one level at a time.
 *
 * An atomic write goes to "<path>.tmp", is fsync'd, renamed over path and
 * the directory holding path is fsync'd (best effort), so a reader sees the
 * old file or the new one, never a part of either, even after a crash.
 * Every error's detail names the path it concerns.
 */
#ifndef SC_FILE_H
#define SC_FILE_H

#include <stddef.h>

#include "sc_err.h"

/* Reads the whole regular file at path into *out = new buffer of *len bytes
 * followed by one NUL byte (not counted in *len); free with free(). At most
 * max_bytes are accepted (SIZE_MAX: as much as memory allows). Borrows path.
 * On error *out = NULL, *len = 0 and the code is SC_ENOENT (missing), SC_EIO
 * (unreadable, or not a regular file), SC_EFORMAT (larger than max_bytes) or
 * SC_ENOMEM. */
sc_err sc_file_read(const char *path, size_t max_bytes, char **out, size_t *len);

/* Replaces path by len bytes of data, atomically (see above). Borrows both.
 * On error path is unchanged and no "<path>.tmp" is left behind. */
sc_err sc_file_write_atomic(const char *path, const void *data, size_t len);

/* The same, for a file written in pieces: sc_file_begin, any number of
 * sc_file_put, then sc_file_commit to put the file in place, or
 * sc_file_abort to drop it. */
typedef struct sc_file_atomic sc_file_atomic;

/* Creates (truncates) "<path>.tmp". *out = new handle, to be ended with
 * sc_file_commit or sc_file_abort. Borrows path (copied). */
sc_err sc_file_begin(sc_file_atomic **out, const char *path);
/* Appends len bytes of data (borrowed). On error the handle is still the
 * caller's, to be aborted. */
sc_err sc_file_put(sc_file_atomic *f, const void *data, size_t len);
/* fsyncs, closes and renames the temporary file over path, then fsyncs the
 * directory. Takes ownership of f: it is freed, and on error the temporary
 * file is removed. */
sc_err sc_file_commit(sc_file_atomic *f);
/* Closes and removes the temporary file and frees f. Accepts NULL. */
void sc_file_abort(sc_file_atomic *f);

/* Creates directory dir (one level, mode 0755); SC_OK if it already exists
 * as a directory, SC_EIO otherwise (its parent missing, or dir or a parent a
 * regular file). Borrows dir. */
sc_err sc_file_mkdir(const char *dir);

/* Resolves rel under the directory dir into out (size bytes; the real
 * path): rel must be relative with no ".." component, and must not resolve
 * (through a symbolic link) outside dir. SC_EINVAL for an absolute path,
 * "..", or a link out; SC_ENOENT when nothing is there; SC_EIO when dir
 * cannot be resolved; SC_ERANGE when out is too small. what names dir in
 * errors ("the owner's data directory"). Borrows every argument. */
sc_err sc_file_under(const char *dir, const char *rel, const char *what, char *out, size_t size);

#endif
