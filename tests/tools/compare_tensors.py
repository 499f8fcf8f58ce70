#!/usr/bin/env python3
"""Compare pensieve's intermediate tensors with llama.cpp's, op by op, on one prompt.

The tool that made the default model's logits bit-identical to llama.cpp's: it shows the
first tensor where the two engines part, and by how much. llama.cpp runs in this process
through llama-cpp-python with an eval callback that copies every named tensor of its
graph; pensieve runs `pensieve run --prompt-ids` with PENSIEVE_DUMP_DIR, where the forward
pass appends its tensors under the same names (src/engine/forward.c).

    .venv/bin/python tests/tools/compare_tensors.py [--model PATH] [--prompt TEXT |
        --tokens "2 818 ..."] [--layers N] [--fast-paths] [--all]

By default llama.cpp runs its reference CPU kernels, as the engine tests do (repacking
and the tiled K-quant matmul off; --fast-paths keeps them). Prints, per tensor, the
largest difference, how many elements differ and the first token row that differs;
stops after the first layer with a difference unless --all.
"""
import argparse
import ctypes
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
GGML_F32, GGML_F16 = 0, 1
GGML_OP_ROPE = 48  # its place in enum ggml_op (ggml.h)


class GgmlTensor(ctypes.Structure):
    """struct ggml_tensor of the ggml bundled with llama-cpp-python 0.3.36 (ggml.h)."""
    _fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p),
                ("ne", ctypes.c_int64 * 4), ("nb", ctypes.c_size_t * 4),
                ("op", ctypes.c_int), ("op_params", ctypes.c_int32 * 16),
                ("flags", ctypes.c_int32), ("src", ctypes.c_void_p * 10),
                ("view_src", ctypes.c_void_p), ("view_offs", ctypes.c_size_t),
                ("data", ctypes.c_void_p), ("name", ctypes.c_char * 64),
                ("extra", ctypes.c_void_p), ("padding", ctypes.c_char * 8)]


def tensor_array(t):
    """The tensor's values as float32 of shape (ne3, ne2, ne1, ne0), strides honoured."""
    es, dt = (4, np.float32) if t.type == GGML_F32 else (2, np.float16)
    ne, nb = list(t.ne), list(t.nb)
    size = sum((ne[i] - 1) * nb[i] for i in range(1, 4)) + ne[0] * es
    raw = np.frombuffer(ctypes.string_at(t.data, size), dtype=dt)
    view = np.lib.stride_tricks.as_strided(raw, shape=(ne[3], ne[2], ne[1], ne[0]),
                                           strides=(nb[3], nb[2], nb[1], nb[0]))
    return view.astype(np.float32)


def llama_with_callback(model, fast_paths, threads):
    """A Llama whose evaluations append (name, array) of every named tensor, in graph
    order, to the list returned beside it."""
    if not fast_paths:
        os.environ["GGML_CPU_TILED_MM"] = "0"  # read at llama.cpp's first matmul
    import llama_cpp.llama_cpp as lc
    from llama_cpp import Llama

    seen = []

    def callback(t, ask, _user):
        tt = ctypes.cast(t, ctypes.POINTER(GgmlTensor)).contents
        if ask:
            return True
        if tt.type in (GGML_F32, GGML_F16) and tt.data and tt.nb[0] in (2, 4):
            name = tt.name.decode()
            if tt.op == GGML_OP_ROPE:  # q/k after RoPE, whatever the graph names them
                name = name.split("-")[0] + "_rope-" + name.rsplit("-", 1)[-1]
            seen.append((name, tensor_array(tt)))
        return True

    cb = lc.ggml_backend_sched_eval_callback(callback)
    ctx_default, model_default = lc.llama_context_default_params, lc.llama_model_default_params

    def ctx_params():
        p = ctx_default()
        p.cb_eval = cb
        return p

    def model_params():
        p = model_default()
        p.use_extra_bufts = fast_paths
        return p

    lc.llama_context_default_params, lc.llama_model_default_params = ctx_params, model_params
    try:
        llm = Llama(str(model), n_ctx=512, n_batch=512, logits_all=True, n_threads=threads,
                    verbose=False)
    finally:
        lc.llama_context_default_params, lc.llama_model_default_params = ctx_default, model_default
    llm._pensieve_keep_callback = cb  # the C side holds only a pointer
    return llm, seen


def llama_by_name(seen, n_layers):
    """pensieve name -> llama.cpp array, for the names both engines share."""
    out = {}
    firsts, lasts = {}, {}
    for i, (name, arr) in enumerate(seen):
        firsts.setdefault(name, arr)
        lasts[name] = arr
        if name.startswith("kqv_out-") and i + 1 < len(seen):
            out["attn_out-" + name.split("-")[1]] = seen[i + 1][1]  # the Wo product
    out["inp_scaled--1"] = firsts.get("inp_scaled", firsts.get("inp_embd"))
    for il in range(n_layers):
        for ours, theirs, pick in [
                ("attn_norm", "attn_norm", firsts), ("Qcur", "Qcur", firsts),
                ("Kcur", "Kcur", firsts), ("Vcur", "Vcur", firsts),
                ("Qcur_normed", "Qcur_normed", firsts), ("Kcur_normed", "Kcur_normed", firsts),
                ("Qcur_rope", "Qcur_rope", firsts), ("Kcur_rope", "Kcur_rope", firsts),
                ("kqv_out", "kqv_out", firsts), ("sa_out", "sa_out", firsts),
                ("sa_out", "ffn_inp", firsts), ("ffn_norm", "ffn_norm", firsts),
                ("ffn_gate", "ffn_gate", firsts), ("ffn_up", "ffn_up", firsts),
                ("ffn_act", "ffn_geglu", firsts), ("ffn_act", "ffn_swiglu", firsts),
                ("ffn_out", "ffn_out", firsts), ("l_out", "l_out", firsts)]:
            arr = pick.get(f"{theirs}-{il}")
            if arr is not None:
                out.setdefault(f"{ours}-{il}", arr)
    return out


