#!/usr/bin/env bash
# Tollgate vs nginx vs haproxy as reverse proxies, on this machine, on loopback.
#
# The same backend (nginx, one worker, a fixed 2-byte answer) serves all three. Each proxy
# gets one worker thread and the same core; the load generator gets the other core. Profiles,
# run for each proxy back to back (interleaved), repeated REPS times, medians reported:
#   http-c64, http-c256   wrk HTTP/1.1 keepalive
#   tls-c64               wrk over TLS (termination)
#   h2-tls                h2load HTTP/2 over TLS, -c64 -m10
#   changes               wrk -c64 while the config changes 10×/s for 10 s
#                         (Tollgate: manifest edits; nginx: -s reload; haproxy: -sf)
#   policy-c64            wrk HTTP/1.1 -c64 to a host with an allow-list, a rate limit that is
#                         never reached and CORS (an allowed Origin on every request): Tollgate
#                         with ingress-nginx's annotations, nginx configured alike (allow/deny,
#                         limit_req, add_header); not haproxy. Its cost is read against the same
#                         proxy's http-c64.
# Prints req/s, p50/p99 (wrk; h2load reports the mean), failed requests, proxy CPU-seconds per
# 1,000 requests, and Tollgate/nginx and Tollgate/haproxy ratios. Results: bench/out/.
#
# Usage: bench/proxy.sh [REPS] [SECONDS]      (defaults 3 and 10). Needs root for apt-get.
# TOLLGATE_BIN=path benchmarks that binary instead of building this tree.
# BENCH_PROFILES / BENCH_PROXIES (space-separated) run a subset, e.g.
#   BENCH_PROFILES=http-c64 BENCH_PROXIES="tollgate nginx" bench/proxy.sh 2 5
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}
SECS=${2:-10}
OUT=bench/out
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/tollgate-bench.XXXXXX)
trap 'cleanup' EXIT

need() { command -v "$1" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"; }; }
need wrk wrk; need h2load nghttp2-client; need nginx nginx; need haproxy haproxy; need openssl openssl

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tollgate/target}"
if [ -n "${TOLLGATE_BIN:-}" ]; then
  TOLLGATE="$TOLLGATE_BIN" # another build, e.g. the one before a change, for a before/after run
else
  cargo build --release --quiet
  TOLLGATE="$CARGO_TARGET_DIR/release/tollgate"
fi

LOAD_CPU=0
PROXY_CPU=1
BACKEND=127.0.0.1:19000
PIDS=()

cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx-proxy.pid" ] && kill "$(cat "$WORK/nginx-proxy.pid")" 2>/dev/null || true
  [ -f "$WORK/nginx-backend.pid" ] && kill "$(cat "$WORK/nginx-backend.pid")" 2>/dev/null || true
  [ -f "$WORK/haproxy.pid" ] && kill $(cat "$WORK/haproxy.pid") 2>/dev/null || true
  sleep 0.3
  rm -rf "$WORK"
}

wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

# --- certificates -------------------------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=bench.local -addext subjectAltName=DNS:bench.local \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat "$WORK/cert.pem" "$WORK/key.pem" > "$WORK/haproxy.pem"

# --- backend: nginx, one worker, core 1 -----------------------------------------------------
mkdir -p "$WORK/nb"
cat > "$WORK/nginx-backend.conf" <<EOF
worker_processes 1; daemon on; pid $WORK/nginx-backend.pid; error_log $WORK/nb/error.log;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $WORK/nb; proxy_temp_path $WORK/nb; fastcgi_temp_path $WORK/nb; uwsgi_temp_path $WORK/nb; scgi_temp_path $WORK/nb;
  keepalive_requests 1000000;
  server { listen $BACKEND reuseport; location / { return 200 "ok"; } } }
EOF
taskset -c $PROXY_CPU nginx -c "$WORK/nginx-backend.conf"
wait_port 19000

# --- Tollgate -------------------------------------------------------------------------------
mkdir -p "$WORK/manifests"
write_manifests() { # $1: a label that changes the config
  cat > "$WORK/manifests/.bench.yaml.tmp" <<EOF
apiVersion: v1
kind: Service
metadata: {name: backend, annotations: {bench/revision: "$1"}}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: backend-1, labels: {kubernetes.io/service-name: backend}}
addressType: IPv4
ports: [{name: http, port: 19000}]
endpoints: [{addresses: ["127.0.0.1"], conditions: {ready: true}}]
---
apiVersion: v1
kind: Secret
metadata: {name: bench-tls}
type: kubernetes.io/tls
stringData:
  tls.crt: |
