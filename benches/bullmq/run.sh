#!/usr/bin/env bash
# Side-by-side run: Lectern's engine bench (`cargo bench --bench pipeline`) and the same workload on
# BullMQ + Redis (bench.mjs), alternated in one run, then a summary with medians and ratios.
#
#   bash benches/bullmq/run.sh
#
# Knobs (environment): ROUNDS (2), EXTRAS (1: also run the labelled extra BullMQ variants — one
# shared queue, and appendfsync everysec; 0: only the main pair), plus the bench knobs shared by
# both sides: LECTERN_BENCH_JOBS, LECTERN_BENCH_RATE, LECTERN_BENCH_LAT_JOBS, LECTERN_BENCH_WORKERS.
#
# Every Redis it starts is its own: loopback only, a free port, a fresh temp dir, AOF on. It stops
# only the redis-server processes it started, by PID.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
rounds=${ROUNDS:-2}
extras=${EXTRAS:-1}

# ---- what is missing -------------------------------------------------------------------------
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -q >/dev/null; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}
command -v redis-server >/dev/null || apt_install redis-server
command -v redis-cli >/dev/null || apt_install redis-tools
command -v node >/dev/null || apt_install nodejs
command -v npm >/dev/null || apt_install npm
command -v cargo >/dev/null || { echo "cargo is needed for the Lectern side" >&2; exit 1; }
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

# ---- scratch space and our own redis-server --------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/lectern-vs-bullmq.XXXXXX")
# Journal, blobs, step outputs and the AOF all live under $work: the same disk for both sides.
export LECTERN_BENCH_DIR=$work
redis_pid=""
redis_port=""

stop_redis() {
  if [ -n "$redis_pid" ]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    redis_pid=""
  fi
}
cleanup() {
  stop_redis
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# start_redis FSYNC: a fresh redis-server (fresh dir, empty AOF) per BullMQ run, like the fresh
# journal each Lectern run gets.
start_redis() {
  local fsync=$1 dir
  dir=$(mktemp -d "$work/redis.XXXXXX")
  redis_port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$redis_port" --protected-mode yes --dir "$dir" \
    --appendonly yes --appendfsync "$fsync" --save '' --daemonize no \
    --logfile "$dir/redis.log" &
  redis_pid=$!
  for _ in $(seq 1 100); do
    if [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ]; then return 0; fi
    kill -0 "$redis_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "redis-server did not start; log:" >&2
  cat "$dir/redis.log" >&2 || true
  exit 1
}

# ---- runs ------------------------------------------------------------------------------------
mkdir -p "$work/runs"
loadavg() { cut -d' ' -f1 /proc/loadavg; }

# record LABEL ROUND: key=value lines from stdin into the run file, echoed with the label.
record() {
  local file="$work/runs/$1.$2"
  grep -E '^[a-z_.0-9]+=' | tee "$file" | sed "s/^/[$1 #$2] /"
}

run_lectern() {
  local r=$1
  echo "== lectern (round $r; load ${2}) =="
  { echo "host.loadavg_1m=$2"; (cd "$root" && cargo bench --bench pipeline 2>"$work/lectern.stderr")
  } | record lectern "$r" || { cat "$work/lectern.stderr" >&2; exit 1; }
}

run_bullmq() {
  local label=$1 r=$2 layout=$3 fsync=$4 load
  start_redis "$fsync"
  load=$(loadavg)
  echo "== $label (round $r; layout $layout; appendfsync $fsync; redis pid $redis_pid port $redis_port; load $load) =="
  { echo "host.loadavg_1m=$load"
    (cd "$here" && REDIS_HOST=127.0.0.1 REDIS_PORT=$redis_port BULLMQ_LAYOUT=$layout node bench.mjs)
  } | record "$label" "$r"
  stop_redis
}

echo "lectern.commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "host.cpus=$(nproc)"
echo "building the Lectern bench..."
(cd "$root" && cargo bench --bench pipeline --no-run >"$work/build.log" 2>&1) || { cat "$work/build.log" >&2; exit 1; }

labels=(lectern bullmq)
[ "$extras" = 1 ] && labels+=(bullmq-shared bullmq-everysec)
for r in $(seq 1 "$rounds"); do
  run_lectern "$r" "$(loadavg)"
  run_bullmq bullmq "$r" per-step always
  if [ "$extras" = 1 ]; then
    run_bullmq bullmq-shared "$r" shared always
    run_bullmq bullmq-everysec "$r" per-step everysec
  fi
done

# ---- summary ---------------------------------------------------------------------------------
echo
echo "== summary (median of $rounds rounds) =="
node - "$work/runs" "${labels[@]}" <<'EOF'
const fs = require('fs');
const path = require('path');
const [dir, ...labels] = process.argv.slice(2);
const keys = [
  'throughput.enqueue_per_s',
  'throughput.jobs_per_s',
  'throughput.steps_per_s',
  'latency.enqueue_to_start_ms.p50',
  'latency.enqueue_to_start_ms.p99',
  'latency.enqueue_to_start_ms.max',
  'peak_rss_kib',
  'host.loadavg_1m',
];
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const runs = {};
for (const f of fs.readdirSync(dir)) {
  const label = f.slice(0, f.lastIndexOf('.'));
  const kv = Object.fromEntries(
    fs.readFileSync(path.join(dir, f), 'utf8').trim().split('\n').map((l) => l.split('=')).map(([k, v]) => [k, v]),
  );
  (runs[label] ??= []).push(kv);
}
const med = {};
for (const label of labels) {
  med[label] = {};
  for (const k of keys) {
    const xs = (runs[label] ?? []).map((kv) => Number(kv[k])).filter(Number.isFinite);
    if (xs.length) med[label][k] = median(xs);
  }
  const all = (k) => (runs[label] ?? []).map((kv) => kv[k]).join(',');
  for (const k of keys) {
    if (k in med[label]) console.log(`${label}.${k}=${+med[label][k].toFixed(2)}  (runs: ${all(k)})`);
  }
  const v = runs[label]?.[0];
  if (v?.['redis.appendfsync']) console.log(`${label}.redis=${v['redis.version']} appendfsync=${v['redis.appendfsync']} bullmq=${v['bullmq.version']} layout=${v['throughput.layout']}`);
}
const ratio = (a, b, k) => (med[a]?.[k] && med[b]?.[k] ? (med[a][k] / med[b][k]).toFixed(2) : 'n/a');
for (const b of labels.filter((l) => l !== 'lectern')) {
  console.log(`ratio.lectern_over_${b}.jobs_per_s=${ratio('lectern', b, 'throughput.jobs_per_s')}`);
  console.log(`ratio.lectern_over_${b}.enqueue_per_s=${ratio('lectern', b, 'throughput.enqueue_per_s')}`);
  console.log(`ratio.lectern_over_${b}.latency_p50=${ratio('lectern', b, 'latency.enqueue_to_start_ms.p50')}`);
  console.log(`ratio.lectern_over_${b}.latency_p99=${ratio('lectern', b, 'latency.enqueue_to_start_ms.p99')}`);
}
console.log('(jobs/s ratio > 1: Lectern faster; latency ratio < 1: Lectern lower)');
EOF
