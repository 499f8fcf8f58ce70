#!/usr/bin/env python3
"""Speed of pensieve against llama.cpp on the same machine, model file, threads and tokens.

Both engines get the same prompt token ids (a fixed English text tokenized by llama.cpp,
cut to --prompt-tokens) and decode --gen-tokens tokens greedily, --reps times; medians
are compared. Each engine runs in its own process under /usr/bin/time -v for peak RSS,
alternating with the other (the machine may be shared).
llama.cpp runs through llama-cpp-python (n_threads = n_threads_batch = --threads).

    .venv/bin/python bench/compare.py --binary build/pensieve [--model PATH] [--threads N]
        [--prompt-tokens 128] [--gen-tokens 64] [--reps 3] [--kernels MODE,MODE...]
        [--llama-bench PATH]
Prints a table of medians and pensieve/llama.cpp ratios (> 1 is pensieve ahead for
speeds, behind for times and memory), then every run's JSON line. --kernels runs pensieve
once per kernel mode (PENSIEVE_KERNELS: e.g. `exact,fast`; `exact` is the process's
default exact mode), each with its column and ratio. Decode runs after the prompt, so
--prompt-tokens 8192 gives the decode speed at depth 8K. --llama-bench adds a native
llama.cpp build's llama-bench (same model, threads, prompt length; -pg for prefill + decode)
as a second reference column. The pensieve kernel tier and llama.cpp's build are printed.
"""
import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEXT = (
    "The history of the lighthouse at the edge of the harbour begins in 1842, when the town "
    "council voted to replace the old signal fire with a stone tower. Builders hauled granite "
    "from the quarry on the hill, and the lens, ground in Paris, arrived by ship the following "
    "spring. For a hundred years keepers climbed its spiral stairs every evening to trim the "
    "wick, wind the clockwork and write the weather in a leather logbook. "
)

# Runs in a child process: load, then per repetition prefill + greedy decode, as bench does.
LLAMA_CHILD = r"""
import json, statistics, sys, time
import numpy as np
from llama_cpp import Llama
model, threads, n_gen, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
prompt = [int(t) for t in sys.argv[5].split()]
t0 = time.perf_counter()
llm = Llama(model, n_ctx=len(prompt) + n_gen + 8, n_batch=512, n_threads=threads,
            n_threads_batch=threads, logits_all=False, verbose=False)
load_ms = (time.perf_counter() - t0) * 1e3
n_vocab = llm.n_vocab()


def last_token():
    # without logits_all, llm.scores is not filled: read the last token's logits directly
    row = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
    return int(np.argmax(row))


pre, dec, ttft = [], [], []
for _ in range(reps):
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    tok = last_token()
    t1 = time.perf_counter()
    for _ in range(n_gen):
        llm.eval([tok])
        tok = last_token()
    t2 = time.perf_counter()
    pre.append(len(prompt) / (t1 - t0)); dec.append(n_gen / (t2 - t1) if n_gen else 0.0)
    ttft.append((t1 - t0) * 1e3)
print(json.dumps({"engine": "llama.cpp", "threads": threads, "prompt_tokens": len(prompt),
                  "gen_tokens": n_gen, "repetitions": reps, "load_ms": round(load_ms, 1),
                  "prefill_tok_s": statistics.median(pre), "decode_tok_s": statistics.median(dec),
                  "ttft_ms": statistics.median(ttft), "prefill_tok_s_all": pre,
                  "decode_tok_s_all": dec}))
"""


def default_model():
    d = os.environ.get("PENSIEVE_MODELS") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pensieve", "models")
    return os.path.join(d, "gemma-3-270m-q4_k_m.gguf")


def prompt_tokens(model, n):
    from llama_cpp import Llama
    llm = Llama(model, vocab_only=True, verbose=False)
    ids = llm.tokenize(TEXT.encode(), add_bos=True)
    body = llm.tokenize(TEXT.encode(), add_bos=False)
    while len(ids) < n:
        ids += body
    return ids[:n]


def timed(cmd, env=None):
    """Run cmd under /usr/bin/time -v; (its stdout, peak RSS in MiB)."""
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"compare: {cmd[0]} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return r.stdout, int(m.group(1)) / 1024 if m else float("nan")


