#!/usr/bin/env bash
# Installs what `make compose-test` needs from Debian's packages: podman (with runc, the runtime
# that works on hosts with hybrid cgroups), podman-compose and debootstrap. A no-op when every
# tool is already there; needs root (or sudo) otherwise.
set -euo pipefail
need=()
for tool in podman podman-compose debootstrap runc; do
    command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
# Containers find each other by service name through CNI's dnsname plugin.
[ -x /usr/lib/cni/dnsname ] || need+=(dnsname)
if [ "${#need[@]}" -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "compose-deps: need root to install ${need[*]}" >&2; exit 1; }
    SUDO="sudo"
fi
echo "compose-deps: installing ${need[*]} (and friends) from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    podman podman-compose debootstrap runc uidmap slirp4netns fuse-overlayfs \
    containernetworking-plugins golang-github-containernetworking-plugin-dnsname iptables >/dev/null
