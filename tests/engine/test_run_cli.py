"""`pensieve run` end to end on the default model: text in, text out, seeds, errors.

The prompt is tokenized by pensieve (BOS as the model's flags say, no chat template) and
must give llama.cpp's ids; the streamed text must be the detokenized generated ids and
nothing else; seeded sampling repeats; bad requests fail with a clear message.
"""
import re
import subprocess

import numpy as np
import pytest

from oracle import llama_model

PROMPT = "The capital of France is"


def run(bin_path, model, *args, check=True):
    r = subprocess.run([str(bin_path), "run", "-m", str(model), "--threads", "2", *args],
                       capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def llm(default_model):
    return llama_model(default_model, n_ctx=256)


def summary(stderr):
    m = re.search(r"prompt (\d+) tokens, prefill ([\d.]+) tok/s, generated (\d+) tokens, "
                  r"decode ([\d.]+) tok/s, time to first token (\d+) ms", stderr)
    assert m, stderr
    return [float(x) for x in m.groups()]


def test_text_prompt_streams_only_the_generated_text(pensieve_bin, default_model, llm):
    ids_run = run(pensieve_bin, default_model, "-p", PROMPT, "-n", "24", "--temperature", "0",
                  "--print-ids")
    text_run = run(pensieve_bin, default_model, "-p", PROMPT, "-n", "24", "--temperature", "0")
    ids = [int(t) for t in ids_run.stdout.split()]
    assert len(ids) == 24
    # the prompt was tokenized as llama.cpp does (BOS first) ...
    n_prompt, _, n_gen, _, _ = summary(text_run.stderr)
    assert n_prompt == len(llm.tokenize(PROMPT.encode(), add_bos=True))
    assert n_gen == 24
    # ... and stdout is exactly the generated tokens' text: no prompt echo, no extra lines
    assert text_run.stdout == llm.detokenize(ids).decode("utf-8")
    assert not text_run.stdout.startswith(PROMPT)


def test_prompt_ids_equal_text_prompt(pensieve_bin, default_model, llm):
    ids = llm.tokenize(PROMPT.encode(), add_bos=True)
    a = run(pensieve_bin, default_model, "-p", PROMPT, "-n", "8", "--temperature", "0",
            "--print-ids").stdout
    b = run(pensieve_bin, default_model, "--prompt-ids", ",".join(map(str, ids)), "-n", "8",
            "--temperature", "0", "--print-ids").stdout
    assert a == b


def test_seed_reproducible(pensieve_bin, default_model):
    args = ["-p", "Once upon a time", "-n", "24", "--temperature", "1.0", "--top-k", "0",
            "--top-p", "1", "--min-p", "0"]
    a = run(pensieve_bin, default_model, *args, "--seed", "7", "--print-ids").stdout
    b = run(pensieve_bin, default_model, *args, "--seed", "7", "--print-ids").stdout
    c = run(pensieve_bin, default_model, *args, "--seed", "8", "--print-ids").stdout
    assert a == b
    assert a != c


def test_all_logits_file(pensieve_bin, default_model, tmp_path):
    out = tmp_path / "l.f32"
    run(pensieve_bin, default_model, "--prompt-ids", "2 818 5279", "-n", "1", "--all-logits",
        str(out))
    data = np.fromfile(out, dtype=np.float32)
    assert data.size == 3 * 262144 and np.isfinite(data).all()


def test_errors(pensieve_bin, default_model, tmp_path):
    r = run(pensieve_bin, default_model, "--prompt-ids", "2 " + "818 " * 40, "--ctx-size", "16",
            check=False)
    assert r.returncode == 1 and "do not fit" in r.stderr and "16 context positions" in r.stderr
    r = run(pensieve_bin, default_model, "--prompt-ids", "2 999999", check=False)
    assert r.returncode == 1 and "outside the vocabulary" in r.stderr
    # a context far beyond memory fails up front, saying what it needs and what there is
    r = run(pensieve_bin, default_model, "--prompt-ids", "2", "--ctx-size", "16000000",
            check=False)
    assert r.returncode == 1, r.stderr
    assert re.search(r"not enough memory .* required .* available", r.stderr), r.stderr
    r = subprocess.run([str(pensieve_bin), "run", "-m", str(tmp_path / "none.gguf"), "-p", "x"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "not found" in r.stderr
    r = subprocess.run([str(pensieve_bin), "run", "-m", str(default_model)], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "no prompt" in r.stderr


def test_bench_prints_one_json_line(pensieve_bin, default_model):
    import json
    r = subprocess.run([str(pensieve_bin), "bench", "-m", str(default_model), "-p", "16", "-n", "4",
                        "-r", "2", "-t", "2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    b = json.loads(lines[0])
    assert b["prompt_tokens"] == 16 and b["gen_tokens"] == 4 and b["threads"] == 2
    assert len(b["prefill_tok_s_all"]) == 2 and len(b["decode_tok_s_all"]) == 2
    assert b["prefill_tok_s"] > 0 and b["decode_tok_s"] > 0 and b["peak_rss_mib"] > 0


def test_stops_at_end_of_generation(pensieve_bin, gen_model, tmp_path):
    # A random-weight model sampled hot reaches an end-of-generation token (</s> = 2 or
    # <|endoftext|> = 511 in the synthetic vocabulary) within a few thousand tokens; the run
    # must stop there without printing it, and --ignore-eos must go past it.
    model = gen_model.write_model(tmp_path / "llama.gguf", arch="llama", wtype="q8_0", seed=7)
    args = ["--prompt-ids", "1 50 60", "-n", "3000", "--temperature", "3", "--top-k", "0",
            "--top-p", "1", "--min-p", "0", "--seed", "1", "--print-ids", "-c", "4096"]
    stopped = run(pensieve_bin, model, *args)
    ids = [int(t) for t in stopped.stdout.split()]
    n_gen = int(summary(stopped.stderr)[2])
    assert n_gen < 3000 and len(ids) == n_gen - 1 and not {2, 511} & set(ids)
    full = [int(t) for t in run(pensieve_bin, model, *args, "--ignore-eos").stdout.split()]
    assert len(full) == 3000 and full[:n_gen - 1] == ids and full[n_gen - 1] in (2, 511)
