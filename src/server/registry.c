/*
 * registry.c - the models of one server, loaded on demand (see registry.h).
 *
 * A list of entries, one per model file loading or loaded, under one mutex. A load runs
 * in the requesting thread with the mutex released (the entry says LOADING; others that
 * want the same model wait for it); making room unloads idle entries, least recently
 * used first. The keep-alive thread unloads idle entries when their time is up. An
 * entry's reference count is the requests holding it: it is never unloaded above zero.
 */
#include <dirent.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "chat/chat.h"
#include "server/gen.h"
#include "server/http.h"
#include "server/prompt.h"
#include "server/registry.h"

enum ent_state { ENT_LOADING, ENT_READY };

struct ent {
    struct reg_model m;          /* what users see; first member */
    char real[PATH_MAX];         /* canonical path: the key */
    enum ent_state state;
    int refs;                    /* requests holding it */
    uint64_t t_used_ns;          /* when the last request ended (or began) */
    struct ent *next;
};

struct registry {
    struct http_server *srv;
    char dir[4096];              /* the model directory ("" when unknown) */
    char def_real[PATH_MAX];     /* canonical path of the default model */
    char def_name[128];
    pthread_mutex_t mu;          /* guards the list, states and counts */
    pthread_cond_t cv;           /* a load ended, a model became idle, stopping */
    struct ent *head;
    bool stopping;
    pthread_t keeper;
    bool keeper_started;
};

static void stem_of(const char *path, char *out, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && strcmp(base + n - 5, ".gguf") == 0)
        n -= 5;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, base, n);
    out[n] = '\0';
}

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The file a request's name picks, by itself: the default model's own name, a catalogue
 * name (or its Ollama spelling or file name), or a file of the model directory by name or
 * stem. False for any other name (which then means the default model). */
static bool resolve(const struct registry *reg, const char *name, char *out, size_t cap)
{
    char bare[256];
    if (!name || !*name)
        return false;
    /* Ollama's default tag: "NAME:latest" is NAME */
    const size_t nlen = strlen(name);
    if (nlen > 7 && nlen < sizeof(bare) && strcmp(name + nlen - 7, ":latest") == 0) {
        memcpy(bare, name, nlen - 7);
        bare[nlen - 7] = '\0';
        name = bare;
    }
    if (strcmp(name, reg->def_name) == 0) {
        snprintf(out, cap, "%s", reg->def_real);
        return true;
    }
    if (!reg->dir[0])
        return false;
    const struct pv_catalog_entry *e = pv_catalog_find(name);
    int n;
    if (e) {
        n = snprintf(out, cap, "%s/%s", reg->dir, e->file);
        if (n > 0 && (size_t)n < cap && is_file(out))
            return true;
    }
    /* a plain file name of the directory: no path, no hidden files */
    if (strchr(name, '/') || name[0] == '.')
        return false;
    const size_t len = strlen(name);
    const bool has_ext = len > 5 && strcmp(name + len - 5, ".gguf") == 0;
    n = snprintf(out, cap, "%s/%s%s", reg->dir, name, has_ext ? "" : ".gguf");
    if (n > 0 && (size_t)n < cap && is_file(out))
        return true;
    /* an MLX model directory of the model directory */
    n = snprintf(out, cap, "%s/%s", reg->dir, name);
    return n > 0 && (size_t)n < cap && pv_model_is_dir(out);
}

bool registry_knows(const struct registry *reg, const char *name)
{
    char path[PATH_MAX];
    return resolve(reg, name, path, sizeof(path));
}

const char *registry_default_name(const struct registry *reg)
{
    return reg->def_name;
}

/* ---- load and unload ----------------------------------------------------------------- */

/* Free a loaded model (its engine ends what still runs). No lock held. */
static void unload(struct registry *reg, struct ent *x, const char *why)
{
    if (x->state == ENT_READY)
        log_info("model %s unloaded (%s)", x->m.name, why);
    gen_engine_free(x->m.engine);
    chat_template_free(x->m.tmpl);
    chat_token_table_free(x->m.tok_table);
    free(x);
    PV_UNUSED(reg);
}

static void unlink_ent(struct registry *reg, struct ent *x)
{
    for (struct ent **pp = &reg->head; *pp; pp = &(*pp)->next)
        if (*pp == x) {
            *pp = x->next;
            return;
        }
}

