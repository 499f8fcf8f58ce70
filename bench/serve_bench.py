#!/usr/bin/env python3
"""Serving throughput with concurrent streams: `pensieve serve` beside llama.cpp's server.

For each N in --streams, a server is started with --parallel N on the same model file
and threads, and N clients stream /v1/completions at once (each its own prompt of
--prompt-tokens tokens, --gen-tokens generated, greedy, usage included). Measured per N:
aggregate generated tokens/s (all tokens over the wall time of the round), per-stream
tokens/s (a stream's tokens after its first, over the time after its first), TTFT p50
and p95, and the server's peak RSS (VmHWM). Then the TTFT of a short request sent while
a --long-tokens prompt is being prefilled. llama.cpp's server (built from the
llama-cpp-python sdist's vendor/llama.cpp, CPU only, by bench/llama_server.sh; `make
bench-serve` does both) runs the same when --llama-server points at its binary; without
it only pensieve's columns are printed. Both servers run the same model file, threads
and --parallel N; llama.cpp's --ctx-size is N times pensieve's (it divides it among its
slots). Each round runs --repeat times and the medians are printed.

    .venv/bin/python bench/serve_bench.py --binary build/pensieve [--model PATH]
        [--threads 2] [--streams 1,2,4,8] [--prompt-tokens 128] [--gen-tokens 128]
        [--long-tokens 16384] [--llama-server PATH] [--repeat 3]

A benchmark, not a test: it prints numbers and ratios and asserts nothing.
"""
import argparse
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import threading
import time

import requests

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORDS = ("harbour lighthouse granite keeper lens spiral evening weather logbook council "
         "quarry builders clockwork wick tower signal ship spring stairs century").split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tokenize(binary, model, text):
    out = subprocess.run([binary, "tokenize", "-m", model, "--no-bos", "-"], input=text,
                         capture_output=True, text=True, check=True).stdout
    return [int(t) for t in out.split()]


def detokenize(binary, model, ids):
    return subprocess.run([binary, "detokenize", "-m", model] + [str(i) for i in ids],
                          capture_output=True, text=True, check=True).stdout


def prompt_of(binary, model, n_tokens, salt):
    """A text of about n_tokens tokens, different for each salt."""
    words = [WORDS[(salt * 7 + i * 3) % len(WORDS)] for i in range(n_tokens * 2)]
    text = f"Story {salt}: " + " ".join(words)
    ids = tokenize(binary, model, text)[:n_tokens - 1]
    return detokenize(binary, model, ids)


class Server:
    def __init__(self, cmd, port):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {cmd}")
            time.sleep(0.3)
        raise RuntimeError("server did not start")

    def peak_rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def stream_one(url, prompt, n_gen, out, key):
    body = {"model": "m", "prompt": prompt, "max_tokens": n_gen, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.monotonic()
    first = None
    n = 0
    with requests.post(url + "/v1/completions", json=body, stream=True, timeout=3600) as r:
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            d = json.loads(line[6:])
            if d.get("choices") and d["choices"][0].get("text"):
                first = first or time.monotonic()
            if d.get("usage"):
                n = d["usage"]["completion_tokens"]
    t1 = time.monotonic()
    out[key] = {"ttft": (first or t1) - t0, "n": n, "t0": t0, "t1": t1,
                "rate": (n - 1) / (t1 - first) if first and n > 1 and t1 > first else 0.0}


def round_of(url, prompts, n_gen):
    out = {}
    threads = [threading.Thread(target=stream_one, args=(url, p, n_gen, out, i))
               for i, p in enumerate(prompts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rs = list(out.values())
    wall = max(r["t1"] for r in rs) - min(r["t0"] for r in rs)
    ttfts = sorted(r["ttft"] for r in rs)
    return {"agg": sum(r["n"] for r in rs) / wall,
            "per_stream": statistics.mean(r["rate"] for r in rs),
            "ttft_p50": statistics.median(ttfts),
            "ttft_p95": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))],
            "tokens": sum(r["n"] for r in rs)}


def pensieve_cmd(a, port, n, ctx):
    return [a.binary, "serve", "-m", a.model, "--port", str(port), "--threads", str(a.threads),
            "--parallel", str(n), "--ctx-size", str(ctx)]


