/*
 * preflight.c - what `pensieve serve` checks before it loads a model for good: that the
 * port can be bound, that every slot's context fits in memory, and what the model is.
 *
 * Each failure names what failed and what would work instead (another port, a context
 * size that fits), so a mistake costs seconds, not a model load.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/cli.h"

void cli_check_port(const char *host, int port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        len = sizeof(*in4);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        len = sizeof(*in6);
    } else {
        cli_die("serve", 2, "--host '%s': give an IP address (127.0.0.1, 0.0.0.0, ::1, ::)",
                host);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    if (fd < 0)
        return; /* the server's own bind will say what is wrong */
    int one = 1;
    /* SO_REUSEADDR (not SO_REUSEPORT): a socket in TIME_WAIT is no obstacle, a listener is */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
        int e = errno;
        close(fd);
        if (e == EADDRINUSE)
            cli_die("serve", 1,
                    "port %d on %s is already in use (another pensieve? `pensieve stop --port "
                    "%d` stops one); choose another with --port",
                    port, host, port);
        if (e == EADDRNOTAVAIL)
            cli_die("serve", 1,
                    "cannot listen on %s:%d: %s is not an address of this machine (use "
                    "127.0.0.1 for this machine only, 0.0.0.0 for every interface)",
                    host, port, host);
        if (e == EACCES)
            cli_die("serve", 1,
                    "cannot listen on %s:%d: ports below 1024 need root; choose --port 1024 "
                    "or above",
                    host, port);
        cli_die("serve", 1, "cannot listen on %s:%d: %s", host, port, strerror(e));
    }
    close(fd);
}

/* MemAvailable of /proc/meminfo in bytes; false when it cannot be read. */
static bool mem_available(uint64_t *out)
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

/* KV + scratch of one slot of n_ctx positions; false when the estimate fails. */
static bool slot_bytes(const struct pv_model *m, uint32_t n_ctx, uint64_t *out)
{
    struct pv_context_params cp = pv_context_default_params();
    struct pv_memory_estimate est;
    cp.n_ctx = n_ctx;
    if (pv_context_estimate(m, &cp, &est, NULL) != PV_OK)
        return false;
    *out = est.kv_bytes + est.compute_bytes;
    return true;
}

void cli_check_model(const char *path, int n_ctx_arg, int n_slots)
{
    struct pv_model *m;
    struct pv_err err = {0};
    char name[256];
    const char *base = strrchr(path, '/');
    snprintf(name, sizeof(name), "%s", base ? base + 1 : path);

    if (pv_model_load(path, NULL, &m, &err) != PV_OK)
        cli_die("serve", 1, "%s", err.msg);
    uint32_t train = pv_model_n_ctx_train(m);
    uint32_t n_ctx = n_ctx_arg > 0 ? (uint32_t)n_ctx_arg : PV_MIN(train, 32768u);
    if (!pv_model_chat_template(m))
        fprintf(stderr,
                "pensieve serve: warning: %s has no chat template: it is a base model that "
                "continues text and cannot hold a conversation (requests get a generic "
                "template). For chat and Claude Code serve an instruction-tuned model: "
                "`pensieve pull %s`\n",
                name, PV_DEFAULT_MODEL);
    if (train && n_ctx > train)
        fprintf(stderr,
                "pensieve serve: warning: --ctx-size %u is %.1fx the model's training context "
                "(%u): past it the model's output degrades\n",
                n_ctx, (double)n_ctx / train, train);

    uint64_t avail, per_slot;
    if (mem_available(&avail) && slot_bytes(m, n_ctx, &per_slot)) {
        /* mapped weights are file-backed: only KV and scratch must fit in MemAvailable */
        uint64_t need = per_slot * (uint64_t)n_slots;
        if (need > avail) {
            char s_need[32], s_avail[32], s_slot[32];
            format_bytes(need, s_need, sizeof(s_need));
            format_bytes(avail, s_avail, sizeof(s_avail));
            format_bytes(per_slot, s_slot, sizeof(s_slot));
            /* the largest context that fits with these slots, and the slots at this ctx */
            uint32_t lo = 0, hi = n_ctx;
            while (lo + 256 < hi) {
                uint32_t mid = lo + (hi - lo) / 2;
                uint64_t b;
                if (slot_bytes(m, mid, &b) && b * (uint64_t)n_slots <= avail)
                    lo = mid;
                else
                    hi = mid;
            }
            lo -= lo % 256;
            uint64_t fit_slots = per_slot ? avail / per_slot : 0;
            pv_model_free(m);
            if (lo >= 256)
                cli_die("serve", 1,
                        "not enough memory: %d slot(s) x %u tokens need %s (%s each: KV cache "
                        "and scratch, beside the mapped weights), %s available. What fits: "
                        "--ctx-size %u with --parallel %d%s",
                        n_slots, n_ctx, s_need, s_slot, s_avail, lo, n_slots,
                        fit_slots >= 1 ? ", or fewer slots" : "");
            cli_die("serve", 1,
                    "not enough memory: %d slot(s) x %u tokens need %s, %s available, and even "
                    "a 256-token context does not fit",
                    n_slots, n_ctx, s_need, s_avail);
        }
    }
    pv_model_free(m);
}
