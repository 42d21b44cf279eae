#!/usr/bin/env bash
# Install what the browser tests (tests/browser/, Playwright) need, from Debian's
# packages: Chromium (Playwright's own browser download cannot work here) and a
# small CJK font so zh-CN pages render real glyphs in screenshots.
# Idempotent and quiet: does nothing when everything is already installed.
set -euo pipefail

need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
dpkg-query -W -f='${Status}' fonts-wqy-microhei 2>/dev/null | grep -q "ok installed" || need+=(fonts-wqy-microhei)
[ ${#need[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "install-browser: need root (or sudo) to apt-get install ${need[*]}" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-browser: apt-get install ${need[*]}"
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" fonts-liberation >/dev/null
[ -x /usr/bin/chromium ] || { echo "install-browser: /usr/bin/chromium still missing" >&2; exit 1; }
/usr/bin/chromium --version
