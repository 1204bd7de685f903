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
