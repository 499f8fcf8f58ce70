"""The web chat page at GET /, driven in headless Chromium (Debian's `chromium` package).

Chromium is controlled through the DevTools protocol over --remote-debugging-pipe (JSON
messages separated by NUL bytes on fds 3 and 4), so no driver or websocket package is
needed. The test loads the page from the real server, sends a message, watches the answer
stream in, stops a second reply with the stop button, reloads to see the conversation kept
in the browser, and saves a screenshot to build/test-artifacts/web-chat.png.
"""
import base64
import fcntl
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]

ARTIFACTS = ROOT / "build" / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium with one page, driven over the DevTools pipe."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="pensieve-chromium-")
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()

        def fds():  # the browser reads commands on fd 3 and writes replies on fd 4
            a = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={self.profile}",
             "--remote-debugging-pipe", "--window-size=1100,800", "about:blank"],
            preexec_fn=fds, pass_fds=(3, 4),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self.buf = b""
        self.next_id = 0
        self.session = None
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")

    def _read_message(self, deadline):
        while b"\0" not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply from chromium")
            chunk = os.read(self.from_child, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, timeout=60):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self.to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self.next_id:
                assert "error" not in m, m["error"]
                return m["result"]

    def js(self, expr):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                           "awaitPromise": True})
        assert "exceptionDetails" not in r, r["exceptionDetails"]
        return r["result"].get("value")

    def wait(self, expr, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.js(expr):
                return
            time.sleep(0.1)
        raise TimeoutError(f"never true: {expr}")

    def goto(self, url):
        # mark the old document, so the wait below cannot be answered by it
        self.js("window.pensieveOldPage = true")
        self.call("Page.navigate", {"url": url})
        self.wait("!window.pensieveOldPage && document.readyState === 'complete' && "
                  "document.body && document.body.dataset.state === 'idle'")

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self):
        try:
            self.session = None
            self.call("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_child)
        os.close(self.from_child)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "chromium is missing: scripts/setup installs Debian's chromium package"
    b = Browser()
    yield b
    b.close()


@pytest.fixture(scope="module")
def srv(start_server, default_model):
    return start_server(["-m", str(default_model), "--ctx-size", "2048"])


def test_page_is_self_contained(srv):
    r = requests.get(srv.url + "/", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "<script>" in page and "/v1/messages" in page
    # nothing is fetched from elsewhere: no external script, style, font or image
    for bad in ("<script src", "<link", "http://", "https://", "@import", "url("):
        assert bad not in page.replace("https?:\\/\\/", ""), bad


def test_chat_in_chromium(srv, browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    b = browser
    b.goto(srv.url + "/")
    b.wait("document.getElementById('model').textContent.includes('gemma-3-270m')")
    b.js("document.getElementById('max-tokens').value = '24';"
         "document.getElementById('temperature').value = '0';")

    # send with Enter: the answer streams into the last message, then the page is idle
    b.js("""(() => { const i = document.getElementById('input');
                     i.value = 'Write a haiku about the sea.';
                     i.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true})); })()""")
    b.wait("document.body.dataset.state === 'streaming'", timeout=10)
    seen = set()
    deadline = time.monotonic() + 180
    while b.js("document.body.dataset.state") == "streaming" and time.monotonic() < deadline:
        seen.add(b.js("(document.querySelector('.msg.assistant .body') || {}).textContent || ''"))
        time.sleep(0.02)
    assert b.js("document.body.dataset.state") == "idle"
    answer = b.js("document.querySelector('.msg.assistant .body').textContent")
    assert answer.strip(), "no answer shown"
    assert len(seen - {""}) >= 2, "the answer did not arrive in pieces"
    assert b.js("document.querySelector('.msg.user').textContent").endswith(
        "Write a haiku about the sea.")
    assert "tok/s" in b.js("document.getElementById('rate').textContent")
    shot = ARTIFACTS / "web-chat.png"
    b.screenshot(shot)
    assert shot.stat().st_size > 5000
    print(f"\nscreenshot: {shot}")

    # the stop button ends a long reply; the page stays usable
    b.js("document.getElementById('max-tokens').value = '1000';")
    b.js("""(() => { document.getElementById('input').value = 'Count from one to five hundred.';
                     document.getElementById('send').click(); })()""")
    b.wait("document.querySelectorAll('.msg.assistant').length === 2 && "
           "document.querySelectorAll('.msg.assistant')[1].querySelector('.body').textContent.length > 0",
           timeout=120)
    b.js("document.getElementById('stop').click()")
    b.wait("document.body.dataset.state === 'idle'", timeout=30)
    assert b.js("document.querySelectorAll('.msg.assistant')[1].querySelector('.note').textContent") == "stopped"

    # the conversation is kept in the browser: a reload shows it again
    b.goto(srv.url + "/")
    assert b.js("document.querySelectorAll('.msg').length") == 4
    assert b.js("document.querySelector('.msg.assistant .body').textContent") == answer


def test_markdown_rendering(srv, browser):
    b = browser
    b.goto(srv.url + "/")
    html = b.js("markdown('Some **bold** and `x<y`.\\n\\n```python\\ndef f():\\n    return 1\\n```\\n\\n- a\\n- b\\n\\n<script>alert(1)</script>')")
    assert "<strong>bold</strong>" in html and "<code>x&lt;y</code>" in html
    assert '<pre><code data-lang="python">def f():\n    return 1</code></pre>' in html
    assert "<ul><li>a</li><li>b</li></ul>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_thinking_is_shown_dimmed(srv, browser):
    b = browser
    b.goto(srv.url + "/")
    style = b.js("""(() => {
        const node = renderMsg({role: 'assistant', text: 'The answer.', thinking: 'Let me see.'}, 0);
        document.getElementById('log').appendChild(node);
        const t = node.querySelector('.thinking'), body = node.querySelector('.body');
        const st = getComputedStyle(t), sb = getComputedStyle(body);
        return {text: t.textContent, color: st.color, body: sb.color, italic: st.fontStyle};
    })()""")
    assert style["text"] == "Let me see." and style["italic"] == "italic"
    assert style["color"] != style["body"]  # the dim colour, not the text's
