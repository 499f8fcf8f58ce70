"""Attacks on `pensieve serve` that once took it down or got around its guards (issue 15):
each test is one attack, against the real binary and the default model, over raw sockets
where a well-behaved client library would not send the bytes."""
import json
import os
import socket
import threading
import time

import pytest
import requests

MSG = "/v1/messages"
CHAT = "/v1/chat/completions"
COUNT = "/v1/messages/count_tokens"
HI = [{"role": "user", "content": "hi"}]


def post(server, path, body, headers=None, timeout=60):
    h = {"content-type": "application/json"}
    h.update(headers or {})
    return requests.post(server.url + path, data=json.dumps(body), headers=h, timeout=timeout)


def raw(server, data, timeout=30, half_close=False):
    """Send bytes, read the whole answer until the server closes."""
    with socket.create_connection((server.host, server.port), timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def request_bytes(method, path, body=None, headers=None, host="127.0.0.1"):
    data = json.dumps(body).encode() if body is not None else b""
    h = {"Host": host, "Connection": "close"}
    if body is not None:
        h["Content-Type"] = "application/json"
        h["Content-Length"] = str(len(data))
    h.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
    return head.encode() + b"\r\n" + data


def alive(server):
    return requests.get(server.url + "/health", timeout=10).status_code == 200


# ---- 1. grammar size -----------------------------------------------------------------------

def test_huge_schema_is_a_400_not_a_crash(server):
    alts = [{"type": "object", "properties": {"k": {"type": "string"}}}] * 32764
    body = {"model": "m", "max_tokens": 4, "messages": HI,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "x", "schema": {"anyOf": alts}}}}
    r = post(server, CHAT, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and "response_format" in err["message"]
    # the forced-tool path shares the compiler
    tool = {"name": "t", "input_schema": {"type": "object",
                                          "properties": {"a": {"anyOf": alts}}}}
    r = post(server, MSG, {"model": "m", "max_tokens": 4, "messages": HI, "tools": [tool],
                           "tool_choice": {"type": "any"}})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    enum = {"type": "json_schema", "json_schema": {"name": "e",
                                                    "schema": {"enum": list(range(100000))}}}
    r = post(server, CHAT, {"model": "m", "max_tokens": 4, "messages": HI, "response_format": enum})
    assert r.status_code == 400, r.text
    assert alive(server)


# ---- 2. connection exhaustion and the read deadline ---------------------------------------

@pytest.fixture(scope="module")
def tight_server(start_server, default_model):
    return start_server(["-m", str(default_model), "--max-connections", "8",
                         "--read-timeout", "2", "--parallel", "1", "--queue", "1"])


def test_idle_connections_do_not_lock_out_others(tight_server):
    s = tight_server
    idle = [socket.create_connection((s.host, s.port), timeout=10) for _ in range(30)]
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        assert requests.get(s.url + "/health", timeout=5).status_code == 200
        assert time.monotonic() - t0 < 2.0
    finally:
        for c in idle:
            c.close()


def test_dribbled_head_hits_the_deadline(tight_server):
    s = tight_server
    with socket.create_connection((s.host, s.port), timeout=15) as c:
        c.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        t0 = time.monotonic()
        closed = False
        while time.monotonic() - t0 < 10:
            try:
                c.sendall(b"X-Slow: a\r\n")  # a byte every half second: never idle
            except OSError:
                closed = True
                break
            c.settimeout(0.5)
            try:
                if c.recv(4096) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
            except OSError:
                closed = True
                break
        waited = time.monotonic() - t0
    assert closed and waited < 6, waited
    assert alive(s)


# ---- 3. DNS rebinding -----------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.evil.example", "127.0.0.1.evil.example", "[::1]junk",
                                  "[::1]:80x", "localhost.evil.example", "localhost:", "",
                                  "127.0.0.1:99999999", "evil.example:8080"])
def test_rebinding_hosts_refused(server, host):
    out = raw(server, request_bytes("GET", "/v1/models", host=host))
    assert out.startswith(b"HTTP/1.1 403") or out.startswith(b"HTTP/1.1 400"), out[:200]


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:{port}", "127.0.0.1:{port}",
                                  "127.1.2.3", "[::1]:{port}", "[::1]"])
def test_loopback_hosts_accepted(server, host):
    out = raw(server, request_bytes("GET", "/v1/models", host=host.format(port=server.port)))
    assert out.startswith(b"HTTP/1.1 200"), out[:200]


def test_two_host_headers_refused(server):
    data = (b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n"
            b"Connection: close\r\n\r\n")
    assert raw(server, data).startswith(b"HTTP/1.1 403")


