/*
 * cmd_service.c - `pensieve service install|uninstall`: run the server under systemd.
 *
 * Writes a unit that starts `pensieve serve` with the given options (this binary, the
 * current model directory), for the user's systemd (default; ~/.config/systemd/user) or
 * the system's (--system; /etc/systemd/system, root), then enables and starts it with
 * systemctl. --dry-run prints the unit and the commands instead.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"

static struct cli_opt service_opts[] = {
    {"system", 0, CLI_FLAG, NULL, NULL,
     "a system service (/etc/systemd/system, needs root) instead of a user service", NULL},
    {"dry-run", 'n', CLI_FLAG, NULL, NULL, "print the unit and the commands, change nothing",
     NULL},
    {0},
};

static int service_main(int argc, char **argv);

const struct cli_command cli_cmd_service = {
    "service",
    "install or remove a systemd service that runs the server",
    "pensieve service install|uninstall [--system] [--dry-run] [-- SERVE-OPTIONS...]",
    "install writes pensieve.service (user: ~/.config/systemd/user; --system:\n"
    "/etc/systemd/system) running `pensieve serve SERVE-OPTIONS` from this binary with this\n"
    "model directory, then `systemctl [--user] daemon-reload` and `enable --now`. Logs:\n"
    "journalctl [--user] -u pensieve. A user service keeps running after logout only with\n"
    "`loginctl enable-linger`. uninstall stops, disables and deletes it.",
    service_main,
};

/* One ExecStart word in systemd's quoting: "..." with \ and " escaped, % doubled. */
static void put_word(FILE *f, const char *w)
{
    fputc('"', f);
    for (const char *p = w; *p; p++) {
        if (*p == '"' || *p == '\\')
            fputc('\\', f);
        if (*p == '%')
            fputc('%', f);
        fputc(*p, f);
    }
    fputc('"', f);
}

static void write_unit(FILE *f, const char *exe, const char *models, bool sys, char **args,
                       int n_args)
{
    fprintf(f, "# written by `pensieve service install`; `pensieve service uninstall` removes it\n"
               "[Unit]\nDescription=Pensieve local LLM server\nAfter=network.target\n\n"
               "[Service]\nExecStart=");
    put_word(f, exe);
    fprintf(f, " serve");
    for (int i = 0; i < n_args; i++) {
        fputc(' ', f);
        put_word(f, args[i]);
    }
    fprintf(f, "\nEnvironment=");
    char env[4200];
    snprintf(env, sizeof(env), "PENSIEVE_MODELS=%s", models);
    put_word(f, env);
    const char *sudo_user = getenv("SUDO_USER");
    if (sys && sudo_user && *sudo_user)
        fprintf(f, "\nUser=%s", sudo_user);
    fprintf(f, "\nRestart=on-failure\n# SIGTERM lets running requests finish (--grace)\n"
               "TimeoutStopSec=60\n\n[Install]\nWantedBy=%s\n",
            sys ? "multi-user.target" : "default.target");
}

/* Run argv; its exit status, or -1 when it could not start. */
static int run_cmd(char *const *argv, bool dry)
{
    printf("%s", dry ? "would run:" : "running:");
    for (int i = 0; argv[i]; i++)
        printf(" %s", argv[i]);
    printf("\n");
    fflush(stdout);
    if (dry)
        return 0;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        execvp(argv[0], argv);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int service_main(int argc, char **argv)
{
    char *pos[256];
    int n_pos = 0;
    char exe[PATH_MAX], unit[4200], dir[4096], models[4096];

    cli_parse(&cli_cmd_service, service_opts, argc, argv, pos, 250, &n_pos);
    if (n_pos < 1 || (strcmp(pos[0], "install") != 0 && strcmp(pos[0], "uninstall") != 0))
        cli_die("service", 2, "install or uninstall? (see pensieve service --help)");
    bool install = strcmp(pos[0], "install") == 0;
    bool sys = cli_get(service_opts, "system")->i, dry = cli_get(service_opts, "dry-run")->i;
    if (!install && n_pos > 1)
        cli_die("service", 2, "uninstall takes no serve options");
    if (sys)
        snprintf(dir, sizeof(dir), "/etc/systemd/system");
    else if (getenv("XDG_CONFIG_HOME") && *getenv("XDG_CONFIG_HOME"))
        snprintf(dir, sizeof(dir), "%s/systemd/user", getenv("XDG_CONFIG_HOME"));
    else
        snprintf(dir, sizeof(dir), "%s/.config/systemd/user",
                 getenv("HOME") ? getenv("HOME") : ".");
    snprintf(unit, sizeof(unit), "%s/pensieve.service", dir);
    if (sys && !dry && geteuid() != 0)
        cli_die("service", 1, "--system needs root (sudo pensieve service %s --system)",
                pos[0]);
    char *ctl[6] = {"systemctl", NULL, NULL, NULL, NULL, NULL};
    int k = 1;
    if (!sys)
        ctl[k++] = "--user";

    if (!install) {
        ctl[k] = "disable";
        ctl[k + 1] = "--now";
        ctl[k + 2] = "pensieve";
        run_cmd(ctl, dry);
        printf("%s %s\n", dry ? "would delete" : "deleting", unit);
        if (!dry && unlink(unit) != 0 && errno != ENOENT)
            cli_die("service", 1, "cannot delete %s: %s", unit, strerror(errno));
        ctl[k] = "daemon-reload";
        ctl[k + 1] = NULL;
        run_cmd(ctl, dry);
        return 0;
    }

    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        cli_die("service", 1, "cannot find this binary's path");
    exe[n] = '\0';
    if (pv_models_dir(models, sizeof(models)) != PV_OK)
        cli_die("service", 1, "model directory path is too long");
    if (dry) {
        printf("would write %s:\n", unit);
        write_unit(stdout, exe, models, sys, pos + 1, n_pos - 1);
    } else {
        char mk[4200];
        snprintf(mk, sizeof(mk), "%s", dir);
        for (char *p = mk + 1; *p; p++)
            if (*p == '/') {
                *p = '\0';
                mkdir(mk, 0755);
                *p = '/';
            }
        mkdir(mk, 0755);
        /* 0600: the options may hold an API key */
        int fd = open(unit, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
        if (!f)
            cli_die("service", 1, "cannot write %s: %s", unit, strerror(errno));
        write_unit(f, exe, models, sys, pos + 1, n_pos - 1);
        if (fclose(f) != 0)
            cli_die("service", 1, "cannot write %s", unit);
        printf("wrote %s\n", unit);
    }
    ctl[k] = "daemon-reload";
    int rc = run_cmd(ctl, dry);
    if (rc == 0) {
        ctl[k] = "enable";
        ctl[k + 1] = "--now";
        ctl[k + 2] = "pensieve";
        rc = run_cmd(ctl, dry);
    }
    if (rc != 0)
        cli_die("service", 1, "systemctl failed (is systemd running here?); the unit is in %s",
                unit);
    printf("%s; logs: journalctl %s-u pensieve -f\n",
           dry ? "dry run: nothing changed" : "pensieve.service is enabled and started",
           sys ? "" : "--user ");
    return 0;
}
