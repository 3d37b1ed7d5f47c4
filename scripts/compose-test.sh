#!/usr/bin/env bash
# `make compose-test`: docker-compose.yml, executed. Installs podman & co. from Debian's packages
# when missing, builds every image locally (no registry: scripts/base-images.sh), then
# tests/test_compose.py brings the stack up with two replicas of every service, drives badge
# meetings through it to a summary, an archived meeting and a verified webhook, and tears it
# all down.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
bash scripts/compose-deps.sh
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/scripts/containers.conf}"
bash scripts/base-images.sh
echo "compose-test: building supie:latest from the Dockerfile"
if ! podman build -t supie:latest . >/tmp/supie-compose-build.log 2>&1; then
    tail -40 /tmp/supie-compose-build.log >&2
    exit 1
fi
echo "compose-test: images ready after $(($(date +%s) - started)) s"
# -s: the figures (time to healthy, the meetings and their webhooks) as the test prints them.
SUPIE_COMPOSE_TEST=1 "${UV:-uv}" run pytest -p no:cacheprovider -q -s tests/test_compose.py "$@"
echo "compose-test: done in $(($(date +%s) - started)) s"
