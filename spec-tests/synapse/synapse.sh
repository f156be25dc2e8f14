#!/usr/bin/env bash
# A throwaway Synapse (the reference homeserver, from PyPI) on loopback, as the peer that Plexus is
# measured against and tested with.
#
#   synapse.sh install DIR                     venv in DIR/venv with matrix-synapse
#   synapse.sh start DIR PORT [sqlite|postgres] fresh data, client API on 127.0.0.1:PORT
#   synapse.sh start-fed DIR PORT FED_PORT [sqlite|postgres]
#                                              the same, federating on loopback (see below)
#   synapse.sh stop DIR
#
# Environment:
#   FED_PORT=N      `start` behaves as `start-fed` with this FED_PORT.
#   SYNAPSE_VENV=D  use (and install into) the venv D instead of DIR/venv, so that several
#                   Synapses can share one installation.
#   SYNAPSE_VERSION the matrix-synapse version to install (default below).
#   SYNAPSE_APPSERVICES=a.yaml,b.yaml
#                   application service registration files, given to Synapse as
#                   app_service_config_files (paths resolved before anything else; a missing file
#                   stops `start`). With them, the experimental transaction extensions that
#                   bridges read are on too: to-device messages (MSC2409/MSC4203) and device
#                   lists and one-time key counts (MSC3202). Unset: no application services, as
#                   before.
#
# Rate limits are raised so that the limiter is not what gets measured. PostgreSQL (what
# production Synapse runs on) comes from Debian's package and runs as its own cluster in DIR.
#
# Federated mode: server_name is "127.0.0.1:FED_PORT" (an IP literal with a port, so peers
# connect straight there: no .well-known, no SRV). The client API stays plain HTTP on PORT; a
# TLS listener on 127.0.0.1:FED_PORT serves the federation and key APIs with a self-signed
# certificate (DIR/tls.crt, made with openssl). Outbound, Synapse skips certificate checks
# (federation_verify_certificates: false), may connect to loopback (ip_range_blacklist: []),
# fetches keys from the origin server (trusted_key_servers: []), retries an unreachable
# destination after seconds instead of minutes, and has presence on. Without FED_PORT the
# server is "localhost", does not federate, and has presence off, as before.
set -euo pipefail

SYNAPSE_VERSION=${SYNAPSE_VERSION:-1.163.2}
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 install|start|start-fed|stop DIR [PORT] [FED_PORT] [sqlite|postgres]" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# Registration files are named relative to the caller's directory: resolve them before the cd.
appservice_files=()
if [ -n "${SYNAPSE_APPSERVICES:-}" ]; then
  IFS=, read -ra as_paths <<<"$SYNAPSE_APPSERVICES"
  for f in "${as_paths[@]}"; do
    if [ -n "$f" ]; then appservice_files+=("$(realpath -m -- "$f")"); fi
  done
fi
# Python puts the working directory on its path: a `synapse/` folder there (like this script's
# own) would shadow the real package.
cd "$dir"
venv=${SYNAPSE_VENV:-$dir/venv}
fed_port=${FED_PORT:-}

install() {
  # Several tests may start Synapse at once with one shared venv: one installs, the others wait.
  mkdir -p "$(dirname "$venv")"
  exec 9>"$venv.lock"
  flock 9
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  if ! "$venv/bin/python" -c "import synapse" 2>/dev/null; then
    echo "installing matrix-synapse $SYNAPSE_VERSION into $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "matrix-synapse==$SYNAPSE_VERSION"
  fi
  flock -u 9
  exec 9>&-
}

# A self-signed certificate for 127.0.0.1 (peers are told not to verify it).
make_cert() {
  command -v openssl >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
  }
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1" \
    -keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null
}

start_postgres() {
  local pgport=$1
  if ! command -v pg_ctlcluster >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  "$venv/bin/python" -c "import psycopg2" 2>/dev/null || "$venv/bin/pip" install --quiet psycopg2-binary
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  local pg="$dir/data/pg"
  mkdir -p "$pg"
  chown -R postgres "$dir/data" 2>/dev/null || true
  runuser -u postgres -- "$bin/initdb" -D "$pg" -U postgres -E UTF8 --locale=C >/dev/null
  runuser -u postgres -- "$bin/pg_ctl" -D "$pg" -o "-p $pgport -k /tmp -c listen_addresses=127.0.0.1" -l "$dir/data/postgres.log" -w start >/dev/null
  runuser -u postgres -- "$bin/createdb" -h 127.0.0.1 -p "$pgport" -U postgres -E UTF8 --locale=C -T template0 synapse
  echo "$bin" > "$dir/pg.bin"
}

