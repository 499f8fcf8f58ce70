"""Chat templates: the C Jinja interpreter against Python jinja2, byte for byte.

Every template llama-cpp-python's source ships (real models' chat templates, unpacked by
scripts/setup into tests/.cache/templates) and the built-in defaults (Gemma 3, ChatML) are
rendered with the conversations of conversations.py by build/tools/chat_render and by
jinja2 configured as transformers does; outputs (or the fact that both fail) must match.
"""
import json
import subprocess

import pytest

from conversations import (CONVERSATIONS, RENDER, TEMPLATES, builtin_template, c_render,
                           contexts, py_render)

# The families the issue names, by template file; each needs >= 20 conversations that
# render successfully and identically.
REQUIRED = [
    "Qwen-Qwen2.5-7B-Instruct.jinja",
    "Qwen-Qwen3-0.6B.jinja",
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
    "meta-llama-Llama-3.1-8B-Instruct.jinja",
    "meta-llama-Llama-3.2-3B-Instruct.jinja",
    "mistralai-Mistral-Nemo-Instruct-2407.jinja",
    "microsoft-Phi-3.5-mini-instruct.jinja",
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja",
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
    "Qwen3-Coder.jinja",
    "llama-cpp-deepseek-r1.jinja",
]
BUILTINS = ["gemma3", "chatml"]


def compare(template, ctxs):
    """Render every context both ways; return (identical successes, list of mismatches)."""
    res = c_render(template, [c for _, c in ctxs])
    assert len(res) == len(ctxs)
    good, bad = set(), []
    for (name, ctx), r in zip(ctxs, res):
        py, err = py_render(template, ctx)
        if py is None:
            if "error" not in r:
                bad.append((name, f"python failed ({err}) but C rendered", r.get("text", "")[:200]))
        elif r.get("text") != py:
            bad.append((name, py[:400], r.get("text", r.get("error"))[:400]))
        else:
            good.add(name.split("-")[0])
    return good, bad


def template_source(name):
    if name in BUILTINS:
        return builtin_template(name)
    path = TEMPLATES / name
    assert path.exists(), f"{path} missing: scripts/setup unpacks the templates"
    return path.read_text()


@pytest.mark.parametrize("name", REQUIRED + BUILTINS)
def test_required_families_match_jinja2(name):
    good, bad = compare(template_source(name), contexts())
    assert not bad, f"{len(bad)} mismatches, first: {bad[0]}"
    assert len(good) >= 20, f"only {len(good)} conversations render: {sorted(good)}"


def test_every_shipped_template_matches_jinja2():
    names = sorted(p.name for p in TEMPLATES.glob("*.jinja"))
    assert len(names) >= 60
    failures = {}
    for n in names:
        _, bad = compare((TEMPLATES / n).read_text(), contexts(gen=(True,)))
        if bad:
            failures[n] = bad[0]
    assert not failures, json.dumps(failures, indent=1, ensure_ascii=False)[:3000]


