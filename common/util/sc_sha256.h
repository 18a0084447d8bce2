/* sc_sha256.h — SHA-256 digests (mbedTLS) of memory and of files, for
 * content keys: the tokenized-data cache, model artefacts.
 */
#ifndef SC_SHA256_H
#define SC_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "sc_err.h"

#define SC_SHA256_BYTES 32
#define SC_SHA256_HEX   65 /* 64 hex digits and a NUL */

/* out = SHA-256 of len bytes at data. */
void sc_sha256(const void *data, size_t len, uint8_t out[SC_SHA256_BYTES]);

/* out = SHA-256 of the file at path, read in pieces (any size). SC_ENOENT
 * or SC_EIO naming the path. */
sc_err sc_sha256_file(const char *path, uint8_t out[SC_SHA256_BYTES]);

/* hex = the digest as 64 lower-case hex digits. */
void sc_sha256_hex(const uint8_t d[SC_SHA256_BYTES], char hex[SC_SHA256_HEX]);

#endif