def llama_bench(args, n_prompt):
    """one llama-bench run (--inner-reps repetitions): prefill of n_prompt tokens, then decode of
    --gen-tokens after it (-pg), as pensieve's bench reports them"""
    cmd = [args.llama_bench, "-m", args.model, "-t", str(args.threads), "-r", str(args.inner_reps),
           "-o", "json",
           "-p", str(n_prompt), "-n", "0"]
    if args.gen_tokens:
        cmd += ["-pg", f"{n_prompt},{args.gen_tokens}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"compare: llama-bench failed ({r.returncode}):\n{r.stderr[-2000:]}")
    tests = json.loads(r.stdout)
    pre = next(t for t in tests if t["n_gen"] == 0)
    out = {"engine": "llama-bench", "build": tests[0].get("cpu_info", "") + " " +
           tests[0].get("backends", ""), "prefill_tok_s_all": pre["samples_ts"],
           "decode_tok_s_all": [0.0], "ttft_ms": n_prompt / pre["avg_ts"] * 1e3, "load_ms": 0.0}
    pg = [t for t in tests if t["n_gen"] > 0 and t["n_prompt"] > 0]
    if pg:  # prefill + decode together: the decode part from the prefill rate
        dec = []
        for total_s in (ns * 1e-9 for ns in pg[0]["samples_ns"]):
            d = total_s - n_prompt / pre["avg_ts"]
            dec.append(args.gen_tokens / d if d > 0 else float("nan"))
        out["decode_tok_s_all"] = dec
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--kernels", default="exact",
                    help="comma-separated PENSIEVE_KERNELS modes ('exact': the default one)")
    ap.add_argument("--llama-bench", default=None, help="a native build's llama-bench binary")
    ap.add_argument("--inner-reps", type=int, default=2, help="repetitions within each run")
    args = ap.parse_args()
    modes = [m.strip() for m in args.kernels.split(",") if m.strip()]
    version = subprocess.run([args.binary, "--version"], capture_output=True, text=True).stdout
    print(version.strip().replace("\n", "; "))

    ids = prompt_tokens(args.model, args.prompt_tokens)
    ids_text = " ".join(map(str, ids))
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(LLAMA_CHILD)
    names = [f"pensieve[{m}]" for m in modes]
    runs = {n: [] for n in names}
    runs["llama.cpp"] = []
    if args.llama_bench:
        runs["llama-bench"] = []
    try:
        # alternate the engines, so a busy moment of the machine hits both alike
        for _ in range(args.reps):
            for m, name in zip(modes, names):
                env = dict(os.environ)
                env.pop("PENSIEVE_KERNELS", None)
                if m != "exact":
                    env["PENSIEVE_KERNELS"] = m
                out, rss = timed([args.binary, "bench", "-m", args.model, "--prompt-ids", ids_text,
                                  "-n", str(args.gen_tokens), "-r", str(args.inner_reps),
                                  "-t", str(args.threads)],
                                 env)
                runs[name].append((json.loads(out.strip().splitlines()[-1]), rss))
            out, rss = timed([sys.executable, f.name, args.model, str(args.threads),
                              str(args.gen_tokens), str(args.inner_reps), ids_text])
            runs["llama.cpp"].append((json.loads(out.strip().splitlines()[-1]), rss))
            if args.llama_bench:
                runs["llama-bench"].append((llama_bench(args, len(ids)), float("nan")))
    finally:
        os.unlink(f.name)

    def summarize(rs):
        m = {"prefill_tok_s": statistics.median(v for r, _ in rs for v in r["prefill_tok_s_all"]),
             "decode_tok_s": statistics.median(v for r, _ in rs for v in r["decode_tok_s_all"]),
             "ttft_ms": statistics.median(r["ttft_ms"] for r, _ in rs),
             "load_ms": statistics.median(r["load_ms"] for r, _ in rs),
             "peak_rss_mib": statistics.median(rss for _, rss in rs)}
        return m
    sums = {n: summarize(rs) for n, rs in runs.items()}
    ref = sums["llama.cpp"]

    print(f"model {args.model}, {args.threads} threads, prompt {len(ids)} tokens, "
          f"decode {args.gen_tokens} tokens; medians over {args.reps} alternating runs of each "
          f"engine, {args.inner_reps} repetitions per run; ratios against llama.cpp (llama-cpp-python)")
    cols = list(sums)
    print(f"{'':22}" + "".join(f"{c:>20}" for c in cols) + "".join(f"{'ratio ' + n[9:-1]:>14}" for n in names))
    for key, label in [("prefill_tok_s", "prefill tok/s"), ("decode_tok_s", "decode tok/s"),
                       ("ttft_ms", "time to first token ms"), ("load_ms", "load ms"),
                       ("peak_rss_mib", "peak RSS MiB")]:
        row = "".join(f"{sums[c][key]:20.1f}" for c in cols)
        row += "".join(f"{(sums[n][key] / ref[key] if ref[key] else float('nan')):14.2f}" for n in names)
        print(f"{label:22}{row}")
    for name, rs in runs.items():
        for r, rss in rs:
            print(json.dumps(dict(r, engine=name, peak_rss_mib=rss)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
