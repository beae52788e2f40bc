#!/usr/bin/env bash
# Installs an independent JavaScript peer used by the interop tests into .peers/<name>
# (pinned versions; see docs/subscriptions.md "Interop with NDK") and prints the install prefix.
# Idempotent and safe to run concurrently: a lock serialises installs, a stamp marks completion.
#   tools/peer-npm.sh ndk
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
name="${1:?usage: peer-npm.sh ndk}"
case "$name" in
  # NDK 2.18.1 is the last 2.x; `ws` because Node before 22 has no global WebSocket.
  # nostr-tools is NDK's peer dependency: pinned too, so npm does not pick whatever is newest.
  ndk) pins=("@nostr-dev-kit/ndk@2.18.1" "nostr-tools@2.17.0" "ws@8.18.3") ;;
  *) echo "unknown peer: $name" >&2; exit 2 ;;
esac
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: install Node.js with npm (tested with Node 20)" >&2; exit 3; }
done
prefix="$root/.peers/$name"
stamp="$prefix/.installed-$(printf '%s ' "${pins[@]}" | sha256sum | cut -c1-16)"
mkdir -p "$root/.peers"
exec 9>"$root/.peers/$name.lock"
flock 9
if [[ ! -f "$stamp" ]]; then
  rm -rf "$prefix"
  mkdir -p "$prefix"
  # --save-exact + the lock file written here record what was installed; no audit/fund chatter.
  npm install --prefix "$prefix" --save-exact --no-audit --no-fund --loglevel=error \
    "${pins[@]}" >&2
  touch "$stamp"
fi
echo "$prefix"
