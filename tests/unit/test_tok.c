/*
 * test_tok.c - unit tests of the tok module: the byte-to-unicode table, UTF-8 checking,
 * SPM and BPE merges on small synthetic vocabularies written as GGUF files, special
 * tokens (control text in user content, user-defined tokens, EOG), the streaming
 * detokenizer (never a partial code point) and the loader's errors.
 */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "harness.h"
#include "tok/tok.h"
#include "util/util.h"

/* ---- a tiny GGUF writer ------------------------------------------------------------ */

struct w {
    struct pv_buf b;
    uint64_t n_kv;
};

static void put(struct w *w, const void *p, size_t n) { buf_append(&w->b, p, n); }
static void put_u32(struct w *w, uint32_t x) { put(w, &x, 4); }
static void put_u64(struct w *w, uint64_t x) { put(w, &x, 8); }
static void put_str(struct w *w, const char *s) { put_u64(w, strlen(s)); put(w, s, strlen(s)); }

static void kv_str(struct w *w, const char *k, const char *v)
{
    put_str(w, k); put_u32(w, 8); put_str(w, v); w->n_kv++;
}
static void kv_u32(struct w *w, const char *k, uint32_t v)
{
    put_str(w, k); put_u32(w, 4); put_u32(w, v); w->n_kv++;
}
static void kv_bool(struct w *w, const char *k, bool v)
{
    uint8_t b = v;
    put_str(w, k); put_u32(w, 7); put(w, &b, 1); w->n_kv++;
}
static void kv_strs(struct w *w, const char *k, const char *const *v, size_t n)
{
    put_str(w, k); put_u32(w, 9); put_u32(w, 8); put_u64(w, n);
    for (size_t i = 0; i < n; i++)
        put_str(w, v[i]);
    w->n_kv++;
}
static void kv_i32s(struct w *w, const char *k, const int32_t *v, size_t n)
{
    put_str(w, k); put_u32(w, 9); put_u32(w, 5); put_u64(w, n); put(w, v, n * 4); w->n_kv++;
}
static void kv_f32s(struct w *w, const char *k, const float *v, size_t n)
{
    put_str(w, k); put_u32(w, 9); put_u32(w, 6); put_u64(w, n); put(w, v, n * 4); w->n_kv++;
}

/* Write header + kvs to a temp file and load its vocabulary. */
static enum pv_status load(struct w *w, struct pv_vocab **v, struct pv_err *err)
{
    char path[] = "/tmp/pv-test-tok-XXXXXX";
    int fd = mkstemp(path);
    PV_ASSERT(fd >= 0);
    uint32_t head[2] = {0x46554747, 3};
    uint64_t counts[2] = {0, w->n_kv};
    PV_ASSERT(write(fd, head, 8) == 8 && write(fd, counts, 16) == 16);
    PV_ASSERT(write(fd, w->b.data, w->b.len) == (ssize_t)w->b.len);
    close(fd);
    struct gguf_file *f;
    enum pv_status st = gguf_open(path, &f, err);
    if (st == PV_OK) {
        st = tok_vocab_load(f, v, err);
        gguf_close(f);
    }
    unlink(path);
    buf_release(&w->b);
    return st;
}

/* ---- synthetic vocabularies -------------------------------------------------------- */

#define SPM_N (3 + 256 + 10)
enum { T_SP = 259, T_A, T_B, T_SPA, T_AB, T_SPAB, T_SOT, T_EOT, T_NL2, T_EACUTE };

static struct pv_vocab *spm_vocab(void)
{
    static char bytes[256][8];
    const char *tok[SPM_N];
    int32_t type[SPM_N];
    float score[SPM_N];
    struct w w = {PV_BUF_INIT, 0};
    struct pv_err err;
    struct pv_vocab *v = NULL;

