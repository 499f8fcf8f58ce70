"""The context API through build/tools/engine_check: evaluating a prompt in pieces, or
truncating the cache and evaluating again (prefix reuse), gives exactly the logits of one
whole evaluation; and the API's error paths leave the context unchanged.
"""
import json
import pathlib
import subprocess

import pytest

from oracle import llama_model

TOOL = pathlib.Path(__file__).resolve().parent.parent.parent / "build" / "tools" / "engine_check"


def check(model, ids, split, keep):
    assert TOOL.exists(), f"{TOOL} is missing: run `make`"
    r = subprocess.run([str(TOOL), str(model), ",".join(map(str, ids)), str(split), str(keep)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)
    # the same arithmetic per position whatever the batching: bit-identical logits
    assert c["split_max_diff"] == 0 and c["split_same_top1"] == c["split_rows"], c
    assert c["reuse_max_diff"] == 0 and c["reuse_same_top1"] == c["reuse_rows"], c
    assert c["last_row_ok"] and c["errors_ok"], c


def test_default_model_pieces_and_reuse(default_model):
    llm = llama_model(default_model, n_ctx=128)
    ids = llm.tokenize(b"Pieces of a prompt evaluated apart must give the same logits as the "
                       b"whole prompt at once, and a truncated cache must continue exactly.",
                       add_bos=True)
    check(default_model, ids, split=len(ids) // 2 + 3, keep=5)


@pytest.mark.parametrize("arch", ["gemma3", "phi3", "qwen2"])
def test_synthetic_pieces_and_reuse(tmp_path, gen_model, arch):
    path = gen_model.write_model(tmp_path / f"{arch}.gguf", arch=arch, wtype="q8_0", seed=3)
    ids = [1] + [(7 * i) % 500 + 3 for i in range(40)]
    # gemma3's window is 16: the split and the kept prefix straddle it
    check(path, ids, split=23, keep=18)