def test_user_text_is_tainted_template_text_is_not():
    tpl = (TEMPLATES / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text()
    evil = CONVERSATIONS["injection"][0]["content"]
    ctx = {"messages": CONVERSATIONS["injection"], "tools": None, "add_generation_prompt": True,
           "bos_token": "", "eos_token": ""}
    r = c_render(tpl, [ctx])[0]
    text, taint = r["text"].encode(), r["taint"]
    assert len(taint) == len(text)
    at = text.index(evil.encode())
    assert set(taint[at:at + len(evil.encode())]) == {"1"}
    # every <|im_start|> / <|im_end|> the template wrote itself is clean; the user's are not
    marks = 0
    for tok in (b"<|im_start|>", b"<|im_end|>"):
        i = text.find(tok)
        while i >= 0:
            inside_user = at <= i < at + len(evil.encode())
            assert set(taint[i:i + len(tok)]) == ({"1"} if inside_user else {"0"}), (tok, i)
            marks += 1
            i = text.find(tok, i + 1)
    assert marks >= 6


def test_tool_arguments_are_tainted_in_tojson():
    tpl = (TEMPLATES / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text()
    ctx = dict(contexts()[0][1], messages=CONVERSATIONS["tool_call"], tools=None)
    r = c_render(tpl, [ctx])[0]
    text = r["text"].encode()
    i = text.index(b'{"city": "Paris"}')
    span = r["taint"][i:i + len(b'{"city": "Paris"}')]
    # the JSON structure tojson writes is template-made; the key and value come from the request
    assert span[0] == "0" and "1" in span
    assert r["taint"][i + 2:i + 6] == "1111"


@pytest.mark.parametrize("src,where", [
    ("{% if x %}never closed", "1:1"),
    ("line1\n{{ 1 + }}", "2:"),
    ("{% for %}", "1:"),
    ("{{ x | no_such_filter }}", "1:"),
    ("{% frobnicate %}", "1:"),
    ("{{ 'unterminated }}", "1:"),
])
def test_template_errors_name_position(src, where):
    r = c_render(src, [{"x": 1}])[0]
    assert "error" in r, r
    assert where in r["error"], r["error"]


@pytest.mark.parametrize("src", [
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",                    # unbounded recursion
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",  # output/steps
    "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    "{{ raise_exception('boom') }}",
    "{{ undefined_thing.attr }}",
    "{{ [1,2].append(3) }}",
])
def test_hostile_templates_fail_cleanly(src):
    r = c_render(src, [{}])[0]
    assert "error" in r and r["error"].startswith("chat template"), r


def test_raise_exception_message_reaches_the_caller():
    r = c_render("{{ raise_exception('roles must alternate') }}", [{}])[0]
    assert "roles must alternate" in r["error"]


def test_strftime_now_uses_given_time():
    src = "{{ strftime_now('%d %b %Y') }}"
    py, _ = py_render(src, {})
    assert c_render(src, [{}])[0]["text"] == py


def gguf_templates():
    """(file name, template) of every vocabulary GGUF in tests/.cache/vocab that carries
    tokenizer.chat_template: real model files' metadata (DeepSeek-R1-Distill-Qwen-7B's
    among them), read by the GGUF reader (chat_render --gguf)."""
    out = []
    for p in sorted((TEMPLATES.parent / "vocab").glob("*.gguf")):
        r = subprocess.run([str(RENDER), "--gguf", str(p)], capture_output=True, timeout=60)
        if r.returncode == 0:
            out.append((p.name, r.stdout.decode()))
        else:
            assert r.returncode == 3, r.stderr.decode()
    return out


def test_templates_inside_gguf_files_match_jinja2():
    found = gguf_templates()
    names = [n for n, _ in found]
    assert "ggml-vocab-deepseek-r1-qwen.gguf" in names, names
    for name, tpl in found:
        good, bad = compare(tpl, contexts())
        assert not bad, f"{name}: {len(bad)} mismatches, first: {bad[0]}"
        assert len(good) >= 20 or name != "ggml-vocab-deepseek-r1-qwen.gguf", (name, sorted(good))


def test_mutated_templates_never_crash():
    """Templates come from model files: 150 random mutations of real ones (cut, duplicated
    and inserted syntax) must each render or fail with a message, never crash."""
    import random
    rnd = random.Random(1234)
    tpls = sorted(TEMPLATES.glob("*.jinja"))
    ctxs = [c for _, c in contexts(gen=(True,))][:4]
    pieces = ["{{", "}}", "{%", "%}", "{#", "#}", "-", "(", ")", "[", "]", "'", '"', "|", ".",
              " if ", " for ", "endfor", "endif", "\\", "~", "{", "}", ":", ",", "loop", "macro"]
    for _ in range(150):
        src = rnd.choice(tpls).read_text()
        for _ in range(rnd.randint(1, 6)):
            pos = rnd.randrange(len(src) + 1)
            op = rnd.random()
            if op < 0.4:
                src = src[:pos] + src[pos + rnd.randint(1, 20):]
            elif op < 0.8:
                src = src[:pos] + rnd.choice(pieces) + src[pos:]
            else:
                a = rnd.randrange(len(src) + 1)
                src = src[:pos] + src[a:a + 50] + src[pos:]
        res = c_render(src, ctxs)  # asserts a clean exit
        for r in res:
            assert "text" in r or r["error"].startswith("chat template"), r


@pytest.mark.parametrize("src", [
    "{{ x | nofilter }}",
    "{% if x %}{{ x | nofilter }}{% endif %}",
    "{% if not x %}{{ x | nofilter }}{% endif %}",
    "{% if x %}{% for i in [1] %}{{ i | nofilter }}{% endfor %}{% endif %}",
    "{{ (x | nofilter) if y else 1 }}",
    "{% if x %}{% macro m() %}{{ 1 | nofilter }}{% endmacro %}{% endif %}",
    "{{ x is notest }}",
    "{% if y %}{{ x is notest }}{% endif %}",
    "{% for i in ([1] if x else [2]|nofilter) %}{% endfor %}",
    "{% set a %}{{ 1|nofilter }}{% endset %}",
])
def test_unknown_filters_fail_where_jinja2_fails(src):
    """jinja2 refuses unknown filters/tests when compiling, except inside if statements and
    conditional expressions of the same frame, where only running them fails."""
    ctx = {"x": 1, "y": 0}
    py, _ = py_render(src, ctx)
    r = c_render(src, [ctx])[0]
    if py is None:
        assert "error" in r, r
    else:
        assert r.get("text") == py, r


SEMANTICS = ["{% set x = 0 %}{% for i in range(3) %}{{ x }}{% set x = i %}{% endfor %}{{ x }}",
 "{% for i in [1,2] %}{% for j in [3,4] %}{{ loop.index }}{{ i }}{% endfor %}{{ loop.index }}{% endfor %}",
 "{% set ns = namespace(a=1) %}{% for i in [1,2] %}{% set ns.a = ns.a + i %}{% endfor %}{{ ns.a }}",
 "{% for a, b in [[1,2],[3,4]] %}{{ a }}{{ b }}{% endfor %}",
 "{% for i in [] %}x{% else %}empty{% endfor %}",
 "{% for i in [1,2,3] if i > 1 %}{{ loop.index }}/{{ loop.length }}{% endfor %}",
 "{% macro f(a, b=2) %}{{ a }}-{{ b }}{% endmacro %}{{ f(1) }}{{ f(1, b=3) }}",
 "{{ '%s' % 'x' if false else 'y' }}", "{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1.0 }} {{ 1e20 }} {{ 0.1 + 0.2 }}",
 "{{ [1, 'a', none, true, {'k': 'v'}] }}", "{{ 'abc'[::-1] }}{{ 'héllo'[1:3] }}{{ [1,2,3][-2:] }}",
 "{{ 'a,b,,c'.split(',') }}{{ '  x  y '.split() }}{{ 'x'.join(['1','2']) }}",
 "{{ {'b': 1, 'a': 2} | dictsort }}{{ [3,1,2] | sort }}{{ 'Hello World' | title }}{{ 'hello' | capitalize }}",
 "{{ x | default('d') }}{{ none | default('d') }}{{ '' | default('d', true) }}",
 "{% set y = x %}{{ y is defined }}", "{{ range(3) | list }}{{ range(1, 7, 2) | list }}",
 "{{ 'abc' is string }}{{ 1 is number }}{{ [] is iterable }}{{ {} is mapping }}{{ none is none }}",
 "{%- for i in range(2) -%}\n  {{ i }}\n{%- endfor %}\n",
 "  {% if true %}\n    x\n  {% endif %}\n  y",
 "{# c #}\n  {#- c2 -#}  z", "{% raw %}{{ x }}{% endraw %}",
 "{{ \"it's\" }}{{ 'say \"hi\"' }}{{ ['it\\'s'] }}",
 "{{ 3 in [1,2,3] }}{{ 'a' not in 'abc' }}{{ 1 < 2 < 3 }}{{ 1 == 1.0 }}",
 "{{ [1,2] + [3] }}{{ 'a' ~ 1 ~ none }}{{ 'ab' * 3 }}",
 "{{ {'a': {'b': [1, {'c': 'é'}]}} | tojson(indent=2) }}", "{{ 'x' | tojson }}{{ none | tojson }}{{ 1.5 | tojson }}",
 "{{ 10 | round }}{{ 2.567 | round(2) }}{{ -3 | abs }}{{ '42' | int + 1 }}{{ '3.5' | float }}",
 "{% set t = (1, 2) %}{{ t }}{{ (1,) }}", "{{ loop is defined }}",
 "{{ [{'a': 1}, {'a': 2}] | map(attribute='a') | list }}{{ [{'a': 1}, {'b': 2}] | selectattr('a') | list }}",
]

SEMANTICS += [
 "{% for k, v in {'a': 1, 'b': [2]}.items() %}{{ k }}={{ v }};{% endfor %}",
 "{{ {'a': 1}.get('a') }}{{ {'a': 1}.get('b') }}{{ {'a': 1}.get('b', 'z') }}",
 "{% for i in 'abc' %}{{ loop.previtem }}|{{ loop.nextitem }}|{{ loop.revindex }}{{ loop.cycle('x','y') }};{% endfor %}",
 "{{ [{'n': 'a'}, {'n': 'b'}] | join(', ', attribute='n') }}",
 "{% macro w() %}[{{ caller() }}]{% endmacro %}{% call w() %}inner{% endcall %}",
 "{% filter upper %}abc{{ 'd' }}{% endfilter %}",
 "{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}",
 "{{ [1,2,1,3] | unique | list }}{{ 'héllo' | first }}{{ 'héllo' | last }}{{ 'héllo' | length }}",
 "{{ 'aaa'.replace('a', 'b', 2) }}{{ 'abc'.startswith(('x', 'a')) }}{{ '{} and {}'.format(1, 'b') }}{{ '{0}{name}'.format(1, name=2) }}",
 "{{ 'Ünï'.upper() }}{{ 'ÀB'.lower() }}{{ '  x '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ 'a-b'.rstrip('-b') }}",
 "{{ none }}{{ true }}{{ false }}{{ 1.5e-7 }}{{ 123456789012345678.0 }}{{ -0.0 }}",
 "{{ [1.0, 2.5, none, 'x\\ty'] }}{{ {'a': (1, 2)} }}",
 "{{ 'x' if x is odd }}{{ 3 is divisibleby 3 }}{{ x is sameas 1 }}{{ 'ABC' is upper }}",
 "{% set d = dict(a=1, b=2) %}{{ d }}{{ d | length }}{{ d.keys() | list }}{{ d.values() | list }}",
 "{{ 'abc'.find('c') }}{{ 'abcabc'.rfind('b') }}{{ 'a b'.title() }}{{ 'abc'.count('b') }}",
 "{{ 'a<b>&' | e }}{{ 'x' | safe }}",
 "{{ [3, 1, 2] | max }}{{ [3, 1, 2] | min }}{{ [1, 2.5] | sum }}{{ [[1],[2]] | sum(start=[]) if false else 0 }}",
 "{{ 'a\\u00e9\\x41\\101' }}",
 "{%- set a = 1 -%}  {{ a }}  {%- if a %} yes {% endif -%} .",
 "{% if x %}\n  A\n{% elif y %}\n  B\n{% else %}\n  C\n{% endif %}\nD",
 "{{ '%s-%d' % ('a', 2) }}",
 "{{ x.y is defined }}{{ (none).y is defined }}",
 "{{ [1,2,3] | reverse | list }}{{ 'abc' | reverse }}{{ [1,2,3] | batch(2) | list if false else '' }}",
 "{{ 'a' < 'b' }}{{ [1,2] < [1,3] }}{{ 2 > 1.5 }}",
 "{% set l = [1,2] %}{{ l[5] is defined }}{{ l[-1] }}{{ l[0:1] }}",
 "{{ 'tool' ~ 3 | string }}{{ (3 | string) + 'x' }}",
]


@pytest.mark.parametrize("src", SEMANTICS)
def test_jinja_semantics_match_jinja2(src):
    """Scoping, loops, macros, arithmetic, slicing, string methods, filters, tests and
    whitespace control, one construct at a time."""
    py, err = py_render(src, {"x": 1})
    r = c_render(src, [{"x": 1}])[0]
    if py is None:
        assert "error" in r, (err, r)
    else:
        assert r.get("text") == py, r
