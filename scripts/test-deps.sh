#!/usr/bin/env bash
# Installs what the console's browser tests need from Debian's packages: chromium (driven by
# Playwright through executable_path: `playwright install` cannot download here) and
# fonts-noto-cjk (Chinese text renders). A no-op when both are there; without root (or sudo)
# it says what is missing and carries on: those tests then skip, saying why.
set -euo pipefail
need=()
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
    && [ -z "${CHROMIUM_PATH:-}" ]; then
    need+=(chromium)
fi
if ! dpkg-query -W -f='${Status}' fonts-noto-cjk 2>/dev/null | grep -q "ok installed" \
    && ! fc-list 2>/dev/null | grep -qi "Noto Sans CJK"; then
    need+=(fonts-noto-cjk)
fi
if [ "${#need[@]}" -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1 || ! sudo -n true 2>/dev/null; then
        echo "test-deps: ${need[*]} missing and no root to install them: the browser tests skip" >&2
        exit 0
    fi
    SUDO="sudo -n"
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "test-deps: ${need[*]} missing and no apt-get: the browser tests skip" >&2
    exit 0
fi
echo "test-deps: installing ${need[*]} from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || \
    echo "test-deps: could not install ${need[*]}: the browser tests skip" >&2
