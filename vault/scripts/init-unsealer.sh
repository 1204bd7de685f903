#!/usr/bin/env bash
# Initialize, unseal and configure the unsealer: the small separate OpenBao whose transit key
# auto-unseals the main cluster (vault/config/seal-transit.hcl). Idempotent: a re-run unseals
# it if needed and keeps its keys, its transit key and a still valid token.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF2
Usage: $PROG [-h|--help]

Initialize and unseal the unsealer at \$VAULT_ADDR (default $VAULT_ADDR), enable transit with
the key "autounseal", the policy autounseal-policy (encrypt/decrypt on that key only) and an
orphan periodic token with that policy alone, which the main nodes' seal "transit" uses.
A re-run after a restart only unseals it. Keys and token are never printed.

Environment: VAULT_ADDR, PROJECT_DIR, UNSEALER_KEYS_FILE (default
\$PROJECT_DIR/vault-unsealer-keys.json: the unsealer's own unseal keys), UNSEALER_TOKEN_FILE
(default \$PROJECT_DIR/vault-unsealer-token: the main nodes' seal token), KEY_SHARES (5),
KEY_THRESHOLD (3), UNSEALER_TOKEN_PERIOD (768h: the main nodes renew it while one runs),
VAULT_TOKEN (a root token of the unsealer, needed only to issue a new seal token after the
first run), VAULT_BIN.
EOF2
}

KEYS_FILE="${UNSEALER_KEYS_FILE:-$PROJECT_DIR/vault-unsealer-keys.json}"
TOKEN_FILE="${UNSEALER_TOKEN_FILE:-$PROJECT_DIR/vault-unsealer-token}"
KEY_SHARES="${KEY_SHARES:-5}"
KEY_THRESHOLD="${KEY_THRESHOLD:-3}"
TOKEN_PERIOD="${UNSEALER_TOKEN_PERIOD:-768h}"

# The seal token still works: nothing to configure (the main nodes keep renewing it). Right
# after unsealing a Raft node answers "not active" for a moment: only a refusal is an answer.
seal_token_valid() {
  local token i
  [ -s "$TOKEN_FILE" ] || return 1
  token="$(py read-token "$TOKEN_FILE")"
  for ((i = 0; i < 60; i++)); do
    VAULT_TOKEN="$token" "$VAULT_BIN" token lookup >/dev/null 2>"$RUN_TMP/err" && return 0
    ! grep -qi 'permission denied\|bad token' "$RUN_TMP/err" || return 1
    sleep 0.5
  done
  return 1
}

configure_transit() {
  local mounts
  mounts="$(vcli secrets list -format=json)"
  if [ -z "$(py get 'transit/.type' <<<"$mounts")" ]; then
    vcli secrets enable transit >/dev/null
    say "transit at transit/: enabled"
  fi
  # Not exportable, not deletable (the defaults, said explicitly): losing it loses the cluster.
  if "$VAULT_BIN" read transit/keys/autounseal >/dev/null 2>&1; then
    say "transit key autounseal: kept"
  else
    vcli write -f transit/keys/autounseal exportable=false >/dev/null
    say "transit key autounseal: created"
  fi
  vcli policy write autounseal-policy "$LIB_DIR/../policies/autounseal-policy.hcl" >/dev/null
  say "policy autounseal-policy: written"
  vcli token create -format=json -orphan -no-default-policy -policy=autounseal-policy \
    -period="$TOKEN_PERIOD" -display-name=autounseal >"$RUN_TMP/token"
  py get auth.client_token <"$RUN_TMP/token" | py write-file "$TOKEN_FILE" >/dev/null
  say "seal token (autounseal-policy, period $TOKEN_PERIOD): saved to $TOKEN_FILE (mode 0600)"
}

# The first run's root token is used for the set-up and revoked at once.
with_root_token() {
  if [ -z "${VAULT_TOKEN:-}" ]; then
    [ "$FRESH_INIT" = true ] ||
      die "the seal token in $TOKEN_FILE is missing or no longer valid: run again with VAULT_TOKEN set to a root token of the unsealer (\`$(basename "$VAULT_BIN") operator generate-root\` with its keys from $KEYS_FILE)"
    VAULT_TOKEN="$(py keys-field "$KEYS_FILE" root_token)"
    export VAULT_TOKEN
    REVOKE=true
  fi
  wait_until_active
  "$@"
  if [ "$REVOKE" = true ]; then
    vcli token revoke -self >/dev/null
    py keys-del "$KEYS_FILE" root_token
    say "root token of the unsealer: revoked"
  fi
}

main() {
  local status
  case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  pick_cli
  FRESH_INIT=false
  REVOKE=false
  status="$(seal_status)"
  if [ "$(status_field "$status" initialized)" != "true" ]; then
    initialize
  fi
  if [ "$(status_field "$(seal_status)" sealed)" = "true" ]; then
    unseal_with_keys
    say "unsealer at $VAULT_ADDR: unsealed"
  fi
  if [ "$FRESH_INIT" = false ] && [ -z "${VAULT_TOKEN:-}" ] && seal_token_valid; then
    say "seal token in $TOKEN_FILE is valid: kept"
  else
    with_root_token configure_transit
  fi
  say "unsealer at $VAULT_ADDR is ready"
}

main "$@"
