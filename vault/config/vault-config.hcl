# Server configuration for the Vault stack (OpenBao or HashiCorp Vault; both read this file).
# Paths and addresses are those of the container in docker-compose.vault.yaml; the test
# harness and `setup.sh --local` rewrite them to a private directory and loopback ports.

# Integrated Raft storage: OpenBao has no "file" backend, and Raft is what grows to a
# three-node HA cluster later without changing the storage format.
storage "raft" {
  path    = "/vault/data"
  node_id = "vault-1"
}

# One TCP listener. TLS terminates here in production (set tls_cert_file/tls_key_file and
# remove tls_disable); on the internal vault_net of the compose stack it is plain HTTP so the
# quick start works without a CA. See VAULT_INTEGRATION.md, "TLS".
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

# Raft needs both: api_addr is what clients are redirected to, cluster_addr is what peers use.
api_addr     = "http://vault:8200"
cluster_addr = "http://vault:8201"

# The web UI helps operators inspect secrets and leases; it is read through the same policies.
ui = true

# Metrics for Prometheus at /v1/sys/metrics?format=prometheus; hostname off so series are
# stable across container restarts.
telemetry {
  prometheus_retention_time = "30s"
  disable_hostname          = true
}

# Every request and response is written to this file, secret values HMAC'd. OpenBao only
# accepts audit devices declared here (the API refuses `audit enable`); HashiCorp Vault
# ignores this block, so init-vault.sh enables the same device over its API instead.
audit "file" "file" {
  options {
    file_path = "/vault/logs/audit.log"
  }
}

# Raft on a single node in a container: keep logs readable.
log_level = "info"
