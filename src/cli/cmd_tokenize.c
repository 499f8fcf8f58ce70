/*
 * cmd_tokenize.c - `pensieve tokenize` and `pensieve detokenize`: the tokenizer on the
 * command line.
 *
 * Both load only the vocabulary of the model file (no weights), so they answer in tens
 * of milliseconds. tokenize prints ids separated by spaces (or one "id<TAB>piece" line
 * per token with --pieces); detokenize prints the text of the ids given.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "tok/tok.h"

static struct cli_opt tokenize_opts[] = {
    {"model", 'm', CLI_STRING, "PENSIEVE_MODEL", "MODEL", "model file or name in the model directory", NULL},
    {"pieces", 0, CLI_FLAG, NULL, NULL, "print one 'id<TAB>piece' line per token (bytes that are not printable UTF-8 as \\xNN)", NULL},
    {"no-bos", 0, CLI_FLAG, NULL, NULL, "leave out the BOS (and EOS) the model would add", NULL},
    {"special", 0, CLI_FLAG, NULL, NULL, "let control-token text (<start_of_turn>, <|im_start|>...) become control tokens", NULL},
    {0},
};

static struct cli_opt detokenize_opts[] = {
    {"model", 'm', CLI_STRING, "PENSIEVE_MODEL", "MODEL", "model file or name in the model directory", NULL},
    {"skip-special", 0, CLI_FLAG, NULL, NULL, "print nothing for control tokens", NULL},
    {0},
};

static int tokenize_main(int argc, char **argv);
static int detokenize_main(int argc, char **argv);

const struct cli_command cli_cmd_tokenize = {
    "tokenize",
    "text to token ids",
    "pensieve tokenize -m MODEL TEXT [options]",
    "Prints the token ids of TEXT (read from stdin when TEXT is '-') separated by spaces,\n"
    "with BOS in front when the model adds one. Control-token text in TEXT stays plain\n"
    "text unless --special is given, as for message content sent to the server.",
    tokenize_main,
};

const struct cli_command cli_cmd_detokenize = {
    "detokenize",
    "token ids to text",
    "pensieve detokenize -m MODEL ID... [options]",
    "Prints the text of the token ids (separate arguments, or spaces/commas inside one),\n"
    "without the space that SPM vocabularies put in front. Bytes that do not form valid\n"
    "UTF-8 come out as U+FFFD.",
    detokenize_main,
};

static struct pv_vocab *load_vocab(const char *cmd, struct cli_opt *opts)
{
    struct cli_opt *m = cli_get(opts, "model");
    char path[8192];
    struct pv_vocab *v;
    struct pv_err err;

    if (!m->set)
        cli_die(cmd, 2, "a model is required (-m MODEL)");
    if (!cli_resolve_model(m->str, path, sizeof(path)))
        cli_die_model_not_found(cmd, m->str);
    if (pv_vocab_load_file(path, &v, &err) != PV_OK)
        cli_die(cmd, 1, "%s", err.msg);
    return v;
}

static char *read_stdin(size_t *len)
{
    struct pv_buf b = PV_BUF_INIT;
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0)
        if (!buf_append(&b, chunk, n))
            cli_die("tokenize", 1, "out of memory reading stdin");
    if (ferror(stdin))
        cli_die("tokenize", 1, "cannot read stdin: %s", strerror(errno));
    if (!buf_reserve(&b, 1))
        cli_die("tokenize", 1, "out of memory reading stdin");
    return buf_detach(&b, len);
}

/* Print a piece: valid printable UTF-8 as it is, everything else escaped. */
static void print_piece(const char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)p[i];
        int k = tok_utf8_check((const unsigned char *)p + i, n - i);
        if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c == '\\')
            fputs("\\\\", stdout);
        else if (k <= 0 || c < 0x20 || c == 0x7F)
            printf("\\x%02X", c);
        else
            fwrite(p + i, 1, (size_t)k, stdout);
        i += k > 0 ? (size_t)k : 1;
    }
}

