"""Several `pensieve serve` instances behind nginx with contrib/nginx/pensieve.conf.

nginx (Debian's package; scripts/setup installs it) runs as the test's user with its own
prefix, config, pid and logs in a temporary directory; the shipped config is used as it
is, only its upstream addresses, listen port and log path pointed at this test's. Three
instances of the small model share one disk cache directory. Checked: a Claude Code
session's second turn lands on the instance of its first and reads its prefix from
that instance's memory; SIGTERM drains an instance (its stream finishes) while new
requests go to the others; kill -9 of an instance ends its in-flight stream with an
error at once, and the session's next request succeeds on another instance, which reads
the session's prefix from the shared disk cache.
"""
import os
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest
import requests

from pensieve_tests import prompt_tokens, ROOT, Server, free_port, models_dir

MODEL_FILE = "smollm2-135m-instruct-q4_1.gguf"
README = (ROOT / "README.md").read_text(encoding="utf-8")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def instance(model, port, cache):
    return Server(["-m", str(model), "--ctx-size", "2048", "--cache-dir", str(cache),
                   "--grace", "300"], env={"PENSIEVE_NO_DISK_CACHE": "0"}, port=port, timeout=120)


class Cluster:
    def __init__(self, tmp, model):
        self.tmp, self.model = tmp, model
        self.cache = tmp / "kv"
        self.ports = [free_port() for _ in range(3)]
        self.servers = {p: instance(model, p, self.cache) for p in self.ports}
        self.port = free_port()
        conf = (ROOT / "contrib" / "nginx" / "pensieve.conf").read_text()
        ups = re.findall(r"^\s*server 127\.0\.0\.1:\d+ (.*);$", conf, re.M)
        assert len(ups) == 3, "the shipped config lists three instances"
        conf = re.sub(r"^(\s*)server 127\.0\.0\.1:8081 ", r"\1server 127.0.0.1:%d " % self.ports[0],
                      conf, flags=re.M)
        conf = re.sub(r"^(\s*)server 127\.0\.0\.1:8082 ", r"\1server 127.0.0.1:%d " % self.ports[1],
                      conf, flags=re.M)
        conf = re.sub(r"^(\s*)server 127\.0\.0\.1:8083 ", r"\1server 127.0.0.1:%d " % self.ports[2],
                      conf, flags=re.M)
        conf = conf.replace("listen 127.0.0.1:8080;", "listen 127.0.0.1:%d;" % self.port)
        conf = conf.replace("/var/log/nginx/pensieve.log", str(tmp / "access.log"))
        assert all(f":{p} " in conf for p in self.ports) and f":{self.port};" in conf
        (tmp / "pensieve.conf").write_text(conf)
        for d in ("body", "proxy", "fcgi", "uwsgi", "scgi"):
            (tmp / d).mkdir()
        (tmp / "nginx.conf").write_text(
            ("user root;\n" if os.geteuid() == 0 else "") +
            f"daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\n"
            f"error_log {tmp}/error.log info;\nevents {{ worker_connections 256; }}\n"
            f"http {{\n  client_body_temp_path {tmp}/body;\n  proxy_temp_path {tmp}/proxy;\n"
            f"  fastcgi_temp_path {tmp}/fcgi;\n  uwsgi_temp_path {tmp}/uwsgi;\n"
            f"  scgi_temp_path {tmp}/scgi;\n  include {tmp}/pensieve.conf;\n}}\n")
        self.nginx = subprocess.Popen([NGINX, "-p", str(tmp), "-c", str(tmp / "nginx.conf"),
                                       "-e", str(tmp / "error.log")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.nginx.poll() is None, (tmp / "error.log").read_text()
            try:
                requests.get(self.url + "/health", timeout=5)
                break
            except requests.RequestException:
                time.sleep(0.1)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def ensure_up(self):
        for p, s in self.servers.items():
            if s.proc.poll() is not None:
                self.servers[p] = instance(self.model, p, self.cache)
        for s in self.servers.values():
            wait_disk_ready(s)

    def served_by(self, request_id):
        """The port of the instance whose log has this request."""
        found = [p for p, s in self.servers.items()
                 if s.log_path.exists() and f"request {request_id} " in s.log_path.read_text()]
        assert len(found) == 1, (request_id, found)
        return found[0]

    def busy(self):
        """The ports of the instances generating now."""
        return [p for p, s in self.servers.items() if s.proc.poll() is None and
                requests.get(s.url + "/health", timeout=10).json()["slots_busy"] > 0]

    def close(self):
        self.nginx.send_signal(signal.SIGQUIT)
        try:
            self.nginx.wait(20)
        except subprocess.TimeoutExpired:
            self.nginx.kill()
            self.nginx.wait()
        for s in self.servers.values():
            s.stop()


def disk_writes(srv):
    return requests.get(srv.url + "/health", timeout=10).json()["prompt_cache"]["disk"]["writes"]


def wait_disk_ready(srv, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        disk = requests.get(srv.url + "/health", timeout=10).json()["prompt_cache"]["disk"]
        if disk["ready"]:
            return disk
        time.sleep(0.2)
    raise AssertionError("the disk cache did not get ready")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    assert os.path.exists(NGINX), "nginx is missing: scripts/setup installs Debian's nginx"
    model = models_dir() / MODEL_FILE
    assert model.exists(), f"{model} is missing: scripts/setup installs it"
    c = Cluster(tmp_path_factory.mktemp("nginx"), model)
    yield c
    c.close()


def turn(cluster, session, rid, messages, max_tokens=4, stream=False, timeout=900):
    headers = {"X-Request-Id": rid, "anthropic-version": "2023-06-01"}
    if session:
        headers["X-Claude-Code-Session-Id"] = session
    return requests.post(cluster.url + "/v1/messages", headers=headers, stream=stream,
                         timeout=timeout, json={"model": "m", "max_tokens": max_tokens,
                                                "temperature": 0, "stream": stream,
                                                "messages": messages})


def first_turn(k):
    return [{"role": "user", "content": f"Session {k}. Read this and answer briefly.\n" +
             README[k * 700:k * 700 + 1100]}]


def second_turn(k, reply):
    return first_turn(k) + [{"role": "assistant", "content": reply or "ok"},
                            {"role": "user", "content": "And in one word?"}]


def test_session_second_turn_lands_on_the_same_instance(cluster):
    cluster.ensure_up()
    r1 = turn(cluster, "sess-affinity", "t1-affinity-1", first_turn(1))
    assert r1.status_code == 200, r1.text
    assert r1.headers.get("request-id") == "t1-affinity-1"
    reply = r1.json()["content"][0]["text"] if r1.json()["content"] else ""
    r2 = turn(cluster, "sess-affinity", "t1-affinity-2", second_turn(1, reply))
    assert r2.status_code == 200, r2.text
    assert cluster.served_by("t1-affinity-1") == cluster.served_by("t1-affinity-2")
    usage = r2.json()["usage"]
    assert usage["cache_read_input_tokens"] >= prompt_tokens(r1.json()["usage"]) - 8, usage
    # nginx logged the same id and the instance's address
    log = (cluster.tmp / "access.log").read_text()
    assert re.search(r"rid=t1-affinity-2 up=127\.0\.0\.1:%d" % cluster.served_by("t1-affinity-2"),
                     log), log


def read_events(resp, out, started):
    """SSE event names of a stream into out; sets started at the first text delta."""
    try:
        for line in resp.iter_lines():
            if line.startswith(b"event: "):
                out.append(line[7:].decode())
                if out[-1] == "content_block_delta":
                    started.set()
    except (requests.RequestException, Exception) as e:  # noqa: BLE001 - any end is recorded
        out.append(f"error: {type(e).__name__}")
    finally:
        started.set()


def test_sigterm_drains_while_new_requests_go_elsewhere(cluster):
    cluster.ensure_up()
    r = turn(cluster, "sess-drain", "t2-drain-1", first_turn(2), max_tokens=2)
    assert r.status_code == 200, r.text
    port = cluster.served_by("t2-drain-1")
    events, started = [], threading.Event()
    resp = turn(cluster, "sess-drain", "t2-drain-2", second_turn(2, "ok"), max_tokens=48,
                stream=True)
    assert resp.status_code == 200
    t = threading.Thread(target=read_events, args=(resp, events, started), daemon=True)
    t.start()
    assert started.wait(600)
    assert cluster.busy() == [port]  # the session's stream runs on its instance
    cluster.servers[port].proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    # the session's next request (and another's) go to the other instances
    r3 = turn(cluster, "sess-drain", "t2-drain-3", first_turn(3), max_tokens=2)
    assert r3.status_code == 200, r3.text
    assert cluster.served_by("t2-drain-3") != port
    t.join(600)
    assert events and events[-1] == "message_stop", events  # the drained stream finished
    assert cluster.servers[port].proc.wait(60) == 0


def test_kill9_ends_streams_cleanly_and_disk_cache_follows_the_session(cluster):
    cluster.ensure_up()
    writes = {p: disk_writes(s) for p, s in cluster.servers.items()}
    r1 = turn(cluster, "sess-kill", "t3-kill-1", first_turn(4), max_tokens=2)
    assert r1.status_code == 200, r1.text
    port = cluster.served_by("t3-kill-1")
    first_input = prompt_tokens(r1.json()["usage"])
    # its blocks are on disk once the instance's writer has written them
    deadline = time.monotonic() + 120
    while disk_writes(cluster.servers[port]) - writes[port] < first_input // 32:
        assert time.monotonic() < deadline, "the first turn's blocks were not written"
        time.sleep(0.2)
    events, started = [], threading.Event()
    # a long answer, so the instance dies in the middle of it (a one-word answer could end
    # between the busy check and the kill)
    long_answer = first_turn(4) + [{"role": "assistant", "content": "ok"},
                                   {"role": "user",
                                    "content": "Now count from 1 to 300, separated by commas."}]
    resp = turn(cluster, "sess-kill", "t3-kill-2", long_answer, max_tokens=400, stream=True)
    t = threading.Thread(target=read_events, args=(resp, events, started), daemon=True)
    t.start()
    assert started.wait(600)
    assert cluster.busy() == [port]
    cluster.servers[port].proc.send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    t.join(60)
    assert not t.is_alive() and time.monotonic() - t0 < 30, "the stream hung"
    assert "message_stop" not in events, events  # no stream pretends to have finished
    # the session goes on elsewhere, its prefix read from the shared disk cache
    r3 = turn(cluster, "sess-kill", "t3-kill-3", second_turn(4, "ok"), max_tokens=2)
    assert r3.status_code == 200, r3.text
    assert cluster.served_by("t3-kill-3") != port
    usage = r3.json()["usage"]
    assert usage["cache_read_input_tokens"] >= (first_input - 8) // 32 * 32 > 0, usage
