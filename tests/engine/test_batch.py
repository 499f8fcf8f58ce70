"""Many sequences in one forward pass (build/tools/batch_check): random schedules mix
prompt chunks of some sequences with decode tokens of others in each batch, fork
sequences (sharing KV blocks, copied on write), truncate and drop them; every logits row
of every sequence must be bit-identical to the same sequence evaluated alone, chunk for
chunk. Synthetic models of every architecture (gemma3's window of 16 is crossed) and
several weight types, and the default model. The tool also checks that a batch with a
bad position or sequence, or one the KV pool cannot hold, fails and changes nothing.
"""
import json
import os
import pathlib
import subprocess

import pytest

TOOL = pathlib.Path(__file__).resolve().parent.parent.parent / "build" / "tools" / "batch_check"
ARCHS = ["gemma3", "llama", "qwen2", "qwen3", "phi3"]


def run(model, seed, n_seq, steps, block=None, env=None):
    assert TOOL.exists(), f"{TOOL} is missing: run `make`"
    args = [str(TOOL), str(model), str(seed), str(n_seq), str(steps)]
    if block:
        args.append(str(block))
    r = subprocess.run(args, capture_output=True, text=True, timeout=600,
                       env={**os.environ, **(env or {})})
    assert r.stdout, r.stderr
    c = json.loads(r.stdout)
    print(f"\n{pathlib.Path(model).name} seed {seed}: {c}")
    assert r.returncode == 0 and c["identical"] == c["rows"], (c, r.stderr)
    assert c["rows"] > 50 and c["mixed_steps"] > 5, c   # the schedule did mix
    assert c["errors_ok"], c
    return c


@pytest.fixture(scope="module")
def models(tmp_path_factory, gen_model):
    root = tmp_path_factory.mktemp("batch")
    cache = {}

    def get(arch, wtype):
        if (arch, wtype) not in cache:
            cache[(arch, wtype)] = gen_model.write_model(root / f"{arch}-{wtype}.gguf", arch=arch,
                                                         wtype=wtype, seed=7)
        return cache[(arch, wtype)]
    return get


@pytest.mark.parametrize("arch", ARCHS)
def test_mixed_batches_match_sequences_alone(models, arch):
    c = [run(models(arch, "f32"), seed, 4, 40) for seed in (1, 5)]
    assert sum(x["forks"] for x in c) > 0 and sum(x["truncates"] for x in c) > 0, c


@pytest.mark.parametrize("wtype", ["f16", "q4_0", "q8_0", "q4_k", "q6_k"])
def test_mixed_batches_weight_types(models, wtype):
    run(models("llama", wtype), 1, 4, 40)


def test_mixed_batches_block_sizes(models):
    # one position per block (every block boundary) and blocks larger than a sequence
    run(models("gemma3", "q8_0"), 3, 3, 30, block=1)
    run(models("gemma3", "q8_0"), 4, 3, 30, block=256)


@pytest.mark.parametrize("arch", ["gemma3", "qwen2"])
def test_mixed_batches_scalar_kernels(models, arch):
    # the scalar reference kernels, attention included, keep each sequence's bits too
    run(models(arch, "f32"), 2, 3, 20, env={"PENSIEVE_KERNELS": "scalar"})


def test_mixed_batches_default_model(default_model):
    c = [run(default_model, 2, 4, 24), run(default_model, 3, 3, 20, block=32)]
    assert sum(x["forks"] for x in c) > 0, c
