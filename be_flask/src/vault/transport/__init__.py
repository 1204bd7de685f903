"""How requests reach Vault: several HA nodes, short timeouts, bounded retries."""
