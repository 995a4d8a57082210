#!/usr/bin/env bash
# Install the browser for the JupyterLab end-to-end test (tests/test_browser.py): Debian's `chromium`, driven by the
# Python `playwright` package from the project venv (Playwright's own browser download is not used).
# Idempotent: returns at once when a working Chromium is already installed. Needs root (or password-less sudo).
set -euo pipefail

chromium_ok() {
    # The Debian launcher script prints a harmless shell warning on stderr; only the exit status matters.
    "$1" --version >/dev/null 2>&1
}

if [ -n "${SERESNET_CHROMIUM:-}" ] && [ -x "${SERESNET_CHROMIUM}" ] && chromium_ok "${SERESNET_CHROMIUM}"; then
    echo "install-browser: using SERESNET_CHROMIUM=${SERESNET_CHROMIUM}"
    exit 0
fi
if [ -x /usr/bin/chromium ] && chromium_ok /usr/bin/chromium; then
    echo "install-browser: $(/usr/bin/chromium --version 2>/dev/null) already installed"
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        echo "install-browser: not root and no sudo; cannot apt-get install chromium" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
# Fonts: without them page text renders as empty boxes in the screenshots.
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-liberation fonts-dejavu-core >/dev/null

if ! chromium_ok /usr/bin/chromium; then
    echo "install-browser: chromium was installed but /usr/bin/chromium --version fails" >&2
    exit 1
fi
echo "install-browser: installed $(/usr/bin/chromium --version 2>/dev/null)"
