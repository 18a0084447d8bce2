/* config_impl.h — reading and writing config.json fields, shared by
 * config.c and the family files that parse their own keys. Not a public
 * header. Every reader names the field in its error. */
#ifndef SC_CONFIG_IMPL_H
#define SC_CONFIG_IMPL_H

#include <cjson/cJSON.h>

#include "sc_config.h"

/* A required integer field, trying its aliases (NULL-terminated) in order. */
sc_err sc_cfg_int(const cJSON *root, const char *const *keys, int *out);
/* An optional integer field: *out keeps dflt when absent or null. */
sc_err sc_cfg_int_opt(const cJSON *root, const char *key, int dflt, int *out);
/* An optional number field in (lo, hi): *out keeps dflt when absent/null. */
sc_err sc_cfg_num_opt(const cJSON *root, const char *key, double dflt, double lo, double hi,
		      double *out);
/* An optional boolean: *out = dflt when absent or null. */
sc_err sc_cfg_bool_opt(const cJSON *root, const char *key, int dflt, int *out);
/* A boolean that must be absent, null or equal to want (why: the reason). */
sc_err sc_cfg_bool_must(const cJSON *root, const char *key, int want, const char *why);
/* An optional string field that, when present, must be one of allowed
 * (NULL-terminated); *out borrows root's string or is NULL. */
sc_err sc_cfg_str_one_of(const cJSON *root, const char *key, const char *const *allowed,
			 const char **out);

/* The shortest decimal that reads back as f (1e-5f -> 1e-05). */
double sc_cfg_short_float(float f);

#endif
