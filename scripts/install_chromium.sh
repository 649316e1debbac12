#!/usr/bin/env bash
# Headless Chromium from Debian's packages, for the test that renders a report page in a real browser.
# Installs only when no Chromium is found; never fails the caller: without one, that test is skipped and says so.
set -uo pipefail
for browser in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$browser" >/dev/null 2>&1; then
    echo "install_chromium: $browser is already installed ($(command -v "$browser"))"
    exit 0
  fi
done
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_chromium: no apt-get here, so no Chromium: the browser test of the report page will be skipped"
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
    echo "install_chromium: not root and no password-less sudo, so no Chromium: the browser test will be skipped"
    exit 0
  fi
fi
echo "install_chromium: apt-get install chromium (Debian's package, about 100 MB)"
export DEBIAN_FRONTEND=noninteractive
if ! { $sudo apt-get install -y -q --no-install-recommends chromium >/tmp/install_chromium.log 2>&1 ||
       { $sudo apt-get update -q >>/tmp/install_chromium.log 2>&1 &&
         $sudo apt-get install -y -q --no-install-recommends chromium >>/tmp/install_chromium.log 2>&1; }; }; then
  echo "install_chromium: apt-get failed (last lines below), so no Chromium: the browser test will be skipped"
  tail -5 /tmp/install_chromium.log
fi
exit 0
