#!/usr/bin/env bash
# Removes every rule and chain that sluice-iptables.sh added (IPv4 and IPv6). Safe to run twice.
exec "$(dirname "$0")/sluice-iptables.sh" -r "$@"
