/* sc_utf8.h — UTF-8 validity, one definition for the whole project (the
 * tokenizer, the CLI's charts and its JSON output): a valid sequence is
 * one of Unicode's well-formed byte sequences (table 3-7 of the standard):
 * no overlong forms, no surrogates (U+D800..U+DFFF), nothing above
 * U+10FFFF. */
#ifndef SC_UTF8_H
#define SC_UTF8_H

#include <stddef.h>

/* Bytes of the valid sequence that begins s (n > 0 bytes left): 1 to 4;
 * 0 when s does not begin one (a stray or invalid byte, or a sequence cut
 * short by n). */
size_t sc_utf8_len(const char *s, size_t n);

/* s (n bytes) as valid UTF-8: each maximal invalid subpart replaced by
 * U+FFFD, as Python's decode(errors="replace") and Rust's
 * String::from_utf8_lossy do. A new NUL-terminated string (free()); its
 * length in *out_len when out_len is not NULL. NULL when out of memory. */
char *sc_utf8_lossy(const char *s, size_t n, size_t *out_len);

#endif