static int tokenize_main(int argc, char **argv)
{
    char *pos[1];
    int n_pos = 0;
    char *text, *owned = NULL;
    size_t len, n_ids;
    int32_t *ids;
    struct pv_err err;

    cli_parse(&cli_cmd_tokenize, tokenize_opts, argc, argv, pos, 1, &n_pos);
    if (n_pos != 1)
        cli_die("tokenize", 2, "give the text to tokenize (or '-' to read stdin)");
    struct pv_vocab *v = load_vocab("tokenize", tokenize_opts);
    if (strcmp(pos[0], "-") == 0) {
        text = owned = read_stdin(&len);
    } else {
        text = pos[0];
        len = strlen(text);
    }
    unsigned flags = 0;
    if (!cli_get(tokenize_opts, "no-bos")->i)
        flags |= PV_TOKENIZE_ADD_SPECIAL;
    if (cli_get(tokenize_opts, "special")->i)
        flags |= PV_TOKENIZE_PARSE_SPECIAL;
    struct pv_text_segment seg = {text, len, (flags & PV_TOKENIZE_PARSE_SPECIAL) != 0};
    if (pv_tokenize_segments(v, &seg, 1, flags, &ids, &n_ids, &err) != PV_OK)
        cli_die("tokenize", 1, "%s", err.msg);
    bool pieces = cli_get(tokenize_opts, "pieces")->i;
    for (size_t i = 0; i < n_ids; i++) {
        if (pieces) {
            size_t pn;
            const char *p = pv_token_to_piece(v, ids[i], true, &pn);
            printf("%d\t", ids[i]);
            print_piece(p, pn);
            putchar('\n');
        } else {
            printf(i ? " %d" : "%d", ids[i]);
        }
    }
    if (!pieces)
        putchar('\n');
    free(ids);
    free(owned);
    pv_vocab_free(v);
    return fflush(stdout) == 0 ? 0 : 1;
}

static int detokenize_main(int argc, char **argv)
{
    char **pos = xcalloc((size_t)argc + 1, sizeof(char *));
    int n_pos = 0;
    size_t n = 0, cap = 64;
    int32_t *ids = xmalloc(cap * sizeof(int32_t));
    struct pv_err err;

    cli_parse(&cli_cmd_detokenize, detokenize_opts, argc, argv, pos, argc, &n_pos);
    if (n_pos < 1)
        cli_die("detokenize", 2, "give the token ids to detokenize");
    struct pv_vocab *v = load_vocab("detokenize", detokenize_opts);
    for (int a = 0; a < n_pos; a++) {
        const char *p = pos[a];
        for (;;) {
            while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n')
                p++;
            if (!*p)
                break;
            char *end;
            errno = 0;
            long id = strtol(p, &end, 10);
            if (end == p || errno || id < 0 || (size_t)id >= pv_vocab_n_tokens(v))
                cli_die("detokenize", 2, "'%s' is not a token id of this model (0 to %zu)", pos[a],
                        pv_vocab_n_tokens(v) - 1);
            if (n == cap)
                ids = xrealloc(ids, (cap *= 2) * sizeof(int32_t));
            ids[n++] = (int32_t)id;
            p = end;
        }
    }
    unsigned flags = PV_DETOK_STRIP_SPACE;
    if (cli_get(detokenize_opts, "skip-special")->i)
        flags |= PV_DETOK_SKIP_SPECIAL;
    char *text;
    size_t len;
    if (pv_detokenize(v, ids, n, flags, &text, &len, &err) != PV_OK)
        cli_die("detokenize", 1, "%s", err.msg);
    fwrite(text, 1, len, stdout);
    putchar('\n');
    free(text);
    free(ids);
    free(pos);
    pv_vocab_free(v);
    return fflush(stdout) == 0 ? 0 : 1;
}
