#!/usr/bin/env bash
# Installs an independent peer used by the interop tests into its own virtualenv under
# .peers/<name> (pinned versions; see docs/lightning.md "LNbits" and docs/cashu.md "Interop") and prints the venv's path.
# Idempotent and safe to run concurrently: a lock serialises installs, a stamp marks completion.
#   tools/peer-venv.sh lnbits | nutshell
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
name="${1:?usage: peer-venv.sh lnbits|nutshell}"
case "$name" in
  lnbits) pins=("lnbits==1.6.2" "bitstring==4.2.3") ;;
  nutshell) pins=("cashu==0.19.2" "marshmallow<4" "limits<4") ;;
  *) echo "unknown peer: $name" >&2; exit 2 ;;
esac
venv="$root/.peers/$name"
stamp="$venv/.installed-$(printf '%s ' "${pins[@]}" | sha256sum | cut -c1-16)"
mkdir -p "$root/.peers"
exec 9>"$root/.peers/$name.lock"
flock 9
if [[ ! -f "$stamp" ]]; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}" >&2
  touch "$stamp"
fi
echo "$venv"
