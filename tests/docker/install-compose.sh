#!/bin/sh
# Install the `docker compose` (v2) CLI plugin for tests/test_compose.py, if missing.
#
# Debian 12 ships only compose v1 (1.29, which rejects compose-spec files); Debian 13
# packages v2 as `docker-compose`, a Go binary needing only libc6 >= 2.34. So the .deb
# is fetched with apt from Debian 13's archive through a private apt configuration
# (nothing is added to the machine's sources) and installed with dpkg.
#
#   sh tests/docker/install-compose.sh
set -eu
if docker compose version >/dev/null 2>&1; then
  echo "== $(docker compose version)"
  exit 0
fi
echo "== installing docker compose v2 (Debian 13's docker-compose package)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
# The machine's own Debian mirror (the first non-security URI of its apt sources).
mirror="$( (grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}';
            grep -hs '^deb ' /etc/apt/sources.list | sed 's/\[[^]]*\]//' | awk '{print $2}') \
          | grep -v security | head -n 1)"
[ -n "$mirror" ] || { echo "no Debian mirror found in the apt sources"; exit 1; }
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" \
  >"$work/sources.list"
apt_opts="-o Dir::Etc::sourcelist=$work/sources.list -o Dir::Etc::sourceparts=-
  -o Dir::State::Lists=$work/lists -o Dir::Cache=$work/cache -o APT::Sandbox::User=root"
# shellcheck disable=SC2086
apt-get $apt_opts -qq update
# shellcheck disable=SC2086
(cd "$work" && apt-get $apt_opts -qq download docker-compose)
dpkg -i "$work"/docker-compose_*.deb >/dev/null
docker compose version
