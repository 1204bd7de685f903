# The unsealer: a small separate OpenBao whose only job is the transit key that seals the main
# cluster (seal-transit.hcl). It has its own Shamir unseal keys (vault-unsealer-keys.json):
# after it restarts a human, or setup.sh with those keys, unseals it; the main nodes then
# unseal themselves. Keep it on another host/failure domain than the cluster it unseals.
storage "raft" {
  path    = "/vault/data"
  node_id = "vault-unsealer"
}

listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_disable     = true
}

api_addr     = "http://vault-unsealer:8200"
cluster_addr = "http://vault-unsealer:8201"

# Every encrypt/decrypt of the root key is a line here, secret values HMAC'd.
audit "file" "file" {
  options {
    file_path = "/vault/logs/audit.log"
  }
}

log_level = "info"
