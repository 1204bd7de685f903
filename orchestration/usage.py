"""The text of `setup.sh --help`: every flag, with what it does and what it remembers."""

USAGE = """\
Usage: {prog} [--local | --docker [-p NAME]] [--replicas N] [--ha] [--auto-unseal]
       [--tls | --mtls | --no-tls] [--modsecurity] [--no-apache] [--sqlite]
       [--stop [vault] | --status | --restart-app | --backup [DIR] | --restore DIR |
        --reset] [--yes]
       {prog} [up | stop [vault] | status | restart-app | backup [DIR] | restore DIR | reset]
       [OPTION...]

Bring up everything: the Vault (OpenBao) server, its initialization and unsealing
(vault/scripts/init-vault.sh), PostgreSQL, the Flask backend and the Apache front with the
web UI; wait until the app is ready; print the URL and where the admin password is kept.

  (no option)     the mode this data dir last ran in; the first time Docker when
                  `docker info` works, local processes otherwise
  --local         local processes under $DATA_DIR (default .data/ in the repo)
  --docker        the Compose stacks (docker-compose.vault.yaml, docker-compose.yaml)
  -p, --project-name NAME
                  Docker: Compose projects NAME and NAME-vault (networks NAME-vault_net,
                  NAME-vault_db_net) instead of flask-vault-app and vault (vault_net,
                  vault_db_net), so two checkouts share one engine (give each its own
                  HTTP_PORT and VAULT_PORT); remembered for later runs (also
                  COMPOSE_PROJECT_NAME)
  --ha            three OpenBao nodes in one Raft cluster (ports VAULT_PORT, +2, +4;
                  retry_join; with --docker docker-compose.vault-ha.yaml); the backend
                  gets all three addresses
  --auto-unseal   local mode: a separate unsealer OpenBao (UNSEALER_PORT) whose transit key
                  unseals the main node(s); vault-keys.json then holds recovery keys
                  (both options are remembered for this data dir)
  --replicas N    N backend instances (each a gunicorn with its workers) behind Apache's
                  balancer (Docker: --scale backend=N); remembered for the next runs
                  (default 1)
  --modsecurity   put ModSecurity + OWASP CRS (blocking) in the Apache front
  --no-apache     local mode: no Apache front even when installed; gunicorn serves the UI
  --sqlite        local mode: SQLite in $DATA_DIR even when PostgreSQL is installed
  --tls           Vault's listener over TLS with the project's CA
                  (vault/scripts/make-certs.sh, in $DATA_DIR/vault/tls), and Apache serves
                  users https://127.0.0.1:HTTPS_PORT with HSTS (HTTP_PORT redirects there);
                  kept for later runs of this data dir; with --docker the same (the front
                  publishes https on 127.0.0.1:HTTPS_PORT; certificates in vault/tls,
                  docker-compose*-tls.yaml overlays)
  --mtls          local mode: --tls, and Vault also requires a client certificate (the backend's
                  client.pem; tls_require_and_verify_client_cert)
  --no-tls        back to plain HTTP (after ./setup.sh --stop)
  --stop          stop what {prog} started (data is kept)
  --stop vault    stop only the Vault server (the app serves from its cache); {prog}
                  with no option starts it again and unseals it
  --restart-app   restart the backend and the front only, without failing a request:
                  new gunicorn workers (new code) replica by replica, Apache reloaded
                  gracefully; whatever is stopped is started (not needed after
                  rotate-secret-id.sh: the backend re-reads secrets/approle/secret_id)
  --status        show what runs, whether Vault is sealed, its seal type and (with TLS)
                  when its certificate expires (warns within CERT_WARN_DAYS, default 30)
  --backup [DIR]  pg_dump of the app database (custom format) and a Raft snapshot of
                  Vault into DIR/<UTC time>/ (default $DATA_DIR/backups), files mode 0600;
                  and manifest.json (the files' SHA-256, a hash of the unseal keys);
                  prints the restore commands (all in one: --restore DIR)
  --restore DIR   put back the backup in DIR (one DIR/<UTC time>/, or the newest in DIR):
                  refuses an incomplete one, one whose unseal keys are not this data dir's,
                  or a stopped stack; asks first (--yes: don't), backs up the current state
                  into the default backup directory, restores the Raft snapshot and the
                  database, ends every session (users log in again), unseals, starts the app
  --reset         local mode: stop and delete $DATA_DIR (keys, secrets, database!)
  --yes           do not ask before --reset or --restore
  -h, --help      this help

Each of --stop, --status, --restart-app, --backup, --restore and --reset is also a command
word (`{prog} stop vault`, `{prog} backup DIR`, `{prog} restore DIR`); without one the
command is `up`.

Environment: DATA_DIR, VENV (Python env with bao and the app's requirements, default .venv;
created with `make install` when missing), VAULT_PORT (8200), VAULT_CLUSTER_PORT
(VAULT_PORT+1), UNSEALER_PORT (VAULT_PORT+10), PG_PORT (5433), HTTP_PORT (8080, the URL
you open), HTTPS_PORT (8443, the URL with --tls), CERT_WARN_DAYS (30), READY_TIMEOUT (90 s),
REDIS_URL (shared rate limits; local mode starts
its own REDIS_SERVER (redis-server) on REDIS_PORT (6380), requiring the password Vault holds
(secret/app/flask, key redis_password); without redis-server it uses the Redis on
127.0.0.1:SYSTEM_REDIS_PORT (6379; REDIS_PASSWORD if it asks for one; without a password
said loudly), else counts per worker, said loudly).
Re-running after a reboot unseals Vault and starts what is down, keeping all data.
"""
