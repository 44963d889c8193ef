#!/usr/bin/env bash
# Makes sure the services the tests talk to are up on 127.0.0.1:
# PostgreSQL (5432, user postgres with trust auth, database "test") and Redis
# (6379). Starts them when installed and stopped; installs them with apt-get
# when missing. Also installs nginx (the rolling-update test's load balancer)
# when missing, but never starts it as a system service: the test runs its own
# nginx, with its own configuration, in a temporary directory.
# Idempotent; quiet when everything already runs.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=
apt_install() {
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! command -v pg_isready >/dev/null || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  echo "services: installing PostgreSQL"
  apt_install postgresql
  fresh_pg=1
fi
if ! pg_up; then
  echo "services: starting PostgreSQL"
  v=$(ls /etc/postgresql | sort -n | tail -1)
  if [ -n "${fresh_pg:-}" ]; then
    # A fresh install asks for passwords on TCP; the tests use trust on loopback.
    sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "/etc/postgresql/$v/main/pg_hba.conf"
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$v" main start
  for _ in $(seq 50); do pg_up && break; sleep 0.2; done
fi
pg_up || { echo "services: PostgreSQL does not answer on 127.0.0.1:5432" >&2; exit 1; }
if ! psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname='test'" postgres 2>/dev/null | grep -q 1; then
  psql -h 127.0.0.1 -U postgres -qc "create database test" postgres
fi

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
if ! command -v redis-server >/dev/null; then
  echo "services: installing Redis"
  apt_install redis-server
fi
if ! redis_up; then
  echo "services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 50); do redis_up && break; sleep 0.2; done
fi
redis_up || { echo "services: Redis does not answer on 127.0.0.1:6379" >&2; exit 1; }

# nginx: only the binary. Debian's package would start the system service (and
# take port 80) where an init system runs it: policy-rc.d forbids that during
# the install, and the default site is not started by us afterwards either.
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  echo "services: installing nginx"
  pkg=nginx-light
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  apt-cache show "$pkg" >/dev/null 2>&1 || pkg=nginx
  rc=/usr/sbin/policy-rc.d; had_rc=; [ -e "$rc" ] && had_rc=1
  [ -n "$had_rc" ] || { printf '#!/bin/sh\nexit 101\n' | as_root tee "$rc" >/dev/null; as_root chmod 0755 "$rc"; }
  status=0; apt_install "$pkg" || status=$?
  [ -n "$had_rc" ] || as_root rm -f "$rc"
  [ "$status" = 0 ] || exit "$status"
fi
{ command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; } || { echo "services: nginx is not installed" >&2; exit 1; }
