#!/usr/bin/env bash
# Set up a development environment from scratch: system packages (Fashion-MNIST, and Chromium
# for the browser test; where apt-get and root are
# available), a virtual environment in .venv, and mnistlab with every extra the tests use.
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
APT_PACKAGES=(dataset-fashion-mnist chromium)

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "==> apt-get install ${APT_PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
else
    echo "==> skipping system packages (${APT_PACKAGES[*]}): needs apt-get as root"
fi

echo "==> virtual environment .venv"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: an unpinned torch requirement would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[torch,serve,keras,test,browser,bench]"
echo "==> done: $(.venv/bin/mnistlab --version)"
