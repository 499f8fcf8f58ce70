"""`pensieve chat` in a pseudo-terminal, as a person types: streaming replies, multi-line
input, /system, /save, /clear, Ctrl-C stopping a reply without leaving, and --url against
a running server."""
import json
import os
import pathlib
import pty
import select
import signal
import subprocess
import time

import pytest

BIN = pathlib.Path(__file__).resolve().parents[2] / "build" / "pensieve"  # as tests/conftest.py


class Pty:
    """The chat on a pseudo-terminal; read() collects output until a pattern shows up."""

    def __init__(self, args):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execv(str(BIN), [str(BIN), "chat", *args])
        self.out = b""

    def send(self, data):
        os.write(self.fd, data.encode() if isinstance(data, str) else data)

    def expect(self, pattern, timeout=120):
        """Wait for `pattern` in the output after the last match; return what came before."""
        pattern = pattern.encode()
        deadline = time.monotonic() + timeout
        while pattern not in self.out:
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {pattern!r}; got {self.out[-2000:]!r}"
            r, _, _ = select.select([self.fd], [], [], min(left, 1.0))
            if r:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    chunk = b""
                assert chunk, f"chat ended; output {self.out[-2000:]!r}"
                self.out += chunk
        before, self.out = self.out.split(pattern, 1)
        return before.decode(errors="replace")

    def wait(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:  # keep draining so the child never blocks on a full terminal
                if select.select([self.fd], [], [], 0.1)[0]:
                    os.read(self.fd, 65536)
            except OSError:
                pass
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError("chat did not exit")

    def close(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


@pytest.fixture
def chat(default_model):
    sessions = []

    def start(*args):
        p = Pty(["-m", str(default_model), "--ctx-size", "2048", "--temperature", "0", *args])
        sessions.append(p)
        p.expect(">>> ")
        return p

    yield start
    for p in sessions:
        p.close()


def test_chat_session(chat, tmp_path):
    c = chat("--max-tokens", "12")
    c.send("Hello there\r")
    reply = c.expect(">>> ")
    assert "Hello there" in reply  # the terminal's echo
    assert "tokens/s]" in reply    # the reply ran and reported its speed
    # a line ending in \ goes on; """ wraps a block
    c.send("first line\\\r")
    c.expect("... ")
    c.send("second line\r")
    c.expect(">>> ")
    c.send('"""\r')
    c.expect("... ")
    c.send("block one\r")
    c.expect("... ")
    c.send('"""\r')
    c.expect(">>> ")
    c.send("/system Answer in one word.\r")
    c.expect("system prompt set")
    c.expect(">>> ")
    saved = tmp_path / "conv.json"
    c.send(f"/save {saved}\r")
    c.expect("saved 6 messages")
    c.expect(">>> ")
    conv = json.loads(saved.read_text())
    assert [m["role"] for m in conv["messages"]] == ["user", "assistant"] * 3
    assert conv["messages"][0]["content"] == "Hello there"
    assert conv["messages"][2]["content"] == "first line\nsecond line"
    assert conv["messages"][4]["content"] == "block one"
    assert all(m["content"] for m in conv["messages"][1::2])
    assert conv["system"] == "Answer in one word."
    c.send("/clear\r")
    c.expect("conversation cleared")
    c.expect(">>> ")
    c.send(f"/save {saved}\r")
    c.expect("saved 0 messages")
    c.expect(">>> ")
    # Ctrl-C at the prompt does not leave
    c.send("\x03")
    c.expect("Ctrl-D or /bye leaves")
    c.expect(">>> ")
    c.send("/bye\r")
    assert c.wait() == 0


def test_ctrl_c_stops_a_reply(chat, tmp_path):
    c = chat("--max-tokens", "2000")
    c.send("Count from one to one thousand, one number per line.\r")
    c.expect("one number per line.")
    # wait for some of the reply, then interrupt it
    deadline = time.monotonic() + 120
    while len(c.out.strip()) < 20 and time.monotonic() < deadline:
        if select.select([c.fd], [], [], 0.5)[0]:
            c.out += os.read(c.fd, 65536)
    t0 = time.monotonic()
    c.send("\x03")
    c.expect("[stopped]", timeout=30)
    c.expect(">>> ", timeout=30)
    assert time.monotonic() - t0 < 30
    # the chat goes on, with the partial reply in the conversation
    saved = tmp_path / "conv.json"
    c.send(f"/save {saved}\r")
    c.expect("saved 2 messages")
    c.expect(">>> ")
    conv = json.loads(saved.read_text())
    assert conv["messages"][1]["role"] == "assistant" and conv["messages"][1]["content"]
    c.send("/bye\r")
    assert c.wait() == 0


def test_chat_with_url(start_server, default_model, tmp_path):
    srv = start_server(["-m", str(default_model), "--ctx-size", "1024"])
    saved = tmp_path / "conv.json"
    r = subprocess.run([str(BIN), "chat", "--url", srv.url, "--max-tokens", "6",
                        "--temperature", "0"],
                       input=f"Hi\n/save {saved}\n", capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    conv = json.loads(saved.read_text())
    assert [m["role"] for m in conv["messages"]] == ["user", "assistant"]
    assert conv["messages"][1]["content"] in r.stdout
    # a server that is not there is a clear error
    r = subprocess.run([str(BIN), "chat", "--url", "http://127.0.0.1:1"], input="",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "no usable server" in r.stderr
