#!/usr/bin/env bash
# Initialize, unseal and configure Vault (or OpenBao) for the Flask backend, idempotently:
# a re-run keeps every secret, key and credential that exists and says so.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: $PROG [options]

Initialize and unseal the Vault at \$VAULT_ADDR (default $VAULT_ADDR), then configure it for
the Flask backend: KV v2 at secret/, policies app-policy and admin-policy, AppRole role
$ROLE_NAME, random secrets at secret/app/flask (also the Redis password),
secret/database/postgres (where the database is; no login) and secret/database/bootstrap (the
database's bootstrap login, for operators only), the operator token.
An already initialized server is used as is with \$VAULT_TOKEN (e.g. \`bao server -dev\`).

Options (environment variable in brackets):
  --key-shares N           unseal key shares [KEY_SHARES, default 5]
  --key-threshold N        keys needed to unseal [KEY_THRESHOLD, default 3]
  --secret-id-ttl DUR      lifetime of AppRole secret IDs, 0 = until rotated [SECRET_ID_TTL, 720h]
  --secret-id-num-uses N   logins per secret ID, 0 = unlimited [SECRET_ID_NUM_USES, 0]
  --cidr LIST              comma-separated CIDRs allowed to log in and use tokens [APPROLE_CIDRS]
  --database-engine-only   with VAULT_DB_MODE=dynamic on a configured server: only the
                           database secrets engine step (setup.sh, once the database it
                           needs runs; skips the steps a first run has just done)
  --kubernetes             also configure auth/kubernetes and its role $ROLE_NAME (below)
  -h, --help               this help

Other environment: PROJECT_DIR (where files go, default the repo root), VAULT_KEYS_FILE,
ENV_FILE, APP_VAULT_ADDR (VAULT_ADDR for .env; default: keep an existing line, else
\$VAULT_ADDR), DB_HOST, DB_PORT, DB_NAME, DB_USER (the bootstrap login's name, default app),
OPERATOR_TOKEN_TTL (default 768h),
VAULT_OPERATOR_TOKEN_FILE (default vault-operator-token),
AUDIT_FILE_PATH (HashiCorp Vault only), VAULT_BIN, VAULT_GENERATE_ROOT_SOCKET (a private Unix
socket listener serving generate-root without a token, for a re-run whose operator token
expired; setup.sh --local has one).
VAULT_DB_MODE=dynamic also configures the database secrets engine: DB_ADMIN_USER and
DB_ADMIN_PASSWORD (a CREATEROLE role, not the superuser; its password is rotated by Vault),
DB_CREDS_TTL (1h), DB_CREDS_MAX_TTL (24h), DB_GROUP_ROLE (flask_app), DB_SSLMODE (prefer);
migrations' logins (role $MIGRATE_ROLE, admin-policy only): DB_OWNER_ROLE (flask_owner),
DB_MIGRATE_TTL (15m), DB_MIGRATE_MAX_TTL (1h). It also removes any login from
secret/database/postgres, older versions included.

--kubernetes (pods log in with their service-account token, VAULT_AUTH_METHOD=kubernetes):
K8S_HOST (the Kubernetes API URL Vault calls for TokenReview, required), K8S_CA_CERT (PEM
file of the API's CA; unset: Vault running in a pod uses its own), K8S_TOKEN_REVIEWER_JWT_FILE
(a token allowed to create TokenReviews; unset: Vault in a pod uses its own, else each
client's), K8S_SERVICE_ACCOUNT (default flask-backend) and K8S_NAMESPACE (default flask-app)
that the role is bound to, K8S_AUDIENCE (the audience the pod's projected token must carry,
e.g. vault as in deploy/kubernetes/; unset: any token Kubernetes accepts).

Writes, all mode 0600, never printed: vault-keys.json (unseal keys, or recovery keys with
auto-unseal; operator init's root token, revoked at the end of the run), vault-operator-token
(the operator token),
.env (VAULT_ADDR, VAULT_ROLE_ID, VAULT_SECRET_ID, SECRETS_GID; other lines kept),
secrets/db_password.txt, secrets/redis_password.txt and secrets/approle/secret_id (0640,
group SECRETS_GID).
Without VAULT_TOKEN a re-run generates a root token from the unseal (or recovery) keys
(operator generate-root) for its own use and revokes it when done; no root token outlives a run.
EOF
}

KEY_SHARES="${KEY_SHARES:-5}"
KEY_THRESHOLD="${KEY_THRESHOLD:-3}"
# The app logs in again at every token max TTL with this secret ID, so it must outlive the
# rotation schedule; 30 days makes a forgotten one expire instead of living for ever.
# `setup.sh --status` warns a week ahead; rotate-secret-id.sh issues the next one.
SECRET_ID_TTL="${SECRET_ID_TTL:-720h}"
SECRET_ID_NUM_USES="${SECRET_ID_NUM_USES:-0}"
APPROLE_CIDRS="${APPROLE_CIDRS:-}"
OPERATOR_TOKEN_TTL="${OPERATOR_TOKEN_TTL:-768h}"
KUBERNETES=false
MIGRATE_ROLE="flask-migrate"

parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --key-shares) KEY_SHARES="${2:?--key-shares needs a number}"; shift 2 ;;
      --key-threshold) KEY_THRESHOLD="${2:?--key-threshold needs a number}"; shift 2 ;;
      --secret-id-ttl) SECRET_ID_TTL="${2:?--secret-id-ttl needs a duration}"; shift 2 ;;
      --secret-id-num-uses) SECRET_ID_NUM_USES="${2:?--secret-id-num-uses needs a number}"; shift 2 ;;
      --cidr) APPROLE_CIDRS="${2:?--cidr needs a CIDR list}"; shift 2 ;;
      --database-engine-only) DATABASE_ENGINE_ONLY=true; shift ;;
      --kubernetes) KUBERNETES=true; shift ;;
      -h | --help) usage; exit 0 ;;
      *) die "unknown option '$1' (see --help)" ;;
    esac
  done
  [[ "$KEY_SHARES" =~ ^[1-9][0-9]*$ && "$KEY_THRESHOLD" =~ ^[1-9][0-9]*$ ]] ||
    die "key shares and threshold must be positive integers"
  [ "$KEY_THRESHOLD" -le "$KEY_SHARES" ] || die "key threshold $KEY_THRESHOLD > shares $KEY_SHARES"
  [[ "$SECRET_ID_NUM_USES" =~ ^[0-9]+$ ]] || die "secret ID uses must be a number"
  if [ "$DATABASE_ENGINE_ONLY" = true ] && [ "${VAULT_DB_MODE:-static}" != dynamic ]; then
    die "--database-engine-only needs VAULT_DB_MODE=dynamic"
  fi
  [ "$KUBERNETES" = false ] || check_kubernetes_settings
}

check_kubernetes_settings() {
  [ -n "${K8S_HOST:-}" ] || die "--kubernetes needs K8S_HOST (the Kubernetes API URL)"
  local file
  for file in "${K8S_CA_CERT:-}" "${K8S_TOKEN_REVIEWER_JWT_FILE:-}"; do
    [ -z "$file" ] || [ -s "$file" ] || die "$file: no such file or empty"
  done
}

# Refuse early, before the server or any file changes, when the outputs cannot be written.
preflight() {
  if [ ! -d "$PROJECT_DIR" ] || [ ! -w "$PROJECT_DIR" ]; then
    die "project dir $PROJECT_DIR is not a writable directory"
  fi
  check_env_file
  if [ -e "$KEYS_FILE" ]; then
    py keys-field "$KEYS_FILE" root_token >/dev/null
  fi
}

init_and_unseal() {
  local status
  status="$(seal_status)"
  if [ "$(status_field "$status" initialized)" = "true" ]; then
    say "Vault at $VAULT_ADDR is initialized: kept"
  else
    initialize
    status="$(seal_status)"
  fi
  if [ "$(status_field "$status" sealed)" = "true" ]; then
    say "unsealing"
    unseal_with_keys
    say "unsealing: ok"
  else
    say "Vault is unsealed: kept"
  fi
}

# VAULT_TOKEN when set (a dev server, or a root token the operator generated), else a root
# token for this run only: operator init's own on the first run, else one generated from the
# unseal keys (sys/generate-root). Either is revoked when the script exits, success or not.
use_root_token() {
  if [ -n "${VAULT_TOKEN:-}" ]; then
    return 0
  fi
  [ -e "$KEYS_FILE" ] || die "Vault is initialized, no $KEYS_FILE and no VAULT_TOKEN: set one"
  if [ "$FRESH_INIT" = true ]; then
    VAULT_TOKEN="$(py keys-field "$KEYS_FILE" root_token)"
  else
    VAULT_TOKEN="$(generate_root_token)"
    say "root token for this run: generated from the $(keys_kind) (revoked when done)"
  fi
  [ -n "$VAULT_TOKEN" ] || die "no root token for the bootstrap: set VAULT_TOKEN"
  export VAULT_TOKEN
  REVOKE_ROOT=true
}

# What KEYS_FILE holds: unseal keys, or recovery keys when the server unseals itself (auto-unseal).
keys_kind() {
  if [ "$(status_field "$(seal_status)" type)" = shamir ]; then
    printf 'unseal keys'
  else
    printf 'recovery keys'
  fi
}

# `operator generate-root` with the threshold unseal keys; prints the decoded token (caller
# keeps it in a variable). OpenBao serves generate-root only to an authenticated caller (its
# unauthenticated endpoints are off by default), so the operator token starts it: admin-policy
# allows sys/generate-root-token/*, which without a quorum of unseal keys yields nothing.
# With no valid operator token (expired, lost), the unauthenticated endpoints of a listener
# only the keys' owner reaches: VAULT_GENERATE_ROOT_SOCKET (setup.sh --local's private socket).
generate_root_token() {
  local threshold i token=""
  threshold="$(status_field "$(seal_status)" t)"
  py keys-check "$KEYS_FILE" "$threshold"
  [ ! -s "$OPERATOR_TOKEN_FILE" ] || token="$(py read-token "$OPERATOR_TOKEN_FILE")"
  if [ -n "$token" ] && VAULT_TOKEN="$token" "$VAULT_BIN" token lookup >/dev/null 2>&1; then
    export VAULT_TOKEN="$token"
  elif [ -n "${VAULT_GENERATE_ROOT_SOCKET:-}" ] && [ -S "$VAULT_GENERATE_ROOT_SOCKET" ]; then
    py generate-root-socket "$VAULT_GENERATE_ROOT_SOCKET" "$KEYS_FILE" "$threshold"
    return 0
  else
    unset VAULT_TOKEN # HashiCorp Vault serves generate-root without a token; OpenBao refuses
  fi
  # An attempt someone left half done would swallow our keys: start from zero.
  "$VAULT_BIN" operator generate-root -cancel >/dev/null 2>&1 || true
  if ! "$VAULT_BIN" operator generate-root -init -format=json >"$RUN_TMP/root-attempt" \
    2>"$RUN_TMP/err"; then
    die "generate-root refused: $(one_line_error "$RUN_TMP/err"); the operator token ($OPERATOR_TOKEN_FILE) is missing or no longer valid: set VAULT_TOKEN to a root token, or VAULT_GENERATE_ROOT_SOCKET to a private listener with disable_unauthed_generate_root_endpoints = false (setup.sh --local has one)"
  fi
  for ((i = 0; i < threshold; i++)); do
    py unseal-key "$KEYS_FILE" "$i" |
      vcli operator generate-root -format=json -nonce="$(py get nonce <"$RUN_TMP/root-attempt")" - \
        >"$RUN_TMP/root-step"
  done
  py decode-root "$RUN_TMP/root-attempt" "$RUN_TMP/root-step"
}

# The bootstrap's root token must not outlive it (trap on EXIT, so also after a failure).
revoke_root_token() {
  if [ "$REVOKE_ROOT" = true ]; then
    if "$VAULT_BIN" token revoke -self >/dev/null 2>&1; then
      say "root token: revoked (run \`$(basename "$VAULT_BIN") operator generate-root\` when one is needed)"
    else
      printf '%s: warning: could not revoke the root token of this run\n' "$PROG" >&2
    fi
  fi
  rm -rf "$RUN_TMP"
}

enable_kv() {
  local mounts type version
  mounts="$(vcli secrets list -format=json)"
  type="$(py get 'secret/.type' <<<"$mounts")"
  version="$(py get 'secret/.options.version' <<<"$mounts")"
  if [ -z "$type" ]; then
    vcli secrets enable -path=secret -version=2 kv >/dev/null
    say "KV v2 at secret/: enabled"
  elif [ "$type" = "kv" ] && [ "$version" = "2" ]; then
    say "KV v2 at secret/: kept"
  else
    die "secret/ is mounted as '$type' version '${version:-1}', not KV v2: move it first"
  fi
}

write_policies() {
  local name
  for name in app-policy admin-policy; do
    vcli policy write "$name" "$LIB_DIR/../policies/$name.hcl" >/dev/null
    say "policy $name: written"
  done
}

# Enable auth method $1 at its default path unless it is there; $2 names it in the output.
enable_auth_method() {
  local methods
  methods="$(vcli auth list -format=json)"
  if [ -z "$(py get "$1/.type" <<<"$methods")" ]; then
    vcli auth enable "$1" >/dev/null
    say "$2 at auth/$1/: enabled"
  else
    say "$2 at auth/$1/: kept"
  fi
}

enable_approle() {
  enable_auth_method approle AppRole
  # The role's settings are configuration, so a re-run converges them to these flags.
  # token_no_default_policy: the app's token gets app-policy alone (no cubbyhole, no wrapping).
  vcli write "auth/approle/role/$ROLE_NAME" token_policies=app-policy token_no_default_policy=true \
    token_ttl=1h \
    token_max_ttl=4h secret_id_ttl="$SECRET_ID_TTL" secret_id_num_uses="$SECRET_ID_NUM_USES" \
    secret_id_bound_cidrs="$APPROLE_CIDRS" token_bound_cidrs="$APPROLE_CIDRS" >/dev/null
  say "role $ROLE_NAME: written (token TTL 1h, max 4h, policy app-policy," \
    "secret ID TTL $SECRET_ID_TTL, uses $SECRET_ID_NUM_USES, CIDRs ${APPROLE_CIDRS:-any})"
}

# Pods log in with their service-account token; Vault asks the Kubernetes API (TokenReview)
# whether it is genuine and binds the role to one service account in one namespace. The CA and
# reviewer token go in as @file, so they are never on a command line. Same token TTLs as AppRole.
configure_kubernetes_auth() {
  local args
  [ "$KUBERNETES" = true ] || return 0
  enable_auth_method kubernetes "Kubernetes auth"
  args=("kubernetes_host=$K8S_HOST")
  if [ -n "${K8S_CA_CERT:-}" ]; then
    # Outside a pod there is no local CA to fall back on; say so instead of failing late.
    args+=("kubernetes_ca_cert=@$K8S_CA_CERT" disable_local_ca_jwt=true)
  fi
  [ -z "${K8S_TOKEN_REVIEWER_JWT_FILE:-}" ] ||
    args+=("token_reviewer_jwt=@$K8S_TOKEN_REVIEWER_JWT_FILE")
  vcli write auth/kubernetes/config "${args[@]}" >/dev/null
  say "auth/kubernetes/config: written (host $K8S_HOST, CA ${K8S_CA_CERT:-of the Vault pod}," \
    "reviewer token ${K8S_TOKEN_REVIEWER_JWT_FILE:-of the Vault pod or the client})"
  vcli write "auth/kubernetes/role/$ROLE_NAME" \
    bound_service_account_names="${K8S_SERVICE_ACCOUNT:-flask-backend}" \
    bound_service_account_namespaces="${K8S_NAMESPACE:-flask-app}" \
    audience="${K8S_AUDIENCE:-}" \
    token_policies=app-policy token_no_default_policy=true token_ttl=1h token_max_ttl=4h >/dev/null
  say "kubernetes role $ROLE_NAME: written (service account ${K8S_SERVICE_ACCOUNT:-flask-backend}" \
    "in namespace ${K8S_NAMESPACE:-flask-app}, audience ${K8S_AUDIENCE:-any}, token TTL 1h," \
    "max 4h, policy app-policy)"
}

# Write the generated keys a KV path lacks; existing values (and the version) stay untouched.
# ensure_secret PATH GENERATOR [GENERATOR-ARG...]
ensure_secret() {
  local path="$1" generator="$2" exists=true rc=0
  "$VAULT_BIN" kv get -format=json -mount=secret "$path" >"$RUN_TMP/current" 2>"$RUN_TMP/err" ||
    rc=$?
  if [ "$rc" -ne 0 ]; then
    grep -q '^No value found' "$RUN_TMP/err" || die "$(one_line_error "$RUN_TMP/err")"
    exists=false
    : >"$RUN_TMP/current"
  fi
  py "$generator" "${@:3}" >"$RUN_TMP/fresh"
  py missing "$RUN_TMP/current" "$RUN_TMP/fresh" >"$RUN_TMP/patch"
  if [ "$exists" = false ]; then
    vcli kv put -mount=secret "$path" - <"$RUN_TMP/patch" >/dev/null
    say "secret/$path: created with random values"
  elif [ "$(cat "$RUN_TMP/patch")" = "{}" ]; then
    say "secret/$path exists: kept"
  else
    vcli kv patch -mount=secret "$path" - <"$RUN_TMP/patch" >/dev/null
    say "secret/$path exists: kept, added missing keys $(py keys-of "$RUN_TMP/patch")"
  fi
  rm -f "$RUN_TMP/current" "$RUN_TMP/fresh" "$RUN_TMP/patch"
}

# A container's Docker secret file holds the same password as Vault: the database's
# bootstrap superuser's (secret/database/bootstrap, which only operators read) and Redis's (secret/app/flask, key redis_password, which the
# backend reads from Vault; setup.sh --local puts it in its redis.conf).
# write_password_file KV_PATH FIELD FILE CONTAINER
write_password_file() {
  local result
  mkdir -p "$SECRETS_DIR"
  result="$(vcli kv get -mount=secret -field="$2" "$1" | py write-file "$SECRETS_DIR/$3" 0640)"
  say "secrets/$3: $result (mode 0640, group $(id -g): the $4 container's SECRETS_GID)"
}

# Keep a secret ID that still logs in; issue one only when .env has none or a dead one.
write_app_credentials() {
  local role_id secret_id="" lookup=""
  role_id="$(vcli read -field=role_id "auth/approle/role/$ROLE_NAME/role-id")"
  py secret-id-body "$ENV_FILE" >"$RUN_TMP/sid-body"
  if [ -s "$RUN_TMP/sid-body" ]; then
    lookup="$(lookup_secret_id "$RUN_TMP/sid-body")"
  fi
  if [ -n "$lookup" ]; then
    say ".env VAULT_SECRET_ID is valid: kept"
  else
    vcli write -format=json -f "auth/approle/role/$ROLE_NAME/secret-id" >"$RUN_TMP/sid"
    secret_id="$(py get data.secret_id <"$RUN_TMP/sid")"
    say ".env VAULT_SECRET_ID: new secret ID issued"
  fi
  {
    printf 'VAULT_ROLE_ID=%s\n' "$role_id"
    [ -z "$secret_id" ] || printf 'VAULT_SECRET_ID=%s\n' "$secret_id"
    # The address the app uses may differ from ours (http://vault:8200 inside Docker): an
    # existing VAULT_ADDR line is the operator's choice unless APP_VAULT_ADDR says otherwise.
    [ -z "${APP_VAULT_ADDR:-}" ] || printf 'VAULT_ADDR=%s\n' "$APP_VAULT_ADDR"
  } | py env-upsert "$ENV_FILE"
  printf 'VAULT_ADDR=%s\n' "$VAULT_ADDR" | py env-upsert "$ENV_FILE" keep
  record_secrets_gid
  say ".env: VAULT_ADDR, VAULT_ROLE_ID, VAULT_SECRET_ID, SECRETS_GID set (other lines kept, mode 0600)"
  publish_secret_id
}

# The database's bootstrap login lives where only operators read it (admin-policy's secret/*;
# app-policy names secret/data/database/postgres alone). A deployment from before kept it in
# secret/database/postgres: ensure_secret copies it from there (configure_database_engine
# then removes it from the app's path).
ensure_bootstrap_login() {
  "$VAULT_BIN" kv get -format=json -mount=secret database/postgres >"$RUN_TMP/db-old" 2>/dev/null ||
    : >"$RUN_TMP/db-old"
  ensure_secret database/bootstrap gen-db-bootstrap "$RUN_TMP/db-old"
  rm -f "$RUN_TMP/db-old"
}

# Dynamic mode: the app's path says only where to connect. A login in it (a static-mode
# deployment, or one from before secret/database/bootstrap) goes, and so do the older
# versions that hold it: app-policy reads any version of the path (?version=N).
remove_standing_login() {
  local versions
  vcli kv get -format=json -mount=secret database/postgres >"$RUN_TMP/db-now"
  if [ -n "$(py login-keys "$RUN_TMP/db-now")" ]; then
    vcli kv put -mount=secret database/postgres host="$1" port="$2" database="$3" >/dev/null
    say "secret/database/postgres: login removed (dynamic mode: only where to connect)"
  fi
  vcli kv metadata get -format=json -mount=secret database/postgres >"$RUN_TMP/db-meta"
  versions="$(py live-versions-below "$RUN_TMP/db-meta")"
  if [ -n "$versions" ]; then
    vcli kv destroy -mount=secret -versions="$versions" database/postgres >/dev/null
    say "secret/database/postgres: older versions $versions destroyed"
  fi
  rm -f "$RUN_TMP/db-now" "$RUN_TMP/db-meta"
}

# write_database_role NAME GROUP INHERIT|NOINHERIT TTL MAX_TTL: logins that are members of
# GROUP. Revocation first ends the login's sessions (pg_terminate_backend), then drops it:
# a revoked lease leaves no connection behind.
write_database_role() {
  vcli write "database/roles/$1" db_name=app-postgres default_ttl="$4" max_ttl="$5" \
    creation_statements="CREATE ROLE \"{{name}}\" WITH LOGIN $3 PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE $2;" \
    revocation_statements="SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}'; DROP ROLE IF EXISTS \"{{name}}\";" \
    >/dev/null
  say "database/roles/$1: written (members of $2, TTL $4, max $5)"
}

database_engine_configured() {
  "$VAULT_BIN" read -format=json database/config/app-postgres >/dev/null 2>&1
}

# A connection written before flask-migrate existed allows the app's role alone. An update
# keeps the other settings (and the password Vault rotated).
allow_migrate_role() {
  local allowed
  allowed="$(vcli read -format=json database/config/app-postgres | py get data.allowed_roles)"
  if [[ "$allowed" != *"\"$MIGRATE_ROLE\""* ]]; then
    vcli write database/config/app-postgres allowed_roles="$ROLE_NAME,$MIGRATE_ROLE" >/dev/null
    say "database/config/app-postgres: allowed roles $ROLE_NAME, $MIGRATE_ROLE"
  fi
}

# VAULT_DB_MODE=dynamic: the database secrets engine hands the app short-lived logins. Vault
# connects as a dedicated admin role (DB_ADMIN_USER, never the superuser) whose password it
# rotates at once, so afterwards no human or file knows it. A re-run keeps that connection.
# A configured engine means a dynamic deployment, whatever this run's VAULT_DB_MODE (setup.sh
# re-runs the script without it): its roles and the app's path converge on every run.
configure_database_engine() {
  local mounts host port name
  [ "${VAULT_DB_MODE:-static}" = "dynamic" ] || database_engine_configured || return 0
  mounts="$(vcli secrets list -format=json)"
  if [ -z "$(py get 'database/.type' <<<"$mounts")" ]; then
    vcli secrets enable database >/dev/null
    say "database secrets engine at database/: enabled"
  fi
  host="$(vcli kv get -mount=secret -field=host database/postgres)"
  port="$(vcli kv get -mount=secret -field=port database/postgres)"
  name="$(vcli kv get -mount=secret -field=database database/postgres)"
  if database_engine_configured; then
    say "database/config/app-postgres: kept (its admin password is Vault's alone)"
    allow_migrate_role
  else
    if [ -z "${DB_ADMIN_USER:-}" ] || [ -z "${DB_ADMIN_PASSWORD:-}" ]; then
      die "VAULT_DB_MODE=dynamic needs DB_ADMIN_USER and DB_ADMIN_PASSWORD (a CREATEROLE role)"
    fi
    vcli write database/config/app-postgres plugin_name=postgresql-database-plugin \
      connection_url="postgresql://{{username}}:{{password}}@$host:$port/$name?sslmode=${DB_SSLMODE:-prefer}" \
      username="$DB_ADMIN_USER" password="$DB_ADMIN_PASSWORD" allowed_roles="$ROLE_NAME,$MIGRATE_ROLE" \
      password_authentication=scram-sha-256 >/dev/null
    vcli write -f database/rotate-root/app-postgres >/dev/null
    say "database/config/app-postgres: written as $DB_ADMIN_USER, root password rotated"
  fi
  # The backend's logins: members of the group role that holds the table privileges only.
  write_database_role "$ROLE_NAME" "${DB_GROUP_ROLE:-flask_app}" INHERIT \
    "${DB_CREDS_TTL:-1h}" "${DB_CREDS_MAX_TTL:-24h}"
  # Migrations' logins: SET ROLE to the table owner (NOINHERIT: nothing they create is their
  # own, so the drop at revocation works). Only admin-policy reads them: the operator runs
  # migrations (setup.sh, `python -m src.migrate`), the backend never holds the owner.
  write_database_role "$MIGRATE_ROLE" "${DB_OWNER_ROLE:-flask_owner}" NOINHERIT \
    "${DB_MIGRATE_TTL:-15m}" "${DB_MIGRATE_MAX_TTL:-1h}"
  remove_standing_login "$host" "$port" "$name"
  # The backend's env_file in Docker (sourced before starting gunicorn locally): dynamic from now on.
  printf 'VAULT_DB_MODE=dynamic\n' | py env-upsert "$ENV_FILE"
}

# Operators work with this token day to day (admin-policy, day-2 operations only), kept in its
# own file apart from the unseal keys. A token from an older keys file (admin_token) moves there.
ensure_operator_token() {
  local token=""
  [ ! -s "$OPERATOR_TOKEN_FILE" ] || token="$(py read-token "$OPERATOR_TOKEN_FILE")"
  if [ -z "$token" ] && [ -e "$KEYS_FILE" ]; then
    token="$(py keys-field "$KEYS_FILE" admin_token)"
  fi
  if [ -n "$token" ] && VAULT_TOKEN="$token" "$VAULT_BIN" token lookup >/dev/null 2>&1; then
    printf '%s\n' "$token" | py write-file "$OPERATOR_TOKEN_FILE" >/dev/null
    say "operator token in $OPERATOR_TOKEN_FILE is valid: kept"
  else
    vcli token create -format=json -orphan -no-default-policy -policy=admin-policy \
      -ttl="$OPERATOR_TOKEN_TTL" -display-name=operator >"$RUN_TMP/operator"
    py get auth.client_token <"$RUN_TMP/operator" | py write-file "$OPERATOR_TOKEN_FILE" >/dev/null
    say "operator token (admin-policy, TTL $OPERATOR_TOKEN_TTL): created, saved to $OPERATOR_TOKEN_FILE (mode 0600)"
  fi
  [ ! -e "$KEYS_FILE" ] || py keys-del "$KEYS_FILE" admin_token
}

# OpenBao only takes audit devices from its config file; HashiCorp Vault enables them by API.
ensure_audit() {
  local devices
  if ! "$VAULT_BIN" version 2>/dev/null | grep -q '^Vault'; then
    say "audit: declared in the server config (OpenBao)"
    return 0
  fi
  devices="$(vcli audit list -format=json)"
  if [ -n "$(py get 'file/.type' <<<"$devices")" ]; then
    say "audit device file/: kept"
  else
    vcli audit enable file file_path="${AUDIT_FILE_PATH:-/vault/logs/audit.log}" >/dev/null
    say "audit device file/: enabled"
  fi
}

main() {
  FRESH_INIT=false
  REVOKE_ROOT=false
  DATABASE_ENGINE_ONLY=false
  trap revoke_root_token EXIT
  parse_args "$@"
  pick_cli
  preflight
  init_and_unseal
  use_root_token
  wait_until_active
  if [ "$DATABASE_ENGINE_ONLY" = true ]; then
    configure_database_engine
    say "Vault at $VAULT_ADDR: database secrets engine ready for the Flask backend"
    return 0
  fi
  ensure_audit
  enable_kv
  write_policies
  enable_approle
  configure_kubernetes_auth
  ensure_secret app/flask gen-app
  ensure_secret database/postgres gen-db
  ensure_bootstrap_login
  write_password_file database/bootstrap password db_password.txt db
  write_password_file app/flask redis_password redis_password.txt redis
  configure_database_engine
  write_app_credentials
  ensure_operator_token
  say "Vault at $VAULT_ADDR is ready for the Flask backend"
}

main "$@"
