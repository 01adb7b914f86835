#!/usr/bin/env bash
# Installs the programs the end-to-end tests drive, when they are missing:
# curl and lftp (the FTP tests run the clients people use; Python's ftplib
# comes with python3), and util-linux's unshare (the full-disk tests mount
# a small tmpfs in a user namespace of skiffd's own). Debian or Ubuntu:
# apt-get, with sudo unless root.
set -euo pipefail
need=()
for tool in curl lftp python3; do command -v "$tool" >/dev/null || need+=("$tool"); done
command -v unshare >/dev/null || need+=(util-linux)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing ${need[*]} for the tests" >&2
sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y --no-install-recommends "${need[@]}" \
    || { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends "${need[@]}"; }
