#!/usr/bin/env bash
# The other proxies the benchmark compares Sluice with, and the load generators.
set -euo pipefail
pkgs=(nginx-light haproxy wrk nghttp2-client)
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