def llama_cmd(a, port, n, ctx):
    # llama.cpp divides --ctx-size among the slots
    return [a.llama_server, "-m", a.model, "--port", str(port), "--threads", str(a.threads),
            "--threads-batch", str(a.threads), "--parallel", str(n), "--ctx-size", str(ctx * n),
            "--no-webui"]


def measure(a, make_cmd, prompts, long_prompt, short_prompt):
    rows = {}
    for n in a.streams:
        port = free_port()
        s = Server(make_cmd(a, port, n, a.prompt_tokens + a.gen_tokens + 64), port)
        try:
            round_of(s.url, [short_prompt], 4)  # warm up
            # each round its own prompts: no round reads another's from a cache
            runs = [round_of(s.url, prompts[k][:n], a.gen_tokens) for k in range(a.repeat)]
            r = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
            r["rss"] = s.peak_rss_mb()
            rows[n] = r
            print(f"  N={n}: {json.dumps(r)}", file=sys.stderr)
        finally:
            s.stop()
    long_ttft = None
    if a.long_tokens:
        port = free_port()
        s = Server(make_cmd(a, port, 2, a.long_tokens + 256), port)
        try:
            out = {}
            t = threading.Thread(target=stream_one, args=(s.url, long_prompt, 4, out, "long"))
            t.start()
            time.sleep(2.0)
            stream_one(s.url, short_prompt, 4, out, "short")
            t.join()
            long_ttft = out["short"]["ttft"]
            print(f"  short TTFT during a long prefill: {long_ttft:.2f} s (long prompt's own "
                  f"TTFT {out['long']['ttft']:.1f} s)", file=sys.stderr)
        finally:
            s.stop()
    return rows, long_ttft


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=str(ROOT / "build" / "pensieve"))
    ap.add_argument("--model", default=os.path.expanduser(
        "~/.cache/pensieve/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--long-tokens", type=int, default=16384)
    ap.add_argument("--llama-server", default=None)
    ap.add_argument("--repeat", type=int, default=3, help="rounds per N (medians printed)")
    a = ap.parse_args()
    a.streams = [int(x) for x in a.streams.split(",")]

    prompts = [[prompt_of(a.binary, a.model, a.prompt_tokens, k * 100 + i)
                for i in range(max(a.streams))] for k in range(a.repeat)]
    long_prompt = prompt_of(a.binary, a.model, a.long_tokens, 999) if a.long_tokens else ""
    short_prompt = "The capital of France is"

    print("pensieve ...", file=sys.stderr)
    ours, ours_long = measure(a, pensieve_cmd, prompts, long_prompt, short_prompt)
    theirs, theirs_long = {}, None
    if a.llama_server:
        print("llama.cpp server ...", file=sys.stderr)
        theirs, theirs_long = measure(a, llama_cmd, prompts, long_prompt, short_prompt)

    def ratio(x, y):
        return f"{x / y:.2f}" if y else "-"

    print(f"\n{a.prompt_tokens} prompt tokens, {a.gen_tokens} generated per stream, "
          f"{a.threads} threads, {pathlib.Path(a.model).name}")
    print("| N | agg tok/s (pv / llama / ratio) | per-stream tok/s | TTFT p50 s | TTFT p95 s "
          "| peak RSS MB |")
    print("|---|---|---|---|---|---|")
    one = ours[a.streams[0]]["agg"]
    for n in a.streams:
        o, t = ours[n], theirs.get(n, {})
        cell = lambda k, f: (f"{o[k]:{f}} / {t[k]:{f}} / {ratio(o[k], t[k])}" if t else
                             f"{o[k]:{f}}")
        print(f"| {n} | {cell('agg', '.1f')} | {cell('per_stream', '.1f')} | "
              f"{cell('ttft_p50', '.2f')} | {cell('ttft_p95', '.2f')} | {cell('rss', '.0f')} |")
    print(f"\naggregate at {a.streams[-1]} streams / pensieve's single stream: "
          f"{ours[a.streams[-1]]['agg'] / one:.2f}x")
    if ours_long is not None:
        print(f"short request's TTFT during a {a.long_tokens}-token prefill: pensieve "
              f"{ours_long:.2f} s" + (f", llama.cpp {theirs_long:.2f} s" if theirs_long else ""))


if __name__ == "__main__":
    main()
