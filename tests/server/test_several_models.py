"""Several models in one server: a request's `model` picks a file of the model directory
(file stem, file name or catalogue name), loaded on demand; names that match no installed
model go to the default model (-m), as Claude Code's "claude-..." names do. Idle models
are unloaded after --keep-alive (visible in /health, `pensieve ps` and the resident
memory); --max-loaded and --max-memory make a load unload the least recently used idle
model first, or refuse with an error in the API's own envelope when the models loaded
have requests in flight or the model can never fit. Two small real models: Gemma 3 270M
(the default here) and SmolLM2-135M-Instruct, in a private model directory."""
import json
import subprocess
import threading
import time

import pytest
import requests

GEMMA = "gemma-3-270m-q4_k_m"
SMOL = "smollm2-135m-instruct-q4_1"
MSG = {"role": "user", "content": "Name a colour."}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, default_model):
    """A model directory holding the two models (links to the shared files) and a file
    that is not a model."""
    smol = default_model.parent / f"{SMOL}.gguf"
    assert smol.exists(), f"{smol} is missing: scripts/setup pulls it"
    d = tmp_path_factory.mktemp("models")
    (d / f"{GEMMA}.gguf").symlink_to(default_model)
    (d / f"{SMOL}.gguf").symlink_to(smol)
    (d / "broken.gguf").write_bytes(b"GGUF" + b"\x00" * 60)
    return d


def serve(start_server, model_dir, *args, default=GEMMA):
    return start_server(["-m", default, "--ctx-size", "1024", *args],
                        env={"PENSIEVE_MODELS": str(model_dir)})


def loaded(s):
    return {m["name"]: m for m in requests.get(s.url + "/health").json()["models"]}


def count(s, model):
    r = requests.post(s.url + "/v1/messages/count_tokens",
                      json={"model": model, "messages": [MSG]})
    assert r.status_code == 200, r.text
    return r.json()["input_tokens"]


def message(s, model, max_tokens=8, **kw):
    return requests.post(s.url + "/v1/messages", json={
        "model": model, "max_tokens": max_tokens, "temperature": 0, "messages": [MSG], **kw})


def rss(s):
    return requests.get(s.url + "/health").json()["memory_rss_bytes"]


