#!/usr/bin/env python3
"""API overhead and overload behaviour of a running-from-scratch `lectern serve` (release build).

    python3 benches/api/load.py [--bin target/release/lectern] [--requests 3000] [--flood 10] [--tenants 1]

Starts its own server on a loopback port over a temporary data dir (operator key set, one tenant,
speech off so the flood measures the API and transcode path), then:

1. **Per-request overhead of auth + metrics**: N sequential keep-alive requests to each of
   - `GET /healthz`             (routing + metrics middleware only; no auth)
   - `GET /v1/webhooks` + key   (+ bearer auth from the key cache + the tenant's token bucket + one
                                  small journal read)
   - `GET /v1/webhooks` no key  (auth refusal: 401 JSON)
   and prints p50/p99 latencies in microseconds. The difference between the first two bounds what
   auth + metrics add per request.
2. **Upload flood**: `--flood` × `upload.max-in-flight` concurrent raw uploads of a short WAV,
   counts 202 / 429 / 503, samples the server's VmRSS during the flood (VmHWM at the end), then
   waits until every accepted upload's job succeeded.

Stdlib only. Prints one JSON document at the end too.
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def timed(port, path, headers, n):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    lat = []
    statuses = {}
    for _ in range(n):
        t = time.perf_counter()
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        r.read()
        lat.append((time.perf_counter() - t) * 1e6)
        statuses[r.status] = statuses.get(r.status, 0) + 1
    conn.close()
    return {"p50_us": round(pct(lat, 50), 1), "p99_us": round(pct(lat, 99), 1), "statuses": statuses}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/lectern"))
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--flood", type=int, default=10, help="multiple of upload.max-in-flight")
    ap.add_argument("--tenants", type=int, default=1, help="tenants the flood is spread over")
    ap.add_argument("--file", default=os.path.join(ROOT, "fixtures/generated/speech-22k-mono.wav"))
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="lectern-load-")
    port = free_port()
    admin = "bench-admin-key-0123456789"
    env = dict(os.environ, LECTERN_DATA_DIR=os.path.join(tmp, "data"), LECTERN_HTTP_ADDR=f"127.0.0.1:{port}",
               LECTERN_ADMIN_KEY=admin, LECTERN_MODELS_SPEECH="false",
               # The rate limit is not what is measured here.
               LECTERN_HTTP_RATE_PER_TENANT="0")
    keys = [json.loads(subprocess.check_output([args.bin, "tenants", "create", f"bench{i}", "--json"], env=env))["api_key"]
            for i in range(max(1, args.tenants))]
    key = keys[0]
    log = open(os.path.join(tmp, "serve.log"), "w")
    server = subprocess.Popen([args.bin, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    result = {}
    try:
        for _ in range(200):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        auth = {"Authorization": f"Bearer {key}"}
        timed(port, "/healthz", {}, 200)  # warm up
        timed(port, "/v1/webhooks", auth, 200)
        result["healthz"] = timed(port, "/healthz", {}, args.requests)
        result["authed_read"] = timed(port, "/v1/webhooks", auth, args.requests)
        result["refused_401"] = timed(port, "/v1/webhooks", {}, args.requests)
        for k in ("healthz", "authed_read", "refused_401"):
            r = result[k]
            print(f"{k:12s} p50 {r['p50_us']:8.1f} us   p99 {r['p99_us']:8.1f} us   {r['statuses']}")

        # ---- upload flood ----
        body = open(args.file, "rb").read()
        in_flight = 8
        n = args.flood * in_flight
        statuses, jobs, lock = {}, [], threading.Lock()
        rss = [rss_kib(server.pid, "VmRSS")]
        go = threading.Event()

        def one(k):
            go.wait()
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            try:
                c.request("POST", "/v1/media", body=body,
                          headers={"Authorization": f"Bearer {k}", "Content-Type": "audio/wav"})
                r = c.getresponse()
                data = r.read()
                with lock:
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                    if r.status == 202:
                        jobs.append(json.loads(data)["job_id"])
            except OSError as e:
                with lock:
                    statuses[str(e)] = statuses.get(str(e), 0) + 1

        threads = [threading.Thread(target=one, args=(keys[i % len(keys)],)) for i in range(n)]
        for t in threads:
            t.start()
        t0 = time.time()
        go.set()
        while any(t.is_alive() for t in threads):
            rss.append(rss_kib(server.pid, "VmRSS"))
            time.sleep(0.02)
        flood_s = time.time() - t0
        print(f"flood: {n} concurrent uploads of {len(body)} B from {len(keys)} tenant(s) in {flood_s:.2f} s -> {statuses}")
        deadline = time.time() + 600
        done = {}
        c = http.client.HTTPConnection("127.0.0.1", port)
        while time.time() < deadline:
            done = {}
            for j in jobs:
                c.request("GET", f"/v1/jobs/{j}", headers={"Authorization": f"Bearer {admin}"})
                done[j] = json.loads(c.getresponse().read())["state"]
            rss.append(rss_kib(server.pid, "VmRSS"))
            if all(s in ("succeeded", "dead", "cancelled") for s in done.values()):
                break
            time.sleep(0.5)
        states = {}
        for s in done.values():
            states[s] = states.get(s, 0) + 1
        drain_s = time.time() - t0
        hwm = rss_kib(server.pid, "VmHWM")
        print(f"accepted jobs: {states} after {drain_s:.1f} s; server RSS max sampled {max(rss) / 1024:.1f} MiB, "
              f"VmHWM {hwm / 1024:.1f} MiB")
        result["flood"] = {"requests": n, "tenants": len(keys), "body_bytes": len(body), "statuses": statuses, "flood_s": round(flood_s, 2),
                           "accepted": len(jobs), "final_states": states, "drain_s": round(drain_s, 1),
                           "rss_max_mib": round(max(rss) / 1024, 1), "vmhwm_mib": round(hwm / 1024, 1)}
        print(json.dumps(result))
        ok = len(jobs) > 0 and states.get("succeeded", 0) == len(jobs)
        sys.exit(0 if ok else 1)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
