# Three-node Raft HA: loaded after vault-config.hcl (`bao server -config=vault-config.hcl
# -config=vault-ha.hcl`), whose storage block this one replaces; everything else (listener,
# telemetry, audit) comes from vault-config.hcl. Names are those of docker-compose.vault-ha.yaml;
# `setup.sh --local --ha` rewrites them to loopback ports, one data dir per node.
storage "raft" {
  path    = "/vault/data"
  node_id = "vault-1"

  # Raft timing for a healthy LAN: a lost leader is noticed and replaced in a few seconds
  # (the default, 5, is tuned for slow disks and takes over ten).
  performance_multiplier = 1

  # A new or restarted node asks each of these in turn to let it in; an already joined node
  # ignores them. Listing all three (itself included) lets any node restart in any order.
  retry_join {
    leader_api_addr = "http://vault-1:8200"
  }
  retry_join {
    leader_api_addr = "http://vault-2:8200"
  }
  retry_join {
    leader_api_addr = "http://vault-3:8200"
  }
}
