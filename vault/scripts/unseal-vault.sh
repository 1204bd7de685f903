#!/usr/bin/env bash
# Unseal Vault (or OpenBao) after a restart with exactly the threshold number of keys from
# vault-keys.json; does nothing when it is already unsealed.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF2
Usage: $PROG [-h|--help]

Unseal the Vault at \$VAULT_ADDR (default $VAULT_ADDR) with the threshold number of unseal keys
from \$VAULT_KEYS_FILE (default \$PROJECT_DIR/vault-keys.json, written by init-vault.sh).
Exits 0 at once when the server is already unsealed. Keys are never printed.
Environment: VAULT_ADDR, PROJECT_DIR, VAULT_KEYS_FILE, VAULT_BIN (vault or bao).
EOF2
}

main() {
  case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  pick_cli
  local status
  status="$(seal_status)"
  [ "$(status_field "$status" initialized)" = "true" ] ||
    die "Vault at $VAULT_ADDR is not initialized: run init-vault.sh first"
  if [ "$(status_field "$status" sealed)" = "false" ]; then
    say "Vault at $VAULT_ADDR is already unsealed: nothing to do"
    return 0
  fi
  say "unsealing Vault at $VAULT_ADDR"
  unseal_with_keys
  say "unsealing Vault at $VAULT_ADDR: ok"
}

main "$@"
