/*
 * fuzz_safetensors.c - the safetensors reader on arbitrary file bytes: open, look every
 * tensor up by name, touch its last data byte and read the metadata. Any result is fine
 * except a crash, a leak or undefined behaviour.
 */
#include "fuzz.h"
#include "model/safetensors.h"
#include "pensieve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    fuzz_quiet();
    int fd = fuzz_memfile(data, size, path, sizeof(path));
    if (fd < 0)
        return 0;
    struct pv_err err = {0};
    struct st_file *f = NULL;
    if (st_open(path, &f, &err) == PV_OK) {
        for (size_t i = 0; i < st_n_tensors(f); i++) {
            const struct st_tensor *t = st_tensor(f, i);
            if (st_find(f, t->name) != t)
                abort(); /* names are unique */
            if (t->n_bytes)
                (void)((volatile const uint8_t *)t->data)[t->n_bytes - 1];
        }
        const char *s;
        (void)st_metadata(f, "format", &s);
        st_close(f);
    }
    close(fd);
    return 0;
}
