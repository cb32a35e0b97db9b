#!/usr/bin/env bash
# Installs (or removes) the nat rules that send a pod's TCP through Sluice.
#
#   inbound   PREROUTING ─▶ SLUICE_INBOUND ─▶ SLUICE_IN_REDIRECT ─▶ REDIRECT :15006
#   outbound  OUTPUT     ─▶ SLUICE_OUTPUT  ─▶ SLUICE_REDIRECT    ─▶ REDIRECT :15001
#
# SLUICE_OUTPUT returns early (the packet goes out untouched) for:
#   - the proxy's own traffic (uid / gid 1337): its upstream connections are never captured again
#   - loopback destinations 127.0.0.0/8 and ::1: the application talking to itself on localhost
#   - excluded outbound ports and address ranges
# Every rule lives in chains of our own; the only rules in the built-in chains are the
# two jumps, so removal is clean and running install twice leaves the same rules.
#
# Options (flag, or the environment variable, for container specs):
#   -p PORT   SLUICE_OUTBOUND_PORT          outbound capture port              (15001)
#   -z PORT   SLUICE_INBOUND_PORT           inbound capture port               (15006)
#   -u UID    SLUICE_PROXY_UID              proxy uid, exempt from capture     (1337)
#   -g GID    SLUICE_PROXY_GID              proxy gid, exempt from capture     (1337)
#   -b PORTS  SLUICE_INBOUND_PORTS          inbound ports to capture, '*' all, '' none   (*)
#   -d PORTS  SLUICE_EXCLUDE_INBOUND_PORTS  inbound ports never captured       (15000,15001,15006,15020)
#   -o PORTS  SLUICE_EXCLUDE_OUTBOUND_PORTS outbound ports never captured      ('')
#   -i CIDRS  SLUICE_INCLUDE_OUTBOUND_CIDRS outbound ranges to capture, '*' all  (*)
#   -x CIDRS  SLUICE_EXCLUDE_OUTBOUND_CIDRS outbound ranges never captured     ('')
#   -6        SLUICE_ENABLE_IPV6=1          also install the rules with ip6tables
#   -n        SLUICE_DRY_RUN=1              print the commands, change nothing
#   -k        SLUICE_SELF_CHECK=0           skip the self-check after install
#   -P A:P    SLUICE_PROBE                  the self-check's probe destination  (own IPv4, port 15999)
#
# After installing, the script checks that capture works (`sluice capture-check`): a
# connection to the probe must arrive at the outbound port with the probe as its
# original destination. If not, it says so and exits 1: fail closed, so the pod does
# not start with traffic bypassing the proxy. Run it before the proxy starts (the
# check listens on the outbound port itself).
#   -r        remove every rule and chain this script adds (same as sluice-iptables-clean.sh)
# Lists are comma separated.
set -euo pipefail

OUTBOUND_PORT=${SLUICE_OUTBOUND_PORT:-15001}
INBOUND_PORT=${SLUICE_INBOUND_PORT:-15006}
PROXY_UID=${SLUICE_PROXY_UID:-1337}
PROXY_GID=${SLUICE_PROXY_GID:-1337}
INBOUND_PORTS=${SLUICE_INBOUND_PORTS-*}
EXCLUDE_INBOUND_PORTS=${SLUICE_EXCLUDE_INBOUND_PORTS-15000,15001,15006,15020}
EXCLUDE_OUTBOUND_PORTS=${SLUICE_EXCLUDE_OUTBOUND_PORTS-}
INCLUDE_OUTBOUND_CIDRS=${SLUICE_INCLUDE_OUTBOUND_CIDRS-*}
EXCLUDE_OUTBOUND_CIDRS=${SLUICE_EXCLUDE_OUTBOUND_CIDRS-}
ENABLE_IPV6=${SLUICE_ENABLE_IPV6:-0}
DRY_RUN=${SLUICE_DRY_RUN:-0}
SELF_CHECK=${SLUICE_SELF_CHECK:-1}
PROBE=${SLUICE_PROBE:-}
SLUICE_BIN=${SLUICE_BIN:-$(cd "$(dirname "$0")/../.." && pwd)/bin/sluice.js}
REMOVE=0

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "sluice-iptables: $*" >&2; exit 2; }