    tok[0] = "<unk>"; type[0] = 2;
    tok[1] = "<s>"; type[1] = 3;
    tok[2] = "</s>"; type[2] = 3;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof(bytes[b]), "<0x%02X>", b);
        tok[3 + b] = bytes[b];
        type[3 + b] = 6;
    }
    const char *rest[] = {"\xe2\x96\x81", "a", "b", "\xe2\x96\x81" "a", "ab",
                          "\xe2\x96\x81" "ab", "<start_of_turn>", "<end_of_turn>", "\n\n",
                          "\xc3\xa9"};
    const int32_t rest_type[] = {1, 1, 1, 1, 1, 1, 3, 3, 4, 1};
    const float rest_score[] = {-5, -6, -7, -1, -2, -0.5f, 0, 0, 0, -3};
    for (int i = 0; i < 10; i++) {
        tok[T_SP + i] = rest[i];
        type[T_SP + i] = rest_type[i];
    }
    for (int i = 0; i < SPM_N; i++)
        score[i] = i >= T_SP ? rest_score[i - T_SP] : 0;
    kv_str(&w, "tokenizer.ggml.model", "llama");
    kv_strs(&w, "tokenizer.ggml.tokens", tok, SPM_N);
    kv_i32s(&w, "tokenizer.ggml.token_type", type, SPM_N);
    kv_f32s(&w, "tokenizer.ggml.scores", score, SPM_N);
    kv_u32(&w, "tokenizer.ggml.bos_token_id", 1);
    kv_u32(&w, "tokenizer.ggml.eos_token_id", 2);
    kv_bool(&w, "tokenizer.ggml.add_space_prefix", true);
    if (load(&w, &v, &err) != PV_OK)
        fprintf(stderr, "  spm vocab: %s\n", err.msg);
    return v;
}

static size_t tokenize(struct pv_vocab *v, const char *s, unsigned flags, int32_t *ids)
{
    size_t n = 0;
    struct pv_err err;
    if (pv_tokenize(v, s, strlen(s), flags, ids, 64, &n, &err) != PV_OK) {
        fprintf(stderr, "  tokenize: %s\n", err.msg);
        return (size_t)-1;
    }
    return n;
}

#define CHECK_IDS(v, s, flags, ...)                                                        \
    do {                                                                                   \
        const int32_t want_[] = {__VA_ARGS__};                                             \
        int32_t got_[64];                                                                  \
        size_t n_ = tokenize(v, s, flags, got_);                                           \
        CHECK_EQ_INT(n_, PV_ARRAY_LEN(want_));                                             \
        if (n_ == PV_ARRAY_LEN(want_))                                                     \
            for (size_t i_ = 0; i_ < n_; i_++)                                             \
                CHECK_EQ_INT(got_[i_], want_[i_]);                                         \
    } while (0)

/* ---- tests ------------------------------------------------------------------------- */

static void test_byte_table(void)
{
    int seen[0x200] = {0};
    for (int b = 0; b < 256; b++) {
        uint32_t cp = tok_byte_to_cp((uint8_t)b);
        CHECK(cp < 0x200);
        seen[cp]++;
        CHECK_EQ_INT(tok_cp_to_byte(cp), b);
    }
    for (int cp = 0; cp < 0x200; cp++)
        CHECK(seen[cp] <= 1);
    CHECK_EQ_INT(tok_byte_to_cp(' '), 0x120);  /* 'Ġ' */
    CHECK_EQ_INT(tok_byte_to_cp('\n'), 0x10A); /* 'Ċ' */
    CHECK_EQ_INT(tok_byte_to_cp(0), 0x100);
    CHECK_EQ_INT(tok_byte_to_cp(0x7F), 0x121);
    CHECK_EQ_INT(tok_byte_to_cp(0xAD), 0x143);
    CHECK_EQ_INT(tok_byte_to_cp('A'), 'A');
    CHECK_EQ_INT(tok_byte_to_cp(0xE9), 0xE9);
    CHECK_EQ_INT(tok_cp_to_byte(0x144), -1);
    CHECK_EQ_INT(tok_cp_to_byte(' '), -1);
    CHECK_EQ_INT(tok_cp_to_byte(0x2581), -1);
}