$(sed 's/^/    /' "$WORK/cert.pem")
  tls.key: |
$(sed 's/^/    /' "$WORK/key.pem")
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bench}
spec:
  ingressClassName: tollgate
  tls: [{hosts: [bench.local], secretName: bench-tls}]
  rules:
  - host: bench.local
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}
      - {path: /rev-$1, pathType: Exact, backend: {service: {name: backend, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: policy
  annotations:
    nginx.ingress.kubernetes.io/whitelist-source-range: 127.0.0.0/8
    nginx.ingress.kubernetes.io/limit-rps: "1000000"
    nginx.ingress.kubernetes.io/enable-cors: "true"
    nginx.ingress.kubernetes.io/cors-allow-origin: https://app.example.com
spec:
  ingressClassName: tollgate
  rules:
  - host: policy.local
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}
EOF
  mv "$WORK/manifests/.bench.yaml.tmp" "$WORK/manifests/bench.yaml"
}
write_manifests 0
# In a session of its own, as nginx and haproxy are once they daemonize: with the kernel's
# autogroup scheduling a process shares its session's CPU weight, and in this script's
# session Tollgate would share it with wrk (one busy core's worth) and get about half the
# weight of the backend beside it on the proxy core, so the backend would preempt it twice
# as often as it preempts nginx.
setsid taskset -c $PROXY_CPU "$TOLLGATE" proxy --manifests "$WORK/manifests" --worker-threads 1 \
  --http-listen 127.0.0.1:18100 --https-listen 127.0.0.1:18543 --admin-listen 127.0.0.1:18254 \
  >"$WORK/tollgate.log" 2>&1 &
TOLLGATE_PID=$!; PIDS+=("$TOLLGATE_PID")
wait_port 18100; wait_port 18543

# --- nginx as proxy -------------------------------------------------------------------------
mkdir -p "$WORK/np"
cat > "$WORK/nginx-proxy.conf" <<EOF
worker_processes 1; daemon on; pid $WORK/nginx-proxy.pid; error_log $WORK/np/error.log;
events { worker_connections 8192; }
http { access_log off; client_body_temp_path $WORK/np; proxy_temp_path $WORK/np; fastcgi_temp_path $WORK/np; uwsgi_temp_path $WORK/np; scgi_temp_path $WORK/np;
  keepalive_requests 1000000;
  upstream backend { server $BACKEND; keepalive 256; keepalive_requests 1000000; }
  limit_req_zone \$binary_remote_addr zone=policy:10m rate=1000000r/s;
  map \$http_origin \$cors_origin { default ""; "https://app.example.com" \$http_origin; }
  server {
    listen 127.0.0.1:18101; server_name policy.local;
    allow 127.0.0.0/8; deny all;
    limit_req zone=policy burst=5000000 nodelay;
    location / {
      if (\$request_method = OPTIONS) { return 204; }
      add_header Access-Control-Allow-Origin \$cors_origin always;
      add_header Access-Control-Allow-Credentials true always;
      add_header Access-Control-Allow-Methods "GET, PUT, POST, DELETE, PATCH, OPTIONS" always;
      add_header Access-Control-Allow-Headers "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization" always;
      add_header Access-Control-Max-Age 1728000 always;
      proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$remote_addr; }
  }
  server {
    listen 127.0.0.1:18101; listen 127.0.0.1:18544 ssl http2; server_name bench.local;
    ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$remote_addr; }
  } }
EOF
taskset -c $PROXY_CPU nginx -c "$WORK/nginx-proxy.conf"
wait_port 18101

# --- haproxy --------------------------------------------------------------------------------
cat > "$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 8000
  pidfile $WORK/haproxy.pid
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
  option forwardfor
frontend fe
  bind 127.0.0.1:18102
  bind 127.0.0.1:18545 ssl crt $WORK/haproxy.pem alpn h2,http/1.1
  default_backend be
backend be
  server s1 $BACKEND
EOF
taskset -c $PROXY_CPU haproxy -D -f "$WORK/haproxy.cfg"
wait_port 18102

