"""mode_check (tests/tools/mode_check.c): every CPU kernel mode this CPU runs against the
engine's own scalar reference, and 1 thread against 2, on synthetic models. The same tool
is what `make check-engine` runs on machines without the oracle (see README)."""
import pathlib
import subprocess

import pytest

from oracle import ALL_MODES, MODES_RUN, runnable_modes

TOOL = pathlib.Path(__file__).resolve().parent.parent.parent / "build" / "tools" / "mode_check"


@pytest.mark.parametrize("arch,wtype,tol", [("gemma3", "q4_k", 2e-2), ("llama", "f32", 2e-3),
                                            ("phi3", "q5_0", 2e-2)])
def test_every_mode_agrees_with_scalar(pensieve_bin, gen_model, tmp_path, arch, wtype, tol):
    path = gen_model.write_model(tmp_path / f"{arch}-{wtype}.gguf", arch=arch, wtype=wtype, seed=5)
    r = subprocess.run([str(TOOL), str(path), "80", str(tol)], capture_output=True, text=True,
                       timeout=300)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    runnable = runnable_modes(pensieve_bin)
    for mode in ALL_MODES:
        line = next(l for l in r.stdout.splitlines() if l.strip().startswith(mode + " "))
        if mode in runnable:
            assert " ok " in line, line
            MODES_RUN.add(mode)
        else:
            assert "not runnable on this CPU" in line, line
