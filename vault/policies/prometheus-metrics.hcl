# Prometheus scraping /v1/sys/metrics (VAULT_INTEGRATION.md, "Telemetry"): read the metrics
# and nothing else. Written by hand, not by init-vault.sh: only deployments that scrape need it.
path "sys/metrics" {
  capabilities = ["read"]
}