while getopts ":p:z:u:g:b:d:o:i:x:P:6nkrh" opt; do
  case $opt in
    p) OUTBOUND_PORT=$OPTARG ;;
    z) INBOUND_PORT=$OPTARG ;;
    u) PROXY_UID=$OPTARG ;;
    g) PROXY_GID=$OPTARG ;;
    b) INBOUND_PORTS=$OPTARG ;;
    d) EXCLUDE_INBOUND_PORTS=$OPTARG ;;
    o) EXCLUDE_OUTBOUND_PORTS=$OPTARG ;;
    i) INCLUDE_OUTBOUND_CIDRS=$OPTARG ;;
    x) EXCLUDE_OUTBOUND_CIDRS=$OPTARG ;;
    6) ENABLE_IPV6=1 ;;
    n) DRY_RUN=1 ;;
    k) SELF_CHECK=0 ;;
    P) PROBE=$OPTARG ;;
    r) REMOVE=1 ;;
    h) usage 0 ;;
    :) die "-$OPTARG needs a value" ;;
    *) die "unknown option -$OPTARG (see -h)" ;;
  esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || die "unexpected argument: $1"

is_port() { [[ $1 =~ ^[0-9]{1,5}$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }
is_id() { [[ $1 =~ ^[0-9]{1,10}$ ]]; }
split() { local IFS=','; read -r -a _out <<< "$1"; for v in "${_out[@]}"; do v=${v//[[:space:]]/}; [ -n "$v" ] && echo "$v"; done; return 0; }
check_ports() { local what=$1 list=$2; for p in $(split "$list"); do is_port "$p" || die "$what: \"$p\" is not a port"; done; }
is_cidr4() { [[ $1 =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}(/[0-9]{1,2})?$ ]]; }
is_cidr6() { [[ $1 =~ ^[0-9a-fA-F:]+(/[0-9]{1,3})?$ ]] && [[ $1 == *:* ]]; }
check_cidrs() { local what=$1 list=$2; for c in $(split "$list"); do is_cidr4 "$c" || is_cidr6 "$c" || die "$what: \"$c\" is not an address range"; done; }

is_port "$OUTBOUND_PORT" || die "outbound port \"$OUTBOUND_PORT\" is not a port"
is_port "$INBOUND_PORT" || die "inbound port \"$INBOUND_PORT\" is not a port"
is_id "$PROXY_UID" || die "proxy uid \"$PROXY_UID\" is not a number"
is_id "$PROXY_GID" || die "proxy gid \"$PROXY_GID\" is not a number"
[ "$INBOUND_PORTS" = "*" ] || check_ports "inbound ports" "$INBOUND_PORTS"
check_ports "excluded inbound ports" "$EXCLUDE_INBOUND_PORTS"
check_ports "excluded outbound ports" "$EXCLUDE_OUTBOUND_PORTS"
[ "$INCLUDE_OUTBOUND_CIDRS" = "*" ] || check_cidrs "included outbound ranges" "$INCLUDE_OUTBOUND_CIDRS"
check_cidrs "excluded outbound ranges" "$EXCLUDE_OUTBOUND_CIDRS"
case $ENABLE_IPV6 in 1|true|yes) ENABLE_IPV6=1 ;; *) ENABLE_IPV6=0 ;; esac
case $DRY_RUN in 1|true|yes) DRY_RUN=1 ;; *) DRY_RUN=0 ;; esac
case $SELF_CHECK in 0|false|no) SELF_CHECK=0 ;; *) SELF_CHECK=1 ;; esac

CHAINS=(SLUICE_INBOUND SLUICE_IN_REDIRECT SLUICE_OUTPUT SLUICE_REDIRECT)

# run TOOL ARGS...: print in dry-run, else apply
run() {
  if [ "$DRY_RUN" = 1 ]; then echo "$*"; else "$@"; fi
}

have_chain() { "$1" -t nat -S "$2" >/dev/null 2>&1; }

remove_family() {
  local ipt=$1
  command -v "$ipt" >/dev/null 2>&1 || return 0
  # built-in chains first: a chain that is still jumped to cannot be deleted
  while "$ipt" -t nat -C PREROUTING -p tcp -j SLUICE_INBOUND >/dev/null 2>&1; do
    run "$ipt" -t nat -D PREROUTING -p tcp -j SLUICE_INBOUND
    [ "$DRY_RUN" = 1 ] && break
  done
  while "$ipt" -t nat -C OUTPUT -p tcp -j SLUICE_OUTPUT >/dev/null 2>&1; do
    run "$ipt" -t nat -D OUTPUT -p tcp -j SLUICE_OUTPUT
    [ "$DRY_RUN" = 1 ] && break
  done
  for c in "${CHAINS[@]}"; do have_chain "$ipt" "$c" && run "$ipt" -t nat -F "$c"; done
  for c in "${CHAINS[@]}"; do have_chain "$ipt" "$c" && run "$ipt" -t nat -X "$c"; done
  return 0
}

