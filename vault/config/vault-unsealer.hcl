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
  # Mozilla's "intermediate" TLS profile, in force wherever TLS is turned on (setup.sh
  # --tls/--mtls and the Docker TLS overlays replace tls_disable with the certificate): TLS
  # 1.2+ (1.3's suites are all AEAD), ECDHE with AES-GCM or ChaCha20 only (Go's defaults add
  # CBC-SHA suites), and no P-521 (in Go's default curves). X25519MLKEM768 first: post-quantum
  # key exchange for clients that offer it. Checked with sslyze by tests/vault/test_tls_listener.py.
  tls_min_version              = "tls12"
  tls_cipher_suites            = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
  tls_key_exchange_preferences = ["X25519MLKEM768", "X25519", "CurveP256", "CurveP384"]
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
