#!/usr/bin/env bash
# Install (or upgrade) IsoEdge as a systemd service on Debian / Raspberry Pi OS.
#
#   sudo systemd/install.sh                 # from a checkout or an unpacked release
#   sudo systemd/install.sh --enable        # ... and start it (after editing the config)
#
# Idempotent: running it again upgrades the program and the unit file but never touches the
# signing key, the configuration or the outbox (/var/lib/isoedge). See docs/install.md.
#
# --root DIR installs into a directory tree instead of / (a fake root for tests or an image
# being prepared); nothing outside DIR is changed then, and systemctl is not called.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: install.sh [options]
  --root DIR        install under DIR instead of / (no systemctl; DIR/etc/passwd must exist)
  --prefix DIR      program directory (default /opt/isoedge; the venv is PREFIX/venv)
  --source DIR      IsoEdge source tree to install (default: the checkout holding this script)
  --config FILE     initial configuration if none exists (default SOURCE/config/example-site.toml)
  --python PY       Python >= 3.11 used to create the venv (default python3)
  --pip-args ARGS   extra pip arguments, e.g. "--no-index --find-links /media/usb/wheels"
  --user NAME       service user (default isoedge)
  --enable          systemctl enable --now isoedge (only with --root /)
  -h, --help        this text
EOF
}

ROOT=/
PREFIX=/opt/isoedge
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SOURCE=$(cd "$SCRIPT_DIR/.." && pwd)
CONFIG=
PYTHON=python3
PIP_ARGS=
SERVICE_USER=isoedge
ENABLE=no

while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=$2; shift 2 ;;
        --prefix) PREFIX=$2; shift 2 ;;
        --source) SOURCE=$2; shift 2 ;;
        --config) CONFIG=$2; shift 2 ;;
        --python) PYTHON=$2; shift 2 ;;
        --pip-args) PIP_ARGS=$2; shift 2 ;;
        --user) SERVICE_USER=$2; shift 2 ;;
        --enable) ENABLE=yes; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

say() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

