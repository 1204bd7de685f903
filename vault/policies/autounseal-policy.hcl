# On the unsealer only: the token the main cluster's `seal "transit"` uses. It can encrypt and
# decrypt with the one transit key and nothing else (no key export, rotation or deletion).
path "transit/encrypt/autounseal" {
  capabilities = ["update"]
}

path "transit/decrypt/autounseal" {
  capabilities = ["update"]
}

# The seal renews its periodic token while a node runs (no default policy: nothing else).
path "auth/token/renew-self" {
  capabilities = ["update"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}