install_family() {
  local ipt=$1 family=$2
  local loopback=127.0.0.0/8
  [ "$family" = 6 ] && loopback=::1/128

  for c in "${CHAINS[@]}"; do
    if have_chain "$ipt" "$c"; then run "$ipt" -t nat -F "$c"; else run "$ipt" -t nat -N "$c"; fi
  done

  # inbound
  run "$ipt" -t nat -A SLUICE_IN_REDIRECT -p tcp -j REDIRECT --to-ports "$INBOUND_PORT"
  for p in $(split "$EXCLUDE_INBOUND_PORTS"); do
    run "$ipt" -t nat -A SLUICE_INBOUND -p tcp --dport "$p" -j RETURN
  done
  if [ "$INBOUND_PORTS" = "*" ]; then
    run "$ipt" -t nat -A SLUICE_INBOUND -p tcp -j SLUICE_IN_REDIRECT
  else
    for p in $(split "$INBOUND_PORTS"); do
      run "$ipt" -t nat -A SLUICE_INBOUND -p tcp --dport "$p" -j SLUICE_IN_REDIRECT
    done
  fi

  # outbound
  run "$ipt" -t nat -A SLUICE_REDIRECT -p tcp -j REDIRECT --to-ports "$OUTBOUND_PORT"
  run "$ipt" -t nat -A SLUICE_OUTPUT -m owner --uid-owner "$PROXY_UID" -j RETURN
  run "$ipt" -t nat -A SLUICE_OUTPUT -m owner --gid-owner "$PROXY_GID" -j RETURN
  run "$ipt" -t nat -A SLUICE_OUTPUT -d "$loopback" -j RETURN
  for p in $(split "$EXCLUDE_OUTBOUND_PORTS"); do
    run "$ipt" -t nat -A SLUICE_OUTPUT -p tcp --dport "$p" -j RETURN
  done
  for c in $(split "$EXCLUDE_OUTBOUND_CIDRS"); do
    if { [ "$family" = 4 ] && is_cidr4 "$c"; } || { [ "$family" = 6 ] && is_cidr6 "$c"; }; then
      run "$ipt" -t nat -A SLUICE_OUTPUT -d "$c" -j RETURN
    fi
  done
  if [ "$INCLUDE_OUTBOUND_CIDRS" = "*" ]; then
    run "$ipt" -t nat -A SLUICE_OUTPUT -p tcp -j SLUICE_REDIRECT
  else
    for c in $(split "$INCLUDE_OUTBOUND_CIDRS"); do
      if { [ "$family" = 4 ] && is_cidr4 "$c"; } || { [ "$family" = 6 ] && is_cidr6 "$c"; }; then
        run "$ipt" -t nat -A SLUICE_OUTPUT -p tcp -d "$c" -j SLUICE_REDIRECT
      fi
    done
  fi

  # the jumps, once each
  "$ipt" -t nat -C PREROUTING -p tcp -j SLUICE_INBOUND >/dev/null 2>&1 || run "$ipt" -t nat -A PREROUTING -p tcp -j SLUICE_INBOUND
  "$ipt" -t nat -C OUTPUT -p tcp -j SLUICE_OUTPUT >/dev/null 2>&1 || run "$ipt" -t nat -A OUTPUT -p tcp -j SLUICE_OUTPUT
}

command -v iptables >/dev/null 2>&1 || die "iptables is not installed"
[ "$ENABLE_IPV6" = 0 ] || command -v ip6tables >/dev/null 2>&1 || die "ip6tables is not installed (needed with -6)"

if [ "$REMOVE" = 1 ]; then
  remove_family iptables
  remove_family ip6tables
  [ "$DRY_RUN" = 1 ] || echo "sluice-iptables: capture rules removed"
  exit 0
fi

if [ "$DRY_RUN" = 1 ]; then
  # show the whole rule set as it would be after install, from a clean state
  have_chain() { return 1; }
  iptables() { return 1; }
  ip6tables() { return 1; }
fi
install_family iptables 4
[ "$ENABLE_IPV6" = 1 ] && install_family ip6tables 6
[ "$DRY_RUN" = 1 ] || echo "sluice-iptables: capture installed (outbound :$OUTBOUND_PORT, inbound :$INBOUND_PORT, proxy uid $PROXY_UID gid $PROXY_GID$([ "$ENABLE_IPV6" = 1 ] && echo ', IPv6 too'))"

if [ "$DRY_RUN" = 0 ] && [ "$SELF_CHECK" = 1 ]; then
  [ -f "$SLUICE_BIN" ] || die "self-check: $SLUICE_BIN not found (set SLUICE_BIN, or -k to skip the check)"
  args=(capture-check --port "$OUTBOUND_PORT" --proxy-uid "$PROXY_UID")
  [ -n "$PROBE" ] && args+=(--probe "$PROBE")
  if ! node "$SLUICE_BIN" "${args[@]}"; then
    echo "sluice-iptables: self-check failed: traffic would bypass the proxy; not starting" >&2
    exit 1
  fi
fi