# --- measuring ------------------------------------------------------------------------------
cpu_of() { # total CPU ticks of the named proxy's processes
  local pids
  case "$1" in
    tollgate) pids="$TOLLGATE_PID" ;;
    nginx) pids="$(pgrep -f "nginx: .*$WORK/nginx-proxy.conf" || true) $(pgrep -P "$(cat "$WORK/nginx-proxy.pid")" || true)" ;;
    haproxy) pids="$(pgrep -f "haproxy -D -f $WORK/haproxy.cfg" || true) $(cat "$WORK/haproxy.pid" 2>/dev/null || true)" ;;
  esac
  local total=0
  for p in $(echo "$pids" | tr ' ' '\n' | sort -u); do
    [ -r "/proc/$p/stat" ] || continue
    total=$(( total + $(awk '{print $14+$15}' "/proc/$p/stat") ))
  done
  echo "$total"
}

port_of() { case "$1:$2" in tollgate:http) echo 18100;; tollgate:tls) echo 18543;; nginx:http) echo 18101;; nginx:tls) echo 18544;; haproxy:http) echo 18102;; haproxy:tls) echo 18545;; esac; }

reload_loop() { # $1 proxy; 10 changes per second for SECS seconds
  local n=$(( SECS * 10 ))
  for i in $(seq 1 "$n"); do
    case "$1" in
      tollgate) write_manifests "$i" ;;
      nginx) nginx -c "$WORK/nginx-proxy.conf" -s reload 2>/dev/null ;;
      haproxy) taskset -c $PROXY_CPU haproxy -D -f "$WORK/haproxy.cfg" -sf $(cat "$WORK/haproxy.pid") ;;
    esac
    sleep 0.1
  done
}

RESULTS="$OUT/raw.tsv"
echo -e "rep\tprofile\tproxy\treq_per_s\tp50_ms\tp99_ms\tfailed\tcpu_s_per_1k" > "$RESULTS"

run_wrk() { # proxy profile conns scheme rep
  local proxy=$1 profile=$2 conns=$3 scheme=$4 rep=$5
  local host=(-H 'Host: bench.local')
  if [ "$profile" = policy-c64 ]; then host=(-H 'Host: policy.local' -H 'Origin: https://app.example.com'); fi
  local port; port=$(port_of "$proxy" "$([ "$scheme" = https ] && echo tls || echo http)")
  local before after out
  before=$(cpu_of "$proxy")
  if [ "$profile" = changes ]; then reload_loop "$proxy" & RL=$!; fi
  out=$(taskset -c $LOAD_CPU wrk -t1 -c"$conns" -d"${SECS}s" --latency "${host[@]}" "$scheme://127.0.0.1:$port/" 2>&1 || true)
  if [ "$profile" = changes ]; then wait "$RL" || true; fi
  after=$(cpu_of "$proxy")
  echo "$out" > "$OUT/wrk-$proxy-$profile-$rep.txt"
  python3 - "$rep" "$profile" "$proxy" "$before" "$after" "$out" >> "$RESULTS" <<'PY'
import re, sys
rep, profile, proxy, before, after, out = sys.argv[1:7]
def ms(v, u): return float(v) * {"us": 0.001, "ms": 1, "s": 1000}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
total = int(re.search(r"(\d+) requests in", out).group(1))
lat = dict((p, ms(v, u)) for p, v, u in re.findall(r"\s(50|99)%\s+([\d.]+)(us|ms|s)", out))
failed = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
failed += int(non2xx.group(1)) if non2xx else 0
ticks = (int(after) - int(before)) / 100.0
print(f"{rep}\t{profile}\t{proxy}\t{rps:.0f}\t{lat.get('50', 0):.2f}\t{lat.get('99', 0):.2f}\t{failed}\t{ticks / max(total, 1) * 1000:.4f}")
PY
}