static void test_utf8_check(void)
{
    struct {
        const char *s;
        int want;
    } cases[] = {
        {"a", 1}, {"\xc3\xa9", 2}, {"\xe2\x82\xac", 3}, {"\xf0\x9f\x98\x80", 4},
        {"\xc3", 0}, {"\xe2\x82", 0}, {"\xf0\x9f\x98", 0}, {"\xf0", 0},
        {"\x80", -1}, {"\xbf", -1}, {"\xc0\xaf", -1}, {"\xc1\xbf", -1},
        {"\xe0\x80\xaf", -1}, {"\xed\xa0\x80", -1}, {"\xf4\x90\x80\x80", -1},
        {"\xf5\x80\x80\x80", -1}, {"\xff", -1}, {"\xc3(", -1}, {"\xe2\x82(", -1},
        {"\xef\xbf\xbf", 3}, {"\xf4\x8f\xbf\xbf", 4}, {"\xed\x9f\xbf", 3},
    };
    for (size_t i = 0; i < PV_ARRAY_LEN(cases); i++) {
        int got = tok_utf8_check((const unsigned char *)cases[i].s, strlen(cases[i].s));
        if (got != cases[i].want)
            fprintf(stderr, "  case %zu\n", i);
        CHECK_EQ_INT(got, cases[i].want);
    }
    /* encode then check, over the whole code space */
    for (uint32_t cp = 0; cp < 0x110000; cp += (cp < 0x1000 ? 1 : 97)) {
        char buf[4];
        int n = tok_utf8_encode(cp, buf);
        int want = (cp >= 0xD800 && cp <= 0xDFFF) ? -1 : n;
        CHECK_EQ_INT(tok_utf8_check((unsigned char *)buf, (size_t)n), want);
    }
}

static void test_spm_merges(void)
{
    struct pv_vocab *v = spm_vocab();
    CHECK(v != NULL);
    if (!v)
        return;
    /* "▁a" (score -1) merges before "ab" (-2), then "▁ab" */
    CHECK_IDS(v, "ab", PV_TOKENIZE_ADD_SPECIAL, 1, T_SPAB);
    CHECK_IDS(v, "ba", 0, T_SP, T_B, T_A);
    CHECK_IDS(v, "a b", 0, T_SPA, T_SP, T_B);
    /* a character that is no token falls back to bytes */
    CHECK_IDS(v, "\xe2\x82\xac", 0, T_SP, 3 + 0xE2, 3 + 0x82, 3 + 0xAC);
    CHECK_IDS(v, "\xc3\xa9", 0, T_SP, T_EACUTE);
    CHECK_IDS(v, "", PV_TOKENIZE_ADD_SPECIAL, 1);
    int32_t none[64];
    CHECK_EQ_INT(tokenize(v, "", 0, none), 0);
    pv_vocab_free(v);
}

static void test_special_tokens(void)
{
    struct pv_vocab *v = spm_vocab();
    if (!v)
        return;
    /* control text in user content stays text; the template (parse_special) gets it */
    int32_t ids[64];
    size_t n = tokenize(v, "<start_of_turn>a", 0, ids);
    CHECK(n != (size_t)-1 && n > 2);
    for (size_t i = 0; i < n && n != (size_t)-1; i++)
        CHECK(ids[i] != T_SOT && !pv_token_is_control(v, ids[i]));
    CHECK_IDS(v, "<start_of_turn>a", PV_TOKENIZE_PARSE_SPECIAL, T_SOT, T_SPA);
    /* a user-defined token is always matched, and a space prefix follows it */
    CHECK_IDS(v, "a\n\nb", 0, T_SPA, T_NL2, T_SP, T_B);
    /* segments: control tokens only inside parse_special segments, never across */
    struct pv_text_segment segs[] = {{"<start_of_turn>", 15, true}, {"<end_of_turn>", 13, false},
                                     {"<end_of_", 8, true}, {"turn>", 5, true}};
    int32_t *out;
    size_t n_out;
    struct pv_err err;
    CHECK(pv_tokenize_segments(v, segs, 4, 0, &out, &n_out, &err) == PV_OK);
    size_t n_ctl = 0;
    for (size_t i = 0; i < n_out; i++)
        n_ctl += pv_token_is_control(v, out[i]);
    CHECK_EQ_INT(n_ctl, 1);
    CHECK_EQ_INT(out[0], T_SOT);
    free(out);
    /* EOG: eos and <end_of_turn> (by its text); bos is not */
    CHECK(pv_token_is_eog(v, 2));
    CHECK(pv_token_is_eog(v, T_EOT));
    CHECK(!pv_token_is_eog(v, 1));
    CHECK(!pv_token_is_eog(v, -1) && !pv_token_is_eog(v, SPM_N));
    CHECK_EQ_INT(pv_vocab_eot(v), T_EOT);
    /* a buffer too small says how much is needed */
    size_t need = 0;
    CHECK(pv_tokenize(v, "ba", 2, 0, ids, 1, &need, &err) == PV_ERR_TOO_LARGE);
    CHECK_EQ_INT(need, 3);
    pv_vocab_free(v);
}

