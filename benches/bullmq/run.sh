#!/usr/bin/env bash
# Side-by-side run: Lectern's engine bench (`cargo bench --bench pipeline`) and the same workload on
# BullMQ + Redis (bench.mjs), alternated in one run, then a summary with medians and ratios.
#
#   bash benches/bullmq/run.sh
#
# Knobs (environment): ROUNDS (2), EXTRAS (1: also run the labelled extra BullMQ variants — one
# shared queue, and appendfsync everysec; 0: only the main pair), QUIET_WAIT (300: before each run,
# wait up to this many seconds for the machine's CPUs to be at most QUIET_MAX_BUSY (15) percent
# busy; 0: don't wait), plus the bench knobs shared by both sides: LECTERN_BENCH_JOBS,
# LECTERN_BENCH_RATE, LECTERN_BENCH_LAT_JOBS, LECTERN_BENCH_WORKERS. The summary's medians use only
# the runs during which other processes took at most CLEAN_MAX_OTHERS (15) percent of the CPUs
# (all runs if none was that clean); every run is listed.
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

# The BullMQ side runs from a scratch copy with its own `npm ci`: the pinned lockfile, and nothing
# left in (or changed under) the work tree during the run.
bench_js=$work/bullmq
mkdir -p "$bench_js"
cp "$here/package.json" "$here/package-lock.json" "$here/bench.mjs" "$bench_js/"
(cd "$bench_js" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

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

# Percent of all CPUs busy over one second (anything on the machine).
busy_pct() {
  local a b
  read -r -a a < <(head -n1 /proc/stat)
  sleep 1
  read -r -a b < <(head -n1 /proc/stat)
  local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
  echo $(( total > 0 ? 100 * (total - idle) / total : 0 ))
}

# On a shared machine, wait (at most QUIET_WAIT s) until the CPUs are nearly idle before a run;
# what it found is recorded with the run (host.busy_pct_before).
quiet_wait=${QUIET_WAIT:-300}
quiet_max_busy=${QUIET_MAX_BUSY:-15}
wait_quiet() {
  local deadline=$(( $(date +%s) + quiet_wait )) b
  while :; do
    b=$(busy_pct)
    if [ "$b" -le "$quiet_max_busy" ] || [ "$(date +%s)" -ge "$deadline" ]; then break; fi
  done
  busy_before=$b
}

# Busy CPU time of the whole machine so far, in clock ticks (all CPUs, every process).
machine_busy_ticks() {
  local a
  read -r -a a < <(head -n1 /proc/stat)
  echo $(( a[1] + a[2] + a[3] + a[6] + a[7] + a[8] ))
}
clk_tck=$(getconf CLK_TCK)
now_s() { date +%s.%N; }
# measured CMD...: runs CMD, then prints the wall time and the machine's busy CPU time over it, so
# the summary can tell how much CPU other processes took during the run (host.others_cpu_pct).
measured() {
  local t0 b0 t1 b1
  t0=$(now_s); b0=$(machine_busy_ticks)
  "$@"
  t1=$(now_s); b1=$(machine_busy_ticks)
  awk -v t0="$t0" -v t1="$t1" -v b0="$b0" -v b1="$b1" -v hz="$clk_tck" \
    'BEGIN { printf "host.wall_s=%.3f\nhost.machine_busy_cpu_s=%.3f\n", t1 - t0, (b1 - b0) / hz }'
}

# record LABEL ROUND: key=value lines from stdin into the run file, echoed with the label.
record() {
  local file="$work/runs/$1.$2"
  grep -E '^[a-z_.0-9]+=' | tee "$file" | sed "s/^/[$1 #$2] /"
}

run_lectern() {
  local r=$1 load
  wait_quiet
  load=$(loadavg)
  echo "== lectern (round $r; load $load; cpu busy before ${busy_before}%) =="
  # The binary `cargo bench --bench pipeline` runs, run the way it runs it (cwd = package root,
  # `--bench`), built once up front so that every round measures the same build and no compile
  # time lands in a round. CPU time is that process's.
  local TIMEFORMAT=$'cpu.user_s=%3U\ncpu.sys_s=%3S'
  { echo "host.loadavg_1m=$load"
    echo "host.busy_pct_before=$busy_before"
    lectern_once() {
      { time (cd "$root" && "$lectern_bench" --bench 2>"$work/lectern.stderr"); } 2>"$work/lectern.time"
    }
    measured lectern_once
    cat "$work/lectern.time"
  } | record lectern "$r" || { cat "$work/lectern.stderr" >&2; exit 1; }
}

run_bullmq() {
  local label=$1 r=$2 layout=$3 fsync=$4 load
  start_redis "$fsync"
  wait_quiet
  load=$(loadavg)
  echo "== $label (round $r; layout $layout; appendfsync $fsync; redis pid $redis_pid port $redis_port; load $load; cpu busy before ${busy_before}%) =="
  { echo "host.loadavg_1m=$load"
    echo "host.busy_pct_before=$busy_before"
    bullmq_once() {
      (cd "$bench_js" && REDIS_HOST=127.0.0.1 REDIS_PORT=$redis_port BULLMQ_LAYOUT=$layout node bench.mjs)
    }
    measured bullmq_once
  } | record "$label" "$r"
  stop_redis
}

echo "lectern.commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "host.cpus=$(nproc)"
echo "building the Lectern bench (cargo bench --bench pipeline --no-run)..."
(cd "$root" && cargo bench --bench pipeline --no-run --message-format=json 2>"$work/build.log" >"$work/build.json") ||
  { cat "$work/build.log" >&2; exit 1; }
lectern_bench=$(node -e '
  const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean);
  for (const l of lines) {
    const m = JSON.parse(l);
    if (m.reason === "compiler-artifact" && m.target.kind.includes("bench") && m.target.name === "pipeline" && m.executable) console.log(m.executable);
  }' "$work/build.json" | tail -n1)
[ -x "$lectern_bench" ] || { echo "could not find the pipeline bench executable" >&2; exit 1; }
# A private copy: every round runs this very build, whatever happens to target/ meanwhile.
cp "$lectern_bench" "$work/pipeline-bench"
echo "lectern.bench_built_from=$lectern_bench"
lectern_bench=$work/pipeline-bench

labels=(lectern bullmq)
[ "$extras" = 1 ] && labels+=(bullmq-shared bullmq-everysec)
for r in $(seq 1 "$rounds"); do
  run_lectern "$r"
  run_bullmq bullmq "$r" per-step always
  if [ "$extras" = 1 ]; then
    run_bullmq bullmq-shared "$r" shared always
    run_bullmq bullmq-everysec "$r" per-step everysec
  fi
done

# ---- summary ---------------------------------------------------------------------------------
echo
echo "== summary (medians; ratios are Lectern / BullMQ) =="
node - "$work/runs" "$(nproc)" "${labels[@]}" <<'EOF'
const fs = require('fs');
const path = require('path');
const [dir, ncpuArg, ...labels] = process.argv.slice(2);
const ncpu = Number(ncpuArg);
const cleanMax = Number(process.env.CLEAN_MAX_OTHERS ?? 15);
const keys = [
  'throughput.enqueue_per_s',
  'throughput.jobs_per_s',
  'throughput.steps_per_s',
  'latency.enqueue_to_start_ms.p50',
  'latency.enqueue_to_start_ms.p99',
  'latency.enqueue_to_start_ms.max',
  'peak_rss_kib',
  'cpu.total_s',
  'redis.used_memory_peak_kib',
  'host.loadavg_1m',
  'host.busy_pct_before',
  'host.others_cpu_pct',
];
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const runs = {};
for (const f of fs.readdirSync(dir)) {
  const label = f.slice(0, f.lastIndexOf('.'));
  const round = f.slice(f.lastIndexOf('.') + 1);
  const kv = Object.fromEntries(
    fs.readFileSync(path.join(dir, f), 'utf8').trim().split('\n').map((l) => l.split('=')).map(([k, v]) => [k, v]),
  );
  // CPU over the whole run (both measurements): the bench process, plus the Redis server.
  kv.round = round;
  const own = Number(kv['cpu.user_s']) + Number(kv['cpu.sys_s']) + Number(kv['redis.cpu_s'] ?? 0);
  kv['cpu.total_s'] = String(own);
  // Share of the machine's CPUs that other processes used during the run (0 on an idle machine).
  kv['host.others_cpu_pct'] = String(
    Math.max(0, (100 * (Number(kv['host.machine_busy_cpu_s']) - own)) / (Number(kv['host.wall_s']) * ncpu)),
  );
  (runs[label] ??= []).push(kv);
}
console.log('per run: label round | jobs/s enqueue/s | latency p50 p99 ms | own CPU s | others CPU %');
for (const label of labels) {
  (runs[label] ?? []).sort((a, b) => a.round - b.round).forEach((kv) => {
    const f = (k, d = 1) => Number(kv[k]).toFixed(d);
    console.log(`  ${label} #${kv.round} | ${f('throughput.jobs_per_s')} ${f('throughput.enqueue_per_s', 0)} | ` +
      `${f('latency.enqueue_to_start_ms.p50', 2)} ${f('latency.enqueue_to_start_ms.p99', 2)} | ${f('cpu.total_s')} | ${f('host.others_cpu_pct', 0)}`);
  });
}
// Medians over the runs during which other processes took at most CLEAN_MAX_OTHERS percent of the
// CPUs; over all runs if none was that clean.
const med = {};
const fellBack = new Set();
for (const label of labels) {
  med[label] = {};
  const every = runs[label] ?? [];
  const clean = every.filter((kv) => Number(kv['host.others_cpu_pct']) <= cleanMax);
  const used = clean.length ? clean : every;
  if (!clean.length) fellBack.add(label);
  console.log(`${label}.runs_used=${used.length} of ${every.length}` +
    (clean.length ? ` (others CPU <= ${cleanMax}%)` : ` (none had others CPU <= ${cleanMax}%: all runs)`));
  for (const k of keys) {
    const xs = used.map((kv) => Number(kv[k])).filter(Number.isFinite);
    if (xs.length) med[label][k] = median(xs);
  }
  const all = (k) => used.map((kv) => +Number(kv[k]).toFixed(2)).join(', ');
  for (const k of keys) {
    if (k in med[label]) console.log(`${label}.${k}=${+med[label][k].toFixed(2)}  (runs: ${all(k)})`);
  }
  const v = runs[label]?.[0];
  if (v?.['redis.appendfsync']) console.log(`${label}.redis=${v['redis.version']} appendfsync=${v['redis.appendfsync']} bullmq=${v['bullmq.version']} layout=${v['throughput.layout']}`);
}
const ratio = (a, b, k) => (med[a]?.[k] && med[b]?.[k] ? (med[a][k] / med[b][k]).toFixed(2) : 'n/a');
for (const b of labels.filter((l) => l !== 'lectern')) {
  const dirty = ['lectern', b].filter((l) => fellBack.has(l));
  if (dirty.length) console.log(`# lectern vs ${b}: unreliable, no clean run of ${dirty.join(' and ')}`);
  console.log(`ratio.lectern_over_${b}.jobs_per_s=${ratio('lectern', b, 'throughput.jobs_per_s')}`);
  console.log(`ratio.lectern_over_${b}.enqueue_per_s=${ratio('lectern', b, 'throughput.enqueue_per_s')}`);
  console.log(`ratio.lectern_over_${b}.latency_p50=${ratio('lectern', b, 'latency.enqueue_to_start_ms.p50')}`);
  console.log(`ratio.lectern_over_${b}.latency_p99=${ratio('lectern', b, 'latency.enqueue_to_start_ms.p99')}`);
}
console.log('(jobs/s ratio > 1: Lectern faster; latency ratio < 1: Lectern lower)');
EOF
