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
#   balancer-members.sh --follow FILE PID HOST PORT
#                                         keep FILE (the --dns lines Apache PID started with)
#                                         up to date: see follow()
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

members() {
  index=1
  for url in "$@"; do
    member "$url" "$index"
    index=$((index + 1))
  done
}

dns_members() {
  addresses="$(getent ahostsv4 "$1" | awk '{print $1}' | sort -u)"
  [ -n "$addresses" ] || die "$1 resolves to no IPv4 address"
  # shellcheck disable=SC2046  # one word per address, on purpose
  members $(for address in $addresses; do printf 'http://%s:%s\n' "$address" "$2"; done)
}

# Apache resolves a member once, when it starts; a replica that comes back from a crash or a
# `docker start` with another address (its old one taken meanwhile), or one that
# `docker compose up --scale` adds, would never get a request. Every 2 s: an address the
# members lack rewrites FILE from DNS and restarts Apache gracefully (SIGUSR1: requests in
# flight finish, the configuration and so FILE are read again). A replica that is only gone
# changes nothing: its member stays, marked down by the balancer until it answers again.
follow() {
  file="$1" apache="$2"
  while kill -0 "$apache" 2>/dev/null; do
    sleep 2
    now="$(dns_members "$3" "$4" 2>/dev/null)" || continue
    if printf '%s\n' "$now" | grep -qvxF -f "$file"; then
      printf '%s\n' "$now" >"$file.new" && mv "$file.new" "$file"
      printf 'balancer-members.sh: %s now resolves to another set of replicas: %s; graceful restart of Apache\n' \
        "$3" "$(printf '%s\n' "$now" | awk -F'"' '{printf "%s ", $2}')" >&2
      kill -USR1 "$apache"
    fi
  done
}

case "${1:-}" in
  --dns)
    [ $# -eq 3 ] || die "usage: --dns HOST PORT"
    dns_members "$2" "$3"
    ;;
  --follow)
    [ $# -eq 5 ] || die "usage: --follow FILE PID HOST PORT"
    follow "$2" "$3" "$4" "$5"
    ;;
  *)
    [ $# -gt 0 ] || die "no backend URL given"
    members "$@"
    ;;
esac