# ---- 4. cross-site simple requests -----------------------------------------------------------

@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", None,
                                   "text/plain; charset=utf-8, application/json"])
def test_non_json_posts_get_415(server, ctype):
    body = json.dumps({"model": "m", "max_tokens": 1, "messages": HI})
    h = {"content-type": ctype} if ctype else {}
    r = requests.post(server.url + MSG, data=body, headers=h, timeout=30)
    if ctype is None:  # requests sends no content-type for a str body
        assert "content-type" not in r.request.headers
    assert r.status_code == 415, r.text
    assert r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = requests.post(server.url + CHAT, data=body, headers=h, timeout=30)
    assert r.status_code == 415 and r.json()["error"]["type"] == "invalid_request_error"


def test_json_content_types_accepted(server):
    body = {"model": "m", "messages": HI}
    for ctype in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
        r = post(server, COUNT, body, headers={"content-type": ctype})
        assert r.status_code == 200, (ctype, r.text)


# ---- 5. ghost queue entries ------------------------------------------------------------------

def metric(server, name):
    for line in requests.get(server.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(name)


def test_dropped_queued_request_leaves_the_queue(tight_server):
    s = tight_server
    # a reply the grammar keeps long (1000 array items at least): the slot stays taken
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 1000}
    long_req = {"model": "m", "max_tokens": 8000, "stream": True, "messages": HI,
                "response_format": {"type": "json_schema",
                                    "json_schema": {"name": "a", "schema": schema}}}
    busy = requests.post(s.url + CHAT, json=long_req, stream=True, timeout=60)
    assert busy.status_code == 200
    # read it all along (a generator dropped half-way would close the connection)
    def drain():
        try:
            for _ in busy.iter_lines():
                pass
        except Exception:  # closed by the test at its end
            pass
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        # queue one request, then drop its connection
        ghost = socket.create_connection((s.host, s.port), timeout=10)
        ghost.sendall(request_bytes("POST", MSG, {"model": "m", "max_tokens": 8, "messages": HI}))
        deadline = time.monotonic() + 10
        while metric(s, "pensieve_queue_depth") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(s, "pensieve_queue_depth") == 1
        ghost.close()
        deadline = time.monotonic() + 5
        while metric(s, "pensieve_queue_depth") > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(s, "pensieve_queue_depth") == 0  # its place is free again
        # so another client is queued (it waits) rather than turned away with 529
        try:
            r = requests.post(s.url + MSG, json={"model": "m", "max_tokens": 2, "messages": HI},
                              timeout=1.5)
            assert r.status_code == 200, r.text
        except requests.exceptions.ReadTimeout:
            pass  # waiting in the queue
    finally:
        busy.close()
    assert alive(s)


# ---- 6. half-closed clients -----------------------------------------------------------------

def test_half_closed_client_gets_its_answer(server):
    body = {"model": "m", "max_tokens": 6, "temperature": 0, "messages": HI}
    out = raw(server, request_bytes("POST", MSG, body), half_close=True)
    # an interim 100 may come first (it tells a half-closed client from a gone one)
    if out.startswith(b"HTTP/1.1 100"):
        out = out.split(b"\r\n\r\n", 1)[1]
    assert out.startswith(b"HTTP/1.1 200"), out[:300]
    reply = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert reply["type"] == "message" and reply["usage"]["output_tokens"] >= 1
    stream = dict(body, stream=True)
    out = raw(server, request_bytes("POST", MSG, stream), half_close=True)
    assert out.startswith(b"HTTP/1.1 200"), out[:300]
    assert b"event: message_stop" in out


