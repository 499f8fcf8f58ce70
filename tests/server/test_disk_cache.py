"""The persistent prompt cache (--cache-dir): KV blocks of prompt prefixes on disk.

A prompt served once is served again after a restart from the disk, with logits bit for
bit those of a server that computes everything; torn, truncated, corrupt and foreign
files are found, logged, removed and recomputed; a changed model file never reads
another's blocks; two servers share one directory; kill -9 mid-write leaves nothing that
is read; the directory stays under --cache-size. The model is SmolLM2 135M (scripts/setup
installs it), small enough to prefill a few hundred tokens quickly on a loaded machine.
"""
import json
import os
import shutil
import signal
import threading
import time

import pytest
import requests

from pensieve_tests import prompt_tokens, models_dir

MODEL_FILE = "smollm2-135m-instruct-q4_1.gguf"
BLOCK = 32
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPT = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()[:1300]
PROMPT2 = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()[3000:4000]


@pytest.fixture(scope="module")
def model():
    path = models_dir() / MODEL_FILE
    assert path.exists(), f"{path} is missing: scripts/setup installs it"
    return path


def serve(start_server, model, cache, *extra):
    return start_server(["-m", str(model), "--ctx-size", "2048", "--cache-dir", str(cache), *extra],
                        env={"PENSIEVE_NO_DISK_CACHE": "0"}, timeout=120)


def health(srv):
    return requests.get(srv.url + "/health", timeout=10).json()


def wait_disk_ready(srv, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        disk = health(srv)["prompt_cache"]["disk"]
        if disk and disk["ready"]:
            return disk
        time.sleep(0.2)
    raise AssertionError(f"the disk cache did not get ready:\n{srv.output()}")


def complete(srv, prompt=PROMPT):
    r = requests.post(srv.url + "/v1/completions", timeout=900,
                      json={"model": "m", "prompt": prompt, "max_tokens": 3, "temperature": 0,
                            "logprobs": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    usage = body["usage"]
    cached = usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)
    return body["choices"][0]["text"], body["choices"][0]["logprobs"], usage["prompt_tokens"], cached


def kv_files(cache):
    return sorted(p for p in os.listdir(cache) if p.endswith(".kv"))


def all_blocks(n_prompt):
    """What a second request finds: every full block before the last prompt token."""
    return (n_prompt - 1) // BLOCK * BLOCK


@pytest.fixture(scope="module")
def populated(start_server, model, tmp_path_factory):
    """A cache directory written by one server for PROMPT, and the reference answer of a
    server without any disk cache (every position computed)."""
    ref = start_server(["-m", str(model), "--ctx-size", "2048", "--no-disk-cache"])
    assert health(ref)["prompt_cache"]["disk"] is None
    reference = complete(ref)
    ref.stop()
    cache = tmp_path_factory.mktemp("kv") / "cache"
    srv = serve(start_server, model, cache)
    wait_disk_ready(srv)
    first = complete(srv)
    assert first[3] == 0, "a cold cache read something"
    assert first[:3] == reference[:3]
    assert srv.stop() == 0
    files = kv_files(cache)
    assert len(files) >= all_blocks(reference[2]) // BLOCK, (files, srv.output())
    return cache, reference


def copy_cache(populated, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(populated[0], cache)
    return cache


def test_restart_loads_prefix_from_disk_bit_identical(start_server, model, populated, tmp_path):
    cache = copy_cache(populated, tmp_path)
    reference = populated[1]
    srv = serve(start_server, model, cache)
    wait_disk_ready(srv)
    text, logprobs, n_prompt, cached = complete(srv)
    assert cached == all_blocks(n_prompt) > 0
    # the logits after a prefix loaded from disk are those of a full computation
    assert json.dumps(logprobs) == json.dumps(reference[1])
    assert text == reference[0]
    disk = health(srv)["prompt_cache"]["disk"]
    assert disk["hits"] == cached // BLOCK and disk["invalid"] == 0, disk
    assert disk["hit_tokens"] == cached
    metrics = requests.get(srv.url + "/metrics", timeout=10).text
    assert f"pensieve_prompt_cache_disk_hits_total {cached // BLOCK}\n" in metrics
    assert f"pensieve_prompt_cache_disk_hit_tokens_total {cached}\n" in metrics
    # Anthropic usage: a new prompt's full blocks are written to the cache, then read
    body = {"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": PROMPT2}]}
    first = requests.post(srv.url + "/v1/messages", timeout=900, json=body).json()["usage"]
    assert first["cache_read_input_tokens"] == 0
    assert first["cache_creation_input_tokens"] == prompt_tokens(first) // BLOCK * BLOCK > 0
    again = requests.post(srv.url + "/v1/messages", timeout=900, json=body).json()["usage"]
    assert again["cache_read_input_tokens"] >= first["cache_creation_input_tokens"], again
    assert again["cache_creation_input_tokens"] == 0, again


def damage_corrupt(paths):
    for path in paths:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x40
        path.write_bytes(bytes(data))


def damage_truncate(paths):
    for path in paths:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])


