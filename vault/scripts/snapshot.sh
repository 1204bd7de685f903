#!/usr/bin/env bash
# Save or restore a Raft snapshot of Vault (or OpenBao): the whole encrypted storage, secrets,
# versions, policies, auth roles. A snapshot is only readable with the unseal (or recovery)
# keys of the cluster it came from: keep vault-keys.json with it, apart from it.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Seconds to wait after a restore for the server to seal (it does when the snapshot has other keys).
RESTORE_WAIT="${SNAPSHOT_RESTORE_WAIT:-20}"

usage() {
  cat <<EOF2
Usage: $PROG save FILE
       $PROG restore FILE

save     write a Raft snapshot of the Vault at \$VAULT_ADDR (default $VAULT_ADDR) to FILE
         (mode 0600; written to a temp file first, so FILE is complete or untouched).
restore  replace all data of the Vault at \$VAULT_ADDR with the snapshot in FILE (forced, so
         a snapshot of another cluster restores into a new one after a disaster). Afterwards
         the server is unsealed with the keys of the cluster the snapshot came from:
         VAULT_KEYS_FILE=old-vault-keys.json unseal-vault.sh.
Token: VAULT_TOKEN, else the operator token in \$VAULT_KEYS_FILE (needs sys/storage/raft/*).
Environment: SNAPSHOT_RESTORE_WAIT (default 20 s), VAULT_ADDR, VAULT_TOKEN, VAULT_CACERT, PROJECT_DIR, VAULT_KEYS_FILE, VAULT_BIN.
Schedule it e.g. from cron: 0 3 * * * snapshot.sh save /backup/vault-\$(date +\\%F).snap
EOF2
}

save() {
  local file="$1" dir
  dir="$(dirname "$file")"
  [ -d "$dir" ] || die "directory $dir does not exist"
  require_unsealed
  use_operator_token
  vcli operator raft snapshot save "$RUN_TMP/snapshot" >/dev/null
  [ -s "$RUN_TMP/snapshot" ] || die "Vault at $VAULT_ADDR returned an empty snapshot"
  chmod 0600 "$RUN_TMP/snapshot"
  mv "$RUN_TMP/snapshot" "$file"
  say "saved a Raft snapshot of $VAULT_ADDR to $file ($(wc -c <"$file") bytes, mode 0600)"
}

restore() {
  local file="$1"
  if [ ! -f "$file" ] || [ ! -r "$file" ]; then
    die "snapshot file $file is missing or unreadable"
  fi
  [ -s "$file" ] || die "snapshot file $file is empty"
  require_unsealed
  use_operator_token
  vcli operator raft snapshot restore -force "$file" >/dev/null
  # The server applies the snapshot in the background; one from another cluster (other keys)
  # then seals it a few seconds later. Wait for that, so unsealing next cannot race it.
  local i
  for ((i = 0; i < RESTORE_WAIT; i++)); do
    if [ "$(status_field "$(seal_status)" sealed)" = "true" ]; then
      say "restored $file into $VAULT_ADDR; it is sealed now: unseal it with the keys of the" \
        "cluster the snapshot came from (VAULT_KEYS_FILE=... unseal-vault.sh)"
      return 0
    fi
    sleep 1
  done
  say "restored $file into $VAULT_ADDR; it stayed unsealed (a snapshot of this same cluster)"
}

main() {
  case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    save | restore) ;;
    "") die "missing command: save FILE or restore FILE (see --help)" ;;
    *) die "unknown command '$1' (see --help)" ;;
  esac
  if [ $# -ne 2 ] || [ -z "$2" ]; then
    die "$1 needs exactly one FILE argument (see --help)"
  fi
  pick_cli
  "$1" "$2"
}

main "$@"
