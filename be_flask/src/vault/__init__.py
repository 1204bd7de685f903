"""The backend's Vault client, one module per concern (import it from src.vault_client).

settings.py   VAULT_* environment -> VaultSettings   approle.py  AppRole login, wrapped IDs
token.py      renew / re-login, single-flight         kv_v2.py    one KV v2 read
cache.py      immutable entries, lock-free hits       backoff.py  outage gate, backoff + jitter
fallback.py   environment and dev defaults            transport/  HA nodes, timeouts, retries
client.py     VaultClient ties them together          process.py  get_vault_client(), fork
extension.py  Flask extension `Vault`                 cli.py      `python -m src.vault_client`
kubernetes.py Kubernetes login (service-account token file, re-read at each login)
"""
