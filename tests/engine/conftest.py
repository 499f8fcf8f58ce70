"""Fixtures of the engine tests; the helpers that drive both engines are in oracle.py."""
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tools"))


@pytest.fixture(scope="session")
def gen_model():
    """gen_model.write_model(path, arch=..., wtype=...) from tests/tools."""
    import gen_model as g
    return g


@pytest.fixture(scope="session")
def pensieve_bin(request):
    """build/pensieve, or $PENSIEVE_BIN when set (to test another build)."""
    import os
    path = pathlib.Path(os.environ.get("PENSIEVE_BIN") or
                        pathlib.Path(__file__).resolve().parent.parent.parent / "build" / "pensieve")
    assert path.exists(), f"{path} is missing: run `make` first"
    return path
