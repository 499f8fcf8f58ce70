"""Test corpus for the tokenizer: hand-written cases plus strings generated from a seed.

Every string is valid UTF-8 text (the invalid-byte cases live in the tests). The
generated part mixes the hand-written pieces at random (fixed seed), so the corpus is
the same on every run.
"""
import random

PROSE = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world",
    " Hello world",
    "Hello World!",
    "It's a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
    "I'm sure you'll agree we've done what we'd said: they're here, aren't they?",
    "I'M SURE YOU'LL AGREE WE'VE DONE WHAT WE'D SAID: THEY'RE HERE.",
    "Mr. Smith paid $1,234.56 on 2024-03-15 at 10:30am (see §4.2, p. 17).",
    "Pensieve is a local LLM inference server written in C11; it serves the Anthropic Messages API.",
    "e-mail: someone@example.com, url: https://example.org/path?q=1&r=two#frag",
    "    indented line\n\tand a tab\n\n\nthree newlines",
    "trailing spaces   ",
    "   leading spaces",
    "Don't stop 'til you get enough 'cause 'twas brillig",
    "ſtraße Kelvin \u212a 'ſ 'K",
]

CODE = [
    "#include <stdio.h>\n\nint main(void)\n{\n    printf(\"hello, %s\\n\", \"world\");\n    return 0;\n}\n",
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\nprint([fib(i) for i in range(10)])\n",
    "const add = (a, b) => a + b;\nexport default function App() {\n  return <div className=\"app\">{add(1, 2)}</div>;\n}\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hi\")\n}\n",
    "<!DOCTYPE html>\n<html><head><title>T</title></head><body><p class=\"x\">&amp; &lt;b&gt;</p></body></html>",
    "{\"name\": \"pensieve\", \"version\": \"0.1.0\", \"tags\": [\"llm\", \"gguf\"], \"n\": null, \"ok\": true}",
    "for f in *.gguf; do\n  sha256sum \"$f\" | awk '{print $1}' >> sums.txt\ndone\n",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC;",
    "x = {'a': [1, 2, 3], 'b': (4, 5)}\r\nif x['a'][0] != 1:\r\n    raise ValueError('bad')\r\n",
    "    if (p->next == NULL && !done) { return -EINVAL; } /* comment */ // another\n",
    "\t\tcase 'a': case 'b':\n\t\t\tbreak;\n",
]

WHITESPACE = [
    " ", "  ", "   ", "    ", " " * 7, " " * 16, " " * 33, "\t", "\t\t", "\t\t\t\t", "\n", "\n\n",
    "\n\n\n", "\n" * 9, "\r\n", "\r\n\r\n", " \n", "\n ", " \n \n ", "\t \t", " \t\n\r\x0b\x0c",
    "a \nb", "a  \n\n  b", "x\u00a0y", "x\u3000y", "x\u2028y", "x\u0085y", "x\u2009\u200ay",
    "  \u00a0 ", "end with space ", "end with newline\n", "\n\nstart with newlines",
]

NUMBERS = [
    "0", "7", "42", "123", "1234", "12345", "123456", "1234567", "12345678901234567890",
    "3.14159", "-17", "1,000,000", "1e-10", "0x7fff", "2024", "v1.2.3", "10^9", "½ ¾ ² ³",
    "٣٤٥ (Arabic-Indic)", "१२३ (Devanagari)", "①②③", "Ⅻ",
]

PUNCT = [
    "!!!", "???", "?!", "...", "…", "---", "—", "==", "===", "!==", "=>", "->", "::", ";;",
    "''", "\"\"", "``", "```", "~~~", "***", "###", "@@", "$$", "%%", "^^", "&&", "||",
    "((()))", "[[]]", "{{}}", "<<>>", "<>", "</>", "/* */", "#!/bin/sh", "«»", "“quoted”",
    "‘single’", "¿¡", "。、", "！？", "・",
]

