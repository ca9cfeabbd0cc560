#!/usr/bin/env bash
# Installs the Debian packages the demo or the tests need, when they are missing and we are
# root; otherwise says what to run. Usage: system-packages.sh PACKAGE...
# Each package is checked by the program it provides, so nothing is reinstalled needlessly.
set -euo pipefail

declare -A PROVIDES=(
    [mosquitto]="mosquitto /usr/sbin/mosquitto"
    [chromium]="chromium /usr/bin/chromium"
    [systemd]="systemd-analyze /usr/bin/systemd-analyze"
    # Debian keeps initdb off PATH, in /usr/lib/postgresql/VERSION/bin.
    [postgresql]="initdb /usr/lib/postgresql/*/bin/initdb"
    [poppler-utils]="pdftotext /usr/bin/pdftotext"
    [fuse3]="fusermount3 /usr/bin/fusermount3"
)

missing=()
for pkg in "$@"; do
    read -r prog path <<<"${PROVIDES[$pkg]:-$pkg $pkg}"
    # shellcheck disable=SC2086 # $path may be a glob (a versioned directory)
    if ! command -v "$prog" >/dev/null 2>&1 && ! compgen -G "$path" >/dev/null; then
        missing+=("$pkg")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != "0" ]; then
    echo "missing system packages: ${missing[*]}; run: sudo apt-get update && sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "installing ${missing[*]} (apt-get)"
# A fresh machine's package lists are empty or stale: update once before installing.
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The demo and the tests start their own brokers; a system-wide one is not wanted.
if [[ " ${missing[*]} " == *" mosquitto "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi
# Likewise the cluster Debian creates on install: the ingest tests and demo start their own.
if [[ " ${missing[*]} " == *" postgresql "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now postgresql >/dev/null 2>&1 || true
fi
