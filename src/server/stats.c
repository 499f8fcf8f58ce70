/*
 * stats.c - the server's counters: what /health summarises and /metrics exposes.
 *
 * Requests by endpoint and status, prompt and generated tokens, time-to-first-token and
 * inter-token latency histograms, recent request latencies (a ring of the last 1024 for
 * the mean and p95), queue depth. One mutex; updated once per request and once per token.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/gen.h"
#include "server/http.h"

#define N_SERIES 64
#define N_RING 1024

static const double ttft_bounds[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
static const double itl_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
#define N_TTFT (sizeof(ttft_bounds) / sizeof(ttft_bounds[0]))
#define N_ITL (sizeof(itl_bounds) / sizeof(itl_bounds[0]))

struct series {
    char endpoint[48];
    int status;
    uint64_t count;
};

static struct {
    pthread_mutex_t mu;
    struct series series[N_SERIES];
    int n_series;
    uint64_t n_requests, n_errors;
    uint64_t prompt_tokens, output_tokens;
    uint64_t ttft_hist[N_TTFT + 1];
    double ttft_sum;
    uint64_t ttft_count;
    uint64_t itl_hist[N_ITL + 1];
    double itl_sum;
    uint64_t itl_count;
    double lat_ring[N_RING]; /* ms of the most recent generation requests */
    double tok_ring[N_RING]; /* output tokens of the same requests */
    double end_ring[N_RING]; /* monotonic seconds when they ended */
    int ring_n, ring_head;
    int queue_depth;
} st = {.mu = PTHREAD_MUTEX_INITIALIZER};

void http_stats_init(void)
{
    pthread_mutex_lock(&st.mu);
    st.n_series = 0;
    st.n_requests = st.n_errors = 0;
    pthread_mutex_unlock(&st.mu);
}

static void hist_add(uint64_t *hist, const double *bounds, size_t n, double v)
{
    size_t i = 0;
    while (i < n && v > bounds[i])
        i++;
    hist[i]++;
}

void http_stats_request(const char *endpoint, int status, int n_prompt, int n_output,
                        double ttft_ms, double duration_ms)
{
    pthread_mutex_lock(&st.mu);
    int i;
    for (i = 0; i < st.n_series; i++)
        if (st.series[i].status == status && strcmp(st.series[i].endpoint, endpoint) == 0)
            break;
    if (i == st.n_series && st.n_series < N_SERIES) {
        snprintf(st.series[i].endpoint, sizeof(st.series[i].endpoint), "%s", endpoint);
        st.series[i].status = status;
        st.series[i].count = 0;
        st.n_series++;
    }
    if (i < st.n_series)
        st.series[i].count++;
    st.n_requests++;
    if (status >= 400)
        st.n_errors++;
    st.prompt_tokens += (uint64_t)(n_prompt > 0 ? n_prompt : 0);
    st.output_tokens += (uint64_t)(n_output > 0 ? n_output : 0);
    if (ttft_ms >= 0) {
        hist_add(st.ttft_hist, ttft_bounds, N_TTFT, ttft_ms / 1e3);
        st.ttft_sum += ttft_ms / 1e3;
        st.ttft_count++;
    }
    if (n_prompt > 0 || n_output > 0) {
        st.lat_ring[st.ring_head] = duration_ms;
        st.tok_ring[st.ring_head] = n_output;
        st.end_ring[st.ring_head] = (double)clock_now_ns() / 1e9;
        st.ring_head = (st.ring_head + 1) % N_RING;
        if (st.ring_n < N_RING)
            st.ring_n++;
    }
    pthread_mutex_unlock(&st.mu);
}

void http_stats_itl(double ms)
{
    pthread_mutex_lock(&st.mu);
    hist_add(st.itl_hist, itl_bounds, N_ITL, ms / 1e3);
    st.itl_sum += ms / 1e3;
    st.itl_count++;
    pthread_mutex_unlock(&st.mu);
}

void http_stats_queue(int depth)
{
    pthread_mutex_lock(&st.mu);
    st.queue_depth = depth;
    pthread_mutex_unlock(&st.mu);
}

