# Policy of the Flask backend's AppRole token (role flask-app): read exactly what the app
# needs and nothing else. No list, no write, no sys/, no token creation.

# The app's own secrets: JWT signing key and the default users' passwords.
path "secret/data/app/*" {
  capabilities = ["read"]
}

# Database connection settings and password.
path "secret/data/database/*" {
  capabilities = ["read"]
}

# Version numbers of those secrets, shown in the admin status page ("read", never "list":
# the app must not discover other paths).
path "secret/metadata/app/*" {
  capabilities = ["read"]
}

path "secret/metadata/database/*" {
  capabilities = ["read"]
}

# Keep its own token alive and learn its TTL; nothing else under auth/token/.
path "auth/token/renew-self" {
  capabilities = ["update"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}

# VAULT_DB_MODE=dynamic: short-lived PostgreSQL logins. Renew and revoke are limited to leases
# of this role (Vault cannot scope them to the caller's own token): the app renews its lease
# at 2/3 of its TTL and revokes the previous one once no pooled connection uses it.
path "database/creds/flask-app" {
  capabilities = ["read"]
}

path "sys/leases/renew/database/creds/flask-app/*" {
  capabilities = ["update"]
}

path "sys/leases/revoke/database/creds/flask-app/*" {
  capabilities = ["update"]
}
