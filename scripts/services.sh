#!/usr/bin/env bash
# Install or start what the test suite drives for real. Never fatal: a test that needs a missing
# service skips and says why.
set -u
have() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
  if have apt-get && [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1; }
  fi
}
have tmux || apt_install tmux || echo "services: tmux unavailable; the terminal check will skip"
if [ ! -x /usr/bin/chromium ]; then
  apt_install chromium || echo "services: chromium unavailable; the browser check will skip"
fi
if have redis-cli && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  :
else
  have redis-server || apt_install redis-server
  if have redis-server; then
    mkdir -p /tmp/pydantic-deep-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /tmp/pydantic-deep-redis --logfile /tmp/pydantic-deep-redis/redis.log >/dev/null 2>&1 \
      || echo "services: could not start redis-server; Redis tests will skip"
  fi
fi
# PostgreSQL for durable runs: the machine's own cluster (trust auth on 127.0.0.1:5432), started if down.
if have pg_isready && ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  if have pg_ctlcluster && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start >/dev/null 2>&1 \
      || echo "services: could not start PostgreSQL; durable-run tests will skip"
  else
    echo "services: PostgreSQL is not running; durable-run tests will skip"
  fi
fi
# The real JavaScript clients (Vercel AI SDK, AG-UI) at the versions tests/js/package-lock.json pins.
if have npm && [ ! tests/js/node_modules/.package-lock.json -nt tests/js/package-lock.json ]; then
  npm ci --prefix tests/js --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null 2>&1 \
    || echo "services: npm ci failed in tests/js; the JavaScript client checks will skip"
fi
exit 0
