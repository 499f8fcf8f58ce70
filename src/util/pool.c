/*
 * pool.c - the fork-join worker pool that compute kernels fan out on, and clocks.
 *
 * pool_run() publishes a job by bumping a generation counter; workers spin on it for a
 * short while (decode steps come every few milliseconds, and waking a sleeping thread
 * costs more than a step of a small model), then sleep on a condition variable. The
 * parts 0..nth-1 of a job are claimed by whichever thread gets to them first, the caller
 * included, so a worker that the OS has not scheduled yet delays nothing: the caller
 * runs its part and only waits for parts already running elsewhere. A thread that has
 * spun POOL_YIELD_AFTER times yields the CPU between spins: on a machine with more
 * runnable threads than cores, the thread it waits for may need that very core.
 */
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "util/util.h"

#define POOL_SPIN_ITERS 200000
#define POOL_YIELD_AFTER 2000

struct pv_pool {
    int n_threads;
    pthread_t *threads;          /* [n_threads - 1] workers */
    pv_pool_fn fn;               /* current job */
    void *ctx;
    atomic_uint generation;      /* bumped once per job */
    atomic_ullong claim;         /* (generation << 32) | next unclaimed part */
    atomic_int done;             /* parts of the current job finished */
    atomic_bool stop;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int sleepers;                /* workers waiting on `wake`, under lock */
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* One wait of a spin loop at count *spins; a yield (a system call, about as long as 50
 * pauses) counts 50, so a loop that gives up after POOL_SPIN_ITERS spins about as long. */
static inline void spin_wait(int *spins)
{
    if (*spins < POOL_YIELD_AFTER) {
        cpu_relax();
        *spins += 1;
    } else {
        sched_yield();
        *spins += *spins < INT_MAX - 50 ? 50 : 0;
    }
}

/* Claim and run parts of job `gen` until none is left (or a newer job has started). */
static void run_parts(struct pv_pool *pool, unsigned gen)
{
    const int nth = pool->n_threads;
    for (;;) {
        unsigned long long c = atomic_load_explicit(&pool->claim, memory_order_acquire);
        if ((unsigned)(c >> 32) != gen || (int)(c & 0xffffffffu) >= nth)
            return;
        if (!atomic_compare_exchange_weak_explicit(&pool->claim, &c, c + 1,
                                                   memory_order_acq_rel, memory_order_acquire))
            continue;
        pool->fn(pool->ctx, (int)(c & 0xffffffffu), nth);
        atomic_fetch_add_explicit(&pool->done, 1, memory_order_release);
    }
}

static void *worker_main(void *p)
{
    struct pv_pool *pool = p;
    unsigned seen = 0;

    for (;;) {
        unsigned gen;
        int spins = 0;
        while ((gen = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen &&
               !atomic_load(&pool->stop)) {
            if (spins < POOL_SPIN_ITERS) {
                spin_wait(&spins);
                continue;
            }
            pthread_mutex_lock(&pool->lock);
            pool->sleepers++;
            while (atomic_load(&pool->generation) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->wake, &pool->lock);
            pool->sleepers--;
            pthread_mutex_unlock(&pool->lock);
        }
        if (atomic_load(&pool->stop))
            return NULL;
        seen = gen;
        run_parts(pool, gen);
    }
}

struct pv_pool *pool_new(int n_threads)
{
    struct pv_pool *pool = xcalloc(1, sizeof(*pool));
    if (n_threads < 1)
        n_threads = 1;
    pool->n_threads = n_threads;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pool->threads = xcalloc((size_t)n_threads, sizeof(pthread_t));
    for (int i = 1; i < n_threads; i++)
        if (pthread_create(&pool->threads[i - 1], NULL, worker_main, pool) != 0)
            PV_BUG("cannot start worker thread %d", i);
    return pool;
}

void pool_free(struct pv_pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    atomic_store(&pool->stop, true);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 1; i < pool->n_threads; i++)
        pthread_join(pool->threads[i - 1], NULL);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->wake);
    free(pool->threads);
    free(pool);
}

int pool_size(const struct pv_pool *pool)
{
    return pool->n_threads;
}

void pool_run(struct pv_pool *pool, pv_pool_fn fn, void *ctx)
{
    if (pool->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    unsigned gen = atomic_load(&pool->generation) + 1;
    pool->fn = fn;
    pool->ctx = ctx;
    atomic_store(&pool->done, 0);
    atomic_store_explicit(&pool->claim, (unsigned long long)gen << 32, memory_order_release);
    atomic_store_explicit(&pool->generation, gen, memory_order_release);
    pthread_mutex_lock(&pool->lock);
    if (pool->sleepers)
        pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    run_parts(pool, gen);
    for (int spins = 0; atomic_load_explicit(&pool->done, memory_order_acquire) < pool->n_threads;)
        spin_wait(&spins); /* the caller never sleeps: parts still run elsewhere */
}

void pool_split(size_t n, int ith, int nth, size_t *begin, size_t *end)
{
    size_t per = n / (size_t)nth, rest = n % (size_t)nth;
    size_t i = (size_t)ith;
    *begin = i * per + (i < rest ? i : rest);
    *end = *begin + per + (i < rest ? 1 : 0);
}

int cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

bool mem_available_bytes(uint64_t *out)
{
    char line[256];
    bool found = false;
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return false;
    while (fgets(line, sizeof(line), f)) {
        unsigned long long kib;
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) {
            *out = (uint64_t)kib * 1024;
            found = true;
            break;
        }
    }
    fclose(f);
    return found;
}

uint64_t clock_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double clock_wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
