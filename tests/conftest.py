"""Shared pytest fixtures: the built binary, the model directory, and running servers.

`pensieve_server` starts the real `build/pensieve serve` on a free port, waits until it
answers GET /health, and stops it (SIGTERM, then SIGKILL) when the test module ends.
PENSIEVE_E2E_EXTERNAL=host:port points the same tests at a server already running.
"""
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

# Test modules import the helpers below as `from pensieve_tests import ...`: the module
# name "conftest" is ambiguous in a whole run (tests/engine has its own conftest).
sys.modules.setdefault("pensieve_tests", sys.modules[__name__])


def prompt_tokens(usage):
    """The whole prompt of an Anthropic usage (a dict or the SDK's object): input tokens
    plus those written to and read from the cache."""
    get = usage.get if isinstance(usage, dict) else (lambda k: getattr(usage, k))
    return (get("input_tokens") + (get("cache_creation_input_tokens") or 0) +
            (get("cache_read_input_tokens") or 0))

# llama.cpp, the oracle of the engine tests, runs its reference CPU kernels: its tiled
# K-quant batch matmul is off (read once, at its first matmul, so set before any test).
# See tests/engine/oracle.py for why.
os.environ.setdefault("GGML_CPU_TILED_MM", "0")

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "build" / "pensieve"
DEFAULT_MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"
LARGE_MODEL_FILE = "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf"


def models_dir() -> pathlib.Path:
    if os.environ.get("PENSIEVE_MODELS"):
        return pathlib.Path(os.environ["PENSIEVE_MODELS"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(cache) / "pensieve" / "models"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pensieve_bin() -> pathlib.Path:
    assert BIN.exists(), f"{BIN} is missing: run `make` first"
    return BIN


@pytest.fixture(scope="session")
def default_model() -> pathlib.Path:
    path = models_dir() / DEFAULT_MODEL_FILE
    assert path.exists(), f"default model {path} is missing: scripts/setup installs it"
    return path


@pytest.fixture(scope="session")
def large_model() -> pathlib.Path:
    path = models_dir() / LARGE_MODEL_FILE
    if not path.exists():
        pytest.skip(f"SKIP: {LARGE_MODEL_FILE} not installed (incomplete on PyPI: place the file "
                    "in the model directory to test it)")
    return path


class Server:
    """A running `pensieve serve` process."""

    def __init__(self, args, env=None, port=None, wait=True, timeout=60.0):
        self.port = port or free_port()
        self.host = "127.0.0.1"
        cmd = [str(BIN), "serve", "--host", self.host, "--port", str(self.port), *args]
        full_env = dict(os.environ)
        # the disk prompt cache outlives a server: off unless a test asks for it, so that
        # one test's prompts are never another's cache hits (and ~/.cache stays clean)
        full_env["PENSIEVE_NO_DISK_CACHE"] = "1"
        full_env.update(env or {})
        self.log_path = ROOT / "build" / f"server-{self.port}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=full_env)
        if wait:
            self.wait_ready(timeout)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not answer /health within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def start_server():
    """Factory: start_server(args, env=None) -> Server; all are stopped at module end."""
    servers = []

    def start(args, env=None, **kw):
        s = Server(args, env=env, **kw)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def server(start_server, default_model):
    """One server on the default model, shared by a test module; or an external one."""
    external = os.environ.get("PENSIEVE_E2E_EXTERNAL")
    if external:
        host, port = external.rsplit(":", 1)

        class External:
            pass

        ext = External()
        ext.host, ext.port, ext.url = host, int(port), f"http://{host}:{port}"
        return ext
    return start_server(["-m", str(default_model)])


def pytest_terminal_summary(terminalreporter):
    """Say which CPU kernel modes the engine tests ran pensieve in, and which this CPU
    cannot run (tests/engine/oracle.py), so a run on a CPU without AVX2 or AVX-VNNI shows
    what it did not cover."""
    import sys
    oracle = sys.modules.get("oracle")
    if oracle is None or not BIN.exists():
        return
    runnable = oracle.runnable_modes(BIN)
    ran = [m for m in oracle.ALL_MODES if m in oracle.MODES_RUN]
    cannot = [m for m in oracle.ALL_MODES if m not in runnable]
    terminalreporter.write_line(
        f"kernel modes run by the engine tests: {', '.join(ran) or 'none'}; "
        f"not runnable on this CPU: {', '.join(cannot) or 'none'}; "
        f"oracle: llama.cpp built for {oracle.oracle_features().strip()}")
