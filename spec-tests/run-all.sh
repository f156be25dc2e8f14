#!/usr/bin/env bash
# Every Plexus test: unit tests, black-box spec-tests against real plexus processes, and the
# interop tests with libraries nobody here wrote: matrix-nio from PyPI (with its vodozemac
# E2EE), on one plexus and across two federated ones, matrix-js-sdk from npm, and a
# mautrix-python appservice; and the JSON shapes of Plexus's responses against Synapse's.
#
# Usage: bash spec-tests/run-all.sh
# Needs: cargo, python3 (3.9+) with venv, node (18+) with npm. Creates target/interop-venv on
# first run, and spec-tests/interop/jssdk/node_modules (npm ci) on every run; installs Synapse
# into target/synapse-venv when it is not there (the black-box tests that run Synapse install it
# too).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target=${CARGO_TARGET_DIR:-$root/target}

echo "== build"
cargo build --workspace --all-targets

echo "== cargo test (unit + black-box spec-tests)"
log=$(mktemp)
cargo test --workspace 2>&1 | tee "$log"
# Totals over every test binary, for the summary line at the end.
read -r cargo_passed cargo_failed < <(awk '/^test result:/ {p+=$4; f+=$6} END {print p+0, f+0}' "$log")
rm -f "$log"

echo "== interop: matrix-nio against a real plexus"
venv=$target/interop-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r spec-tests/interop/requirements.txt

data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PLEXUS_DATA_DIR="$data" PLEXUS_CLIENT_LISTEN="127.0.0.1:$port" PLEXUS_REGISTRATION=open PLEXUS_RATE_LIMITS=off \
  PLEXUS_LOG=warn "$target/debug/plexus" >"$data/plexus.log" 2>&1 &