/* Every output of the streaming detokenizer is whole, valid UTF-8. */
static bool valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        int k = tok_utf8_check((const unsigned char *)s + i, n - i);
        if (k <= 0)
            return false;
        i += (size_t)k;
    }
    return true;
}

static void test_streaming_detok(void)
{
    struct pv_vocab *v = spm_vocab();
    if (!v)
        return;
    struct pv_err err;
    const char *t;
    size_t n;
    struct pv_detok *d = pv_detok_new(v, PV_DETOK_SKIP_SPECIAL);

    /* a 4-byte character spread over byte tokens comes out whole, at its last byte */
    const unsigned char emoji[] = {0xF0, 0x9F, 0x98, 0x80};
    for (int i = 0; i < 4; i++) {
        CHECK(pv_detok_push(d, 3 + emoji[i], &t, &n, &err) == PV_OK);
        CHECK_EQ_INT(n, i < 3 ? 0 : 4);
    }
    CHECK(n == 4 && memcmp(t, emoji, 4) == 0);
    /* the space marker, control tokens skipped, normal pieces */
    CHECK(pv_detok_push(d, T_SPAB, &t, &n, &err) == PV_OK && n == 3 && memcmp(t, " ab", 3) == 0);
    CHECK(pv_detok_push(d, T_SOT, &t, &n, &err) == PV_OK && n == 0);
    /* a lead byte followed by a non-continuation: U+FFFD, then the text */
    CHECK(pv_detok_push(d, 3 + 0xE2, &t, &n, &err) == PV_OK && n == 0);
    CHECK(pv_detok_push(d, T_A, &t, &n, &err) == PV_OK);
    CHECK(n == 4 && memcmp(t, "\xef\xbf\xbd" "a", 4) == 0);
    /* an unfinished character at the end: one U+FFFD per byte on flush */
    CHECK(pv_detok_push(d, 3 + 0xF0, &t, &n, &err) == PV_OK && n == 0);
    CHECK(pv_detok_push(d, 3 + 0x9F, &t, &n, &err) == PV_OK && n == 0);
    pv_detok_flush(d, &t, &n);
    CHECK(n == 6 && memcmp(t, "\xef\xbf\xbd\xef\xbf\xbd", 6) == 0);
    CHECK(pv_detok_push(d, -1, &t, &n, &err) == PV_ERR_INVALID);
    CHECK(pv_detok_push(d, SPM_N, &t, &n, &err) == PV_ERR_INVALID);

    /* random byte-token streams of valid text: every push valid, the sum the text */
    const char *text = "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80 \xe4\xb8\xad\xe6\x96\x87 a";
    srand(7);
    for (int round = 0; round < 200; round++) {
        struct pv_buf all = PV_BUF_INIT;
        size_t len = strlen(text);
        for (size_t i = 0; i < len; i++) {
            int32_t id = (rand() % 3 == 0) ? T_SOT : 3 + (unsigned char)text[i];
            if (id == T_SOT)
                i--;
            CHECK(pv_detok_push(d, id, &t, &n, &err) == PV_OK);
            CHECK(valid_utf8(t, n));
            buf_append(&all, t, n);
        }
        pv_detok_flush(d, &t, &n);
        CHECK_EQ_INT(n, 0);
        CHECK_EQ_STR(all.data, text);
        buf_release(&all);
    }
    pv_detok_free(d);

    /* one-shot: the SPM space prefix is undone with PV_DETOK_STRIP_SPACE */
    int32_t ids[64];
    size_t k = tokenize(v, "ab a", PV_TOKENIZE_ADD_SPECIAL, ids);
    char *s;
    CHECK(pv_detokenize(v, ids, k, PV_DETOK_SKIP_SPECIAL | PV_DETOK_STRIP_SPACE, &s, &n, &err) == PV_OK);
    CHECK_EQ_STR(s, "ab a");
    free(s);
    CHECK(pv_detokenize(v, ids, k, 0, &s, &n, &err) == PV_OK);
    CHECK_EQ_STR(s, "<s> ab a");
    free(s);
    pv_vocab_free(v);
}