def test_closed_plain_client_still_cancels(tight_server):
    """The other side of item 6: a client that closes (not half-closes) during a
    non-streamed generation is still noticed, and its slot freed."""
    s = tight_server
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 1000}
    body = {"model": "m", "max_tokens": 4000, "messages": HI,
            "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}}
    c = socket.create_connection((s.host, s.port), timeout=10)
    c.sendall(request_bytes("POST", CHAT, body))
    deadline = time.monotonic() + 10
    while requests.get(s.url + "/health", timeout=10).json()["slots_busy"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    c.close()
    deadline = time.monotonic() + 5
    while requests.get(s.url + "/health", timeout=10).json()["slots_busy"] != 0:
        assert time.monotonic() < deadline, "the slot of a closed client stayed busy"
        time.sleep(0.05)


# ---- 7. log injection -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def log_server(start_server, default_model):
    return start_server(["-m", str(default_model)])


def test_model_name_cannot_forge_log_lines(log_server):
    evil = "m\nrequest req_FORGED POST /v1/messages model=x status=200"
    post(log_server, COUNT, {"model": evil, "messages": HI})
    requests.get(log_server.url + "/v1/models/a%0Ab", timeout=10)
    time.sleep(0.3)
    lines = log_server.output().splitlines()
    assert not any(l.startswith("request req_FORGED") for l in lines)
    assert any("model=m\\x0arequest\\x20req_FORGED" in l for l in lines), lines[-5:]
    assert not any(l.startswith("b ") or l == "b" for l in lines)


def test_error_lines_say_why(start_server, default_model):
    """The access log line of an error reply ends with its reason, quoted and escaped in
    the text log (request bytes cannot end the line), a field in the JSON log."""
    s = start_server(["-m", str(default_model), "--api-key", "k", "--max-body-bytes", "2048"])
    key = {"x-api-key": "k"}
    assert post(s, MSG, {"model": "m", "messages": HI}).status_code == 401
    assert post(s, MSG, {"model": "m", "messages": HI}, key).status_code == 400  # no max_tokens
    assert requests.get(s.url + "/nowhere%0Aforged", headers=key, timeout=10).status_code == 404
    assert post(s, COUNT, {"model": "m", "messages": HI, "pad": "x" * 4000}, key).status_code == 413
    assert requests.post(s.url + MSG, data="{}", headers=dict(key, **{
        "content-type": "text/plain"}), timeout=10).status_code == 415
    assert post(s, COUNT, {"model": "m", "messages": HI}, key).status_code == 200
    time.sleep(0.3)
    lines = [l for l in s.output().splitlines() if " request req_" in l]
    by_status = {}
    for l in lines:
        by_status.setdefault(int(l.split("status=")[1].split()[0]), l)
    assert by_status[401].endswith('reason="x-api-key header is required"'), by_status[401]
    assert by_status[400].endswith('reason="max_tokens: Field required"'), by_status[400]
    assert by_status[404].endswith('reason="not found: GET /nowhere\\x0aforged"'), by_status[404]
    assert 'reason="request body of ' in by_status[413] and "2048 bytes" in by_status[413]
    assert by_status[415].endswith(
        'reason="content-type must be application/json, not \'text/plain\'"'), by_status[415]
    assert "reason=" not in by_status[200]
    assert not any(l.startswith("forged") for l in s.output().splitlines())

    j = start_server(["-m", str(default_model), "--log-format", "json"])
    assert post(j, MSG, {"model": "m", "max_tokens": 0, "messages": HI}).status_code == 400
    time.sleep(0.3)
    recs = [json.loads(l) for l in j.output().splitlines() if l.startswith("{")]
    bad = [r for r in recs if r.get("event") == "request" and r["status"] == 400]
    assert bad and "max_tokens" in bad[0]["reason"], recs[-3:]
    assert all("reason" not in r for r in recs if r.get("event") == "request" and
               r["status"] == 200)


# ---- 8. smaller ones ------------------------------------------------------------------------

def test_model_id_not_utf8_is_404(server):
    out = raw(server, request_bytes("GET", "/v1/models/%FF%FE"))
    assert out.startswith(b"HTTP/1.1 404"), out[:200]
    body = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["type"] == "not_found_error" or body["error"]["type"] == "invalid_request_error"


def test_nul_in_path_does_not_route(server):
    for path in ("/health%00x", "/v1/models%00", "/%00"):
        out = raw(server, request_bytes("GET", path))
        assert out.startswith(b"HTTP/1.1 404"), (path, out[:200])
    assert alive(server)


def test_tool_choice_missing_tool_is_400(server):
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    r = post(server, MSG, {"model": "m", "max_tokens": 4, "messages": HI, "tools": tools,
                           "tool_choice": {"type": "tool", "name": "nope"}})
    assert r.status_code == 400 and "nope" in r.json()["error"]["message"]
    r = post(server, MSG, {"model": "m", "max_tokens": 4, "messages": HI, "tools": tools,
                           "tool_choice": {"type": "whatever"}})
    assert r.status_code == 400
    otools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    r = post(server, CHAT, {"model": "m", "max_tokens": 4, "messages": HI, "tools": otools,
                            "tool_choice": {"type": "function", "function": {"name": "g"}}})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_pid_file_symlink_not_followed(tmp_path, start_server, default_model):
    target = tmp_path / "victim"
    target.write_text("precious\n")
    link = tmp_path / "pensieve.pid"
    os.symlink(target, link)
    s = start_server(["-m", str(default_model), "--pid-file", str(link)])
    assert target.read_text() == "precious\n"
    assert "symbolic link" in s.output()
