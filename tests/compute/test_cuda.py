"""The CUDA backend: what runs on any machine, and what needs a GPU (skipped, visibly).

- The CPU-only build (`make`) has no CUDA: `--device cuda` fails with a message saying to
  build with `make cuda`, a device name that is not cpu/cuda/auto is a usage error, and
  `--device auto` runs on the CPU.
- build/cuda/cuda_dequant_check (built by `make cuda`, where nvcc is) runs the CUDA
  kernels' dequantization of every weight type as host code against the CPU's: exact.
- build/cuda/cuda_emu_check runs the kernels themselves (attention over block tables,
  mat-vec, get_rows, dequantize-to-fp16, rmsnorm, RoPE, GLU, KV store, bias) on CPU threads that emulate blocks, barriers and warp shuffles,
  against the CPU backend: their logic without a GPU (bounds in its header).
- build/cuda/cuda_check (the CUDA backend's ops and whole-model logits against the CPU,
  its bounds in tests/tools/cuda_check.c) needs a GPU: here it runs on synthetic models
  of every architecture when the machine has one, and is skipped with the reason when it
  has not. On the GPU machine bench/gpu/run.sh check runs it on every arch and type.
"""
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
CUDA_DIR = ROOT / "build" / "cuda"
sys.path.insert(0, str(ROOT / "tests" / "tools"))


def run(args, **kw):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, **kw)


def test_cpu_build_refuses_cuda_device(pensieve_bin, default_model):
    r = run([pensieve_bin, "run", "-m", default_model, "-p", "hi", "-n", "1", "--device", "cuda"])
    assert r.returncode == 1, r.stderr
    assert "this build has no CUDA backend" in r.stderr and "make cuda" in r.stderr, r.stderr


def test_device_name_is_checked(pensieve_bin, default_model):
    r = run([pensieve_bin, "bench", "-m", default_model, "-p", "4", "-n", "1", "--device", "gpu"])
    assert r.returncode == 2, r.stderr
    assert "--device: expected cpu, cuda or auto, got 'gpu'" in r.stderr, r.stderr


def test_auto_device_is_the_cpu_here(pensieve_bin, default_model):
    r = run([pensieve_bin, "run", "-m", default_model, "-p", "hi", "-n", "2", "-t", "2",
             "--temperature", "0", "--device", "auto"])
    assert r.returncode == 0, r.stderr
    assert "device cpu" in r.stderr, r.stderr


def test_cuda_dequantization_matches_cpu():
    tool = CUDA_DIR / "cuda_dequant_check"
    if not tool.exists():
        pytest.skip(f"SKIP: {tool} not built (`make cuda` needs nvcc)")
    r = run([tool])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "13 passed, 0 failed" in r.stdout, r.stdout


def test_cuda_kernels_emulated_match_cpu():
    tool = CUDA_DIR / "cuda_emu_check"
    if not tool.exists():
        pytest.skip(f"SKIP: {tool} not built (`make cuda` needs nvcc)")
    r = run([tool])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "19 passed, 0 failed" in r.stdout, r.stdout


def test_cuda_backend_against_cpu(tmp_path):
    tool = CUDA_DIR / "cuda_check"
    if not tool.exists():
        pytest.skip(f"SKIP: {tool} not built (`make cuda` needs nvcc); bench/gpu/run.sh check "
                    "runs it on the GPU machine")
    probe = run([tool, "none.gguf"])
    if probe.stdout.startswith("SKIP"):
        pytest.skip(f"{probe.stdout.strip()}; bench/gpu/run.sh check runs it on the GPU machine")
    import gen_model
    models = []
    for arch, wtype in [("qwen2", "q4_k"), ("llama", "q8_0"), ("gemma3", "f16"), ("phi3", "q4_0"),
                        ("qwen3", "bf16")]:
        path = tmp_path / f"{arch}-{wtype}.gguf"
        gen_model.write_model(path, arch=arch, wtype=wtype)
        models.append(path)
    r = run([tool, *models])
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr
    assert " 0 failed" in r.stdout, r.stdout[-4000:]