ROOT=$(cd "$ROOT" 2>/dev/null && pwd) || die "--root: no such directory"
[ "$ROOT" = / ] && R= || R=$ROOT          # R is prepended to every path we write
case "$PREFIX" in /*) ;; *) die "--prefix must be absolute" ;; esac
CONFIG=${CONFIG:-$SOURCE/config/example-site.toml}
ETC=/etc/isoedge
STATE=/var/lib/isoedge
UNIT_DIR=/etc/systemd/system
VENV=$PREFIX/venv

[ -f "$SOURCE/pyproject.toml" ] || die "--source $SOURCE is not an IsoEdge source tree"
if [ -z "$R" ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo), or use --root DIR to install into a directory"
fi
# A placeholder credential ("REPLACE", "<salt>", an all-zero token digest) is never installed:
# an incomplete password hash once let about one password in 256 in.
placeholders() { # placeholders FILE: print uncommented credential lines that are placeholders
    grep -nE '^[[:space:]]*(password_hash|token_sha256)[[:space:]]*=.*(REPLACE|[<>]|\$ME"|"0{64}")' "$1" || true
}
for cfg in "$R$ETC/isoedge.toml" "$CONFIG"; do
    [ -f "$cfg" ] || continue
    found=$(placeholders "$cfg")
    if [ -n "$found" ]; then
        printf '%s\n' "$found" >&2
        die "$cfg holds placeholder credentials (above); make real ones with: isoedge web-passwd"
    fi
    [ "$cfg" = "$R$ETC/isoedge.toml" ] && break   # an existing configuration is the one used
done
"$PYTHON" - <<'EOF' || die "$PYTHON: Python >= 3.11 with the venv module is required (apt install python3-venv)"
import sys, venv, ensurepip  # noqa: F401
raise SystemExit(0 if sys.version_info >= (3, 11) else 1)
EOF

# ---------------------------------------------------------------- service user
for f in passwd group; do
    [ -f "$R/etc/$f" ] || die "$R/etc/$f is missing (a --root needs a populated etc/)"
done
prefix_opt=()
[ -n "$R" ] && prefix_opt=(--prefix "$R")
if ! grep -q "^$SERVICE_USER:" "$R/etc/passwd"; then
    say "creating system user $SERVICE_USER (no login, home $STATE)"
    useradd "${prefix_opt[@]}" --system --user-group --home-dir "$STATE" --no-create-home \
        --shell /usr/sbin/nologin --comment "IsoEdge agent" "$SERVICE_USER"
fi
# Serial instruments are root:dialout 0660 (the unit also sets SupplementaryGroups=dialout).
dialout=$(grep '^dialout:' "$R/etc/group" || true)
if [ -z "$dialout" ]; then
    echo "install.sh: warning: no group dialout; serial instruments will not be readable" >&2
elif ! printf '%s\n' "$dialout" | cut -d: -f4 | tr ',' '\n' | grep -qx "$SERVICE_USER"; then
    say "adding $SERVICE_USER to group dialout"
    usermod "${prefix_opt[@]}" --append --groups dialout "$SERVICE_USER"
fi
uid=$(grep "^$SERVICE_USER:" "$R/etc/passwd" | cut -d: -f3)
gid=$(grep "^$SERVICE_USER:" "$R/etc/passwd" | cut -d: -f4)

# Ownership by number: in a --root the user exists only in DIR/etc/passwd.
own() { # own OWNER_UID GROUP_GID MODE PATH
    chmod "$3" "$4"
    if [ "$(id -u)" = 0 ]; then chown "$1:$2" "$4"; fi
}

# ------------------------------------------------------------------ directories
say "directories: $PREFIX, $ETC, $ETC/keys, $STATE"
install -d -m 0755 "$R$PREFIX" "$R$PREFIX/share/doc" "$R$UNIT_DIR"
install -d "$R$ETC" "$R$ETC/keys" "$R$STATE"
own 0 "$gid" 0750 "$R$ETC"
own "$uid" "$gid" 0700 "$R$ETC/keys"
own "$uid" "$gid" 0750 "$R$STATE"

# ---------------------------------------------------------------- program (venv)
if [ ! -x "$R$VENV/bin/python" ]; then
    say "creating virtual environment $VENV"
    "$PYTHON" -m venv "$R$VENV"
fi
say "installing IsoEdge from $SOURCE into $VENV"
# Build from a copy: the source tree (maybe a read-only checkout) is left as it was.
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
# Caches and test output are left out: they are not part of the program, and a linter or test
# run writing them meanwhile would make tar fail ("file changed as we read it").
tar -C "$SOURCE" --exclude=.venv --exclude=.git --exclude='*.egg-info' --exclude=build \
    --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache --exclude=.pytest_cache \
    --exclude=test-artifacts -cf - . | tar -C "$build" -xf -
# shellcheck disable=SC2086  # PIP_ARGS is a list of words on purpose
"$R$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $PIP_ARGS "$build"
"$R$VENV/bin/isoedge" --version
install -d -m 0755 "$R/usr/local/bin"
ln -sfn "$VENV/bin/isoedge" "$R/usr/local/bin/isoedge"

for doc in install.md operations.md fleet.md; do
    if [ -f "$SOURCE/docs/$doc" ]; then install -m 0644 "$SOURCE/docs/$doc" "$R$PREFIX/share/doc/"; fi
done

# ------------------------------------------------------------------ signing key
if [ -f "$R$ETC/keys/signing.key" ]; then
    say "keeping the existing signing key $ETC/keys/signing.key"
else
    say "creating the signing key $ETC/keys/signing.key"
    "$R$VENV/bin/isoedge" keygen --out "$R$ETC/keys"
fi
own "$uid" "$gid" 0600 "$R$ETC/keys/signing.key"
own "$uid" "$gid" 0644 "$R$ETC/keys/signing.pub.jwk"

# ---------------------------------------------------------------- configuration
if [ -f "$R$ETC/isoedge.toml" ]; then
    say "keeping the existing configuration $ETC/isoedge.toml"
elif [ -f "$CONFIG" ]; then
    say "installing the configuration $ETC/isoedge.toml (from $CONFIG): edit it for this site"
    install -m 0640 "$CONFIG" "$R$ETC/isoedge.toml"
else
    die "no configuration: $CONFIG does not exist (use --config FILE)"
fi
own 0 "$gid" 0640 "$R$ETC/isoedge.toml"

# ----------------------------------------------------------------------- unit
say "installing the unit $UNIT_DIR/isoedge.service"
sed -e "s#/opt/isoedge/#$PREFIX/#g" -e "s#^User=isoedge#User=$SERVICE_USER#" \
    -e "s#^Group=isoedge#Group=$SERVICE_USER#" \
    "$SOURCE/systemd/isoedge.service" > "$R$UNIT_DIR/isoedge.service.new"
chmod 0644 "$R$UNIT_DIR/isoedge.service.new"
mv "$R$UNIT_DIR/isoedge.service.new" "$R$UNIT_DIR/isoedge.service"

# ------------------------------------------------------------------------ check
config_ok=yes
if ! "$R$VENV/bin/isoedge" check-config "$R$ETC/isoedge.toml"; then
    config_ok=no
    echo "install.sh: the configuration has errors (listed above); fix them before starting" >&2
fi

if [ -z "$R" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ "$ENABLE" = yes ]; then
        [ "$config_ok" = yes ] || die "not enabling the service: the configuration is invalid"
        systemctl enable --now isoedge.service
        systemctl --no-pager --lines=5 status isoedge.service || true
    elif systemctl is-active --quiet isoedge.service; then
        say "restarting the running service with the new version"
        systemctl restart isoedge.service
    fi
fi

kid=$("$R$VENV/bin/python" -c 'import json,sys
from agent.delivery.signing import thumbprint
print(thumbprint(json.load(open(sys.argv[1]))))' "$R$ETC/keys/signing.pub.jwk")
cat <<EOF

IsoEdge is installed${R:+ under $R}.
  program      $VENV/bin/isoedge
  config       $ETC/isoedge.toml   (check: isoedge check-config $ETC/isoedge.toml)
  signing key  $ETC/keys/signing.key   key id (kid) $kid
  public key   $ETC/keys/signing.pub.jwk   (give this file to the data consumers)
  state        $STATE   (outbox; back it up with the keys, see docs/operations.md)
Next: edit the configuration, then  sudo systemctl enable --now isoedge
      and watch it with           journalctl -u isoedge -f
EOF
[ "$config_ok" = yes ]
