"""soak.py - the load and soak test of `pensieve serve` (`make soak`; not part of make test).

For --minutes (30 by default) 8 clients mix streaming and non-streaming calls of both APIs,
count_tokens, clients that disconnect at random points, and now and then a burst of
requests above the queue size. Asserted at the end:
  - no unexpected error: every answer is 200, or 529/503 overload (only expected in a
    burst); every stream ends with its end event (message_stop / [DONE]) or an error event;
  - RssAnon (+VmSwap) grows less than 2% from the end of the warm-up to the end;
  - the open file descriptors return to what they were after the warm-up.
The figures go to stdout and to build/soak/result.json.

    .venv/bin/python tests/soak/soak.py --binary build/pensieve --minutes 2
"""
import argparse
import json
import os
import pathlib
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROMPTS = ["Name three colours.", "Count from one to five.", "Say hello in French.",
           "What is two plus two?", "Write a haiku about the sea.", "List four animals."]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def models_dir():
    if os.environ.get("PENSIEVE_MODELS"):
        return pathlib.Path(os.environ["PENSIEVE_MODELS"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(cache) / "pensieve" / "models"


def proc_mem(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("RssAnon", "VmSwap", "VmRSS"):
                fields[k] = int(v.split()[0]) * 1024
    fields["anon"] = fields.get("RssAnon", 0) + fields.get("VmSwap", 0)
    fields["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return fields


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.unexpected = []

    def add(self, key):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def bad(self, what):
        with self.lock:
            self.unexpected.append(what)
            self.counts["unexpected"] = self.counts.get("unexpected", 0) + 1


class Soak:
    def __init__(self, url, port, stats, burst_lock):
        self.url, self.port, self.stats = url, port, stats
        self.burst = burst_lock  # held by a burst: overloads are expected then
        self.rng = random.Random()

    def body(self, openai, stream):
        b = {"model": "pensieve", "max_tokens": self.rng.randint(4, 24), "stream": stream,
             "temperature": self.rng.choice([0, 0.7]),
             "messages": [{"role": "user", "content": self.rng.choice(PROMPTS)}]}
        return b

    def status_ok(self, r, name, openai):
        if r.status_code == 200:
            return True
        overload = 503 if openai else 529
        if r.status_code == overload:
            self.stats.add(f"{name}:overloaded")
            if not self.burst.locked():
                self.stats.bad(f"{name}: {r.status_code} outside a burst: {r.text[:200]}")
            return False
        self.stats.bad(f"{name}: status {r.status_code}: {r.text[:200]}")
        return False

    def plain(self, openai):
        name = "openai" if openai else "anthropic"
        path = "/v1/chat/completions" if openai else "/v1/messages"
        r = requests.post(self.url + path, json=self.body(openai, False), timeout=300)
        if self.status_ok(r, name, openai):
            j = r.json()
            text = (j["choices"][0]["message"]["content"] if openai else
                    "".join(c.get("text", "") for c in j["content"]))
            if not isinstance(text, str):
                self.stats.bad(f"{name}: no text in {j}")
            self.stats.add(name)

    def stream(self, openai, drop_after=None):
        name = ("openai" if openai else "anthropic") + ("-stream" if drop_after is None else "-drop")
        path = "/v1/chat/completions" if openai else "/v1/messages"
        r = requests.post(self.url + path, json=self.body(openai, True), stream=True, timeout=300)
        if not self.status_ok(r, name, openai):
            r.close()
            return
        ended = errored = False
        n = 0
        try:
            for line in r.iter_lines():
                if not line:
                    continue
                n += 1
                if drop_after is not None and n >= drop_after:
                    r.close()  # a client going away mid-stream
                    self.stats.add(name)
                    return
                s = line.decode()
                if openai:
                    if s == "data: [DONE]":
                        ended = True
                    elif s.startswith("data: ") and '"error"' in s[:40]:
                        errored = True
                else:
                    if s == "event: message_stop":
                        ended = True
                    elif s == "event: error":
                        errored = True
        finally:
            r.close()
        if errored:
            self.stats.add(f"{name}:error-event")
            if not self.burst.locked():
                self.stats.bad(f"{name}: error event outside a burst")
        elif not ended:
            self.stats.bad(f"{name}: stream ended without its end event ({n} lines)")
        else:
            self.stats.add(name)

    def count_tokens(self):
        r = requests.post(self.url + "/v1/messages/count_tokens",
                          json={"model": "pensieve", "messages": [
                              {"role": "user", "content": self.rng.choice(PROMPTS)}]},
                          timeout=60)
        if r.status_code != 200 or r.json().get("input_tokens", 0) < 1:
            self.stats.bad(f"count_tokens: {r.status_code} {r.text[:200]}")
        else:
            self.stats.add("count_tokens")

    def raw_drop(self):
        """A non-streamed request whose client closes before the answer."""
        body = json.dumps(self.body(False, False)).encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                      + body)
            time.sleep(self.rng.uniform(0, 0.5))
        self.stats.add("raw-drop")

    def one(self):
        k = self.rng.random()
        if k < 0.2:
            self.plain(False)
        elif k < 0.4:
            self.plain(True)
        elif k < 0.58:
            self.stream(False)
        elif k < 0.76:
            self.stream(True)
        elif k < 0.84:
            self.count_tokens()
        elif k < 0.92:
            self.stream(self.rng.random() < 0.5, drop_after=self.rng.randint(1, 6))
        else:
            self.raw_drop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=str(ROOT / "build" / "pensieve"))
    ap.add_argument("--model", default=str(models_dir() / "gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--queue", type=int, default=16)
    ap.add_argument("--out", default=str(ROOT / "build" / "soak" / "result.json"))
    a = ap.parse_args(argv)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out_dir = pathlib.Path(a.out).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    log = open(out_dir / "server.log", "wb")
    srv = subprocess.Popen([a.binary, "serve", "-m", a.model, "--port", str(port),
                            "--parallel", str(a.parallel), "--queue", str(a.queue),
                            "--ctx-size", "2048", "--pid-file", str(out_dir / "pid")],
                           stdout=log, stderr=subprocess.STDOUT,
                           env=dict(os.environ, PENSIEVE_LOG_LEVEL="warn"))
    for _ in range(600):
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.1)
    else:
        print("soak: the server did not start", file=sys.stderr)
        return 1

    stats = Stats()
    burst_lock = threading.Lock()
    total_s = a.minutes * 60
    warm_s = max(20.0, total_s * 0.1)
    t0 = time.monotonic()
    stop = threading.Event()
    samples = []  # (t, anon, fds)

    def monitor():
        while not stop.is_set():
            m = proc_mem(srv.pid)
            samples.append((time.monotonic() - t0, m["anon"], m["fds"]))
            stop.wait(2)

    def client(i):
        s = Soak(url, port, stats, burst_lock)
        s.rng.seed(1000 + i)
        while not stop.is_set():
            try:
                s.one()
            except (requests.RequestException, OSError) as e:
                stats.bad(f"client {i}: {type(e).__name__}: {e}")

    def bursts():
        n = a.parallel + a.queue + 4
        while not stop.wait(45):
            with burst_lock:
                s = Soak(url, port, stats, burst_lock)
                ts = [threading.Thread(target=s.plain, args=(j % 2 == 1,)) for j in range(n)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
                stats.add("burst")
                time.sleep(2)  # let overload answers of the clients settle

    threads = [threading.Thread(target=monitor, daemon=True),
               threading.Thread(target=bursts, daemon=True)]
    threads += [threading.Thread(target=client, args=(i,), daemon=True) for i in range(a.clients)]
    for t in threads:
        t.start()
    while time.monotonic() - t0 < total_s and srv.poll() is None:
        time.sleep(1)
    stop.set()
    for t in threads[2:]:
        t.join(120)
    time.sleep(3)  # quiet: every request over, connections closed
    alive = srv.poll() is None
    end = proc_mem(srv.pid) if alive else {"anon": 0, "fds": 0}
    srv.send_signal(signal.SIGTERM)
    try:
        srv.wait(60)
    except subprocess.TimeoutExpired:
        srv.kill()
    log.close()

    after_warm = [s for s in samples if s[0] >= warm_s]
    base = after_warm[:5] if after_warm else samples[-1:]
    base_anon = statistics.median(s[1] for s in base)
    base_fds = min(s[2] for s in base)
    growth = (end["anon"] - base_anon) / base_anon if base_anon else 0.0
    result = {
        "minutes": a.minutes, "clients": a.clients, "parallel": a.parallel, "queue": a.queue,
        "counts": stats.counts, "unexpected": stats.unexpected[:20],
        "rss_anon_after_warmup_bytes": base_anon, "rss_anon_end_bytes": end["anon"],
        "rss_anon_growth": growth, "fds_after_warmup": base_fds, "fds_end": end["fds"],
        "server_alive": alive, "server_exit": srv.returncode,
        "peak_rss_anon_bytes": max((s[1] for s in samples), default=0),
    }
    pathlib.Path(a.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    failures = []
    if not alive:
        failures.append("the server died")
    if stats.unexpected:
        failures.append(f"{len(stats.unexpected)} unexpected errors")
    if growth >= 0.02:
        failures.append(f"RssAnon grew {growth:.2%} after warm-up (limit 2%)")
    if end["fds"] > base_fds:
        failures.append(f"fds grew from {base_fds} to {end['fds']}")
    requests_done = sum(v for k, v in stats.counts.items() if ":" not in k and k != "unexpected")
    if requests_done == 0:
        failures.append("no request completed")
    print("soak: " + ("FAILED: " + "; ".join(failures) if failures else "ok"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
