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
