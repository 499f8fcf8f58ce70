"""oracle_check.py - hold mode_check's logits (its DUMP_DIR) against llama.cpp, the pinned
oracle, on the same model and ids: for a machine where only the engine-only build and the
oracle's wheel run (see README, make check-engine).

    python3 tests/tools/oracle_check.py MODEL DUMP_DIR

Prints, per kernel mode dumped, how many positions are bit-identical to llama.cpp's and
the largest difference. Exit status 1 when an 8-lane mode (the oracle's float order) is
not bit-identical at every position.
"""
import os
import pathlib
import sys

os.environ.setdefault("GGML_CPU_TILED_MM", "0")  # llama.cpp's reference kernels (oracle.py)
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "engine"))

import numpy as np  # noqa: E402

from oracle import llama_logits, llama_model, oracle_features  # noqa: E402


def main(model, dump):
    dump = pathlib.Path(dump)
    ids = [int(t) for t in (dump / "ids.txt").read_text().split()]
    ref = llama_logits(llama_model(model, n_ctx=len(ids) + 8), ids)
    print(f"{pathlib.Path(model).name}: oracle {oracle_features().strip()}")
    bad = 0
    for f in sorted(dump.glob("*.f32")):
        ours = np.fromfile(f, dtype=np.float32).reshape(ref.shape)
        same = int(np.sum(np.all(ours == ref, axis=1)))
        exact_order = f.stem in ("avx2_8", "avx2_vnni_8")
        ok = same == len(ids) or not exact_order
        bad += not ok
        print(f"  {f.stem:13s} {'ok  ' if ok else 'FAIL'} {same}/{len(ids)} positions bit-identical, "
              f"max |diff| {float(np.abs(ours - ref).max()):.3g}"
              f"{' (oracle order: must be identical)' if exact_order else ''}")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
