"""The command line: help on every command, version, and the model listing."""
import subprocess

import pytest

COMMANDS = ["serve", "run", "chat", "bench", "info", "tokenize", "detokenize", "models", "pull",
            "rm", "ps", "claude", "service", "stop"]


def run(bin_path, *args, env=None):
    return subprocess.run([str(bin_path), *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_version(pensieve_bin):
    r = run(pensieve_bin, "--version")
    assert r.returncode == 0
    assert r.stdout.startswith("pensieve ")


def test_top_level_help_lists_every_command(pensieve_bin):
    r = run(pensieve_bin, "--help")
    assert r.returncode == 0
    for c in COMMANDS:
        assert f"\n  {c} " in r.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(pensieve_bin, command):
    r = run(pensieve_bin, command, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: pensieve {command}")
    assert "-h, --help" in r.stdout


def test_unknown_command_and_option(pensieve_bin):
    r = run(pensieve_bin, "frobnicate")
    assert r.returncode == 2 and "unknown command 'frobnicate'" in r.stderr
    r = run(pensieve_bin, "models", "--frobnicate")
    assert r.returncode == 2 and "unknown option '--frobnicate'" in r.stderr


def test_no_arguments_prints_usage(pensieve_bin):
    r = run(pensieve_bin)
    assert r.returncode == 2 and "usage: pensieve <command>" in r.stderr


def test_models_lists_gguf_files(pensieve_bin, default_model, tmp_path):
    import os
    import shutil
    shutil.copy(default_model, tmp_path / "a-model.gguf")
    (tmp_path / "notes.txt").write_text("not a model")
    env = dict(os.environ, PENSIEVE_MODELS=str(tmp_path))
    r = run(pensieve_bin, "models", env=env)
    assert r.returncode == 0, r.stderr
    assert "a-model.gguf" in r.stdout
    assert "notes.txt" not in r.stdout
    r = run(pensieve_bin, "models", "--default-path", env=env)
    assert r.stdout.strip() == f"{tmp_path}/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def test_models_empty_directory(pensieve_bin, tmp_path):
    import os
    env = dict(os.environ, PENSIEVE_MODELS=str(tmp_path / "missing"))
    r = run(pensieve_bin, "models", env=env)
    assert r.returncode == 0
    assert "does not exist" in r.stdout
