#!/usr/bin/env bash
# Rotate the Flask backend's AppRole secret ID: issue a new one, put it in .env, then destroy
# the previous one so it stops working. With --wrap-ttl, hand out a response-wrapped one.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WRAP_TTL=""
WRAPPED_FILE="${VAULT_SECRET_ID_FILE:-$SECRETS_DIR/secret_id.wrapped}"

usage() {
  cat <<EOF2
Usage: $PROG [--wrap-ttl DURATION] [-h|--help]

Issue a new secret ID for AppRole role $ROLE_NAME at \$VAULT_ADDR (default $VAULT_ADDR).
Default: write it to \$PROJECT_DIR/.env as VAULT_SECRET_ID (atomically, mode 0600, other lines
kept) and to secrets/approle/secret_id (the backend's VAULT_SECRET_ID_FILE, mode 0640), then
destroy the previous secret ID found there, so it can no longer log in.
--wrap-ttl DURATION: write a response-wrapping token (single use, valid DURATION, e.g. 10m)
  to \$VAULT_SECRET_ID_FILE (default \$PROJECT_DIR/secrets/secret_id.wrapped, mode 0600)
  instead; .env and the previous secret ID are left alone until the new one is deployed.
Token: \$VAULT_TOKEN, else the operator token from vault-operator-token (init-vault.sh
writes it). Nothing secret is printed.
Environment: VAULT_ADDR, VAULT_TOKEN, PROJECT_DIR, ENV_FILE, VAULT_OPERATOR_TOKEN_FILE,
VAULT_SECRET_ID_FILE, VAULT_BIN (vault or bao).
EOF2
}

parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --wrap-ttl) WRAP_TTL="${2:?--wrap-ttl needs a duration, e.g. 10m}"; shift 2 ;;
      -h | --help) usage; exit 0 ;;
      *) die "unknown option '$1' (see --help)" ;;
    esac
  done
}

issue_wrapped() {
  mkdir -p "$(dirname "$WRAPPED_FILE")"
  vcli write -format=json -wrap-ttl="$WRAP_TTL" -f "auth/approle/role/$ROLE_NAME/secret-id" \
    >"$RUN_TMP/wrapped"
  py get wrap_info.token <"$RUN_TMP/wrapped" | py write-file "$WRAPPED_FILE" >/dev/null
  say "wrapped secret ID (single use, TTL $WRAP_TTL) written to $WRAPPED_FILE (mode 0600)"
  say "previous secret ID in .env kept: rotate without --wrap-ttl to replace and destroy it"
}

# Destroy by accessor: the accessor names the secret ID without handling the secret itself.
destroy_previous() {
  local lookup accessor
  if [ ! -s "$RUN_TMP/old-body" ]; then
    say "no previous secret ID in .env: nothing to destroy"
    return 0
  fi
  lookup="$(lookup_secret_id "$RUN_TMP/old-body")"
  if [ -z "$lookup" ]; then
    say "previous secret ID was already invalid: nothing to destroy"
    return 0
  fi
  accessor="$(py get data.secret_id_accessor <<<"$lookup")"
  vcli write "auth/approle/role/$ROLE_NAME/secret-id-accessor/destroy" \
    secret_id_accessor="$accessor" >/dev/null
  say "previous secret ID (accessor $accessor): destroyed"
}

rotate() {
  local secret_id role_id
  py secret-id-body "$ENV_FILE" >"$RUN_TMP/old-body"
  role_id="$(vcli read -field=role_id "auth/approle/role/$ROLE_NAME/role-id")"
  vcli write -format=json -f "auth/approle/role/$ROLE_NAME/secret-id" >"$RUN_TMP/new"
  secret_id="$(py get data.secret_id <"$RUN_TMP/new")"
  printf 'VAULT_ROLE_ID=%s\nVAULT_SECRET_ID=%s\n' "$role_id" "$secret_id" |
    py env-upsert "$ENV_FILE"
  say "new secret ID (accessor $(py get data.secret_id_accessor <"$RUN_TMP/new")) written to $ENV_FILE"
  # Before the old one dies: a backend reading VAULT_SECRET_ID_FILE logs in with the new one
  # at its next login, and `docker compose restart backend` works without re-reading .env.
  publish_secret_id
  destroy_previous
}

main() {
  parse_args "$@"
  pick_cli
  if [ -z "$WRAP_TTL" ]; then
    check_env_file
  fi
  use_operator_token
  require_unsealed
  if [ -n "$WRAP_TTL" ]; then
    issue_wrapped
  else
    rotate
  fi
}

main "$@"
