#!/usr/bin/env bash
# Make sure the machine's PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer.
# Starts them (pg_ctlcluster, redis-server --daemonize) when they are installed but down; otherwise says so.
set -u

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
fi
if ! port_open 6379; then
  if command -v redis-server >/dev/null 2>&1; then
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
fi
for _ in $(seq 1 30); do
  port_open 5432 && port_open 6379 && exit 0
  sleep 1
done
port_open 5432 || echo "note: PostgreSQL is not answering on 127.0.0.1:5432; tests that need it will start a throwaway server or fail" >&2
port_open 6379 || echo "note: Redis is not answering on 127.0.0.1:6379; tests that need it will start a throwaway server or fail" >&2
exit 0