def damage_swap(paths):
    """Each block's file holds the next one's (valid, of another prefix)."""
    data = [p.read_bytes() for p in paths]
    for k, path in enumerate(paths):
        path.write_bytes(data[(k + 1) % len(paths)])


@pytest.mark.parametrize("damage,reason", [(damage_corrupt, "corrupt (checksum mismatch)"),
                                           (damage_truncate, "truncated"),
                                           (damage_swap, "of another prefix")])
def test_damaged_file_is_removed_and_recomputed(start_server, model, populated, tmp_path, damage,
                                                reason):
    cache = copy_cache(populated, tmp_path)
    files = [cache / f for f in kv_files(cache)]
    damage(files)
    srv = serve(start_server, model, cache)
    wait_disk_ready(srv)
    text, logprobs, n_prompt, cached = complete(srv)
    # the first block's file is damaged: nothing comes from disk, all is computed
    assert cached == 0
    assert (text, json.dumps(logprobs)) == (populated[1][0], json.dumps(populated[1][1]))
    disk = health(srv)["prompt_cache"]["disk"]
    assert disk["invalid"] == 1 and disk["hits"] == 0, disk
    log = srv.output()
    assert f"is {reason}; removed" in log, log
    # written anew from the computed blocks: a restart reads them all
    assert srv.stop() == 0
    srv = serve(start_server, model, cache)
    wait_disk_ready(srv)
    text, logprobs, n_prompt, cached = complete(srv)
    assert cached == all_blocks(n_prompt)
    assert (text, json.dumps(logprobs)) == (populated[1][0], json.dumps(populated[1][1]))


def test_changed_model_file_never_reads_another_models_blocks(start_server, model, populated,
                                                              tmp_path):
    cache = copy_cache(populated, tmp_path)
    before = kv_files(cache)
    # the same model with one byte of its last tensor changed: another identity
    changed = tmp_path / "changed.gguf"
    shutil.copyfile(model, changed)
    with open(changed, "r+b") as f:
        f.seek(-4096, os.SEEK_END)
        b = f.read(1)
        f.seek(-4096, os.SEEK_END)
        f.write(bytes([b[0] ^ 1]))
    srv = serve(start_server, changed, cache)
    wait_disk_ready(srv)
    assert complete(srv)[3] == 0
    assert srv.stop() == 0
    mine = sorted(set(kv_files(cache)) - set(before))
    assert mine and not {f.split("-")[0] for f in mine} & {f.split("-")[0] for f in before}
    # its (valid) files put in the place of the first model's blocks
    for k, target in enumerate(before):
        shutil.copyfile(cache / mine[k % len(mine)], cache / target)
    srv = serve(start_server, model, cache)
    wait_disk_ready(srv)
    text, logprobs, _, cached = complete(srv)
    assert cached == 0
    assert (text, json.dumps(logprobs)) == (populated[1][0], json.dumps(populated[1][1]))
    log = srv.output()
    assert "is of another model; removed" in log, log


