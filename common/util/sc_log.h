/* sc_log.h — one-line log records to stderr.
 *
 * Format: "2026-11-28T10:00:00.123Z level module: message". The level
 * threshold comes from sc_log_set_level() or SPLITCHAIN_LOG=debug|info|warn|error.
 * Thread-safe: each record is written with a single write(2).
 */
#ifndef SC_LOG_H
#define SC_LOG_H

enum sc_log_level { SC_LOG_DEBUG, SC_LOG_INFO, SC_LOG_WARN, SC_LOG_ERROR, SC_LOG_OFF };

void sc_log_set_level(enum sc_log_level level);
enum sc_log_level sc_log_get_level(void);
/* How many records of level this process has logged or would have (the
 * threshold aside) since it started: the daemons' error counters. */
unsigned long long sc_log_count(enum sc_log_level level);
void sc_log(enum sc_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define sc_debug(mod, ...) sc_log(SC_LOG_DEBUG, mod, __VA_ARGS__)
#define sc_info(mod, ...)  sc_log(SC_LOG_INFO, mod, __VA_ARGS__)
#define sc_warn(mod, ...)  sc_log(SC_LOG_WARN, mod, __VA_ARGS__)
#define sc_error(mod, ...) sc_log(SC_LOG_ERROR, mod, __VA_ARGS__)

#endif
