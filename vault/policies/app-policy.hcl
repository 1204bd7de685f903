# Policy of the Flask backend's AppRole token (role flask-app): read exactly the two secrets
# the app reads and nothing else. No list, no metadata, no write, no sys/, no token creation;
# the role sets token_no_default_policy, so no cubbyhole or response wrapping either. A secret
# the app starts to need gets its own exact path here.

# The app's own secrets: JWT signing key and the default users' passwords. The version number
# shown in the admin panel comes with this read (KV v2 data responses carry it).
path "secret/data/app/flask" {
  capabilities = ["read"]
}

# Where the database is (host, port, database). In static mode also the app's login, a
# non-superuser role; in dynamic mode no password at all: the login is a lease (below). The
# database's bootstrap login (secret/database/bootstrap) is for operators only.
path "secret/data/database/postgres" {
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