/* The idle loaded entry used least recently, other than `keep`; NULL when none. Under mu. */
static struct ent *lru_idle(struct registry *reg, const struct ent *keep)
{
    struct ent *best = NULL;
    for (struct ent *x = reg->head; x; x = x->next)
        if (x != keep && x->state == ENT_READY && x->refs == 0 &&
            (!best || x->t_used_ns < best->t_used_ns))
            best = x;
    return best;
}

/* Make room for `self` (LOADING, charge self->m.mem_bytes): unload idle models, least
 * recently used first, until the loaded count and bytes fit the budget. mu held on entry
 * and exit (released while unloading). */
static enum pv_status make_room(struct registry *reg, struct ent *self, struct pv_err *err)
{
    const struct server_params *p = &reg->srv->p;
    if (p->max_memory_bytes && self->m.mem_bytes > p->max_memory_bytes) {
        char need[32], have[32];
        format_bytes(self->m.mem_bytes, need, sizeof(need));
        format_bytes(p->max_memory_bytes, have, sizeof(have));
        return pv_err_set(err, PV_ERR_NOMEM,
                          "model '%s' needs %s (weights, kv cache and scratch), more than the "
                          "server's --max-memory of %s",
                          self->m.name, need, have);
    }
    for (;;) {
        int n = 0;
        uint64_t bytes = 0;
        for (struct ent *x = reg->head; x; x = x->next) {
            n++;
            bytes += x->m.mem_bytes;
        }
        const bool over_count = p->max_loaded > 0 && n > p->max_loaded;
        const bool over_bytes = p->max_memory_bytes && bytes > p->max_memory_bytes;
        if (!over_count && !over_bytes)
            return PV_OK;
        struct ent *victim = lru_idle(reg, self);
        if (!victim)
            return pv_err_set(err, PV_ERR_OVERLOADED,
                              "model '%s' cannot be loaded now: the models loaded (%s) have "
                              "requests in flight; try again when they finish",
                              self->m.name,
                              over_count ? "--max-loaded" : "--max-memory");
        unlink_ent(reg, victim);
        pthread_mutex_unlock(&reg->mu);
        unload(reg, victim, over_count ? "room for another model: --max-loaded"
                                       : "room for another model: --max-memory");
        pthread_mutex_lock(&reg->mu);
    }
}

/* Load self's file: model, budget, engine (retried after unloading an idle model when
 * the machine's memory is short), chat template. mu held on entry and exit. */
static enum pv_status load(struct registry *reg, struct ent *self, struct pv_err *err)
{
    struct pv_model *model = NULL;
    enum pv_status st;
    const uint64_t t0 = clock_now_ns();

    pthread_mutex_unlock(&reg->mu);
    st = pv_model_load(self->m.path, NULL, &model, err);
    if (st == PV_OK)
        st = gen_engine_estimate(reg->srv, model, &self->m.mem_bytes, err);
    pthread_mutex_lock(&reg->mu);
    if (st == PV_OK)
        st = make_room(reg, self, err);
    while (st == PV_OK) {
        pthread_mutex_unlock(&reg->mu);
        st = gen_engine_new(reg->srv, model, &self->m.engine, err);
        model = NULL; /* taken over */
        pthread_mutex_lock(&reg->mu);
        if (st != PV_ERR_NOMEM)
            break;
        /* the machine is short of memory: an idle model makes room, then try again */
        struct ent *victim = lru_idle(reg, self);
        if (!victim)
            break;
        unlink_ent(reg, victim);
        pthread_mutex_unlock(&reg->mu);
        unload(reg, victim, "room for another model: memory");
        st = pv_model_load(self->m.path, NULL, &model, err);
        pthread_mutex_lock(&reg->mu);
    }
    pv_model_free(model);
    if (st != PV_OK)
        return st;
    pthread_mutex_unlock(&reg->mu);
    st = prompt_init(&self->m, err);
    pthread_mutex_lock(&reg->mu);
    if (st != PV_OK)
        return st;
    char mem[32];
    format_bytes(self->m.mem_bytes, mem, sizeof(mem));
    log_info("model %s loaded in %.0f ms (%s: weights, kv cache and scratch)", self->m.name,
             (double)(clock_now_ns() - t0) / 1e6, mem);
    return PV_OK;
}

