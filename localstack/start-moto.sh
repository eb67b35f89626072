#!/usr/bin/env bash
# Starts the AWS API emulator (moto server, from PyPI) on 127.0.0.1:${PORT:-4566} and waits
# until it answers. Installs it into a virtualenv under the cache on first use.
#   localstack/start-moto.sh            # foreground PID printed; stop with: kill <pid>
#   PORT=5000 localstack/start-moto.sh
# LocalStack's free edition has no ELBv2; LocalStack Pro (with an auth token) serves the same
# endpoint, port 4566, and works with Tollgate unchanged.
set -euo pipefail
PORT=${PORT:-4566}
VENV=$(bash "$(dirname "$0")/install-moto.sh")
MOTO_ACM_VALIDATION_WAIT=${MOTO_ACM_VALIDATION_WAIT:-1} "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"${LOG:-/dev/null}" 2>&1 &
PID=$!
for _ in $(seq 1 200); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$PORT/moto-api/" 2>/dev/null; then
    echo "$PID"
    exit 0
  fi
  kill -0 "$PID" 2>/dev/null || { echo "moto_server exited" >&2; exit 1; }
  sleep 0.05
done
echo "moto_server did not answer on port $PORT" >&2
kill "$PID" 2>/dev/null || true
exit 1