static struct pv_vocab *bpe_vocab(const char *pre, struct pv_err *err)
{
    static char chars[256][4];
    const char *tok[256 + 4];
    struct w w = {PV_BUF_INIT, 0};
    struct pv_vocab *v = NULL;
    for (int b = 0; b < 256; b++) {
        int n = tok_utf8_encode(tok_byte_to_cp((uint8_t)b), chars[b]);
        chars[b][n] = 0;
        tok[b] = chars[b];
    }
    tok[256] = "ab";
    tok[257] = "\xc4\xa0" "a"; /* "Ġa" */
    tok[258] = "\xc4\xa0" "ab";
    tok[259] = "<|endoftext|>";
    const char *merges[] = {"a b", "\xc4\xa0 a", "\xc4\xa0" "a b"};
    int32_t type[260];
    for (int i = 0; i < 260; i++)
        type[i] = i == 259 ? 3 : 1;
    kv_str(&w, "tokenizer.ggml.model", "gpt2");
    kv_str(&w, "tokenizer.ggml.pre", pre);
    kv_strs(&w, "tokenizer.ggml.tokens", tok, 260);
    kv_i32s(&w, "tokenizer.ggml.token_type", type, 260);
    kv_strs(&w, "tokenizer.ggml.merges", merges, 3);
    kv_u32(&w, "tokenizer.ggml.eos_token_id", 259);
    load(&w, &v, err);
    return v;
}

static void test_bpe_merges(void)
{
    struct pv_err err;
    struct pv_vocab *v = bpe_vocab("gpt-2", &err);
    CHECK(v != NULL);
    if (!v)
        return;
    /* pre-tokens "a", " ab"; in " ab" the rank-0 merge "a b" wins over "Ġ a" */
    CHECK_IDS(v, "a ab", 0, 'a', ' ', 256);
    CHECK_IDS(v, " a", 0, 257);
    CHECK_IDS(v, "<|endoftext|>", PV_TOKENIZE_PARSE_SPECIAL, 259);
    CHECK_IDS(v, "<|endoftext|>", 0, '<', '|', 'e', 'n', 'd', 'o', 'f', 't', 'e', 'x', 't', '|', '>');
    /* an invalid byte becomes U+FFFD (EF BF BD), each byte its mapped character */
    CHECK_IDS(v, "\xff", 0, 0xEF, 0xBF, 0xBD);
    pv_vocab_free(v);
}