def wait_for(pred, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_requests_pick_models_by_name(start_server, model_dir):
    s = serve(start_server, model_dir, "--keep-alive", "-1")
    assert list(loaded(s)) == [GEMMA]
    # the two tokenizers and templates count one message differently: which model answered
    n_gemma = count(s, GEMMA)
    n_smol = count(s, SMOL)
    assert n_gemma != n_smol
    for name in (f"{SMOL}.gguf", "smollm2-135m", "smollm2-135m:latest"):
        assert count(s, name) == n_smol, name
    # unknown and empty names are the default model (Claude Code sends its own names)
    for name in ("claude-sonnet-4-5", "", "smollm2", "../models/" + SMOL):
        assert count(s, name) == n_gemma, name
    assert set(loaded(s)) == {GEMMA, SMOL}

    # generations alternate between the two, each echoing the name it was asked for
    for name in (SMOL, GEMMA, SMOL, "claude-sonnet-4-5", GEMMA):
        r = message(s, name)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == name and r.json()["content"][0]["text"]
    # each model's engine holds its own conversation's cache
    assert all(m["kv_cache_used_tokens"] > 0 for m in loaded(s).values())
    oa = requests.post(s.url + "/v1/chat/completions", json={
        "model": SMOL, "max_tokens": 8, "temperature": 0, "messages": [MSG]})
    assert oa.status_code == 200 and oa.json()["model"] == SMOL

    # /v1/models lists what is installed and says what is loaded
    listing = requests.get(s.url + "/v1/models").json()["data"]
    by_id = {m["id"]: m for m in listing}
    assert listing[0]["id"] == GEMMA
    assert set(by_id) == {GEMMA, SMOL, "broken"}
    assert by_id[GEMMA]["loaded"] and by_id[SMOL]["loaded"] and not by_id["broken"]["loaded"]
    assert by_id[SMOL]["max_input_tokens"] == 1024
    one = requests.get(s.url + f"/v1/models/{SMOL}").json()
    assert one["id"] == SMOL and one["loaded"] is True
    # a keep-alive of -1 never unloads
    time.sleep(1.5)
    assert loaded(s)[SMOL]["expires_in_s"] is None


def test_keep_alive_unloads_idle_models(start_server, model_dir, pensieve_bin):
    s = serve(start_server, model_dir, "--keep-alive", "4s")
    base = rss(s)
    assert message(s, SMOL, max_tokens=4).status_code == 200
    m = loaded(s)
    assert set(m) == {GEMMA, SMOL}
    assert m[GEMMA]["default"] and m[GEMMA]["expires_in_s"] is None
    assert 0 < m[SMOL]["expires_in_s"] <= 4 and m[SMOL]["memory_bytes"] > 90_000_000
    with_smol = rss(s)
    ps = subprocess.run([str(pensieve_bin), "ps", "--port", str(s.port)], capture_output=True,
                        text=True, timeout=30)
    assert ps.returncode == 0, ps.stderr
    rows = {l.split()[0]: l for l in ps.stdout.splitlines()[2:] if l.split()}
    assert rows[GEMMA].endswith("never (default)") and " in " in rows[SMOL], ps.stdout
    # unloaded after 4 s idle: gone from /health, from ps, and its memory is returned
    assert wait_for(lambda: set(loaded(s)) == {GEMMA}, timeout=15), loaded(s)
    assert rss(s) < with_smol - 50_000_000, (base, with_smol, rss(s))
    ps = subprocess.run([str(pensieve_bin), "ps", "--port", str(s.port)], capture_output=True,
                        text=True, timeout=30)
    assert SMOL not in ps.stdout and GEMMA in ps.stdout
    assert "unloaded (idle for --keep-alive 4s)" in s.output()
    # the next request loads it again
    assert message(s, SMOL, max_tokens=4).status_code == 200
    assert SMOL in loaded(s)


def test_keep_alive_zero_and_requests_in_flight(start_server, model_dir):
    """--keep-alive 0 unloads a model as soon as its last request ends, never during one."""
    s = serve(start_server, model_dir, "--keep-alive", "0")
    seen_during = []
    with requests.post(s.url + "/v1/messages", stream=True, json={
            "model": SMOL, "max_tokens": 48, "temperature": 0, "stream": True,
            "messages": [MSG]}) as r:
        assert r.status_code == 200
        for i, line in enumerate(r.iter_lines()):
            if i in (2, 20, 40):
                seen_during.append(SMOL in loaded(s))
    assert seen_during and all(seen_during)
    assert wait_for(lambda: set(loaded(s)) == {GEMMA}, timeout=10), loaded(s)


def test_budget_unloads_the_least_recently_used(start_server, model_dir):
    s = serve(start_server, model_dir, "--max-loaded", "1", "--keep-alive", "-1")
    assert message(s, SMOL, max_tokens=2).status_code == 200
    assert set(loaded(s)) == {SMOL}        # the idle default made room
    assert message(s, "claude-sonnet-4-5", max_tokens=2).status_code == 200
    assert set(loaded(s)) == {GEMMA}       # and is loaded again when asked for
    assert "unloaded (room for another model: --max-loaded)" in s.output()

    # --max-memory: both do not fit together (Gemma ~263 MiB, SmolLM2 ~121 MiB here)
    s2 = serve(start_server, model_dir, "--max-memory", "300M")
    assert message(s2, SMOL, max_tokens=2).status_code == 200
    assert set(loaded(s2)) == {SMOL}
    assert "room for another model: --max-memory" in s2.output()


def test_load_errors_in_each_api_envelope(start_server, model_dir):
    s = serve(start_server, model_dir, "--max-loaded", "1")
    # a model that is busy cannot be unloaded for another: 529 (OpenAI: 503), then it works
    stream = requests.post(s.url + "/v1/messages", stream=True, json={
        "model": GEMMA, "max_tokens": 400, "stream": True, "messages": [MSG]})
    lines = stream.iter_lines()
    next(lines)
    r = message(s, SMOL)
    assert r.status_code == 529, r.text
    err = r.json()
    assert err["type"] == "error" and err["error"]["type"] == "overloaded_error"
    assert SMOL in err["error"]["message"] and "in flight" in err["error"]["message"]
    r = requests.post(s.url + "/v1/chat/completions",
                      json={"model": SMOL, "max_tokens": 4, "messages": [MSG]})
    assert r.status_code == 503 and r.json()["error"]["param"] == "model", r.text
    stream.close()
    assert wait_for(lambda: message(s, SMOL, max_tokens=2).status_code == 200)

    # a file of the directory that is not a model: the load's error, naming the file
    r = message(s, "broken")
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "broken.gguf" in r.json()["error"]["message"]
    r = requests.post(s.url + "/v1/chat/completions",
                      json={"model": "broken", "messages": [MSG]})
    assert r.status_code == 400 and "broken.gguf" in r.json()["error"]["message"]

    # a model larger than the whole budget can never load
    s2 = serve(start_server, model_dir, "--max-memory", "200M", default=SMOL)
    r = message(s2, GEMMA)
    assert r.status_code == 500, r.text
    assert "--max-memory" in r.json()["error"]["message"]
    assert message(s2, SMOL, max_tokens=2).status_code == 200


def test_alias_strict_mode_knows_installed_models(start_server, model_dir):
    s = serve(start_server, model_dir, "--alias", "mine")
    assert count(s, "mine") == count(s, GEMMA)
    assert count(s, SMOL) != count(s, GEMMA)
    r = message(s, "claude-sonnet-4-5")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