SCRIPTS = [
    "你好，世界！今天天气很好。", "我爱自然语言处理。", "東京は日本の首都です。", "ひらがなとカタカナ",
    "안녕하세요 세계", "مرحبا بالعالم", "السلام عليكم ورحمة الله", "नमस्ते दुनिया", "हिन्दी भाषा",
    "Привет, мир!", "Γειά σου Κόσμε", "שלום עולם", "สวัสดีชาวโลก", "Xin chào thế giới",
    "Ünïcödé àccénts çédille", "Zoë naïve café résumé",
]

EMOJI = [
    "😀", "👍", "👍🏽", "👍🏿", "👨‍👩‍👧‍👦", "👩‍💻", "🏳️‍🌈", "🇺🇸🇯🇵", "❤️", "✨🎉🚀", "🧑🏾‍🚀",
    "I ❤️ 🍕!", "😀😀😀😀😀", "👋🏻 hi",
]

COMBINING = [
    "e\u0301", "cafe\u0301", "a\u0300\u0301\u0302\u0303", "Z\u0324\u0354\u0367\u0311\u0313",
    "n\u0303o", "\u0915\u094d\u0937", "\u05e9\u05c1\u05b8", "\u0301 leading mark",
]

CONTROL_LOOKALIKES = [
    "<start_of_turn>user\nhi<end_of_turn>", "<|im_start|>system\nx<|im_end|>", "<|eot_id|>",
    "<|begin_of_text|>", "<|endoftext|>", "<s>", "</s>", "<bos>", "<eos>", "<unk>", "<pad>",
    "<|im_", "<<|im_end|>>", "< start_of_turn >", "<|start_header_id|>user<|end_header_id|>",
    "<think>reasoning</think>", "<|assistant|>", "<|end|>", "<mask>", "[multimodal]",
    "<unused0>", "<\uff5cUser\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>",
]

SHORT = ["", "a", "A", "z", "0", ".", ",", "'", "\"", "-", "_", "<", ">", "|", "\x00", "\x7f",
         "é", "ß", "中", "😀", "▁", "\u2581\u2581x", "Ġ", "Ċ"]

LONG = [
    "a" * 1000, "ab" * 600, "supercalifragilisticexpialidocious" * 30, "1" * 700,
    "é" * 400, "中" * 500, "😀" * 200, "-" * 500, " " * 600 + "x", "\n" * 300,
    "x" * 5000, "Pneumonoultramicroscopicsilicovolcanoconiosis",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbbbbbbbbb",
]

HAND_WRITTEN = (PROSE + CODE + WHITESPACE + NUMBERS + PUNCT + SCRIPTS + EMOJI + COMBINING +
                CONTROL_LOOKALIKES + SHORT + LONG)

_POOL = [s for s in HAND_WRITTEN if len(s) < 400]
_SEPS = ["", " ", "  ", "\n", "\t", ", ", ". ", "\n\n", " \n", "'", "-"]


def generated(n: int = 260, seed: int = 1234) -> list:
    """n strings, each 2-6 random pieces of the pool joined by random separators."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(2, 6)):
            s = rng.choice(_POOL)
            if len(s) > 40 and rng.random() < 0.5:  # a random slice on a code point boundary
                i = rng.randrange(len(s))
                s = s[i:i + rng.randint(1, 40)]
            parts.append(s)
            parts.append(rng.choice(_SEPS))
        if rng.random() < 0.2:  # a run of digits of random length
            parts.append(str(rng.randrange(10 ** rng.randint(1, 25))))
        out.append("".join(parts))
    return out


def corpus() -> list:
    """All test strings: hand-written first, then generated."""
    return HAND_WRITTEN + generated()


def text_200k(seed: int = 7) -> str:
    """A ~200 KB mixed text like a coding-agent prompt: prose, code, JSON, CJK, emoji."""
    rng = random.Random(seed)
    pool = PROSE + CODE * 3 + SCRIPTS + EMOJI + NUMBERS + PUNCT
    parts, size = [], 0
    while size < 200_000:
        s = rng.choice(pool)
        parts.append(s)
        parts.append(rng.choice(["\n", " ", "\n\n", "  "]))
        size += len(s.encode()) + 1
    return "".join(parts)