enum pv_status registry_acquire(struct registry *reg, const char *name, struct reg_model **out,
                                struct pv_err *err)
{
    char path[PATH_MAX], real[PATH_MAX];
    *out = NULL;
    if (!resolve(reg, name, path, sizeof(path)))
        snprintf(path, sizeof(path), "%s", reg->def_real);
    if (!realpath(path, real))
        snprintf(real, sizeof(real), "%s", path);

    pthread_mutex_lock(&reg->mu);
    for (;;) {
        if (reg->stopping) {
            pthread_mutex_unlock(&reg->mu);
            return pv_err_set(err, PV_ERR_OVERLOADED, "server is shutting down");
        }
        struct ent *x = reg->head;
        while (x && strcmp(x->real, real) != 0)
            x = x->next;
        if (x && x->state == ENT_READY) {
            x->refs++;
            x->t_used_ns = clock_now_ns();
            pthread_mutex_unlock(&reg->mu);
            *out = &x->m;
            return PV_OK;
        }
        if (x) {
            pthread_cond_wait(&reg->cv, &reg->mu); /* another request is loading it */
            continue;
        }
        struct ent *self = xcalloc(1, sizeof(*self));
        snprintf(self->real, sizeof(self->real), "%s", real);
        snprintf(self->m.path, sizeof(self->m.path), "%s", real);
        stem_of(path, self->m.name, sizeof(self->m.name)); /* as the directory lists it */
        self->m.is_default = strcmp(real, reg->def_real) == 0;
        if (self->m.is_default)
            snprintf(self->m.name, sizeof(self->m.name), "%s", reg->def_name);
        self->state = ENT_LOADING;
        self->next = reg->head;
        reg->head = self;
        enum pv_status st = load(reg, self, err);
        if (st != PV_OK) {
            unlink_ent(reg, self);
            pthread_cond_broadcast(&reg->cv);
            pthread_mutex_unlock(&reg->mu);
            log_warn("model %s not loaded: %s", self->m.name, err->msg);
            unload(reg, self, "");
            return st;
        }
        self->state = ENT_READY;
        self->refs = 1;
        self->t_used_ns = clock_now_ns();
        pthread_cond_broadcast(&reg->cv);
        pthread_mutex_unlock(&reg->mu);
        *out = &self->m;
        return PV_OK;
    }
}

void registry_release(struct registry *reg, struct reg_model *m)
{
    if (!m)
        return;
    struct ent *x = (struct ent *)m;
    pthread_mutex_lock(&reg->mu);
    x->refs--;
    x->t_used_ns = clock_now_ns();
    if (x->refs == 0)
        pthread_cond_broadcast(&reg->cv); /* the keep-alive clock starts */
    pthread_mutex_unlock(&reg->mu);
}

/* ---- keep-alive ------------------------------------------------------------------------ */

