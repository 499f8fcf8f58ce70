"""CPU kernels against gguf-py's NumPy reference (same bit layouts as ggml).

For every weight type: blocks from gguf.quants.quantize (where gguf-py has a quantizer)
and blocks of random bits (every type, so every bit pattern of the K-quants is reached)
go through `build/tools/kernel_check dequant` and must equal gguf.quants.dequantize bit
for bit (both compute the same f32 products in the same order). cpu_matmul on 2 threads must match numpy's
float64 product of the dequantized weight with the f32 activations; the error comes
from quantizing the activations (to Q8_0 / Q8_1 / Q8_K, fp16 or bf16, as llama.cpp
does), and the bound per dot type is stated in MATMUL_RTOL.
"""
import pathlib
import subprocess

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
TOOL = ROOT / "build" / "tools" / "kernel_check"

WEIGHT_TYPES = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
                T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
HAS_QUANTIZER = {T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0}

# byte offsets of the fp16 scale fields inside one block (quant.h)
FP16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}

# relative L2 error of y against float64 numpy, by what the activations are rounded to:
# f32 none (observed 1.2e-7); f16 2^-11 per element (observed 2e-4); bf16 2^-8 (1.6e-3);
# Q8_0 / Q8_1 / Q8_K blocks amax/254 per element (observed 0.4-0.8 %)
MATMUL_RTOL = {T.F32: 1e-6, T.F16: 1e-3, T.BF16: 6e-3}
MATMUL_RTOL_Q8 = 2e-2


@pytest.fixture(scope="module")
def tool() -> pathlib.Path:
    assert TOOL.exists(), f"{TOOL} is missing: run `make`"
    return TOOL


def random_blocks(qtype: T, n_elems: int, rng: np.random.Generator) -> np.ndarray:
    """Random bits for n_elems of qtype, with every fp16 field a small finite value."""
    blck, size = quants.GGML_QUANT_SIZES[qtype]
    if qtype == T.F32:
        return rng.standard_normal(n_elems).astype(np.float32).view(np.uint8)
    if qtype == T.F16:
        return rng.standard_normal(n_elems).astype(np.float16).view(np.uint8)
    if qtype == T.BF16:
        return quants.quantize(rng.standard_normal(n_elems).astype(np.float32), T.BF16)
    raw = rng.integers(0, 256, size=(n_elems // blck, size), dtype=np.uint8)
    for off in FP16_FIELDS[qtype]:
        scale = (rng.random(raw.shape[0]) * 0.05 + 1e-3).astype(np.float16)
        scale *= np.where(rng.random(raw.shape[0]) < 0.2, -1, 1).astype(np.float16)
        raw[:, off:off + 2] = scale.view(np.uint8).reshape(-1, 2)
    return raw.reshape(-1)


def quantized_blocks(qtype: T, data: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(quants.quantize(data, qtype)).view(np.uint8).reshape(-1)


def run_dequant(tool, tmp_path, qtype, blocks, n_elems) -> np.ndarray:
    src, dst = tmp_path / "in.bin", tmp_path / "out.f32"
    blocks.tofile(src)
    subprocess.run([str(tool), "dequant", str(int(qtype)), str(n_elems), str(src), str(dst)],
                   check=True, timeout=60)
    return np.fromfile(dst, dtype=np.float32)


def reference_dequant(qtype, blocks, n_elems) -> np.ndarray:
    if qtype == T.F32:
        return blocks.view(np.float32).copy()
    if qtype == T.F16:
        return blocks.view(np.float16).astype(np.float32)
    return quants.dequantize(blocks, qtype).reshape(-1).astype(np.float32)


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda t: t.name)
def test_dequantize_matches_gguf_py(tool, tmp_path, qtype):
    rng = np.random.default_rng(int(qtype) + 1)
    n = 256 * 64
    sources = [("random bits", random_blocks(qtype, n, rng))]
    if qtype in HAS_QUANTIZER:
        data = (rng.standard_normal(n) * rng.choice([0.01, 1.0, 30.0], size=n)).astype(np.float32)
        data[:64] = 0.0  # all-zero blocks
        sources.append(("gguf-py quantize", quantized_blocks(qtype, data)))
    for what, blocks in sources:
        ours = run_dequant(tool, tmp_path, qtype, blocks, n)
        ref = reference_dequant(qtype, blocks, n)
        assert ours.shape == ref.shape == (n,)
        bad = np.nonzero(ours.view(np.uint32) != ref.view(np.uint32))[0]
        assert bad.size == 0, (f"{qtype.name} ({what}): {bad.size} of {n} differ, first at "
                               f"{bad[0]}: ours {ours[bad[0]]!r} ref {ref[bad[0]]!r}")


@pytest.mark.parametrize("qtype", WEIGHT_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n_tokens", [1, 5])
def test_matmul_matches_numpy(tool, tmp_path, qtype, n_tokens):
    rng = np.random.default_rng(1000 + int(qtype) * 7 + n_tokens)
    ne0, ne1 = 512, 67
    if qtype in HAS_QUANTIZER:
        w = quantized_blocks(qtype, rng.standard_normal(ne0 * ne1).astype(np.float32))
    else:
        w = random_blocks(qtype, ne0 * ne1, rng)
    wf = reference_dequant(qtype, w, ne0 * ne1).astype(np.float64).reshape(ne1, ne0)
    x = rng.standard_normal((n_tokens, ne0)).astype(np.float32)
    files = [tmp_path / "w.bin", tmp_path / "x.f32", tmp_path / "y.f32"]
    w.tofile(files[0])
    x.tofile(files[1])
    subprocess.run([str(tool), "matmul", str(int(qtype)), str(ne0), str(ne1), str(n_tokens), "2",
                    *map(str, files)], check=True, timeout=60)
    y = np.fromfile(files[2], dtype=np.float32).reshape(n_tokens, ne1)
    ref = x.astype(np.float64) @ wf.T
    rel = np.linalg.norm(y - ref) / np.linalg.norm(ref)
    assert rel <= MATMUL_RTOL.get(qtype, MATMUL_RTOL_Q8), f"{qtype.name}: relative error {rel:.3g}"


def test_tool_rejects_bad_input(tool, tmp_path):
    src = tmp_path / "short.bin"
    src.write_bytes(b"\0" * 10)
    bad_size = subprocess.run([str(tool), "dequant", str(int(T.Q8_0)), "32", str(src),
                               str(tmp_path / "o")], capture_output=True, timeout=60)
    assert bad_size.returncode != 0 and b"is not 34 bytes" in bad_size.stderr
    bad_type = subprocess.run([str(tool), "dequant", "20", "32", str(src), str(tmp_path / "o")],
                              capture_output=True, timeout=60)
    assert bad_type.returncode != 0 and b"unsupported type" in bad_type.stderr
