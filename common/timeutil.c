/*
 * timeutil — clocks and ISO-8601 (contract in timeutil.h).
 *
 * The ISO-8601 parser is written by hand: strptime() has no notion of fractions or of "+HH:MM"
 * zones, accepts loose forms (optional fields, spaces) and does not check month lengths, and
 * none of the chosen libraries offers a strict one. It accepts exactly the forms timeutil.h lists.
 */
#include "timeutil.h"

#include <errno.h>
#include <stdio.h>
#include <time.h>

uint64_t time_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct timespec time_mono_timespec(uint64_t mono_ns)
{
    return (struct timespec){.tv_sec = (time_t)(mono_ns / 1000000000u),
                             .tv_nsec = (long)(mono_ns % 1000000000u)};
}

struct timespec time_mono_after_ms(long ms)
{
    return time_mono_timespec(time_mono_ns() + (uint64_t)(ms > 0 ? ms : 0) * 1000000u);
}

int64_t time_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t days_from_civil(int y, int m, int d);

void time_format_iso8601(int64_t epoch_ms, char out[ISO8601_BUF])
{
    /* ISO-8601 has four-digit years: instants outside 0000..9999 are clamped to its ends. */
    const int64_t min_ms = days_from_civil(0, 1, 1) * 86400000;
    const int64_t max_ms = days_from_civil(10000, 1, 1) * 86400000 - 1;
    if (epoch_ms < min_ms) epoch_ms = min_ms;
    if (epoch_ms > max_ms) epoch_ms = max_ms;

    /* Floor division, so instants before 1970 keep a millisecond part in 0..999. */
    int64_t secs = epoch_ms / 1000;
    int64_t millis = epoch_ms % 1000;
    if (millis < 0) {
        millis += 1000;
        secs -= 1;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    gmtime_r(&t, &tm); /* cannot fail within years 0000..9999 */
    /* The modulos only tell the compiler the widths; every field is already in range. */
    snprintf(out, ISO8601_BUF, "%04u-%02u-%02uT%02u:%02u:%02u.%03uZ",
             (unsigned)(tm.tm_year + 1900) % 10000u, (unsigned)(tm.tm_mon + 1) % 100u,
             (unsigned)tm.tm_mday % 100u, (unsigned)tm.tm_hour % 100u, (unsigned)tm.tm_min % 100u,
             (unsigned)tm.tm_sec % 100u, (unsigned)millis % 1000u);
}

static bool is_leap_year(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int days_in_month(int y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap_year(y) ? 29 : days[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date: the closed form counts 400-year eras
 * from March 1 of year 0, so it needs no table and no loop (timegm() would search). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const int64_t yoe = y - era * 400;                                  /* 0..399 */
    const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1; /* 0..365 */
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;          /* 0..146096 */
    return era * 146097 + doe - 719468;
}

/* Reads exactly n decimal digits at *p, advancing it. */
static bool read_digits(const char **p, int n, int *value)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9') return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *value = v;
    return true;
}

static bool expect(const char **p, char c)
{
    if (**p != c) return false;
    (*p)++;
    return true;
}

/* Zone designator: Z | z | (+|-)HH:MM | (+|-)HHMM. Sets the offset east of UTC in minutes. */
static bool parse_zone(const char **p, int *offset_min)
{
    char sign = **p;
    if (sign == 'Z' || sign == 'z') {
        (*p)++;
        *offset_min = 0;
        return true;
    }
    if (sign != '+' && sign != '-') return false;
    (*p)++;
    int hh, mm;
    if (!read_digits(p, 2, &hh)) return false;
    if (**p == ':') (*p)++;
    if (!read_digits(p, 2, &mm)) return false;
    if (hh > 23 || mm > 59) return false;
    *offset_min = (sign == '-' ? -1 : 1) * (hh * 60 + mm);
    return true;
}

bool time_parse_iso8601(const char *s, int64_t *epoch_ms_out)
{
    if (!s) return false;
    const char *p = s;
    int year, month, day, hour, minute, second, millis = 0, offset_min;

    if (!read_digits(&p, 4, &year) || !expect(&p, '-') || !read_digits(&p, 2, &month) ||
        !expect(&p, '-') || !read_digits(&p, 2, &day))
        return false;
    if (*p != 'T' && *p != 't') return false;
    p++;
    if (!read_digits(&p, 2, &hour) || !expect(&p, ':') || !read_digits(&p, 2, &minute) ||
        !expect(&p, ':') || !read_digits(&p, 2, &second))
        return false;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9') return false; /* "." needs at least one digit */
        int scale = 100;
        for (; *p >= '0' && *p <= '9'; p++) {
            millis += (*p - '0') * scale; /* digits past the third add 0: truncation */
            scale /= 10;
        }
    }
    if (!parse_zone(&p, &offset_min) || *p != '\0') return false;

    if (month < 1 || month > 12 || day < 1 || day > days_in_month(year, month)) return false;
    if (hour > 23 || minute > 59 || second > 60) return false;

    /* A leap second (:60) is counted as the first second of the next minute, as POSIX time
     * has no place for it. */
    int64_t secs = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second -
                   (int64_t)offset_min * 60;
    if (epoch_ms_out) *epoch_ms_out = secs * 1000 + millis;
    return true;
}

void time_sleep_ms(long ms)
{
    if (ms <= 0) return;
    /* An absolute deadline, so a signal does not stretch the total sleep. */
    struct timespec deadline = time_mono_after_ms(ms);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, NULL) == EINTR) {
    }
}

bool time_cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0) return false;
    bool ok =
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 && pthread_cond_init(cv, &attr) == 0;
    pthread_condattr_destroy(&attr);
    return ok;
}

bool time_join_thread_by(pthread_t t, uint64_t deadline_ns)
{
    for (;;) {
        if (pthread_tryjoin_np(t, NULL) == 0) return true;
        if (time_mono_ns() >= deadline_ns) return false;
        time_sleep_ms(20);
    }
}