/* Unloads idle models (not the default) --keep-alive seconds after their last request. */
static void *keeper_main(void *arg)
{
    struct registry *reg = arg;
    const long keep_s = reg->srv->p.keep_alive_s;
    const uint64_t keep_ns = keep_s > 0 ? (uint64_t)keep_s * 1000000000ull : 0;
    pthread_mutex_lock(&reg->mu);
    while (!reg->stopping) {
        const uint64_t now = clock_now_ns();
        uint64_t next_ns = 0; /* earliest expiry still ahead; 0: none */
        struct ent *due = NULL;
        for (struct ent *x = reg->head; x && keep_s >= 0; x = x->next) {
            if (x->state != ENT_READY || x->refs > 0 || x->m.is_default)
                continue;
            const uint64_t at = x->t_used_ns + keep_ns;
            if (at <= now) {
                due = x;
                break;
            }
            if (!next_ns || at < next_ns)
                next_ns = at;
        }
        if (due) {
            unlink_ent(reg, due);
            pthread_mutex_unlock(&reg->mu);
            char why[64];
            snprintf(why, sizeof(why), "idle for --keep-alive %lds", keep_s);
            unload(reg, due, why);
            pthread_mutex_lock(&reg->mu);
            continue;
        }
        if (!next_ns) {
            pthread_cond_wait(&reg->cv, &reg->mu);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        const uint64_t wait_ns = next_ns - now;
        ts.tv_sec += (time_t)(wait_ns / 1000000000ull);
        ts.tv_nsec += (long)(wait_ns % 1000000000ull);
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&reg->cv, &reg->mu, &ts);
    }
    pthread_mutex_unlock(&reg->mu);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------- */

enum pv_status registry_new(struct http_server *srv, struct registry **out, struct pv_err *err)
{
    struct registry *reg = xcalloc(1, sizeof(*reg));
    struct reg_model *m;
    *out = NULL;
    reg->srv = srv;
    pthread_mutex_init(&reg->mu, NULL);
    pthread_cond_init(&reg->cv, NULL);
    if (srv->p.models_dir)
        snprintf(reg->dir, sizeof(reg->dir), "%s", srv->p.models_dir);
    if (!realpath(srv->p.model_path, reg->def_real))
        snprintf(reg->def_real, sizeof(reg->def_real), "%s", srv->p.model_path);
    stem_of(srv->p.model_path, reg->def_name, sizeof(reg->def_name));

    enum pv_status st = registry_acquire(reg, NULL, &m, err);
    if (st != PV_OK)
        goto fail;
    registry_release(reg, m);
    if (pthread_create(&reg->keeper, NULL, keeper_main, reg) == 0)
        reg->keeper_started = true;
    else
        log_warn("cannot start the keep-alive thread: idle models stay loaded");
    *out = reg;
    return PV_OK;
fail:
    registry_free(reg);
    return st;
}

void registry_shutdown(struct registry *reg)
{
    if (!reg)
        return;
    pthread_mutex_lock(&reg->mu);
    reg->stopping = true;
    pthread_cond_broadcast(&reg->cv);
    pthread_mutex_unlock(&reg->mu);
    if (reg->keeper_started) {
        pthread_join(reg->keeper, NULL);
        reg->keeper_started = false;
    }
    /* loads in progress finish (their requesters then see `stopping`); engines end */
    pthread_mutex_lock(&reg->mu);
    for (struct ent *x = reg->head; x; x = x->next)
        if (x->state == ENT_READY)
            gen_engine_shutdown(x->m.engine);
    pthread_mutex_unlock(&reg->mu);
}

void registry_free(struct registry *reg)
{
    if (!reg)
        return;
    registry_shutdown(reg);
    pthread_mutex_lock(&reg->mu);
    while (reg->head) {
        struct ent *x = reg->head;
        if (x->state == ENT_LOADING) {
            pthread_cond_wait(&reg->cv, &reg->mu);
            continue;
        }
        reg->head = x->next;
        pthread_mutex_unlock(&reg->mu);
        unload(reg, x, "server stopped");
        pthread_mutex_lock(&reg->mu);
    }
    pthread_mutex_unlock(&reg->mu);
    pthread_mutex_destroy(&reg->mu);
    pthread_cond_destroy(&reg->cv);
    free(reg);
}

/* ---- listing ---------------------------------------------------------------------------- */

/* The .gguf files and MLX model directories of `dir` (not hidden); the caller frees each
 * and the array. */
static size_t list_files(const char *dir, char ***out)
{
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    DIR *d = opendir(dir);
    *out = NULL;
    if (!d)
        return 0;
    while ((e = readdir(d))) {
        const size_t len = strlen(e->d_name);
        char sub[PATH_MAX];
        const int w = snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name);
        const bool mlx = w > 0 && (size_t)w < sizeof(sub) && pv_model_is_dir(sub);
        if (e->d_name[0] != '.' &&
            (mlx || (len > 5 && strcmp(e->d_name + len - 5, ".gguf") == 0))) {
            names = xrealloc(names, (n + 1) * sizeof(*names));
            names[n++] = xstrdup(e->d_name);
        }
    }
    closedir(d);
    *out = names;
    return n;
}

static int by_name(const void *a, const void *b)
{
    const struct reg_info *x = a, *y = b;
    if (x->is_default != y->is_default)
        return x->is_default ? -1 : 1;
    return strcmp(x->name, y->name);
}

