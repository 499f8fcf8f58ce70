#!/usr/bin/env python3
"""Speed of pensieve against llama.cpp on the same machine, model and threads.

Lands with the engine: until `pensieve bench` exists this says so and exits non-zero.
"""
import argparse
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--binary", required=True)
    args, _ = ap.parse_known_args()
    r = subprocess.run([args.binary, "bench", "--help"], capture_output=True, text=True)
    print("bench: the inference engine has not landed; nothing to measure yet", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
