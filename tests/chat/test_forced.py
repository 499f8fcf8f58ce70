"""Constrained decoding: forced tool calls and structured output always parse and validate.

build/tools/chat_forced runs requests through the whole chat layer (conversion, template,
taint-segmented tokenization, grammar-masked greedy generation, output parser). With the
default model (Gemma 3 270M) 20 forced tool calls on varied schemas must each come back as
one tool call of the right tool whose arguments validate against its schema (jsonschema).
With random logits instead of the model, the grammar and the mask alone must still
produce valid output over the real 262144-token vocabulary.
"""
import json
import subprocess

import jsonschema
import pytest

from conversations import ROOT

FORCED = ROOT / "build" / "tools" / "chat_forced"

# Free-text strings are bounded: the 270M model, decoding greedily, can repeat a character
# forever inside a string, and no grammar can end a string the schema leaves unbounded.
S = {"type": "string", "maxLength": 16}
T = {"type": "string", "maxLength": 32}
I = {"type": "integer"}
N = {"type": "number"}
B = {"type": "boolean"}


def obj(props, required=None):
    return {"type": "object", "properties": props, "required": required if required is not None else list(props)}


TOOLS = [
    ("get_weather", "Get the weather for a city.", "What's the weather in Paris?",
     obj({"city": S, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}})),
    ("add", "Add two integers.", "What is 2 plus 3?", obj({"a": I, "b": I})),
    ("set_volume", "Set the volume between 0 and 1.", "Set the volume to half.", obj({"level": N})),
    ("toggle_light", "Turn a light on or off.", "Turn on the kitchen light.",
     obj({"room": S, "on": B})),
    ("send_email", "Send an email.", "Email bob@example.com saying hi.",
     obj({"to": S, "subject": T, "body": T}, ["to", "body"])),
    ("create_event", "Create a calendar event.", "Schedule lunch tomorrow at noon with Ann.",
     obj({"title": S, "time": obj({"hour": I, "minute": I}), "attendees": {"type": "array", "items": S, "maxItems": 4}})),
    ("search", "Search the web.", "Search for the tallest mountain.",
     obj({"query": S, "max_results": I}, ["query"])),
    ("move", "Move the robot.", "Move the robot north by 3 steps.",
     obj({"direction": {"type": "string", "enum": ["north", "south", "east", "west"]}, "steps": I})),
    ("order_pizza", "Order a pizza.", "Order a large pizza with mushrooms and olives.",
     obj({"size": {"enum": ["small", "medium", "large"]},
          "toppings": {"type": "array", "items": S, "maxItems": 5}})),
    ("convert", "Convert currency.", "Convert 100 dollars to euros.",
     obj({"amount": N, "from": S, "to": S})),
    ("rate", "Rate a movie from 1 to 5 stars.", "Give Inception five stars.",
     obj({"movie": S, "stars": {"type": "integer", "enum": [1, 2, 3, 4, 5]}})),
    ("read_file", "Read a file.", "Show me the README.", obj({"path": S})),
    ("run_command", "Run a shell command.", "List the files in the current directory.",
     obj({"command": S, "timeout": I}, ["command"])),
    ("note", "Save a note with tags.", "Note: buy milk, tag it shopping.",
     obj({"text": T, "tags": {"type": "array", "items": S, "minItems": 1, "maxItems": 3}})),
    ("locate", "Locate coordinates.", "Where is the Eiffel tower?",
     obj({"place": S, "coords": obj({"lat": N, "lon": N})}, ["place"])),
    ("set_alarm", "Set an alarm.", "Wake me at 7.",
     obj({"hour": I, "minute": I, "repeat": {"type": "boolean"}}, ["hour", "minute"])),
    ("translate", "Translate text.", "Translate 'good morning' to Spanish.",
     obj({"text": S, "target": {"type": "string", "enum": ["es", "fr", "de"]}})),
    ("matrix", "Store a 2x2 matrix.", "Store the identity matrix.",
     obj({"rows": {"type": "array", "maxItems": 2,
                   "items": {"type": "array", "items": N, "minItems": 2, "maxItems": 2}}})),
    ("profile", "Update a user profile.", "My name is Sam and I am 30.",
     obj({"user": obj({"name": S, "age": I, "email": {"anyOf": [S, {"type": "null"}]}}, ["name", "age"])})),
    ("log_level", "Set the log level.", "Make logging verbose.",
     obj({"level": {"const": "debug"}, "component": S}, ["level"])),
]