pid=$!
# A Synapse started below (for the shape comparison) is stopped with the rest, even on failure.
syn_dir=""
stop_synapse() {
  if [ -n "$syn_dir" ]; then
    SYNAPSE_VENV="$target/synapse-venv" bash spec-tests/synapse/synapse.sh stop "$syn_dir" >/dev/null 2>&1 || true
    syn_dir=""
  fi
}
cleanup() { stop_synapse; kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/_matrix/client/versions" >/dev/null 2>&1 && break
  sleep 0.1
done
nio_log=$(mktemp)
if ! "$venv/bin/python" spec-tests/interop/nio_smoke.py "http://127.0.0.1:$port" | tee "$nio_log"; then
  echo "--- plexus log"; tail -50 "$data/plexus.log"; exit 1
fi
read -r nio_passed nio_failed < <(awk '/^[0-9]+ passed, [0-9]+ failed$/ {print $1, $3}' "$nio_log")
rm -f "$nio_log"

echo "== interop: matrix-nio room features (receipts, typing, relations, threads, unread counts, tags, directory, spaces)"
rooms_log=$(mktemp)
if ! "$venv/bin/python" spec-tests/interop/nio_rooms.py "http://127.0.0.1:$port" | tee "$rooms_log"; then
  echo "--- plexus log"; tail -50 "$data/plexus.log"; exit 1
fi
read -r rooms_passed rooms_failed < <(awk '/^[0-9]+ passed, [0-9]+ failed$/ {print $1, $3}' "$rooms_log")
rm -f "$rooms_log"

echo "== interop: what real clients tripped over (issue 20), through matrix-nio (devices, history on joining between syncs, unsigned.membership, v12 redactions)"
clients_log=$(mktemp)
if ! "$venv/bin/python" spec-tests/interop/nio_clients.py "http://127.0.0.1:$port" | tee "$clients_log"; then
  echo "--- plexus log"; tail -50 "$data/plexus.log"; exit 1
fi
read -r clients_passed clients_failed < <(awk '/^[0-9]+ passed, [0-9]+ failed$/ {print $1, $3}' "$clients_log")
rm -f "$clients_log"

echo "== interop: matrix-js-sdk from npm (TURN polling, room summary, history on accepting an invite, v12 redactions, unsigned.membership, /versions)"
# The SDK and its dependencies as package-lock.json pins them, into jssdk/node_modules.
(cd spec-tests/interop/jssdk && npm ci --no-audit --no-fund --loglevel=error)
jssdk_log=$(mktemp)
if ! node spec-tests/interop/jssdk/clients.mjs "http://127.0.0.1:$port" | tee "$jssdk_log"; then
  echo "--- plexus log"; tail -50 "$data/plexus.log"; exit 1
fi
read -r jssdk_passed jssdk_failed < <(awk '/^[0-9]+ passed, [0-9]+ failed$/ {print $1, $3}' "$jssdk_log")
rm -f "$jssdk_log"

echo "== interop: the JSON shapes of plexus's responses against Synapse's, one scripted client run on both (differences not accepted in shape_diff.py fail)"
shape_start=$SECONDS
SYNAPSE_VENV="$target/synapse-venv" bash spec-tests/synapse/synapse.sh install "$data/synapse"
syn_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
syn_dir="$data/synapse"
SYNAPSE_VENV="$target/synapse-venv" bash spec-tests/synapse/synapse.sh start "$syn_dir" "$syn_port"
shape_log=$(mktemp)
if ! "$venv/bin/python" spec-tests/interop/shape_diff.py "http://127.0.0.1:$port" "http://127.0.0.1:$syn_port" | tee "$shape_log"; then
  echo "--- plexus log"; tail -50 "$data/plexus.log"
  echo "--- synapse log"; tail -30 "$syn_dir/homeserver.log"; exit 1
fi
stop_synapse
read -r shape_passed shape_failed < <(awk '/^[0-9]+ passed, [0-9]+ failed$/ {print $1, $3}' "$shape_log")
rm -f "$shape_log"
echo "(shape comparison: $((SECONDS - shape_start))s with Synapse's start and stop)"

echo "== interop: matrix-nio end-to-end encryption (keys, Olm/Megolm, to-device, device lists, key backup)"
e2ee_log=$(mktemp)
if ! "$venv/bin/python" spec-tests/interop/nio_e2ee.py "http://127.0.0.1:$port" | tee "$e2ee_log"; then
  echo "--- plexus log"; tail -50 "$data/plexus.log"; exit 1
fi
read -r e2ee_passed e2ee_failed < <(awk '/^[0-9]+ passed, [0-9]+ failed$/ {print $1, $3}' "$e2ee_log")

echo "== interop: a mautrix-python appservice (transactions, ghosts, ephemeral, to-device, MSC3202) against plexus"
as_dir="$data/mautrix"; mkdir -p "$as_dir"
as_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_cport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/python" spec-tests/interop/make_registration.py "$as_dir/reg.yaml" "$as_port" localhost
PLEXUS_DATA_DIR="$as_dir/data" PLEXUS_CLIENT_LISTEN="127.0.0.1:$as_cport" PLEXUS_REGISTRATION=open PLEXUS_RATE_LIMITS=off \
  PLEXUS_APPSERVICE_REGISTRATIONS="$as_dir/reg.yaml" PLEXUS_LOG=warn "$target/debug/plexus" >"$as_dir/plexus.log" 2>&1 &
as_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$as_cport/_matrix/client/versions" >/dev/null 2>&1 && break
  sleep 0.1
done
mx_log=$(mktemp)
if ! (cd spec-tests/interop && "$venv/bin/python" mautrix_bridge.py "http://127.0.0.1:$as_cport" "$as_dir/reg.yaml") | tee "$mx_log"; then
  echo "--- plexus log"; tail -50 "$as_dir/plexus.log"; kill "$as_pid" 2>/dev/null || true; exit 1
fi
kill "$as_pid" 2>/dev/null || true; wait "$as_pid" 2>/dev/null || true
read -r mx_passed mx_failed < <(awk '/^[0-9]+ passed, [0-9]+ failed$/ {print $1, $3}' "$mx_log")
rm -f "$mx_log"

echo "== interop: matrix-nio end-to-end encryption across two federated plexus servers"
fed_pids=()
fed_urls=()
for i in 1 2; do
  fdir="$data/fed$i"; mkdir -p "$fdir"
  cport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  fport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  PLEXUS_DATA_DIR="$fdir" PLEXUS_CLIENT_LISTEN="127.0.0.1:$cport" PLEXUS_REGISTRATION=open PLEXUS_RATE_LIMITS=off \
    PLEXUS_SERVER_NAME="127.0.0.1:$fport" PLEXUS_FEDERATION_LISTEN="127.0.0.1:$fport" \
    PLEXUS_FEDERATION_VERIFY_TLS=false PLEXUS_FEDERATION_ALLOW_LOOPBACK=true \
    PLEXUS_LOG=warn "$target/debug/plexus" >"$fdir/plexus.log" 2>&1 &
  fed_pids+=($!)
  fed_urls+=("http://127.0.0.1:$cport")
done
cleanup() {
  stop_synapse
  kill "$pid" "${fed_pids[@]}" 2>/dev/null || true
  wait "$pid" "${fed_pids[@]}" 2>/dev/null || true
  rm -rf "$data"
}
for u in "${fed_urls[@]}"; do
  for _ in $(seq 1 100); do
    curl -fsS "$u/_matrix/client/versions" >/dev/null 2>&1 && break
    sleep 0.1
  done
done
if ! "$venv/bin/python" spec-tests/interop/nio_e2ee.py "${fed_urls[0]}" "${fed_urls[1]}" | tee "$e2ee_log"; then
  echo "--- plexus logs"; tail -30 "$data/fed1/plexus.log" "$data/fed2/plexus.log"; exit 1
fi
read -r e2ee_fed_passed e2ee_fed_failed < <(awk '/^[0-9]+ passed, [0-9]+ failed$/ {print $1, $3}' "$e2ee_log")
rm -f "$e2ee_log"

echo "== plexus-bench --scale tiny (every response checked; no timing assertions)"
bench_ok=1
"$target/debug/plexus-bench" run --base "http://127.0.0.1:$port" --scale tiny --pid "$pid" --data-dir "$data" || bench_ok=0
if [ "$bench_ok" != 1 ]; then
  echo "plexus-bench reported errors"; tail -50 "$data/plexus.log"; exit 1
fi
echo "== summary: cargo $cargo_passed passed, interop $nio_passed + $rooms_passed + $clients_passed + $jssdk_passed + $shape_passed + $e2ee_passed + $mx_passed + $e2ee_fed_passed passed, bench smoke 1 passed"
echo "$((cargo_passed + nio_passed + rooms_passed + clients_passed + jssdk_passed + shape_passed + e2ee_passed + mx_passed + e2ee_fed_passed + 1)) passed, $((cargo_failed + nio_failed + rooms_failed + clients_failed + jssdk_failed + shape_failed + e2ee_failed + mx_failed + e2ee_fed_failed)) failed"
