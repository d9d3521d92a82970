#!/bin/sh
# Installs what the demo and the tests need on a fresh Debian 12 machine (as root):
# the real components from Debian's packages, then a venv with alertscale.
set -eu
cd "$(dirname "$0")/.."
need=""
for pkg in docker.io haproxy prometheus prometheus-alertmanager openssh-server openssh-client \
           busybox-static socat iproute2 util-linux openssl; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
done
if [ -n "$need" ]; then
    echo "installing:$need"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
