#!/usr/bin/env bash
# A throwaway Synapse (the reference homeserver, from PyPI) on loopback, as the peer that Plexus is
# measured against and tested with.
#
#   synapse.sh install DIR                     venv in DIR/venv with matrix-synapse
#   synapse.sh start DIR PORT [sqlite|postgres] fresh data, client API on 127.0.0.1:PORT
#   synapse.sh stop DIR
#
# Rate limits are raised so that the limiter is not what gets measured. PostgreSQL (what
# production Synapse runs on) comes from Debian's package and runs as its own cluster in DIR.
set -euo pipefail

SYNAPSE_VERSION=${SYNAPSE_VERSION:-1.163.2}
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 install|start|stop DIR [PORT] [sqlite|postgres]" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

install() {
  if [ ! -x "$dir/venv/bin/python" ]; then
    python3 -m venv "$dir/venv"
  fi
  if ! "$dir/venv/bin/python" -c "import synapse" 2>/dev/null; then
    echo "installing matrix-synapse $SYNAPSE_VERSION into $dir/venv"
    "$dir/venv/bin/pip" install --quiet --disable-pip-version-check "matrix-synapse==$SYNAPSE_VERSION"
  fi
}

start_postgres() {
  local pgport=$1
  if ! command -v pg_ctlcluster >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  "$dir/venv/bin/python" -c "import psycopg2" 2>/dev/null || "$dir/venv/bin/pip" install --quiet psycopg2-binary
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
  cat > "$dir/homeserver.yaml" <<YAML
server_name: "localhost"
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
        compress: false
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
# Plexus has no presence yet: compare like with like.
presence:
  enabled: false
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
  write_config "$port" "$db" "$pgport"
  "$dir/venv/bin/python" -m synapse.app.homeserver -c "$dir/homeserver.yaml" --generate-keys >/dev/null
  "$dir/venv/bin/python" -m synapse.app.homeserver -c "$dir/homeserver.yaml" --daemonize
  for _ in $(seq 1 600); do
    if curl -fsS "http://127.0.0.1:$port/_matrix/client/versions" >/dev/null 2>&1; then
      echo "synapse $SYNAPSE_VERSION ($db) up on http://127.0.0.1:$port"
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
  stop) stop_quiet; echo "synapse stopped" ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
