#!/usr/bin/env bash
# Install the system packages the tests and the demo need, when they are missing:
# Chromium (browser tests drive /usr/bin/chromium; Playwright never downloads a browser)
# and PostgreSQL (tests start a throwaway cluster with initdb).
# Node.js and npm must already be there: they build the labextension and install the proxy.
set -euo pipefail

have_chromium() { [ -x /usr/bin/chromium ]; }
have_postgres() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }

missing=()
have_chromium || missing+=(chromium)
have_postgres || missing+=(postgresql)

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "setup-system: installing ${missing[*]} with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y chromium postgresql
    else
        echo "setup-system: missing system packages: ${missing[*]}" >&2
        echo "  needed: /usr/bin/chromium and /usr/lib/postgresql/*/bin/initdb" >&2
        echo "  install them as root, e.g.: sudo apt-get update && sudo apt-get install -y chromium postgresql" >&2
        exit 1
    fi
fi

for tool in node npm; do
    if ! command -v "$tool" >/dev/null; then
        echo "setup-system: '$tool' not found on PATH; install Node.js >= 18 with npm" >&2
        exit 1
    fi
done

if ! have_chromium || ! have_postgres; then
    echo "setup-system: chromium or postgresql still missing after apt-get install" >&2
    exit 1
fi
echo "setup-system: chromium, postgresql, node and npm present"