static void test_load_errors(void)
{
    struct pv_err err;
    struct pv_vocab *v = bpe_vocab("no-such-pre", &err);
    CHECK(v == NULL);
    CHECK_EQ_INT(err.status, PV_ERR_UNSUPPORTED);
    CHECK(strstr(err.msg, "'no-such-pre'") != NULL);

    struct w w = {PV_BUF_INIT, 0};
    kv_str(&w, "tokenizer.ggml.model", "bert");
    CHECK(load(&w, &v, &err) == PV_ERR_UNSUPPORTED && v == NULL);

    w = (struct w){PV_BUF_INIT, 0};
    kv_str(&w, "tokenizer.ggml.model", "llama");
    CHECK(load(&w, &v, &err) == PV_ERR_FORMAT && strstr(err.msg, "tokenizer.ggml.tokens"));

    const char *bad[] = {"<unk>", "<0xZZ>"};
    const int32_t types[] = {2, 6};
    w = (struct w){PV_BUF_INIT, 0};
    kv_str(&w, "tokenizer.ggml.model", "llama");
    kv_strs(&w, "tokenizer.ggml.tokens", bad, 2);
    kv_i32s(&w, "tokenizer.ggml.token_type", types, 2);
    CHECK(load(&w, &v, &err) == PV_ERR_FORMAT && strstr(err.msg, "byte token"));

    const char *dup[] = {"a", "a"};
    w = (struct w){PV_BUF_INIT, 0};
    kv_str(&w, "tokenizer.ggml.model", "llama");
    kv_strs(&w, "tokenizer.ggml.tokens", dup, 2);
    CHECK(load(&w, &v, &err) == PV_ERR_FORMAT && strstr(err.msg, "duplicates"));

    /* too few scores for the tokens */
    const float one[] = {0};
    w = (struct w){PV_BUF_INIT, 0};
    kv_str(&w, "tokenizer.ggml.model", "llama");
    kv_strs(&w, "tokenizer.ggml.tokens", dup, 1);
    kv_f32s(&w, "tokenizer.ggml.scores", one, 0);
    CHECK(load(&w, &v, &err) == PV_ERR_FORMAT && strstr(err.msg, "scores"));

    /* token_type of another element type than i32 (f32 here) is an error, not a cast */
    const char *two[] = {"a", "b"};
    const float ftypes[] = {1, 1};
    w = (struct w){PV_BUF_INIT, 0};
    kv_str(&w, "tokenizer.ggml.model", "llama");
    kv_strs(&w, "tokenizer.ggml.tokens", two, 2);
    kv_f32s(&w, "tokenizer.ggml.token_type", ftypes, 2);
    CHECK(load(&w, &v, &err) == PV_ERR_FORMAT && strstr(err.msg, "token_type"));
    /* scores as i32 */
    const int32_t iscores[] = {0, 0};
    w = (struct w){PV_BUF_INIT, 0};
    kv_str(&w, "tokenizer.ggml.model", "llama");
    kv_strs(&w, "tokenizer.ggml.tokens", two, 2);
    kv_i32s(&w, "tokenizer.ggml.scores", iscores, 2);
    CHECK(load(&w, &v, &err) == PV_ERR_FORMAT && strstr(err.msg, "scores"));
    /* a negative BOS id (as i32 -1) is an error, not silently "no BOS" */
    w = (struct w){PV_BUF_INIT, 0};
    kv_str(&w, "tokenizer.ggml.model", "llama");
    kv_strs(&w, "tokenizer.ggml.tokens", two, 2);
    put_str(&w, "tokenizer.ggml.bos_token_id");
    put_u32(&w, 5);
    put_u32(&w, 0xFFFFFFFFu);
    w.n_kv++;
    CHECK(load(&w, &v, &err) == PV_ERR_FORMAT && strstr(err.msg, "bos_token_id"));
}

/* One vocabulary, several threads tokenizing at once: the same ids as alone. */
struct thread_job {
    struct pv_vocab *v;
    const char *text;
    int32_t ids[256];
    size_t n;
    bool same;
};

static void *tokenize_many(void *arg)
{
    struct thread_job *j = arg;
    j->same = true;
    for (int r = 0; r < 200; r++) {
        int32_t ids[256];
        size_t n;
        struct pv_err err;
        if (pv_tokenize(j->v, j->text, strlen(j->text), PV_TOKENIZE_ADD_SPECIAL, ids, 256, &n,
                        &err) != PV_OK || n != j->n || memcmp(ids, j->ids, n * sizeof(int32_t)))
            j->same = false;
    }
    return NULL;
}

static void test_threads(void)
{
    struct pv_err err;
    struct pv_vocab *v[2] = {spm_vocab(), bpe_vocab("qwen2", &err)};
    const char *texts[] = {"ab ba a\n\nb <start_of_turn>", "a ab \xe4\xb8\xad 12345 ab's"};
    struct thread_job jobs[4];
    pthread_t th[4];
    if (!v[0] || !v[1]) {
        CHECK(v[0] && v[1]);
        goto free_vocabs;
    }
    for (int i = 0; i < 4; i++) {
        jobs[i].v = v[i % 2];
        jobs[i].text = texts[i % 2];
        CHECK(pv_tokenize(jobs[i].v, jobs[i].text, strlen(jobs[i].text), PV_TOKENIZE_ADD_SPECIAL,
                          jobs[i].ids, 256, &jobs[i].n, &err) == PV_OK);
    }
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&th[i], NULL, tokenize_many, &jobs[i]) == 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(jobs[i].same);
    }
free_vocabs:
    pv_vocab_free(v[0]);
    pv_vocab_free(v[1]);
}

TESTS(TEST_ENTRY(test_byte_table), TEST_ENTRY(test_utf8_check), TEST_ENTRY(test_spm_merges),
      TEST_ENTRY(test_special_tokens), TEST_ENTRY(test_streaming_detok),
      TEST_ENTRY(test_bpe_merges), TEST_ENTRY(test_load_errors), TEST_ENTRY(test_threads))
