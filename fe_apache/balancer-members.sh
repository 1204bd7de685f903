#!/bin/sh
# Apache, not this shell, expands ${BACKEND_MEMBER} and ${BACKEND_HCHECK}:
# shellcheck disable=SC2016
# Print the BalancerMember lines of the front's balancer (httpd.conf includes them from
# FE_BALANCER_MEMBERS): one per backend replica. The options come from httpd.conf's Defines:
# every member fails over passively (BACKEND_MEMBER); a TCP member is also health-checked
# (BACKEND_HCHECK) — mod_proxy_hcheck cannot reach a Unix-socket member, it dials TCP.
#   balancer-members.sh URL...            e.g. http://127.0.0.1:8001 or unix:/run/b-1.sock
#   balancer-members.sh --dns HOST PORT   every IPv4 address HOST resolves to (the replicas of
#                                         a Compose service share its name)
# POSIX sh: it also runs in the front's container, which has no bash.
set -eu

die() {
  printf 'balancer-members.sh: error: %s\n' "$*" >&2
  exit 2
}

member() {
  case "$1" in
    unix:/*)
      # The part after "|" names the member in Apache's logs and worker table; each
      # replica gets its own name (backend-1, ...), or Apache would merge them into one.
      printf 'BalancerMember "%s|http://backend-%s" ${BACKEND_MEMBER}\n' "$1" "$2"
      ;;
    http://*) printf 'BalancerMember "%s" ${BACKEND_MEMBER} ${BACKEND_HCHECK}\n' "$1" ;;
    *) die "not a backend URL (http://HOST:PORT or unix:/PATH): $1" ;;
  esac
}

if [ "${1:-}" = --dns ]; then
  [ $# -eq 3 ] || die "usage: --dns HOST PORT"
  addresses="$(getent ahostsv4 "$2" | awk '{print $1}' | sort -u)"
  [ -n "$addresses" ] || die "$2 resolves to no IPv4 address"
  # shellcheck disable=SC2046  # one word per address, on purpose
  set -- $(for address in $addresses; do printf 'http://%s:%s\n' "$address" "$3"; done)
fi
[ $# -gt 0 ] || die "no backend URL given"
index=1
for url in "$@"; do
  member "$url" "$index"
  index=$((index + 1))
done
