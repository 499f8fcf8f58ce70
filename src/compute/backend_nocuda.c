/*
 * backend_nocuda.c - the CUDA backend's entry points in a CPU-only build.
 *
 * `make` builds this file and `make cuda` builds compute/cuda/ instead, so the default
 * build has no CUDA header or library: no GPU is ever present, and asking for the CUDA
 * backend fails with a message that says how to get it.
 */
#include "compute/backend.h"
#include "util/util.h"

bool compute_cuda_present(void)
{
    return false;
}

struct compute_backend *compute_cuda_new(const struct compute_cuda_params *p, struct pv_err *err)
{
    pv_err_set(err, PV_ERR_UNSUPPORTED,
               "this build has no CUDA backend: build it with `make cuda` (needs nvcc)");
    return NULL;
}

void compute_cuda_free(struct compute_backend *be)
{
}
