# Policy of operators' tokens (created by init-vault.sh): run the Vault stack day to day
# without the root token. Deliberately absent: sys/generate-root, sys/rekey*, sys/raw and
# anything under sys/ not listed, so an admin token cannot mint root or read storage raw.

# Manage every secret in the KV v2 mount (data, metadata, versions, destroy).
path "secret/*" {
  capabilities = ["create", "read", "update", "delete", "list", "patch"]
}

# Mount, tune and unmount secrets engines (database, transit as the project grows).
path "sys/mounts" {
  capabilities = ["read", "list"]
}

path "sys/mounts/*" {
  capabilities = ["create", "read", "update", "delete", "list", "sudo"]
}

# Write and review ACL policies.
path "sys/policies/acl" {
  capabilities = ["list"]
}

path "sys/policies/acl/*" {
  capabilities = ["create", "read", "update", "delete", "list", "sudo"]
}

path "sys/policy/*" {
  capabilities = ["create", "read", "update", "delete", "list", "sudo"]
}

# Enable and configure auth methods, and manage AppRole roles and secret IDs.
path "sys/auth" {
  capabilities = ["read", "list"]
}

path "sys/auth/*" {
  capabilities = ["create", "read", "update", "delete", "list", "sudo"]
}

path "auth/*" {
  capabilities = ["create", "read", "update", "delete", "list", "sudo"]
}

# Audit devices (HashiCorp Vault configures them over the API; OpenBao reads the config).
path "sys/audit" {
  capabilities = ["read", "list", "sudo"]
}

path "sys/audit/*" {
  capabilities = ["create", "read", "update", "delete", "list", "sudo"]
}

# VAULT_DB_MODE=dynamic: the database secrets engine's connection and roles (setup.sh checks
# the connection is configured; rotate-root again after a suspected leak).
path "database/config/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

path "database/roles/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

path "database/rotate-root/*" {
  capabilities = ["update"]
}

# Leases: look up, renew and revoke dynamic credentials.
path "sys/leases/*" {
  capabilities = ["create", "read", "update", "delete", "list", "sudo"]
}

# Day-to-day operations: seal, health, status, key status, Raft snapshots for backup.
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

path "sys/storage/raft/*" {
  capabilities = ["create", "read", "update", "list", "sudo"]
}

path "sys/capabilities*" {
  capabilities = ["update"]
}

# Response wrapping, for handing a secret ID to a deploy pipeline.
path "sys/wrapping/*" {
  capabilities = ["create", "read", "update"]
}
