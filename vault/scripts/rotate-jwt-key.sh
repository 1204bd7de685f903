#!/usr/bin/env bash
# Rotate the backend's JWT signing key: write a new version of jwt_secret at secret/app/flask
# (its version number becomes the tokens' kid), or with --rollback N bring back version N's
# jwt_secret (only that: an old version also holds old passwords). Sessions survive: older
# versions still verify their tokens, unless --compromised destroys the key being replaced.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROLLBACK=""
COMPROMISED=""
APP_PATH="app/flask"

usage() {
  cat <<EOF2
Usage: $PROG [--rollback N] [--compromised] [-h|--help]

Write a new random JWT signing key as the newest version of secret/$APP_PATH at \$VAULT_ADDR
(default $VAULT_ADDR); the other keys of that secret are kept. The backend signs with the
newest version and verifies tokens signed by older versions until they expire.
--rollback N: write version N's signing key (jwt_secret) as the newest version instead of a
  new one; every other key of the secret (passwords) keeps its current value.
--compromised: the key being replaced must stop verifying: destroy every version of
  secret/$APP_PATH that holds it (the sessions signed with it end). Each worker refuses it
  once it reads Vault again: within 1 s of POST /api/admin/vault/refresh ("Refresh secret
  cache" in the Vault panel), else within VAULT_CACHE_TTL.
Workers sign with the new key within VAULT_CACHE_TTL, or within 1 s of
POST /api/admin/vault/refresh. Nothing secret is printed.
Token: \$VAULT_TOKEN, else the operator token from vault-operator-token.
Environment: VAULT_ADDR, VAULT_TOKEN, PROJECT_DIR, VAULT_OPERATOR_TOKEN_FILE, VAULT_BIN (vault or bao).
EOF2
}

parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --rollback) ROLLBACK="${2:?--rollback needs a version number}"; shift 2 ;;
      --compromised) COMPROMISED=1; shift ;;
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

# {"jwt_secret": ...} of version $1 (the newest when empty), for a variable or a pipe into
# kv patch: never an argument, never printed. $2 "optional": empty when it holds none.
signing_key_of() {
  local what="secret/$APP_PATH" args=()
  if [ -n "$1" ]; then
    what="$what version $1"
    args=(-version="$1")
  fi
  vcli kv get -format=json -mount=secret "${args[@]}" "$APP_PATH" | py jwt-key "$what" "${2:-required}"
}

rotate() {
  local before abandoned=""
  before="$(current_version)"
  [ -z "$COMPROMISED" ] || abandoned="$(signing_key_of "")"
  py gen-jwt-key | vcli kv patch -mount=secret "$APP_PATH" - >/dev/null
  say "secret/$APP_PATH: new JWT signing key written as version $(current_version)" \
    "(was $before; older versions keep verifying their tokens until they expire)"
  [ -z "$COMPROMISED" ] || retire "$abandoned"
}

rollback() {
  local before restored abandoned
  before="$(current_version)"
  [ "$ROLLBACK" -le "$before" ] ||
    die "secret/$APP_PATH has no version $ROLLBACK (newest is $before)"
  restored="$(signing_key_of "$ROLLBACK")"
  abandoned="$(signing_key_of "")"
  if [ -n "$COMPROMISED" ] && [ "$restored" = "$abandoned" ]; then
    die "version $ROLLBACK holds the current signing key: restoring it would retire nothing"
  fi
  printf '%s\n' "$restored" | vcli kv patch -mount=secret "$APP_PATH" - >/dev/null
  say "secret/$APP_PATH: signing key of version $ROLLBACK restored as version" \
    "$(current_version) (was $before; the other keys keep their current values)"
  [ -z "$COMPROMISED" ] || retire "$abandoned"
}

# Destroy every version that holds the abandoned key: its tokens name one of them as kid,
# and the backend answers 401 for a version Vault says is destroyed (never served stale).
retire() {
  local abandoned="$1" live version key held=()
  live="$(vcli kv metadata get -format=json -mount=secret "$APP_PATH" | py live-versions)"
  read -r -a versions <<<"$live"
  for version in "${versions[@]}"; do
    key="$(signing_key_of "$version" optional)"
    if [ "$key" = "$abandoned" ]; then
      held+=("$version")
    fi
  done
  [ "${#held[@]}" -gt 0 ] || die "no version of secret/$APP_PATH holds the replaced key any more"
  vcli kv destroy -mount=secret -versions="$(IFS=,; printf '%s' "${held[*]}")" "$APP_PATH" >/dev/null
  say "secret/$APP_PATH: destroyed version(s) $(IFS=,; printf '%s' "${held[*]}") holding the" \
    "compromised key. Press \"Refresh secret cache\" (POST /api/admin/vault/refresh) now:" \
    "every worker then refuses its tokens within 1 s (else within VAULT_CACHE_TTL)."
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