def anthropic_tool(name, desc, schema):
    return {"name": name, "description": desc, "input_schema": schema}


def forced_requests():
    reqs = []
    for i, (name, desc, prompt, schema) in enumerate(TOOLS):
        other = TOOLS[(i + 1) % len(TOOLS)]
        tools = [anthropic_tool(name, desc, schema), anthropic_tool(other[0], other[1], other[3])]
        # alternate the two ways of forcing: a named tool, and "any" tool
        choice = {"type": "tool", "name": name} if i % 2 == 0 else {"type": "any"}
        reqs.append({"max_tokens": 96, "messages": [{"role": "user", "content": prompt}],
                     "tools": tools, "tool_choice": choice})
    return reqs


def run_forced(model, requests, random=False, seed=1, max_tokens=96):
    assert FORCED.exists(), f"{FORCED} is missing: run `make`"
    inp = {"model": str(model), "random": random, "seed": seed, "max_tokens": max_tokens,
           "requests": requests}
    r = subprocess.run([str(FORCED)], input=json.dumps(inp).encode(), capture_output=True, timeout=900)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


def check_tool_result(req, res):
    schemas = {t["name"]: t["input_schema"] for t in req["tools"]}
    assert res["constrained"]
    assert res["stop"] == "tool_use", res
    assert len(res["calls"]) == 1, res
    call = res["calls"][0]
    if req["tool_choice"]["type"] == "tool":
        assert call["name"] == req["tool_choice"]["name"], res
    assert call["name"] in schemas
    jsonschema.validate(call["arguments"], schemas[call["name"]])


def test_twenty_forced_tool_calls_with_the_default_model(default_model):
    reqs = forced_requests()
    assert len(reqs) == 20
    results = run_forced(default_model, reqs)
    for req, res in zip(reqs, results):
        check_tool_result(req, res)


@pytest.mark.parametrize("seed", [1, 2])
def test_forced_tool_calls_with_random_logits(default_model, seed):
    reqs = forced_requests()
    results = run_forced(default_model, reqs, random=True, seed=seed, max_tokens=4000)
    for req, res in zip(reqs, results):
        check_tool_result(req, res)


def test_response_format_with_random_logits(default_model):
    schemas = [t[3] for t in TOOLS[:10]]
    reqs = [{"openai": True, "messages": [{"role": "user", "content": "Answer in JSON."}],
             "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": s}}}
            for s in schemas]
    reqs.append({"openai": True, "messages": [{"role": "user", "content": "JSON please"}],
                 "response_format": {"type": "json_object"}})
    results = run_forced(default_model, reqs, random=True, seed=7, max_tokens=4000)
    for req, res in zip(reqs, results):
        assert res["constrained"] and res["stop"] == "end_turn", res
        value = json.loads(res["text"])
        if req["response_format"]["type"] == "json_schema":
            jsonschema.validate(value, req["response_format"]["json_schema"]["schema"])
        else:
            assert isinstance(value, dict)


def test_unconstrained_request_is_not_masked(default_model):
    req = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    res = run_forced(default_model, [req], random=True, max_tokens=3)[0]
    assert not res["constrained"]


def test_forced_tool_calls_over_a_bpe_vocabulary_with_think_prompt():
    """DeepSeek-R1-Distill-Qwen's vocabulary and template (its prompt opens <think>):
    random logits, the grammar forces the call and the parser must not take it for
    thinking."""
    vocab = ROOT / "tests" / ".cache" / "vocab" / "ggml-vocab-deepseek-r1-qwen.gguf"
    assert vocab.exists(), "scripts/setup makes this vocabulary"
    reqs = forced_requests()[:8]
    results = run_forced(vocab, reqs, random=True, seed=3, max_tokens=4000)
    for req, res in zip(reqs, results):
        check_tool_result(req, res)
        assert res["text"] == ""
