#!/bin/sh
# Install (if needed) and start a Docker engine for the Docker tests, then build the
# stand-in images. Sourced or run by .ci/run as root; safe to run twice.
#
#   sh tests/docker/start-dockerd.sh            # engine + images
#   SKIP_IMAGES=1 sh tests/docker/start-dockerd.sh
#
# Never fails the CI run by itself: without an engine the Docker tests skip with a reason.
HERE="$(cd "$(dirname "$0")" && pwd)"
if ! command -v dockerd >/dev/null 2>&1; then
  echo "== installing docker.io"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io) \
    >/tmp/docker-install.log 2>&1 || { echo "warning: cannot install docker.io (see /tmp/docker-install.log)"; exit 0; }
fi
if ! docker info >/dev/null 2>&1; then
  echo "== starting dockerd"
  nohup dockerd >/tmp/dockerd.log 2>&1 &
  i=0
  until docker info >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -ge 60 ]; then
      echo "warning: dockerd did not answer within 60s (see /tmp/dockerd.log); Docker tests will skip"
      tail -n 5 /tmp/dockerd.log
      exit 0
    fi
    sleep 1
  done
fi
echo "== Docker $(docker version -f '{{.Server.Version}}' 2>/dev/null) is up"
if [ -z "${SKIP_IMAGES:-}" ]; then
  sh "$HERE/build-images.sh" || echo "warning: stand-in images failed to build; Docker tests will skip"
fi
exit 0
