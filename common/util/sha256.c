/* sha256.c — SHA-256 through mbedTLS's implementation (Debian libmbedtls,
 * which nng's TLS already uses). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/sha256.h>
#include <mbedtls/version.h>

#include "sc_sha256.h"

/* mbedTLS 2.x names the checked calls *_ret; 3.x dropped the suffix. */
#if MBEDTLS_VERSION_MAJOR < 3
#define sha_starts mbedtls_sha256_starts_ret
#define sha_update mbedtls_sha256_update_ret
#define sha_finish mbedtls_sha256_finish_ret
#else
#define sha_starts mbedtls_sha256_starts
#define sha_update mbedtls_sha256_update
#define sha_finish mbedtls_sha256_finish
#endif

void sc_sha256(const void *data, size_t len, uint8_t out[SC_SHA256_BYTES])
{
	mbedtls_sha256_context c;
	mbedtls_sha256_init(&c);
	/* The software implementation cannot fail on valid arguments. */
	(void)sha_starts(&c, 0);
	(void)sha_update(&c, data, len);
	(void)sha_finish(&c, out);
	mbedtls_sha256_free(&c);
}

sc_err sc_sha256_file(const char *path, uint8_t out[SC_SHA256_BYTES])
{
	enum { CHUNK = 1 << 20 };
	mbedtls_sha256_context c;
	unsigned char *buf;
	size_t n;
	sc_err rc = SC_OK;
	FILE *f = fopen(path, "rb");

	if (!f)
		return sc_errf(errno == ENOENT ? SC_ENOENT : SC_EIO, "%s: %s", path,
			       strerror(errno));
	if (!(buf = malloc(CHUNK))) {
		fclose(f);
		return sc_errf(SC_ENOMEM, "out of memory");
	}
	mbedtls_sha256_init(&c);
	(void)sha_starts(&c, 0);
	while ((n = fread(buf, 1, CHUNK, f)) > 0)
		(void)sha_update(&c, buf, n);
	if (ferror(f))
		rc = sc_errf(SC_EIO, "%s: read error", path);
	else
		(void)sha_finish(&c, out);
	mbedtls_sha256_free(&c);
	free(buf);
	fclose(f);
	return rc;
}

void sc_sha256_hex(const uint8_t d[SC_SHA256_BYTES], char hex[SC_SHA256_HEX])
{
	static const char digits[] = "0123456789abcdef";
	for (int i = 0; i < SC_SHA256_BYTES; i++) {
		hex[2 * i] = digits[d[i] >> 4];
		hex[2 * i + 1] = digits[d[i] & 15];
	}
	hex[64] = '\0';
}