size_t registry_list(struct registry *reg, bool loaded_only, struct reg_info **out)
{
    char **files = NULL;
    size_t n_files = 0;
    if (!loaded_only && reg->dir[0])
        n_files = list_files(reg->dir, &files);
    pthread_mutex_lock(&reg->mu);
    size_t n_ents = 0;
    for (struct ent *x = reg->head; x; x = x->next)
        n_ents++;
    struct reg_info *v = xcalloc(n_files + n_ents + 1, sizeof(*v));
    size_t n = 0;
    const uint64_t now = clock_now_ns();
    const long keep_s = reg->srv->p.keep_alive_s;
    for (struct ent *x = reg->head; x; x = x->next) {
        if (x->state != ENT_READY)
            continue;
        struct reg_info *i = &v[n++];
        snprintf(i->name, sizeof(i->name), "%s", x->m.name);
        i->loaded = true;
        i->is_default = x->m.is_default;
        i->in_use = x->refs;
        i->mem_bytes = x->m.mem_bytes;
        i->idle_s = x->refs ? 0 : (double)(now - x->t_used_ns) / 1e9;
        i->expires_in_s = x->refs || x->m.is_default || keep_s < 0
                              ? -1
                              : PV_MAX(0.0, (double)keep_s - i->idle_s);
        struct gen_usage u;
        gen_engine_usage(x->m.engine, &u);
        i->n_ctx = gen_engine_n_ctx(x->m.engine);
        i->kv_used = u.kv_used;
        i->kv_capacity = u.kv_capacity;
        i->kv_preempted = u.kv_preempted;
        i->slots_busy = u.slots_busy;
        i->queued = u.queued;
        i->sched = u.sched;
    }
    const size_t n_loaded = n;
    bool def_listed = false;
    for (size_t k = 0; k < n_loaded; k++)
        def_listed = def_listed || v[k].is_default;
    if (!def_listed && !loaded_only) {
        snprintf(v[n].name, sizeof(v[n].name), "%s", reg->def_name);
        v[n].is_default = true;
        n++;
    }
    pthread_mutex_unlock(&reg->mu);
    for (size_t f = 0; f < n_files; f++) {
        char path[PATH_MAX], real[PATH_MAX], stem[128];
        const int w = snprintf(path, sizeof(path), "%s/%s", reg->dir, files[f]);
        if (w < 0 || (size_t)w >= sizeof(path) || !realpath(path, real))
            snprintf(real, sizeof(real), "%s", path);
        stem_of(files[f], stem, sizeof(stem));
        bool seen = strcmp(real, reg->def_real) == 0;
        for (size_t k = 0; k < n_loaded && !seen; k++)
            seen = strcmp(v[k].name, stem) == 0;
        if (!seen) {
            snprintf(v[n].name, sizeof(v[n].name), "%s", stem);
            n++;
        }
        free(files[f]);
    }
    free(files);
    qsort(v, n, sizeof(*v), by_name);
    *out = v;
    return n;
}

void registry_cache_usage(struct registry *reg, struct pv_sched_usage *out, uint64_t *mem_bytes)
{
    struct reg_info *v;
    const size_t n = registry_list(reg, true, &v);
    memset(out, 0, sizeof(*out));
    *mem_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        const struct pv_sched_usage *c = &v[i].sched;
        out->kv_positions += c->kv_positions;
        out->kv_positions_used += c->kv_positions_used;
        out->kv_positions_cached += c->kv_positions_cached;
        out->prompt_tokens += c->prompt_tokens;
        out->mem_hit_tokens += c->mem_hit_tokens;
        out->disk_hit_tokens += c->disk_hit_tokens;
        out->disk_hits += c->disk_hits;
        out->disk_misses += c->disk_misses;
        out->disk_bytes_read += c->disk_bytes_read;
        out->disk_bytes_written += c->disk_bytes_written;
        out->disk_writes += c->disk_writes;
        out->disk_evictions += c->disk_evictions;
        out->disk_invalid += c->disk_invalid;
        out->disk_dropped += c->disk_dropped;
        /* each model's positions at its own size */
        *mem_bytes += (c->kv_positions_used + c->kv_positions_cached) * c->kv_position_bytes;
        if (c->disk_enabled) {
            out->disk_enabled = true;
            out->disk_ready = out->disk_ready || c->disk_ready;
        }
        out->disk_files = PV_MAX(out->disk_files, c->disk_files);
        out->disk_bytes = PV_MAX(out->disk_bytes, c->disk_bytes);
        out->disk_max_bytes = PV_MAX(out->disk_max_bytes, c->disk_max_bytes);
    }
    free(v);
}
