/*
 * log.c - leveled logging to stderr, as text lines or JSON objects.
 *
 * One mutex keeps lines whole when connection threads and the engine thread log at once.
 * Logging is for events (start-up, requests, failures), never for per-token work.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/util.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_level = -1; /* -1: not yet read from the environment */
static bool log_json;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

bool log_parse_level(const char *s, enum pv_log_level *out)
{
    for (size_t i = 0; i < PV_ARRAY_LEN(level_names); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum pv_log_level)i;
            return true;
        }
    }
    return false;
}

enum pv_log_level log_get_level(void)
{
    if (log_level < 0) {
        enum pv_log_level l = PV_LOG_INFO;
        const char *env = getenv("PENSIEVE_LOG_LEVEL");
        if (env)
            log_parse_level(env, &l);
        log_level = (int)l;
    }
    return (enum pv_log_level)log_level;
}

void log_set_level(enum pv_log_level level)
{
    log_level = (int)level;
}

void log_set_json(bool json)
{
    log_json = json;
}

bool log_is_json(void)
{
    return log_json;
}

static void format_time(char *out, size_t cap)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* Append `s` to `b` as the inside of a JSON string. */
static void json_escape_into(struct pv_buf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf_putc(b, '\\');
            buf_putc(b, (char)c);
        } else if (c == '\n') {
            buf_puts(b, "\\n");
        } else if (c < 0x20) {
            buf_printf(b, "\\u%04x", c);
        } else {
            buf_putc(b, (char)c);
        }
    }
}

void log_msg(enum pv_log_level level, const char *fmt, ...)
{
    char when[40], msg[2048];
    va_list ap;
    struct pv_buf line = PV_BUF_INIT;

    if (level < log_get_level() || level >= PV_LOG_OFF)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    format_time(when, sizeof(when));
    if (log_json) {
        buf_printf(&line, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"", when,
                   level_names[level]);
        json_escape_into(&line, msg);
        buf_puts(&line, "\"}");
    } else {
        buf_printf(&line, "%s %-5s %s", when, level_names[level], msg);
    }
    log_raw_line(line.data);
    buf_release(&line);
}

void log_raw_line(const char *line)
{
    pthread_mutex_lock(&log_lock);
    fputs(line, stderr);
    fputc('\n', stderr);
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);
}
