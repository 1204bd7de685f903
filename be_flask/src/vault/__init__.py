"""The backend's Vault client: AppRole login, token lifecycle, KV v2 cache, fallback, HA nodes."""
