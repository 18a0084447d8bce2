/* token.c — random tokens, their hashes, HMAC (mbedTLS) and token files. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mbedtls/md.h>

#include "sc_token.h"

sc_err sc_token_new(const char *prefix, char out[SC_TOKEN_MAX])
{
	uint8_t r[SC_TOKEN_RANDOM];
	size_t got = 0, np = strlen(prefix);

	if (np > 8)
		return sc_errf(SC_EINVAL, "token prefix '%s' is longer than 8", prefix);
	while (got < sizeof(r)) {
		ssize_t n = getrandom(r + got, sizeof(r) - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return sc_errf(SC_EIO, "no random bytes for a token: %s", strerror(errno));
		got += (size_t)n;
	}
	memcpy(out, prefix, np);
	for (size_t i = 0; i < sizeof(r); i++)
		snprintf(out + np + 2 * i, 3, "%02x", r[i]);
	return SC_OK;
}

void sc_token_hash_hex(const void *token, size_t len, char hex[SC_SHA256_HEX])
{
	uint8_t d[SC_SHA256_BYTES];
	sc_sha256(token, len, d);
	sc_sha256_hex(d, hex);
}

int sc_token_equal(const void *a, const void *b, size_t n)
{
	const volatile uint8_t *x = a, *y = b;
	uint8_t diff = 0;
	for (size_t i = 0; i < n; i++)
		diff |= x[i] ^ y[i];
	return diff == 0;
}

void sc_token_hmac(const void *key, size_t key_len, const void *msg, size_t len,
		   uint8_t out[SC_SHA256_BYTES])
{
	/* Cannot fail for SHA-256 with valid arguments. */
	(void)mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), key, key_len, msg, len,
			      out);
}

/* out = prefix and the hex HMAC of msg under key. */
static void keyed(const char *prefix, const char *key, const char *msg, size_t len,
		  char out[SC_TOKEN_MAX])
{
	uint8_t d[SC_SHA256_BYTES];
	char hex[SC_SHA256_HEX];
	sc_token_hmac(key, strlen(key), msg, len, d);
	sc_sha256_hex(d, hex);
	snprintf(out, SC_TOKEN_MAX, "%s%s", prefix, hex);
}

void sc_token_gen_ticket(const char *secret, const char *model_path, const char *model,
			 char out[SC_TOKEN_MAX])
{
	const char *p = model_path ? model_path : "", *m = model ? model : "";
	size_t np = strlen(p), nm = strlen(m);
	char *msg = malloc(np + nm + 6);
	if (!msg) { /* a ticket nobody accepts */
		snprintf(out, SC_TOKEN_MAX, "scg_");
		return;
	}
	memcpy(msg, "gen\n", 4);
	memcpy(msg + 4, p, np);
	msg[4 + np] = '\n';
	memcpy(msg + 5 + np, m, nm);
	keyed("scg_", secret, msg, np + nm + 5, out);
	free(msg);
}

void sc_token_peer(const char *join_token, char out[SC_TOKEN_MAX])
{
	static const char text[] = "splitchain worker peer";
	keyed("scp_", join_token, text, sizeof(text) - 1, out);
}

sc_err sc_token_read_file(const char *path, int private_only, char *out, size_t size)
{
	struct stat sb;
	size_t n = 0, a = 0;
	sc_err err = SC_OK;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return sc_errf(errno == ENOENT ? SC_ENOENT : SC_EIO, "%s: cannot open: %s", path,
			       strerror(errno));
	if (fstat(fd, &sb) != 0) {
		err = sc_errf(SC_EIO, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (private_only && (sb.st_mode & 077)) {
		err = sc_errf(SC_EINVAL,
			      "%s may be read by other users (mode %03o): run chmod 600 '%s'", path,
			      (unsigned)(sb.st_mode & 0777), path);
		goto out;
	}
	for (;;) {
		ssize_t r = read(fd, out + n, size - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err = sc_errf(SC_EIO, "%s: read: %s", path, strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n == size - 1) {
			char c;
			if (read(fd, &c, 1) == 1) {
				err = sc_errf(SC_EINVAL, "%s: longer than a token (%zu bytes)",
					      path, size - 1);
				goto out;
			}
			break;
		}
	}
	while (n > 0 && isspace((unsigned char)out[n - 1]))
		n--;
	while (a < n && isspace((unsigned char)out[a]))
		a++;
	memmove(out, out + a, n - a);
	n -= a;
	out[n] = '\0';
	if (n == 0 || memchr(out, '\n', n))
		err =
		    sc_errf(SC_EINVAL, "%s: %s", path, n ? "holds more than one line" : "is empty");
out:
	close(fd);
	if (err)
		out[0] = '\0';
	return err;
}
