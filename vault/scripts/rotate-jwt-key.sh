#!/usr/bin/env bash
# Rotate the backend's JWT signing key: write a new version of jwt_secret at secret/app/flask
# (its version number becomes the tokens' kid), or with --rollback N make version N's values
# the newest again (KV v2 rollback). Sessions survive: older versions still verify their tokens.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROLLBACK=""
APP_PATH="app/flask"

usage() {
  cat <<EOF2
Usage: $PROG [--rollback N] [-h|--help]

Write a new random JWT signing key as the newest version of secret/$APP_PATH at \$VAULT_ADDR
(default $VAULT_ADDR); the other keys of that secret are kept. The backend signs with the
newest version and verifies tokens signed by older versions until they expire.
--rollback N: make version N's values the newest again (a new version, KV v2 rollback).
Workers pick the new key up within VAULT_CACHE_TTL, or within 1 s of
POST /api/admin/vault/refresh. Nothing secret is printed.
Token: \$VAULT_TOKEN, else the operator token from vault-operator-token.
Environment: VAULT_ADDR, VAULT_TOKEN, PROJECT_DIR, VAULT_OPERATOR_TOKEN_FILE, VAULT_BIN (vault or bao).
EOF2
}

parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --rollback) ROLLBACK="${2:?--rollback needs a version number}"; shift 2 ;;
      -h | --help) usage; exit 0 ;;
      *) die "unknown option '$1' (see --help)" ;;
    esac
  done
  if [ -n "$ROLLBACK" ] && ! [[ "$ROLLBACK" =~ ^[1-9][0-9]{0,8}$ ]]; then
    die "--rollback needs a positive version number, got '$ROLLBACK'"
  fi
}

current_version() {
  vcli kv metadata get -format=json -mount=secret "$APP_PATH" | py get data.current_version
}

rotate() {
  local before
  before="$(current_version)"
  py gen-jwt-key | vcli kv patch -mount=secret "$APP_PATH" - >/dev/null
  say "secret/$APP_PATH: new JWT signing key written as version $(current_version)" \
    "(was $before; older versions keep verifying their tokens until they expire)"
}

rollback() {
  local before
  before="$(current_version)"
  [ "$ROLLBACK" -le "$before" ] ||
    die "secret/$APP_PATH has no version $ROLLBACK (newest is $before)"
  vcli kv rollback -mount=secret -version="$ROLLBACK" "$APP_PATH" >/dev/null
  say "secret/$APP_PATH: version $ROLLBACK restored as version $(current_version) (was $before)"
}

main() {
  parse_args "$@"
  pick_cli
  use_operator_token
  require_unsealed
  if [ -n "$ROLLBACK" ]; then
    rollback
  else
    rotate
  fi
}

main "$@"