run_h2() {
  local proxy=$1 rep=$2 port; port=$(port_of "$proxy" tls)
  local before after out n=$(( SECS * 20000 ))
  before=$(cpu_of "$proxy")
  out=$(taskset -c $LOAD_CPU timeout $(( SECS * 6 )) h2load -c64 -m10 -n"$n" -t1 --connect-to=127.0.0.1:"$port" "https://bench.local:$port/" 2>&1 || true)
  after=$(cpu_of "$proxy")
  echo "$out" > "$OUT/h2load-$proxy-$rep.txt"
  python3 - "$rep" "$proxy" "$before" "$after" "$out" >> "$RESULTS" <<'PY'
import re, sys
rep, proxy, before, after, out = sys.argv[1:6]
m = re.search(r"finished in ([\d.]+)(s|ms), ([\d.]+) req/s", out)
rps = float(m.group(3)) if m else 0.0
st = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
total, failed = (int(st.group(3)), int(st.group(4)) + int(st.group(5)) + int(st.group(1)) - int(st.group(2))) if st else (0, -1)
mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
mean_ms = float(mean.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[mean.group(2)] if mean else 0
ticks = (int(after) - int(before)) / 100.0
print(f"{rep}\th2-tls\t{proxy}\t{rps:.0f}\t{mean_ms:.2f}\t\t{failed}\t{ticks / max(total, 1) * 1000:.4f}")
PY
}

PROFILES=${BENCH_PROFILES:-http-c64 http-c256 tls-c64 h2-tls changes}
PROXIES=${BENCH_PROXIES:-tollgate nginx haproxy}
wants() { [[ " $PROFILES " == *" $1 "* ]]; }
for rep in $(seq 1 "$REPS"); do
  for proxy in $PROXIES; do
    echo "rep $rep: $proxy" >&2
    if wants http-c64; then run_wrk "$proxy" http-c64 64 http "$rep"; fi
    if wants http-c256; then run_wrk "$proxy" http-c256 256 http "$rep"; fi
    if wants tls-c64; then run_wrk "$proxy" tls-c64 64 https "$rep"; fi
    if wants h2-tls; then run_h2 "$proxy" "$rep"; fi
    if wants changes; then run_wrk "$proxy" changes 64 http "$rep"; fi
    if wants policy-c64 && [ "$proxy" != haproxy ]; then run_wrk "$proxy" policy-c64 64 http "$rep"; fi
  done
done

python3 - "$RESULTS" > "$OUT/summary.md" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
def med(profile, proxy, key):
    vals = [float(r[key]) for r in rows if r["profile"] == profile and r["proxy"] == proxy and r[key] not in ("", None)]
    return statistics.median(vals) if vals else float("nan")
profiles = [p for p in ["http-c64", "http-c256", "tls-c64", "h2-tls", "changes", "policy-c64"] if any(r["profile"] == p for r in rows)]
print("| profile | proxy | req/s | p50 ms | p99 ms | failed (max) | CPU-s / 1k req |")
print("|---|---|---|---|---|---|---|")
for p in profiles:
    for x in ["tollgate", "nginx", "haproxy"]:
        fails = max([int(r["failed"]) for r in rows if r["profile"] == p and r["proxy"] == x] or [0])
        p99 = med(p, x, "p99_ms")
        cpu = med(p, x, "cpu_s_per_1k")
        # A reload replaces nginx's and haproxy's processes mid-run: their CPU is not measurable.
        cpu_text = "n/a" if (p == "changes" and x != "tollgate") or cpu < 0 else f"{cpu:.4f}"
        print(f"| {p} | {x} | {med(p, x, 'req_per_s'):.0f} | {med(p, x, 'p50_ms'):.2f}{' (mean)' if p == 'h2-tls' else ''} | {'' if p99 != p99 else f'{p99:.2f}'} | {fails} | {cpu_text} |")
print()
print("| profile | Tollgate/nginx req/s | Tollgate/haproxy req/s | Tollgate/nginx CPU per request |")
print("|---|---|---|---|")
for p in profiles:
    t, n, h = (med(p, x, "req_per_s") for x in ["tollgate", "nginx", "haproxy"])
    tc, nc = med(p, "tollgate", "cpu_s_per_1k"), med(p, "nginx", "cpu_s_per_1k")
    ratio_cpu = "n/a" if p == "changes" else f"{tc / nc:.2f}"
    print(f"| {p} | {t / n:.2f} | {t / h:.2f} | {ratio_cpu} |")
if "policy-c64" in profiles and "http-c64" in profiles:
    print()
    print("| proxy | policy-c64 / http-c64 req/s (the policy's cost) |")
    print("|---|---|")
    for x in ["tollgate", "nginx"]:
        print(f"| {x} | {med('policy-c64', x, 'req_per_s') / med('http-c64', x, 'req_per_s'):.2f} |")
PY
cat "$OUT/summary.md"