write_config() {
  local port=$1 db=$2 pgport=${3:-}
  local secret
  secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  local database
  if [ "$db" = postgres ]; then
    database="database:
  name: psycopg2
  args:
    user: postgres
    database: synapse
    host: 127.0.0.1
    port: $pgport
    cp_min: 5
    cp_max: 10"
  else
    database="database:
  name: sqlite3
  args:
    database: $dir/data/homeserver.db"
  fi
  local rc='{per_second: 1000000, burst_count: 1000000}'
  local server_name=localhost fed_listener="" federation
  if [ -n "$fed_port" ]; then
    server_name="127.0.0.1:$fed_port"
    fed_listener="
  - port: $fed_port
    bind_addresses: ['127.0.0.1']
    type: http
    tls: true
    x_forwarded: false
    resources:
      - names: [federation, keys]
        compress: false"
    federation="tls_certificate_path: $dir/tls.crt
tls_private_key_path: $dir/tls.key
# Peers are 127.0.0.1:PORT with self-signed certificates.
federation_verify_certificates: false
# Outbound requests to loopback are refused by default (127.0.0.0/8 is in the default
# blacklist). ip_range_whitelist alone is not enough: the federation client also checks IP
# literal server names against the blacklist only.
ip_range_blacklist: []
ip_range_whitelist: ['127.0.0.0/8', '::1/128']
allow_public_rooms_over_federation: true
allow_public_rooms_without_auth: true
# A peer that was down (or not yet up) is retried after a second, not after ten minutes.
federation:
  destination_min_retry_interval: 1s
  destination_retry_multiplier: 2
  destination_max_retry_interval: 10s
  max_short_retry_delay: 1s
  max_long_retry_delay: 5s
rc_federation:
  window_size: 1000
  sleep_limit: 1000000
  sleep_delay: 500
  reject_limit: 1000000
  concurrent: 1000
federation_rr_transactions_per_room_per_second: 1000
presence:
  enabled: true"
  else
    federation="# Presence off outside federation tests (the shape comparison accepts what that changes).
presence:
  enabled: false"
  fi
  local appservices=""
  if [ ${#appservice_files[@]} -gt 0 ]; then
    local f list=""
    for f in "${appservice_files[@]}"; do
      [ -f "$f" ] || { echo "SYNAPSE_APPSERVICES: no such file $f" >&2; exit 2; }
      list+="${list:+, }'${f//\'/\'\'}'"
    done
    appservices="app_service_config_files: [$list]
experimental_features:
  msc2409_to_device_messages_enabled: true
  msc3202_transaction_extensions: true
  msc3202_device_masquerading: true"
  fi
  cat > "$dir/homeserver.yaml" <<YAML
server_name: "$server_name"
pid_file: $dir/homeserver.pid
public_baseurl: http://127.0.0.1:$port/
listeners:
  - port: $port
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false$fed_listener
$database
media_store_path: $dir/data/media_store
signing_key_path: $dir/data/signing.key
log_config: $dir/log.yaml
report_stats: false
macaroon_secret_key: "$secret"
form_secret: "$secret"
enable_registration: true
enable_registration_without_verification: true
suppress_key_server_warning: true
trusted_key_servers: []
room_list_publication_rules: [{action: allow}]
$federation
$appservices
rc_message: $rc
rc_registration: $rc
rc_registration_token_validity: $rc
rc_login:
  address: $rc
  account: $rc
  failed_attempts: $rc
rc_joins:
  local: $rc
  remote: $rc
rc_joins_per_room: $rc
rc_invites:
  per_room: $rc
  per_user: $rc
  per_issuer: $rc
rc_3pid_validation: $rc
rc_admin_redaction: $rc
rc_third_party_invite: $rc
rc_media_create: $rc
rc_presence:
  per_user: $rc
rc_delayed_event_mgmt: $rc
rc_reports: $rc
rc_room_creation: $rc
rc_profile: $rc
rc_key_requests: $rc
rc_user_directory: $rc
YAML
  cat > "$dir/log.yaml" <<YAML
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(levelname)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: $dir/homeserver.log
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
YAML
}

start() {
  local port=${3:-}
  local db=${4:-sqlite}
  [ -n "$port" ] || { echo "start needs a PORT" >&2; exit 2; }
  install
  stop_quiet
  rm -rf "$dir/data" "$dir/homeserver.log"
  mkdir -p "$dir/data"
  local pgport=""
  if [ "$db" = postgres ]; then
    pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    start_postgres "$pgport"
  elif [ "$db" != sqlite ]; then
    echo "unknown database $db (sqlite or postgres)" >&2; exit 2
  fi
  [ -z "$fed_port" ] || make_cert
  write_config "$port" "$db" "$pgport"
  "$venv/bin/python" -m synapse.app.homeserver -c "$dir/homeserver.yaml" --generate-keys >/dev/null
  "$venv/bin/python" -m synapse.app.homeserver -c "$dir/homeserver.yaml" --daemonize
  for _ in $(seq 1 600); do
    if curl -fsS "http://127.0.0.1:$port/_matrix/client/versions" >/dev/null 2>&1 &&
      { [ -z "$fed_port" ] || curl -fsSk "https://127.0.0.1:$fed_port/_matrix/key/v2/server" >/dev/null 2>&1; }; then
      if [ -n "$fed_port" ]; then
        echo "synapse $SYNAPSE_VERSION ($db) up on http://127.0.0.1:$port, federating as 127.0.0.1:$fed_port"
      else
        echo "synapse $SYNAPSE_VERSION ($db) up on http://127.0.0.1:$port"
      fi
      return 0
    fi
    sleep 0.1
  done
  echo "synapse did not come up; log tail:" >&2
  tail -30 "$dir/homeserver.log" >&2 || true
  exit 1
}

stop_quiet() {
  if [ -f "$dir/homeserver.pid" ]; then
    local pid
    pid=$(cat "$dir/homeserver.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/homeserver.pid"
  fi
  if [ -f "$dir/pg.bin" ]; then
    runuser -u postgres -- "$(cat "$dir/pg.bin")/pg_ctl" -D "$dir/data/pg" -m fast stop >/dev/null 2>&1 || true
    rm -f "$dir/pg.bin"
  fi
}

case "$cmd" in
  install) install ;;
  start) start "$@" ;;
  start-fed)
    fed_port=${4:-}
    [ -n "$fed_port" ] || { echo "start-fed needs PORT and FED_PORT" >&2; exit 2; }
    start "$1" "$2" "$3" "${5:-sqlite}" ;;
  stop) stop_quiet; echo "synapse stopped" ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
