#!/usr/bin/env python3
"""A large cluster's worth of Ingresses in a manifest directory, and what one change costs.

Builds N Ingresses with 3 paths each, one in three with its own TLS Secret (certificates
generated once and cached under ~/.cache/tollgate/scale-certs), 100 Services x 10 endpoints
(EndpointSlices on 127.1.x.y, all answered by one `tollgate echo` on 0.0.0.0), starts the real
`tollgate proxy --manifests DIR` and reports:

  start -> last host routed       seconds from process start until the last Ingress answers
  change -> live p50/p99          a path added to one Ingress (file rewritten by rename) until
                                  a request to it is answered by its backend; 50 changes idle
                                  and 50 under wrk load
  CPU per change                  proxy CPU-seconds over the idle changes / changes
  background load                 wrk requests, non-2xx/errors and max latency, without and
                                  with changes (the max with changes shows rebuild stalls)
  RSS                             settled, after the changes, peak (VmHWM), after all deleted
  /metrics                        bytes idle (no traffic yet) and series count

Usage: bench/scale.py [N ...]  (default: 10000 1000).  TOLLGATE_BIN=path to pick a binary.
Not a test: it prints a table and writes bench/out/scale-<N>.json.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.expanduser("~/.cache/tollgate/scale-certs")
SERVICES = 100
ENDPOINTS = 10
BACKEND_PORT = 19180
CHANGES = int(os.environ.get("SCALE_CHANGES", "50"))
CLK = os.sysconf("SC_CLK_TCK")


def binary():
    b = os.environ.get("TOLLGATE_BIN")
    if b:
        return b
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/tollgate/target"))
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True,
                   env=dict(os.environ, CARGO_TARGET_DIR=target))
    return os.path.join(target, "release", "tollgate")


def cert(i):
    """PEM cert and key for host-i, generated once."""
    os.makedirs(CACHE, exist_ok=True)
    c, k = os.path.join(CACHE, f"{i}.crt"), os.path.join(CACHE, f"{i}.key")
    if not os.path.exists(c):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3650",
                        "-subj", f"/CN=host-{i}.scale.test",
                        "-addext", f"subjectAltName=DNS:host-{i}.scale.test",
                        "-keyout", k + ".tmp", "-out", c + ".tmp"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.rename(k + ".tmp", k)
        os.rename(c + ".tmp", c)
    import base64
    return (base64.b64encode(open(c, "rb").read()).decode(),
            base64.b64encode(open(k, "rb").read()).decode())


def ingress_doc(i, extra_paths=()):
    svc = lambda j: f"svc-{(i * 3 + j) % SERVICES}"
    paths = [(f"/p{j}", svc(j)) for j in range(3)] + list(extra_paths)
    lines = [
        "apiVersion: networking.k8s.io/v1", "kind: Ingress", "metadata:",
        f"  name: ing-{i}", "  namespace: scale", "spec:", "  ingressClassName: tollgate",
    ]
    if i % 3 == 0:
        lines += ["  tls:", f"  - hosts: [host-{i}.scale.test]", f"    secretName: tls-{i}"]
    lines += ["  rules:", f"  - host: host-{i}.scale.test", "    http:", "      paths:"]
    for p, s in paths:
        lines += [f"      - path: {p}", "        pathType: Prefix", "        backend:",
                  f"          service: {{name: {s}, port: {{number: 80}}}}"]
    return "\n".join(lines) + "\n"


def write_atomic(path, text):
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def build_dir(d, n):
    docs = ["apiVersion: v1\nkind: Namespace\nmetadata: {name: scale}\n"]
    for s in range(SERVICES):
        docs.append(f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: scale}}\n"
                    f"spec:\n  ports: [{{name: http, port: 80, targetPort: {BACKEND_PORT}}}]\n")
        eps = "\n".join(f"- addresses: [127.1.{s}.{e + 1}]\n  conditions: {{ready: true}}"
                        for e in range(ENDPOINTS))
        docs.append(f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n"
                    f"  name: svc-{s}-1\n  namespace: scale\n  labels: {{kubernetes.io/service-name: svc-{s}}}\n"
                    f"addressType: IPv4\nports: [{{name: http, port: {BACKEND_PORT}}}]\nendpoints:\n{eps}\n")
    with open(os.path.join(d, "services.yaml"), "w") as f:
        f.write("---\n".join(docs))
    os.makedirs(os.path.join(d, "ingresses"))
    os.makedirs(os.path.join(d, "secrets"))
    for i in range(n):
        if i % 3 == 0:
            c, k = cert(i)
            with open(os.path.join(d, "secrets", f"tls-{i}.yaml"), "w") as f:
                f.write(f"apiVersion: v1\nkind: Secret\nmetadata: {{name: tls-{i}, namespace: scale}}\n"
                        f"type: kubernetes.io/tls\ndata:\n  tls.crt: {c}\n  tls.key: {k}\n")
        with open(os.path.join(d, "ingresses", f"ing-{i}.yaml"), "w") as f:
            f.write(ingress_doc(i))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Client:
    """One keep-alive HTTP/1.1 connection, for polling with little overhead."""

    def __init__(self, port):
        self.port = port
        self.sock = None

    def get(self, host, path):
        for _ in range(2):
            try:
                if self.sock is None:
                    self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                return self._read()
            except OSError:
                self.close()
        return 0

    def _read(self):
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("closed")
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
            if k.strip().lower() == b"transfer-encoding" and b"chunked" in v.lower():
                chunked = True
        if chunked:
            while not body.endswith(b"0\r\n\r\n"):
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise OSError("closed")
                body += chunk
        else:
            while len(body) < length:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise OSError("closed")
                body += chunk
        return status

    def close(self):
        if self.sock:
            self.sock.close()
        self.sock = None


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def mem_mb(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out.get("VmRSS", 0.0), out.get("VmHWM", 0.0)


def wait_for(client, host, path, want, deadline_s=600, interval=0.001):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if client.get(host, path) == want:
            return True
        time.sleep(interval)
    return False


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def wrk(port, host, seconds):
    return subprocess.Popen(["wrk", "-t1", "-c16", f"-d{seconds}s", "--latency",
                             "-H", f"Host: {host}", f"http://127.0.0.1:{port}/p0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def parse_wrk(text):
    r = {"requests": 0, "failed": 0, "max_ms": 0.0, "p99_ms": 0.0}
    def ms(v):
        for suf, mul in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
            if v.endswith(suf):
                return float(v[:-len(suf)]) * mul
        return float(v)
    for line in text.splitlines():
        w = line.split()
        if line.strip().startswith("Latency") and len(w) >= 4:
            r["max_ms"] = ms(w[3])
        elif line.strip().startswith("99%"):
            r["p99_ms"] = ms(w[1])
        elif "requests in" in line:
            r["requests"] = int(w[0])
        elif line.strip().startswith("Non-2xx"):
            r["failed"] += int(w[-1])
        elif line.strip().startswith("Socket errors"):
            r["failed"] += sum(int(x.rstrip(",")) for x in w[3::2])
    return r


def changes(d, client, count, base):
    """Adds path /chg-<k> to Ingress ing-<i>, waits until it routes; returns latencies."""
    lat = []
    for k in range(count):
        i = (base + k * 97) % N_CUR + 1
        text = ingress_doc(i, [(f"/chg-{base + k}", f"svc-{(i + 1) % SERVICES}")])
        host = f"host-{i}.scale.test"
        t0 = time.monotonic()
        write_atomic(os.path.join(d, "ingresses", f"ing-{i}.yaml"), text)
        if not wait_for(client, host, f"/chg-{base + k}", 200, deadline_s=60):
            raise SystemExit(f"change {k} never went live")
        lat.append(time.monotonic() - t0)
    return lat


def run(n):
    global N_CUR
    N_CUR = n - 1
    tollgate = binary()
    work = tempfile.mkdtemp(prefix="tollgate-scale-")
    d = os.path.join(work, "manifests")
    os.makedirs(d)
    print(f"[{n}] generating manifests ...", file=sys.stderr)
    build_dir(d, n)
    http, https, admin = free_port(), free_port(), free_port()
    echo = subprocess.Popen([tollgate, "echo", "--listen", f"0.0.0.0:{BACKEND_PORT}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = open(os.path.join(work, "proxy.log"), "w")
    t_start = time.monotonic()
    proxy = subprocess.Popen([tollgate, "proxy", "--manifests", d,
                              "--http-listen", f"127.0.0.1:{http}",
                              "--https-listen", f"127.0.0.1:{https}",
                              "--admin-listen", f"127.0.0.1:{admin}",
                              "--worker-threads", "2"],
                             stdout=log, stderr=log)
    res = {"ingresses": n}
    try:
        c = Client(http)
        if not wait_for(c, f"host-{n - 1}.scale.test", "/p0", 200, deadline_s=600, interval=0.01):
            raise SystemExit("last host never routed")
        res["start_to_last_routed_s"] = time.monotonic() - t_start
        time.sleep(3)  # let the allocator settle
        res["rss_settled_mb"], _ = mem_mb(proxy.pid)
        m = Client(admin)
        sock = socket.create_connection(("127.0.0.1", admin))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        body = b""
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            body += chunk
        sock.close()
        text = body.partition(b"\r\n\r\n")[2]
        res["metrics_idle_bytes"] = len(text)
        res["metrics_idle_series"] = sum(1 for l in text.splitlines() if l and not l.startswith(b"#"))
        m.close()

        # Changes with no other traffic: latency and CPU per change.
        perf = None
        if os.environ.get("SCALE_PERF"):
            # SCALE_PERF=file: a CPU profile of the idle changes, for `perf report -i file`.
            perf = subprocess.Popen(["perf", "record", "-F", "499", "--call-graph", os.environ.get("SCALE_PERF_GRAPH", "fp"), "-o",
                                     os.environ["SCALE_PERF"], "-p", str(proxy.pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        cpu0 = cpu_seconds(proxy.pid)
        lat = changes(d, c, CHANGES, 0)
        cpu1 = cpu_seconds(proxy.pid)
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait()
        res["idle_change_p50_ms"] = pct(lat, 50) * 1000
        res["idle_change_p99_ms"] = pct(lat, 99) * 1000
        res["cpu_per_change_ms"] = (cpu1 - cpu0) / CHANGES * 1000

        # Background load alone, then with changes.
        w = wrk(http, "host-1.scale.test", 5)
        base = parse_wrk(w.communicate()[0])
        res["load_alone"] = base
        secs = max(5, int(pct(lat, 50) * CHANGES * 2) + 5)
        w = wrk(http, "host-1.scale.test", secs)
        time.sleep(0.5)
        lat2 = changes(d, c, CHANGES, 1000)
        loaded = parse_wrk(w.communicate()[0])
        res["load_with_changes"] = loaded
        res["loaded_change_p50_ms"] = pct(lat2, 50) * 1000
        res["loaded_change_p99_ms"] = pct(lat2, 99) * 1000
        res["rss_after_changes_mb"], res["rss_peak_mb"] = mem_mb(proxy.pid)

        # Delete every Ingress.
        t0 = time.monotonic()
        shutil.rmtree(os.path.join(d, "ingresses"))
        if not wait_for(c, "host-1.scale.test", "/p0", 404, deadline_s=300, interval=0.01):
            raise SystemExit("deleted Ingresses still routed")
        res["delete_all_s"] = time.monotonic() - t0
        time.sleep(3)
        res["rss_after_delete_mb"], _ = mem_mb(proxy.pid)
    finally:
        proxy.send_signal(signal.SIGTERM)
        echo.kill()
        try:
            proxy.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proxy.kill()
        log.close()
        errors = [l for l in open(os.path.join(work, "proxy.log")) if "ERROR" in l]
        res["log_errors"] = len(errors)
        if errors:
            print("".join(errors[:5]), file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    return res


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [10000, 1000]
    os.makedirs(os.path.join(ROOT, "bench", "out"), exist_ok=True)
    rows = []
    for n in sizes:
        r = run(n)
        with open(os.path.join(ROOT, "bench", "out", f"scale-{n}.json"), "w") as f:
            json.dump(r, f, indent=2)
        rows.append(r)
    keys = [("start_to_last_routed_s", "start -> last host routed (s)"),
            ("idle_change_p50_ms", "change -> live p50, idle (ms)"),
            ("idle_change_p99_ms", "change -> live p99, idle (ms)"),
            ("loaded_change_p50_ms", "change -> live p50, under load (ms)"),
            ("loaded_change_p99_ms", "change -> live p99, under load (ms)"),
            ("cpu_per_change_ms", "proxy CPU per change (ms)"),
            ("rss_settled_mb", "RSS settled (MB)"),
            ("rss_after_changes_mb", "RSS after changes (MB)"),
            ("rss_peak_mb", "RSS peak (MB)"),
            ("rss_after_delete_mb", "RSS after all deleted (MB)"),
            ("delete_all_s", "delete all -> gone (s)"),
            ("metrics_idle_bytes", "/metrics idle (bytes)"),
            ("metrics_idle_series", "/metrics idle (series)"),
            ("log_errors", "ERROR log lines")]
    print("| measure | " + " | ".join(f"{r['ingresses']} Ingresses" for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for k, label in keys:
        vals = []
        for r in rows:
            v = r.get(k)
            vals.append(f"{v:.1f}" if isinstance(v, float) else str(v))
        print(f"| {label} | " + " | ".join(vals) + " |")
    for r in rows:
        for which in ("load_alone", "load_with_changes"):
            l = r[which]
            print(f"[{r['ingresses']}] wrk {which}: {l['requests']} requests, {l['failed']} failed, "
                  f"p99 {l['p99_ms']:.2f} ms, max {l['max_ms']:.2f} ms")


if __name__ == "__main__":
    main()
