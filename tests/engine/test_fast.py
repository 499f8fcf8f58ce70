"""The fast kernel mode (PENSIEVE_KERNELS=fast: int8 matmuls in any float order, see
src/compute/cpu/fast_avx512.c) against the exact modes: per op, error bounds on random
inputs (tests/tools/fast_check.c, which writes the bound down); on the real models, top-1
agreement and mean KL divergence at every position of a long prompt, against the exact
mode the process picks. llama.cpp's own fast path agrees with its reference kernels on
97.8% of the default chat model's test prompt (issue 18): the fast mode must do as well
there. Gemma 3 270M is far more sensitive to rounding: llama.cpp's AVX2 and AVX-512
builds (the avx2/8 and avx2/16 modes, both exact) agree on about 95% of its positions
only; there the fast mode must be as close to the exact mode as that other exact order is,
within the sampling noise of 700 positions: 2.5 points of top-1 (two standard deviations
of the difference of two agreement rates near 95%) and 1.35x the mean KL.
Each test says which tier ran (`fast/avx512-vnni`, or `fast/avx2` / `fast/scalar` where
the CPU lacks AVX-512 VNNI and the fast mode is the exact kernels)."""
import os
import re
import pathlib
import subprocess

import pytest


ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
TOOL = ROOT / "build" / "tools" / "fast_check"
QWEN_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
PROMPT_TOKENS = 700
MIN_TOP1 = 0.978
# mean KL(exact || fast) in nats; measured 0.0013 on the default chat model (1686 positions)
MAX_MEAN_KL = 0.01


def models_dir():
    if os.environ.get("PENSIEVE_MODELS"):
        return pathlib.Path(os.environ["PENSIEVE_MODELS"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(cache) / "pensieve" / "models"


def env():
    e = dict(os.environ)
    e.pop("PENSIEVE_KERNELS", None)  # the exact side is the process's own exact mode
    return e


def test_per_op_error_bounds():
    r = subprocess.run([str(TOOL)], capture_output=True, text=True, timeout=600, env=env())
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("fast_check: tier fast/")
    assert "all within bounds" in r.stdout


def test_unknown_mode_is_refused(pensieve_bin, default_model):
    r = subprocess.run([str(pensieve_bin), "--version"], capture_output=True, text=True,
                       timeout=60, env=env())
    assert "fast kernels fast/" in r.stdout, r.stdout
    e = env()
    e["PENSIEVE_KERNELS"] = "fastest"
    r = subprocess.run([str(pensieve_bin), "bench", "-m", str(default_model), "-p", "4", "-n", "1",
                        "-r", "1"], capture_output=True, text=True, timeout=120, env=e)
    assert r.returncode != 0 and "fast" in r.stderr, r.stderr


def prompt_ids(pensieve_bin, model, tmp_path):
    text = (ROOT / "README.md").read_text()[:12000]
    r = subprocess.run([str(pensieve_bin), "tokenize", "-m", str(model), "-"], input=text,
                       capture_output=True, text=True, timeout=120, env=env())
    assert r.returncode == 0, r.stderr
    ids = r.stdout.split()[:PROMPT_TOKENS]
    assert len(ids) == PROMPT_TOKENS
    path = tmp_path / "ids.txt"
    path.write_text(" ".join(ids) + "\n")
    return path


def compare(model, ids, min_top1, max_kl, mode=None):
    """(top-1 agreement, mean KL) of mode (default: fast) against the exact mode"""
    r = subprocess.run([str(TOOL), "--model", str(model), str(ids), str(min_top1), str(max_kl)]
                       + ([mode] if mode else []), capture_output=True, text=True, timeout=1200,
                       env=env())
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{PROMPT_TOKENS} positions" in r.stdout and r.stdout.rstrip().endswith(": ok")
    m = re.search(r"top-1 agreement ([0-9.]+) .* mean KL ([0-9.e+-]+) nats", r.stdout)
    return float(m.group(1)), float(m.group(2))


def check_model(pensieve_bin, model, tmp_path):
    compare(model, prompt_ids(pensieve_bin, model, tmp_path), MIN_TOP1, MAX_MEAN_KL)


def other_exact_order(pensieve_bin):
    """the exact mode in the other lane order of the process's one (None without AVX2)"""
    out = subprocess.run([str(pensieve_bin), "--version"], capture_output=True, text=True,
                         timeout=60, env=env()).stdout
    mode = re.search(r"^kernels (\S+) \(this CPU runs: ([^)]*)\)", out, re.M)
    base, runnable = mode.group(1), mode.group(2).split()
    other = base.rsplit("/", 1)[0] + ("/8" if base.endswith("/16") else "/16")
    return other if base != "scalar" and other in runnable else None


def test_default_model_agrees(pensieve_bin, default_model, tmp_path):
    ids = prompt_ids(pensieve_bin, default_model, tmp_path)
    other = other_exact_order(pensieve_bin)
    if other is None:  # no AVX2: the fast mode is the exact kernels
        compare(default_model, ids, 1.0, 0.0)
        return
    top1, kl = compare(default_model, ids, 0.0, 1.0, other)
    compare(default_model, ids, top1 - 0.025, 1.35 * kl)


def test_default_chat_model_agrees(pensieve_bin, tmp_path):
    path = models_dir() / QWEN_FILE
    if not path.exists():
        pytest.skip(f"SKIP: {QWEN_FILE} not installed (`pensieve pull qwen2.5-coder-0.5b`)")
    check_model(pensieve_bin, path, tmp_path)
