#!/usr/bin/env bash
# Creates the project's private CA and the certificates Vault's TLS listener and the backend
# (mutual TLS) use, under $PROJECT_DIR/vault/tls (git-ignored, keys 0600):
#   ca.pem / ca-key.pem          the local CA (kept across runs: clients already trust it)
#   vault.pem / vault-key.pem    server certificate, SANs: loopback names and the Compose
#                                service names (vault, vault-1..3, unsealer), plus VAULT_TLS_SANS
#   client.pem / client-key.pem  the backend's client certificate for tls_require_and_verify_client_cert
#   front.pem / front-key.pem    the Apache front's HTTPS certificate (setup.sh --tls), SANs:
#                                loopback names and the Compose service name frontend, plus FRONT_TLS_SANS
# Idempotent: existing files are kept; --force re-issues the server and client certificates
# (the CA stays, so nothing that trusts it needs to change).
# Env: PROJECT_DIR, VAULT_TLS_DIR (default $PROJECT_DIR/vault/tls), CERT_DAYS (default 365),
#      VAULT_TLS_SANS (extra SANs, comma-separated, e.g. "DNS:vault.example.org,IP:10.0.0.5"),
#      FRONT_TLS_SANS (the same for the front's certificate).
set -euo pipefail

PROG="$(basename "$0")"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT_DIR="${PROJECT_DIR:-$(cd "$SCRIPT_DIR/../.." && pwd)}"
TLS_DIR="${VAULT_TLS_DIR:-$PROJECT_DIR/vault/tls}"
CERT_DAYS="${CERT_DAYS:-365}"
DEFAULT_SANS="DNS:localhost,IP:127.0.0.1,IP:::1,DNS:vault,DNS:vault-1,DNS:vault-2,DNS:vault-3,DNS:unsealer"

die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}

FORCE=0
case "${1:-}" in
  "") ;;
  --force) FORCE=1 ;;
  -h | --help)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *) die "unknown argument: $1 (usage: $PROG [--force])" ;;
esac

command -v openssl >/dev/null 2>&1 || die "openssl is not installed"
if ! [[ "$CERT_DAYS" =~ ^[1-9][0-9]*$ ]]; then
  die "CERT_DAYS must be a positive number of days, got '$CERT_DAYS'"
fi
if [ -n "${VAULT_TLS_SANS:-}" ] && ! [[ "$VAULT_TLS_SANS" =~ ^((DNS|IP):[A-Za-z0-9.:*-]+)(,(DNS|IP):[A-Za-z0-9.:*-]+)*$ ]]; then
  die "VAULT_TLS_SANS must look like DNS:name,IP:address (comma-separated), got '$VAULT_TLS_SANS'"
fi
SANS="$DEFAULT_SANS${VAULT_TLS_SANS:+,$VAULT_TLS_SANS}"
if [ -n "${FRONT_TLS_SANS:-}" ] && ! [[ "$FRONT_TLS_SANS" =~ ^((DNS|IP):[A-Za-z0-9.:*-]+)(,(DNS|IP):[A-Za-z0-9.:*-]+)*$ ]]; then
  die "FRONT_TLS_SANS must look like DNS:name,IP:address (comma-separated), got '$FRONT_TLS_SANS'"
fi
FRONT_SANS="DNS:localhost,IP:127.0.0.1,IP:::1,DNS:frontend${FRONT_TLS_SANS:+,$FRONT_TLS_SANS}"

umask 077
mkdir -p "$TLS_DIR"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/make-certs.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# openssl's chatter (key generation dots) goes to a file shown only on failure.
ossl() {
  if ! openssl "$@" >"$WORK/openssl.log" 2>&1; then
    die "openssl $1 failed: $(tail -n 3 "$WORK/openssl.log" | paste -sd ' ' -)"
  fi
}

if [ ! -s "$TLS_DIR/ca.pem" ] || [ ! -s "$TLS_DIR/ca-key.pem" ]; then
  ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
    -keyout "$WORK/ca-key.pem" -out "$WORK/ca.pem" -days $((CERT_DAYS * 5)) \
    -subj "/CN=vault-project local CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign"
  mv "$WORK/ca-key.pem" "$TLS_DIR/ca-key.pem"
  mv "$WORK/ca.pem" "$TLS_DIR/ca.pem"
  echo "created CA $TLS_DIR/ca.pem (valid $((CERT_DAYS * 5)) days)"
else
  echo "kept CA $TLS_DIR/ca.pem"
fi

# issue NAME CN EXTENSIONS: a P-256 key and a certificate signed by the CA.
issue() {
  local name="$1" cn="$2" ext="$3"
  if [ "$FORCE" -eq 0 ] && [ -s "$TLS_DIR/$name.pem" ] && [ -s "$TLS_DIR/$name-key.pem" ]; then
    echo "kept $TLS_DIR/$name.pem"
    return 0
  fi
  printf '%s\n' "$ext" >"$WORK/$name.ext"
  ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
    -keyout "$WORK/$name-key.pem" -out "$WORK/$name.csr" -subj "/CN=$cn"
  ossl x509 -req -in "$WORK/$name.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca-key.pem" \
    -CAcreateserial -CAserial "$WORK/ca.srl" -sha256 -days "$CERT_DAYS" \
    -extfile "$WORK/$name.ext" -out "$WORK/$name.pem"
  mv "$WORK/$name-key.pem" "$TLS_DIR/$name-key.pem"
  mv "$WORK/$name.pem" "$TLS_DIR/$name.pem"
  echo "issued $TLS_DIR/$name.pem (CN=$cn, valid $CERT_DAYS days)"
}

issue vault vault "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$SANS"
issue client flask-backend "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
# Browsers reject server certificates valid for more than 398 days; CERT_DAYS defaults to 365.
issue front localhost "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$FRONT_SANS"

# The certificates are public; the keys stay owner-only (umask above). OpenBao in a container
# runs as another uid: the Compose stack mounts the directory read-only and documents chown.
chmod 0644 "$TLS_DIR/ca.pem" "$TLS_DIR/vault.pem" "$TLS_DIR/client.pem" "$TLS_DIR/front.pem"
echo "server SANs: $SANS"
echo "front SANs: $FRONT_SANS"
