# Policy of the operator token (created by init-vault.sh): day-2 operations only. Anything that
# changes who may do what stays with the bootstrap, which runs init-vault.sh with a root token
# (generated on demand from the unseal keys and revoked when it ends). Deliberately absent:
# policy writes (sys/policies/*, sys/policy/*), auth methods (sys/auth/*), AppRole role
# settings, token creation (auth/token/create*), audit changes, sys/generate-root, sys/rekey*,
# sys/raw, so this token can neither widen its own rights nor mint or hide anything.

# Manage every secret in the KV v2 mount (data, metadata, versions, destroy).
path "secret/*" {
  capabilities = ["create", "read", "update", "delete", "list", "patch"]
}

# The flask-app role: read it and its role ID, issue, list, look up and destroy secret IDs.
path "auth/approle/role/flask-app" {
  capabilities = ["read"]
}

path "auth/approle/role/flask-app/role-id" {
  capabilities = ["read"]
}

path "auth/approle/role/flask-app/secret-id" {
  capabilities = ["update", "list"]
}

path "auth/approle/role/flask-app/secret-id/lookup" {
  capabilities = ["update"]
}

path "auth/approle/role/flask-app/secret-id/destroy" {
  capabilities = ["update"]
}

path "auth/approle/role/flask-app/secret-id-accessor/lookup" {
  capabilities = ["update"]
}

path "auth/approle/role/flask-app/secret-id-accessor/destroy" {
  capabilities = ["update"]
}

# Read which audit devices and auth methods exist (never change them).
path "sys/audit" {
  capabilities = ["read", "sudo"]
}

path "sys/auth" {
  capabilities = ["read"]
}

# VAULT_DB_MODE=dynamic: see the database engine's connection and roles (setup.sh checks the
# connection is configured) and rotate its admin password again after a suspected leak.
# Writing the connection or the roles is bootstrap work (init-vault.sh, as root).
path "database/config/*" {
  capabilities = ["read", "list"]
}

path "database/roles/*" {
  capabilities = ["read", "list"]
}

path "database/rotate-root/*" {
  capabilities = ["update"]
}

# Migrations' short-lived logins, which may SET ROLE to the table owner. Only here: the
# operator runs migrations (setup.sh does, before it starts the backend); app-policy has no
# way to the owner. Revoked with sys/leases/revoke below once the migration ends.
path "database/creds/flask-migrate" {
  capabilities = ["read"]
}

path "sys/mounts" {
  capabilities = ["read"]
}

# Its own token: look up and renew (the default policy is not attached).
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}

# Leases of dynamic credentials: look up and revoke.
path "sys/leases/lookup" {
  capabilities = ["update"]
}

path "sys/leases/revoke" {
  capabilities = ["update"]
}

# Seal in an emergency, health and status, Raft snapshots for backup.
path "sys/seal" {
  capabilities = ["update", "sudo"]
}

path "sys/health" {
  capabilities = ["read", "sudo"]
}

path "sys/seal-status" {
  capabilities = ["read"]
}

path "sys/key-status" {
  capabilities = ["read"]
}

path "sys/storage/raft/snapshot" {
  capabilities = ["read"]
}

# The Raft peers and which of them vote (`operator raft list-peers`; setup.sh --ha waits for
# three voters). Read only: removing a peer stays with a root token.
path "sys/storage/raft/configuration" {
  capabilities = ["read"]
}

path "sys/capabilities-self" {
  capabilities = ["update"]
}

# Response wrapping, for handing a secret ID to a deploy pipeline.
path "sys/wrapping/wrap" {
  capabilities = ["update"]
}

path "sys/wrapping/lookup" {
  capabilities = ["update"]
}

# Start a root-token generation (OpenBao's authenticated variant; HashiCorp Vault's is
# unauthenticated). Useless without a quorum of unseal keys: this is how init-vault.sh gets a
# root token for a re-run, and how an operator gets one when a bootstrap change is needed.
path "sys/generate-root-token/*" {
  capabilities = ["create", "read", "update", "delete"]
}
