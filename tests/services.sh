#!/usr/bin/env bash
# Makes sure the services the tests talk to exist, before pytest runs (`make services`).
#   PostgreSQL on 127.0.0.1:5432 with a database "test" (trust auth): started if stopped,
#   installed and initialised where missing. redis-server: installed where missing (the
#   Redis tests start and kill their own instances on free ports).
# A service that cannot be provided fails here, loudly: no test is ever skipped for it.
set -euo pipefail

say() { echo "[services] $*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
    say "installing $* (apt-get)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

if ! command -v redis-server >/dev/null; then
    apt_install redis-server
fi
say "redis-server: $(redis-server --version | cut -d' ' -f3)"

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! command -v pg_isready >/dev/null; then
    apt_install postgresql postgresql-client
fi
if ! pg_up; then
    cluster=$(pg_lsclusters -h 2>/dev/null | awk 'NR==1 {print $1" "$2}')
    if [ -n "$cluster" ]; then
        say "starting PostgreSQL cluster $cluster"
        as_root pg_ctlcluster --skip-systemctl-redirect $cluster start || true
    else
        say "creating a PostgreSQL cluster"
        as_root pg_createcluster 15 main --start -- --auth=trust || true
    fi
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
pg_up || { say "PostgreSQL is not answering on 127.0.0.1:5432; start it and retry"; exit 1; }
if ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
    say "creating database test"
    psql -h 127.0.0.1 -U postgres -c 'create database test' >/dev/null
fi
say "PostgreSQL: $(psql -h 127.0.0.1 -U postgres -d test -Atc 'show server_version')"

# --- Chromium, for the telemetry dashboard test (tests/bench/test_telemetry_dashboard.py) ---
# Debian's `chromium` package, driven headless over the DevTools protocol; installed where missing.
if ! command -v chromium >/dev/null; then
    apt_install chromium
fi
say "chromium: $(chromium --version 2>/dev/null | head -n1)"
