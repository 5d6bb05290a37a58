#!/bin/sh
# Build the local stand-in images the Docker tests use (no registry is reachable here).
#
#   tests/docker/build-images.sh          # idempotent: skips images whose recipe is unchanged
#   FORCE=1 tests/docker/build-images.sh  # rebuild everything
#
# tradelab-test/debian:bookworm  debootstrap minbase from the mirror apt already uses
# tradelab-test/python:3.11      Debian python3 + venv (the app image's build.base_image)
# tradelab-test/postgres:15      official-postgres interface on Debian's PostgreSQL
# tradelab-test/prometheus:2.42  official-prometheus interface on Debian's Prometheus
# tradelab-test/alertmanager:0.25
# tradelab-test/locust:2.32.4    pip's Locust
#
# Each image carries a label tradelab.recipe = hash(recipe files + base image id), so a
# changed Dockerfile or a rebuilt base rebuilds it and nothing else.
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
PREFIX=tradelab-test
LABEL=tradelab.recipe

recipe_of() {  # current label of an image, empty when the image is missing
  docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null || true
}

mirror() {  # the Debian mirror apt uses on this host
  m="$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)"
  [ -n "$m" ] || m="$(sed -n 's/^deb \[*[^]]*\]* *\(http[^ ]*debian\) .*/\1/p; s/^deb \(http[^ ]*debian\) .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -n1)"
  echo "${m:-http://deb.debian.org/debian}"
}

build_debian() {
  name="$PREFIX/debian:bookworm"
  hash="$( (echo debootstrap-minbase-bookworm-v1; mirror) | sha256sum | cut -c1-16)"
  if [ -z "${FORCE:-}" ] && [ "$(recipe_of "$name")" = "$hash" ]; then
    echo "== $name up to date"; return
  fi
  echo "== building $name (debootstrap from $(mirror))"
  root="$(mktemp -d /tmp/tradelab-debian.XXXXXX)"
  debootstrap --variant=minbase bookworm "$root" "$(mirror)" >/tmp/tradelab-debootstrap.log 2>&1 \
    || { tail -n 20 /tmp/tradelab-debootstrap.log >&2; rm -rf "$root"; exit 1; }
  # Smaller and friendlier for image builds: no apt caches, no docs, no interactive debconf.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
    > "$root/etc/dpkg/dpkg.cfg.d/01-nodoc"
  printf 'APT::Install-Recommends "false";\n' > "$root/etc/apt/apt.conf.d/01-norecommends"
  tar -C "$root" -c . | docker import \
    --change "LABEL $LABEL=$hash" \
    --change 'ENV DEBIAN_FRONTEND=noninteractive PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$name" >/dev/null
  rm -rf "$root"
}

build() {  # build NAME DIR BASE: a Dockerfile recipe on top of BASE
  name="$1"; dir="$HERE/$2"; base="$3"
  base_id="$(docker image inspect -f '{{.Id}}' "$base")"
  ctx="$(mktemp -d /tmp/tradelab-ctx.XXXXXX)"
  cp -a "$dir"/. "$ctx"/
  if [ "$2" = python ]; then  # pip in later builds must trust the host's HTTPS proxy
    cp "$(python3 -m pip config get global.cert 2>/dev/null || echo /etc/ssl/certs/ca-certificates.crt)" \
      "$ctx/host-ca.crt"
  fi
  hash="$( (cd "$dir" && cat $(ls | sort); echo "$base_id") | sha256sum | cut -c1-16)"
  if [ -z "${FORCE:-}" ] && [ "$(recipe_of "$name")" = "$hash" ]; then
    echo "== $name up to date"; rm -rf "$ctx"; return
  fi
  echo "== building $name"
  log="/tmp/tradelab-build-$2.log"
  if ! docker build --build-arg "BASE=$base" --label "$LABEL=$hash" -t "$name" "$ctx" >"$log" 2>&1; then
    tail -n 30 "$log" >&2; rm -rf "$ctx"; echo "error: building $name failed (log: $log)" >&2; exit 1
  fi
  rm -rf "$ctx"
}

docker info >/dev/null 2>&1 || { echo "error: Docker is not reachable (start dockerd first)" >&2; exit 1; }
start=$(date +%s)
build_debian
build "$PREFIX/python:3.11" python "$PREFIX/debian:bookworm"
build "$PREFIX/postgres:15" postgres "$PREFIX/debian:bookworm"
build "$PREFIX/prometheus:2.42" prometheus "$PREFIX/debian:bookworm"
build "$PREFIX/alertmanager:0.25" alertmanager "$PREFIX/debian:bookworm"
build "$PREFIX/locust:2.32.4" locust "$PREFIX/python:3.11"
echo "== stand-in images ready in $(( $(date +%s) - start ))s"