def test_two_servers_share_one_directory(start_server, model, populated, tmp_path):
    cache = copy_cache(populated, tmp_path)
    a = serve(start_server, model, cache)
    b = serve(start_server, model, cache)
    wait_disk_ready(a)
    wait_disk_ready(b)
    # both compute and write the same new prompt at once
    results = {}

    def run(name, srv):
        results[name] = complete(srv, PROMPT2)

    threads = [threading.Thread(target=run, args=(n, s)) for n, s in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["a"][:3] == results["b"][:3]
    assert a.stop() == 0 and b.stop() == 0
    assert not [p for p in os.listdir(cache) if p.startswith(".tmp-")]
    # a third server finds what either wrote, valid
    c = serve(start_server, model, cache)
    wait_disk_ready(c)
    text, logprobs, n_prompt, cached = complete(c, PROMPT2)
    assert cached == all_blocks(n_prompt)
    assert (text, logprobs) == results["a"][:2]
    assert health(c)["prompt_cache"]["disk"]["invalid"] == 0


def test_kill9_during_writes_leaves_nothing_read_as_valid(start_server, model, populated,
                                                          tmp_path):
    cache = tmp_path / "cache"
    srv = serve(start_server, model, cache)
    wait_disk_ready(srv)
    t = threading.Thread(target=lambda: requests.post(
        srv.url + "/v1/completions", timeout=900,
        json={"model": "m", "prompt": PROMPT, "max_tokens": 3, "temperature": 0}))
    t.daemon = True
    t.start()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and len(kv_files(cache)) < 2:
        time.sleep(0.01)
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    t.join(60)
    written = kv_files(cache)
    assert 2 <= len(written)
    # what a writer killed between open and rename leaves behind, by a process now gone
    (cache / ".tmp-999999-0.part").write_bytes(b"\0" * 1000)
    srv = serve(start_server, model, cache)
    wait_disk_ready(srv)
    assert not [p for p in os.listdir(cache) if p.startswith(".tmp-")]
    text, logprobs, n_prompt, cached = complete(srv)
    assert cached >= len(written) * BLOCK - BLOCK and cached % BLOCK == 0
    assert (text, json.dumps(logprobs)) == (populated[1][0], json.dumps(populated[1][1]))
    assert health(srv)["prompt_cache"]["disk"]["invalid"] == 0


def test_cache_never_grows_past_its_size(start_server, model, tmp_path):
    cache = tmp_path / "cache"
    limit = 2 << 20
    srv = serve(start_server, model, cache, "--cache-size", "2M")
    wait_disk_ready(srv)
    complete(srv)
    assert srv.stop() == 0
    files = kv_files(cache)
    assert files and sum(os.path.getsize(cache / f) for f in files) <= limit
    assert "disk cache" in srv.log_path.read_text()
    # the newest blocks stay (least recently used go first), and the total is reported
    srv = serve(start_server, model, cache, "--cache-size", "2M")
    disk = wait_disk_ready(srv)
    assert disk["bytes"] <= limit and disk["max_bytes"] == limit and disk["files"] == len(files)


def test_claude_code_sessions_with_other_first_prompts_share_the_system_prompt(start_server, model,
                                                                                tmp_path):
    """Claude Code's billing header, the first line of its system prompt, ends its version
    with a fingerprint of the session's first prompt (cc_version=2.1.328.593 for "say hi",
    .3a8 for "what is 2+2?"): the server zeroes it, so a session that starts with another
    question still reads the system prompt and tools from the cache."""
    srv = serve(start_server, model, tmp_path / "cache")

    def session(fingerprint, question):
        system = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.328."
                   f"{fingerprint}; cc_entrypoint=sdk-cli;"},
                  {"type": "text", "text": PROMPT, "cache_control": {"type": "ephemeral"}}]
        r = requests.post(srv.url + "/v1/messages", timeout=900, json={
            "model": "m", "max_tokens": 2, "system": system,
            "messages": [{"role": "user", "content": question}]})
        assert r.status_code == 200, r.text
        return r.json()["usage"]

    first = session("593", "say hi")
    second = session("3a8", "what is 2+2?")
    assert first["cache_read_input_tokens"] == 0
    assert second["cache_read_input_tokens"] >= prompt_tokens(first) - 16, (first, second)
