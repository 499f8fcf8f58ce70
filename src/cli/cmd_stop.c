/*
 * cmd_stop.c - `pensieve stop`: ask a running `pensieve serve` to shut down.
 *
 * Reads the pid file the server wrote (pensieve-PORT.pid in $XDG_RUNTIME_DIR or /tmp,
 * or --pid-file), checks that the process is a pensieve, sends SIGTERM - the server
 * then drains like on Ctrl-C - and waits until it has exited.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

void cli_default_pid_file(int port, char *out, size_t cap);

static struct cli_opt stop_opts[] = {
    {"port", 'p', CLI_INT, "PENSIEVE_PORT", "N", "port of the server to stop", "8080", 1, 65535},
    {"pid-file", 0, CLI_STRING, "PENSIEVE_PID_FILE", "PATH",
     "pid file the server wrote (default: the one `pensieve serve --port N` writes)", NULL},
    {"wait", 0, CLI_INT, "PENSIEVE_STOP_WAIT", "SECONDS",
     "how long to wait for the server to exit", "60", 0, 3600},
    {0},
};

static int stop_main(int argc, char **argv);

const struct cli_command cli_cmd_stop = {
    "stop",
    "stop a running server",
    "pensieve stop [options]",
    "Sends SIGTERM to the `pensieve serve` of --port (found through its pid file) and\n"
    "waits for it to finish its running requests and exit.",
    stop_main,
};

static bool is_pensieve(long pid)
{
    char path[64], comm[64] = "";
    snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool ok = fgets(comm, sizeof(comm), f) && strncmp(comm, "pensieve", 8) == 0;
    fclose(f);
    return ok;
}

/* Gone, or a zombie nobody has reaped yet (it has exited all the same). */
static bool has_exited(long pid)
{
    char path[64], buf[512];
    if (kill((pid_t)pid, 0) != 0 && errno == ESRCH)
        return true;
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return true;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X');
}

static int stop_main(int argc, char **argv)
{
    char pid_file[4096];
    long pid = 0;

    cli_parse(&cli_cmd_stop, stop_opts, argc, argv, NULL, 0, NULL);
    const char *pf = cli_get(stop_opts, "pid-file")->str;
    if (pf)
        snprintf(pid_file, sizeof(pid_file), "%s", pf);
    else
        cli_default_pid_file((int)cli_get(stop_opts, "port")->i, pid_file, sizeof(pid_file));
    FILE *f = fopen(pid_file, "r");
    if (!f)
        cli_die("stop", 1, "no server found: cannot read '%s' (%s)", pid_file, strerror(errno));
    if (fscanf(f, "%ld", &pid) != 1 || pid <= 1) {
        fclose(f);
        cli_die("stop", 1, "'%s' does not hold a pid", pid_file);
    }
    fclose(f);
    if (!is_pensieve(pid)) {
        unlink(pid_file);
        cli_die("stop", 1, "process %ld of '%s' is not running pensieve (stale file removed)",
                pid, pid_file);
    }
    if (kill((pid_t)pid, SIGTERM) != 0)
        cli_die("stop", 1, "cannot signal process %ld: %s", pid, strerror(errno));
    const long wait_s = cli_get(stop_opts, "wait")->i;
    for (long i = 0; i < wait_s * 10; i++) {
        if (has_exited(pid)) {
            printf("stopped pensieve server (pid %ld)\n", pid);
            return 0;
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    cli_die("stop", 1, "process %ld is still running after %ld s", pid, wait_s);
}
