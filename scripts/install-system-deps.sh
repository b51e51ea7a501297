#!/usr/bin/env bash
# Debian packages the tests and datasets use: fonts for the glyph datasets, Fashion-MNIST, and chromium
# for the browser test of `cnnzoo serve`'s page (Playwright drives it; it never downloads a browser).
# Installs only what is missing; on a system without apt it says what to install and goes on.
set -euo pipefail
packages=(fonts-dejavu-core fonts-liberation2 fonts-freefont-ttf fonts-paratype fonts-noto-core dataset-fashion-mnist chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "note: install these (or your system's equivalents) for the glyph and fashion-mnist datasets: ${missing[*]}" >&2
  exit 0
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
