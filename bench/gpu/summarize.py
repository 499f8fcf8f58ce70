#!/usr/bin/env python3
"""summarize.py OUTDIR - the side-by-side table of one `bench/gpu/run.sh bench` call.

Reads OUTDIR/pensieve.jsonl (one line per `pensieve bench` run: tag, peak GPU memory,
the bench's JSON), OUTDIR/llama-*.jsonl (llama-bench's rows), the generator's
*.gguf.json (decode bytes per token) and bw.txt (the card's copy bandwidth), and prints
a markdown table: pensieve's figure, llama.cpp's best of flash attention off/on, their
ratio, and decode bandwidth as a fraction of the copy bandwidth.
"""
import glob
import json
import os
import re
import sys

d = sys.argv[1]
copy_bw = float("nan")
if os.path.exists(os.path.join(d, "bw.txt")):
    for line in open(os.path.join(d, "bw.txt")):
        m = re.match(r"copy 4 GiB.*median ([\d.]+) TB/s", line)
        if m:
            copy_bw = float(m.group(1)) * 1e12
info = {}
for p in glob.glob(os.path.join(d, "*.gguf.json")):
    j = json.load(open(p))
    info[f"{j['shape']}-{j['wtype']}"] = j

llama = {}  # (model, test) -> best t/s over fa
for p in glob.glob(os.path.join(d, "llama-*.jsonl")):
    model = re.match(r"llama-(.*?)(-d16k)?\.jsonl", os.path.basename(p)).group(1)
    for line in open(p):
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        test = f"tg{r['n_gen']}" if r["n_gen"] else f"pp{r['n_prompt']}"
        if r.get("n_depth"):
            test += f"@d{r['n_depth']}"
        key = (model, test)
        llama[key] = max(llama.get(key, 0.0), r["avg_ts"])

print(f"copy bandwidth (4 GiB D2D, read+written): {copy_bw / 1e12:.3f} TB/s\n")
print("| model | test | pensieve t/s | llama.cpp t/s (best fa) | ratio | pensieve decode BW | % copy BW | load ms | GPU MiB |")
print("|---|---|---|---|---|---|---|---|---|")
for line in open(os.path.join(d, "pensieve.jsonl")):
    e = json.loads(line)
    r = e.get("result") or {}
    tag = e["tag"]
    model, kind = tag.rsplit("-", 1)
    j = info.get(model)
    rows = []
    if kind in ("p512", "p4096"):
        rows.append((f"pp{r.get('prompt_tokens')}", r.get("prefill_tok_s")))
        if r.get("gen_tokens"):
            rows.append((f"tg{r['gen_tokens']}", r.get("decode_tok_s")))
    elif kind == "d16k":
        rows.append((f"tg{r.get('gen_tokens')}@d16384", r.get("decode_tok_s")))
    elif kind == "p20k":
        rows.append(("first token of 20000 (ms)", r.get("ttft_ms")))
    elif kind.startswith("par"):
        rows.append((f"decode x{r.get('parallel')} (aggregate)", r.get("decode_tok_s")))
    for test, v in rows:
        ref = llama.get((model, test.replace("@d16384", "@d16384")))
        ratio = f"{v / ref:.2f}" if v and ref else ""
        bw = pct = ""
        if v and j and test.startswith("tg") and "@" not in test:
            b = j["decode_weight_bytes"] * v
            bw, pct = f"{b / 1e12:.3f} TB/s", f"{100 * b / copy_bw:.1f}%"
        print(f"| {model} | {test} | {v if v is not None else 'rc ' + str(e['rc'])} | "
              f"{ref or ''} | {ratio} | {bw} | {pct} | {r.get('load_ms', '')} + "
              f"{r.get('context_ms', '')} | {e.get('gpu_mem_peak_mib', '')} |")
