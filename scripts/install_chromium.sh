#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (Playwright cannot download browsers here). Install it when
# it is missing; `make test` and CI call this, so a fresh machine needs nothing by hand.
set -euo pipefail
CHROMIUM="${VAAS_CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo -n"; else
  echo "The browser tests need Chromium at $CHROMIUM: run 'apt-get install chromium' as root, or set VAAS_CHROMIUM." >&2
  exit 1
fi
echo "installing Debian's chromium for the browser tests …"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null \
  || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null; }
[ -x "$CHROMIUM" ] || { echo "chromium was installed but $CHROMIUM is missing; set VAAS_CHROMIUM" >&2; exit 1; }