def pensieve_tensors(binary, model, tokens, threads, env=None):
    """(name -> array, logits) of `pensieve run --prompt-ids` with PENSIEVE_DUMP_DIR."""
    with tempfile.TemporaryDirectory() as d:
        logits = pathlib.Path(d) / "logits.f32"
        run_env = dict(env if env is not None else os.environ, PENSIEVE_DUMP_DIR=d)
        r = subprocess.run([str(binary), "run", "-m", str(model), "--threads", str(threads),
                            "--prompt-ids", " ".join(map(str, tokens)), "-n", "1",
                            "--temperature", "0", "--all-logits", str(logits)],
                           env=run_env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"pensieve run failed: {r.stderr}")
        ours = {p.stem: np.fromfile(p, dtype=np.float32) for p in pathlib.Path(d).glob("*-*.f32")}
        return ours, np.fromfile(logits, dtype=np.float32).reshape(len(tokens), -1)


STEPS = ["attn_norm", "Qcur", "Kcur", "Vcur", "Qcur_normed", "Kcur_normed", "Qcur_rope",
         "Kcur_rope", "kqv_out", "attn_out", "sa_out", "ffn_norm", "ffn_gate", "ffn_up",
         "ffn_act", "ffn_out", "l_out"]


def compare(llm, seen, binary, model, tokens, threads=2, env=None, n_layers=0):
    """Evaluate tokens in both engines; [(name, max |diff|, differing elements, first
    differing row or None)] in forward order for the tensors both have, and the two
    logits arrays (llama.cpp's, pensieve's)."""
    seen.clear()
    llm.reset()
    llm.eval(tokens)
    ref = np.array(llm.scores[: len(tokens)], dtype=np.float32)
    n_layers = n_layers or 1 + max(int(n.rsplit("-", 1)[1]) for n, _ in seen
                                   if n.startswith("l_out-"))
    theirs = llama_by_name(seen, n_layers)
    ours, our_logits = pensieve_tensors(binary, model, tokens, threads, env)
    n, rows = len(tokens), []
    for key in ["inp_scaled--1"] + [f"{step}-{il}" for il in range(n_layers) for step in STEPS]:
        if key not in ours or theirs.get(key) is None:
            continue
        a, b = theirs[key].reshape(n, -1), ours[key].reshape(n, -1)
        if a.shape != b.shape:
            raise ValueError(f"{key}: llama.cpp {a.shape}, pensieve {b.shape}")
        bad = a != b
        diff_rows = np.nonzero(bad.any(axis=1))[0]
        rows.append((key, float(np.abs(a - b).max()), int(bad.sum()),
                     int(diff_rows[0]) if len(diff_rows) else None))
    return rows, ref, our_logits


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_model = pathlib.Path(os.path.expanduser("~/.cache/pensieve/models/gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--model", type=pathlib.Path, default=default_model)
    ap.add_argument("--binary", type=pathlib.Path, default=ROOT / "build" / "pensieve")
    ap.add_argument("--prompt", default="The history of the lighthouse at the edge of the harbour")
    ap.add_argument("--tokens", help="prompt token ids, space-separated (instead of --prompt)")
    ap.add_argument("--layers", type=int, default=0, help="compare this many layers (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fast-paths", action="store_true",
                    help="llama.cpp with weight repacking and tiled matmuls on")
    ap.add_argument("--all", action="store_true", help="do not stop at the first difference")
    args = ap.parse_args()

    llm, seen = llama_with_callback(args.model, args.fast_paths, args.threads)
    tokens = ([int(t) for t in args.tokens.split()] if args.tokens
              else llm.tokenize(args.prompt.encode(), add_bos=True))
    rows, ref, ours = compare(llm, seen, args.binary, args.model, tokens, args.threads,
                              n_layers=args.layers)
    print(f"{len(tokens)} tokens, llama.cpp "
          f"{'fast paths' if args.fast_paths else 'reference kernels'}")
    stop = False
    for key, maxdiff, n_bad, first in rows:
        print(f"{key:20s} max |diff| {maxdiff:.3g}  differing {n_bad:7d}  first row "
              f"{'-' if first is None else first}")
        stop = stop or n_bad > 0
        if stop and not args.all and key.startswith("l_out-"):
            print("(stopping after the first layer with a difference; --all goes on)")
            break
    print(f"logits: {int(np.sum(np.all(ref == ours, axis=1)))}/{len(tokens)} rows "
          f"bit-identical, max |diff| {float(np.abs(ref - ours).max()):.4g}, top-1 agreement "
          f"{float(np.mean(ref.argmax(1) == ours.argmax(1))):.4f}")


if __name__ == "__main__":
    main()
