/*
 * fuzz_gguf.c - the GGUF reader and the model loader on arbitrary file bytes: open,
 * read every key and tensor the way callers do, then load the file as a model. Any
 * result is fine except a crash, a leak or undefined behaviour.
 */
#include "fuzz.h"
#include "compute/compute.h"
#include "model/gguf.h"
#include "pensieve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    fuzz_quiet();
    int fd = fuzz_memfile(data, size, path, sizeof(path));
    if (fd < 0)
        return 0;
    struct pv_err err = {0};
    struct gguf_file *f = NULL;
    if (gguf_open(path, &f, &err) == PV_OK) {
        for (int64_t i = 0; i < gguf_n_kv(f); i++) {
            struct gguf_str k = gguf_key_name(f, i);
            char key[256];
            snprintf(key, sizeof(key), "%.*s", (int)k.n, k.p);
            uint32_t u;
            uint64_t u64;
            int64_t i64;
            float fl;
            bool b;
            struct gguf_str s;
            enum gguf_vtype et;
            uint64_t n;
            (void)gguf_get_u32(f, key, &u);
            (void)gguf_get_u64(f, key, &u64);
            (void)gguf_get_i64(f, key, &i64);
            (void)gguf_get_f32(f, key, &fl);
            (void)gguf_get_bool(f, key, &b);
            (void)gguf_get_str(f, key, &s);
            if (gguf_get_arr_info(f, key, &et, &n) && n) {
                double d;
                (void)gguf_get_arr_str(f, key, 0, &s);
                (void)gguf_get_arr_str(f, key, n - 1, &s);
                (void)gguf_get_arr_num(f, key, n - 1, &d);
            }
        }
        for (int64_t t = 0; t < gguf_n_tensors(f); t++) {
            const struct pv_tensor *ti = gguf_tensor(f, t);
            if (ti && ti->n_bytes)
                (void)((volatile const uint8_t *)ti->data)[ti->n_bytes - 1];
        }
        gguf_close(f);
    }
    struct pv_model *m = NULL;
    if (pv_model_load(path, NULL, &m, &err) == PV_OK)
        pv_model_free(m);
    close(fd);
    return 0;
}
