#!/usr/bin/env bash
# Set up a fresh clone: .venv with torch (CPU build) and charrnn[dev], and Debian's Chromium for the browser
# tests where /usr/bin/chromium is missing (apt-get, as root or with passwordless sudo; otherwise one line says what to
# install, and everything else is still set up). Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

chromium_note=""
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" -eq 0 ]; then sudo=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"
  else sudo="no"; fi
  if [ "$sudo" = "no" ]; then
    chromium_note="setup_env.sh: /usr/bin/chromium is missing and this user cannot run apt-get: install it with 'sudo apt-get install chromium chromium-driver fonts-liberation' (only the browser tests need it, docs site and JupyterLab; they fail until then)"
  else
    echo "installing Debian's chromium, chromium-driver and fonts-liberation (for the browser tests)"
    # no recommends: they would add ~100 packages (systemd, avahi, cups helpers) that a headless browser never uses
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium chromium-driver fonts-liberation >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ]; then "${PYTHON:-python3}" -m venv .venv; fi
. .venv/bin/activate
# pip runs only when the requirements (settings.ini, read by setup.py) changed since the last set-up, or an import fails
stamp=.venv/.charrnn-setup
want=$(cat settings.ini setup.py | sha256sum | cut -d' ' -f1)
check='import torch, nbdev, playwright, ipywidgets, jupyterlab, charrnn; print(f"charrnn {charrnn.__version__}, torch {torch.__version__}, nbdev {nbdev.__version__}")'
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! versions=$(python -c "$check" 2>/dev/null); then
  # torch first, pinned: any looser requirement would make pip fetch a multi-GB CUDA build.
  python -m pip install -q torch==2.13.0
  python -m pip install -q -e ".[dev]"
  versions=$(python -c "$check")
  echo "$want" > "$stamp"
fi
echo "$versions"
if [ -n "$chromium_note" ]; then echo "$chromium_note" >&2; fi
