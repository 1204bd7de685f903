# Transit auto-unseal: loaded after vault-config.hcl (and vault-ha.hcl). The root key is
# encrypted by the transit key `autounseal` of a separate small OpenBao, the unsealer
# (vault-unsealer.hcl), so a restarted node unseals itself. The token is not here: the server
# reads it from its VAULT_TOKEN environment (the 0600 file vault-unsealer-token), and it may
# only encrypt and decrypt with this one key (vault/policies/autounseal-policy.hcl).
# Operator init then hands out recovery keys (for generate-root), not unseal keys.
seal "transit" {
  address    = "http://vault-unsealer:8200"
  key_name   = "autounseal"
  mount_path = "transit/"
}