uint64_t http_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, rss = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &rss) != 2)
        rss = 0;
    fclose(f);
    return (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void http_stats_health(json_t *obj, const struct http_server *srv)
{
    double lat[N_RING];
    const double now = (double)clock_now_ns() / 1e9;
    const double uptime = (double)(clock_now_ns() - srv->t_start_ns) / 1e9;
    double mean = 0, p95 = 0, tokens_60 = 0;
    int n_60 = 0;

    pthread_mutex_lock(&st.mu);
    const int n = st.ring_n;
    for (int i = 0; i < n; i++) {
        lat[i] = st.lat_ring[i];
        mean += lat[i];
        if (now - st.end_ring[i] <= 60.0) {
            n_60++;
            tokens_60 += st.tok_ring[i];
        }
    }
    const uint64_t n_req = st.n_requests, n_err = st.n_errors;
    const uint64_t p_tok = st.prompt_tokens, o_tok = st.output_tokens;
    const int qd = st.queue_depth;
    pthread_mutex_unlock(&st.mu);

    if (n > 0) {
        mean /= n;
        qsort(lat, (size_t)n, sizeof(double), cmp_double);
        p95 = lat[(size_t)ceil(0.95 * n) - 1];
    }
    const double window = PV_MIN(60.0, PV_MAX(uptime, 1e-3));
    json_object_set_new(obj, "uptime_s", json_real(uptime));
    json_object_set_new(obj, "requests_total", json_integer((json_int_t)n_req));
    json_object_set_new(obj, "requests_per_s", json_real(n_60 / window));
    json_object_set_new(obj, "tokens_per_s", json_real(tokens_60 / window));
    json_object_set_new(obj, "prompt_tokens_total", json_integer((json_int_t)p_tok));
    json_object_set_new(obj, "generated_tokens_total", json_integer((json_int_t)o_tok));
    json_object_set_new(obj, "latency_mean_ms", json_real(mean));
    json_object_set_new(obj, "latency_p95_ms", json_real(p95));
    json_object_set_new(obj, "error_rate", json_real(n_req ? (double)n_err / n_req : 0.0));
    json_object_set_new(obj, "memory_rss_bytes", json_integer((json_int_t)http_rss_bytes()));
    json_object_set_new(obj, "queue_depth", json_integer(qd));
}

static void put_hist(struct pv_buf *b, const char *name, const char *help, const uint64_t *hist,
                     const double *bounds, size_t n, double sum, uint64_t count)
{
    uint64_t cum = 0;
    buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (size_t i = 0; i < n; i++) {
        cum += hist[i];
        buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i], (unsigned long long)cum);
    }
    cum += hist[n];
    buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name,
               (unsigned long long)cum, name, sum, name, (unsigned long long)count);
}

void http_stats_metrics(struct pv_buf *b, const struct http_server *srv)
{
    pthread_mutex_lock(&st.mu);
    buf_puts(b, "# HELP pensieve_requests_total HTTP requests by endpoint and status.\n"
                "# TYPE pensieve_requests_total counter\n");
    for (int i = 0; i < st.n_series; i++)
        buf_printf(b, "pensieve_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n",
                   st.series[i].endpoint, st.series[i].status,
                   (unsigned long long)st.series[i].count);
    buf_printf(b,
               "# HELP pensieve_prompt_tokens_total Prompt tokens of generation requests.\n"
               "# TYPE pensieve_prompt_tokens_total counter\n"
               "pensieve_prompt_tokens_total %llu\n"
               "# HELP pensieve_generated_tokens_total Tokens generated.\n"
               "# TYPE pensieve_generated_tokens_total counter\n"
               "pensieve_generated_tokens_total %llu\n",
               (unsigned long long)st.prompt_tokens, (unsigned long long)st.output_tokens);
    put_hist(b, "pensieve_time_to_first_token_seconds", "Time from request to first token.",
             st.ttft_hist, ttft_bounds, N_TTFT, st.ttft_sum, st.ttft_count);
    put_hist(b, "pensieve_inter_token_latency_seconds", "Time between generated tokens.",
             st.itl_hist, itl_bounds, N_ITL, st.itl_sum, st.itl_count);
    buf_printf(b,
               "# HELP pensieve_queue_depth Requests waiting for a generation slot.\n"
               "# TYPE pensieve_queue_depth gauge\npensieve_queue_depth %d\n",
               st.queue_depth);
    pthread_mutex_unlock(&st.mu);

    struct gen_usage u = {0};
    gen_engine_usage(srv->engine, &u);
    buf_printf(b,
               "# HELP pensieve_kv_cache_used_tokens KV cache positions in use.\n"
               "# TYPE pensieve_kv_cache_used_tokens gauge\npensieve_kv_cache_used_tokens %llu\n"
               "# HELP pensieve_kv_cache_capacity_tokens KV cache positions in all slots.\n"
               "# TYPE pensieve_kv_cache_capacity_tokens gauge\n"
               "pensieve_kv_cache_capacity_tokens %llu\n"
               "# HELP pensieve_kv_cache_usage_ratio Used over capacity.\n"
               "# TYPE pensieve_kv_cache_usage_ratio gauge\npensieve_kv_cache_usage_ratio %.6f\n"
               "# HELP pensieve_kv_cache_preemptions_total Running requests that gave their KV "
               "blocks back to go on later.\n"
               "# TYPE pensieve_kv_cache_preemptions_total counter\n"
               "pensieve_kv_cache_preemptions_total %llu\n"
               "# HELP pensieve_slots_busy Generation slots running a request.\n"
               "# TYPE pensieve_slots_busy gauge\npensieve_slots_busy %d\n"
               "# HELP pensieve_active_requests HTTP requests being handled.\n"
               "# TYPE pensieve_active_requests gauge\npensieve_active_requests %d\n"
               "# HELP pensieve_memory_rss_bytes Resident memory of the server.\n"
               "# TYPE pensieve_memory_rss_bytes gauge\npensieve_memory_rss_bytes %llu\n",
               (unsigned long long)u.kv_used, (unsigned long long)u.kv_capacity,
               u.kv_capacity ? (double)u.kv_used / (double)u.kv_capacity : 0.0,
               (unsigned long long)u.kv_preempted, u.slots_busy,
               atomic_load(&((struct http_server *)srv)->active),
               (unsigned long long)http_rss_bytes());
}
