#!/usr/bin/env bash
# Debian packages the tests drive for real: iptables rules in network namespaces,
# curl / h2load / wrk / openssl (s_client, and `sluice certs` makes test certificates with it) as independent clients, promtool (package prometheus) to lint /stats,
# tcpdump to read the bytes between two pod-like namespaces (the mTLS capture test),
# a real ZooKeeper for the registry tests (package zookeeper: the server's jars and a JRE; the
# tests start it themselves, on a free port with a data directory of their own).
# Idempotent; needs root (or sudo).
set -euo pipefail
pkgs=(iptables iproute2 curl nghttp2-client wrk procps prometheus zookeeper openssl tcpdump)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "test dependencies present: ${pkgs[*]}"
