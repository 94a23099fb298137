#!/usr/bin/env bash
# Lectern's transcode vs ffmpeg making the same 2-rung AAC-LC fMP4 HLS ladder (48 kHz, 64k + 128k
# stereo, 6 s CMAF segments), on the same machine in the same run, alternating the contenders.
#
#   bash benches/transcode_vs_ffmpeg.sh            # full run (~40 min on an idle 2-vCPU machine)
#   BENCH_ROUNDS=1 BENCH_MINUTES=5 BENCH_LONG_MINUTES=20 bash benches/transcode_vs_ffmpeg.sh   # quick
#
# Measured:
#   - Lectern: `target/release/lectern serve` on a fresh data dir per run (127.0.0.1, free port);
#     upload with curl, poll the job. Wall = the transcode step's finished_at - started_at from the
#     job JSON; CPU = the server process's utime+stime (/proc/<pid>/stat) from the 202 answer to the
#     job's success (probe + transcode; the upload itself is reported apart); peak RSS = VmHWM.
#   - ffmpeg (a): the same ladder, one decode, no loudness normalisation.
#   - ffmpeg (b): 2-pass loudnorm to -16 LUFS / -1 dBTP (pass 1 measures, pass 2 applies the
#     measured values with linear=true) plus the same ladder: the functional equivalent of Lectern.
#     Each ffmpeg process is timed with /usr/bin/time (wall, user, sys, max RSS).
#   - Lectern's peak RSS for a short and a long file (separate servers), and for the long file the
#     time from the 202 answer until the master playlist exists and every rung has a segment.
#
# Knobs (environment): BENCH_ROUNDS (2; 0 runs only Lectern's short and long files), BENCH_MINUTES (60), BENCH_SHORT_MINUTES (3),
# BENCH_LONG_MINUTES (180), BENCH_FF_THREADS (unset: ffmpeg's default), BENCH_SKIP_BUILD=1,
# BENCH_QUIET_WAIT (900: most seconds to wait for an idle machine before each measurement),
# BENCH_MEDIA_DIR (target/bench-media: generated inputs and the last results, kept between runs;
# never committed), BENCH_WORK_DIR (target: where Lectern's data dirs and ffmpeg's outputs go; both
# on the same disk, e.g. /dev/shm to take fsync out of the picture), BENCH_KEEP_WORK=1.
# Apart from fixtures/generated (fixtures/generate.sh) nothing outside target/ (or BENCH_WORK_DIR) is
# written; every process started here is stopped by its PID, servers listen on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${BENCH_ROUNDS:-2}
MINUTES=${BENCH_MINUTES:-60}
SHORT_MINUTES=${BENCH_SHORT_MINUTES:-3}
LONG_MINUTES=${BENCH_LONG_MINUTES:-180}
MEDIA=${BENCH_MEDIA_DIR:-$ROOT/target/bench-media}
FF_THREADS=(); [ -n "${BENCH_FF_THREADS:-}" ] && FF_THREADS=(-threads "$BENCH_FF_THREADS")
BIN=$ROOT/target/release/lectern
TARGET_I=-16
TARGET_TP=-1
LRA=11

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools ---------------------------------------------------------------------------------------
need=()
for t in ffmpeg:ffmpeg sox:sox espeak-ng:espeak-ng curl:curl python3:python3 /usr/bin/time:time awk:gawk; do
  command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t##*:}")
done
if ((${#need[@]})); then
  log "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "cargo build --release --bin lectern"
  cargo build --release --bin lectern >&2
fi
[ -x "$BIN" ] || die "$BIN missing"

# --- inputs ----------------------------------------------------------------------------------------
bash fixtures/generate.sh >/dev/null
mkdir -p "$MEDIA"
make_input() { # make_input MINUTES -> path of a MINUTES-long 44.1 kHz stereo 128k MP3 of looped speech
  local f="$MEDIA/speech-${1}min-44k-stereo.mp3"
  if [ ! -s "$f" ]; then
    log "making $f"
    # The fixture is 58.3 s of speech: loop it and cut at exactly MINUTES.
    ffmpeg -nostdin -hide_banner -loglevel error -y -stream_loop -1 -i fixtures/generated/speech-60s-mono.wav \
      -t $(($1 * 60)) -ar 44100 -ac 2 -c:a libmp3lame -b:a 128k "$f.part.mp3" || { rm -f "$f.part.mp3"; die "cannot make $f"; }
    mv "$f.part.mp3" "$f"
  fi
  echo "$f"
}
IN_MAIN=$(make_input "$MINUTES")
IN_SHORT=$(make_input "$SHORT_MINUTES")
IN_LONG=$(make_input "$LONG_MINUTES")

mkdir -p "${BENCH_WORK_DIR:-$ROOT/target}"
WORK=$(mktemp -d "${BENCH_WORK_DIR:-$ROOT/target}/bench-transcode.XXXXXX")
RESULTS=$WORK/results.jsonl
# Run a private copy: the target dir is shared, and a rebuild during the run must not swap binaries.
cp "$BIN" "$WORK/lectern"; BIN=$WORK/lectern
REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo +dirty)"
[ "${BENCH_SKIP_BUILD:-0}" = 1 ] && REV="prebuilt binary of $(date -r "$ROOT/target/release/lectern" '+%F %T'), tree now $REV"
SRV_PID=
cleanup() {
  if [ -n "$SRV_PID" ] && kill -0 "$SRV_PID" 2>/dev/null; then
    kill -TERM "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
  fi
  [ "${BENCH_KEEP_WORK:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cputicks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; } # utime + stime, all threads
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
TICK=$(getconf CLK_TCK)
busyticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; } # whole machine, all CPUs
QUIET_WAIT=${BENCH_QUIET_WAIT:-900}
# Others' work on a shared 2-vCPU machine skews wall times: before each measurement wait (at most
# QUIET_WAIT s) until the rest of the machine uses under 0.3 CPU over 5 s. Each run also records the
# CPU that everything else used during it (others_cpu_s), so the contamination is visible.
wait_quiet() {
  local waited=0 b0 b1
  while :; do
    b0=$(busyticks); sleep 5; b1=$(busyticks)
    awk -v d=$((b1 - b0)) -v t="$TICK" 'BEGIN { exit !(d / t / 5 < 0.3) }' && return 0
    waited=$((waited + 5))
    ((waited % 60 == 0)) && log "machine busy ($(cut -d' ' -f1-3 /proc/loadavg)); waiting for quiet (${waited}s)"
    ((waited >= QUIET_WAIT)) && { log "warning: machine still busy after ${QUIET_WAIT}s; measuring anyway"; return 0; }
  done
}
jget() { python3 -c 'import json,sys; v=json.load(sys.stdin); [v := v[k] for k in sys.argv[1:]]; print(v)' "$@"; }
record() { python3 -c 'import json,sys; print(json.dumps(dict(a.split("=",1) for a in sys.argv[1:])))' "$@" >>"$RESULTS"; }
plays() { { ffmpeg -nostdin -v error -i "$1" -f null - 2>&1 || echo "ffmpeg exit $?"; } | head -5; } # silent when it plays
calc() { awk "BEGIN { printf \"%.3f\", $* }"; }

# --- Lectern ---------------------------------------------------------------------------------------
start_server() { # sets SRV_PID SRV_URL SRV_DATA
  SRV_DATA=$(mktemp -d "$WORK/lectern-data.XXXXXX")
  local port; port=$(free_port)
  SRV_URL=http://127.0.0.1:$port
  # A clean environment: only the variables below reach the server's config.
  env -i PATH="$PATH" HOME="$HOME" LECTERN_DATA_DIR="$SRV_DATA" LECTERN_MODELS_DIR="$SRV_DATA/models" \
    LECTERN_HTTP_ADDR="127.0.0.1:$port" LECTERN_LOG_LEVEL=warn "$BIN" serve >"$SRV_DATA.log" 2>&1 &
  SRV_PID=$!
  for _ in $(seq 300); do
    curl -sf "$SRV_URL/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$SRV_PID" 2>/dev/null || { cat "$SRV_DATA.log" >&2; die "lectern serve exited"; }
    sleep 0.1
  done
  die "lectern serve did not answer /healthz within 30 s"
}
stop_server() { # graceful: SIGTERM, then wait for the exit
  kill -TERM "$SRV_PID"
  wait "$SRV_PID" || log "lectern serve exited with $?"
  SRV_PID=
}

# lectern_run LABEL ROUND FILE [first-segment]: one fresh server, one upload, until the job succeeds.
lectern_run() {
  local label=$1 round=$2 file=$3 first=${4:-}
  start_server
  local idle_kb; idle_kb=$(hwm_kb "$SRV_PID")
  local c0 t0 resp t202 c202 media job hls tfirst=
  wait_quiet
  c0=$(cputicks "$SRV_PID"); t0=$(now)
  resp=$(curl -sS --fail-with-body -X POST -H 'Content-Type: audio/mpeg' -H 'Expect:' -T "$file" "$SRV_URL/v1/media")
  t202=$(now); c202=$(cputicks "$SRV_PID"); local b202; b202=$(busyticks)
  media=$(jget media_id <<<"$resp"); job=$(jget job_id <<<"$resp")
  hls=$SRV_DATA/blobs/hls/$media
  if [ -n "$first" ]; then # playable: the master exists and every rung it lists has a segment
    local n=0
    while :; do
      if [ -s "$hls/master.m3u8" ]; then
        local ok=1 v
        for v in $(grep -v '^#' "$hls/master.m3u8" | grep .); do grep -q '^#EXTINF' "$hls/$v" 2>/dev/null || ok=0; done
        [ $ok = 1 ] && { tfirst=$(now); break; }
      fi
      kill -0 "$SRV_PID" 2>/dev/null || die "server died"
      if ((++n % 40 == 0)); then # every ~2 s: did the job end without a segment?
        case $(curl -sS --fail "$SRV_URL/v1/jobs/$job" | jget state) in dead | cancelled | succeeded) die "job $job ended before a segment was seen" ;; esac
      fi
      sleep 0.05
    done
  fi
  local state body
  while :; do
    body=$(curl -sS --fail "$SRV_URL/v1/jobs/$job")
    state=$(jget state <<<"$body")
    case $state in
      succeeded) break ;;
      dead | cancelled) echo "$body" >&2; die "job $job ended $state" ;;
      failed) log "warning: a step of job $job failed and will retry: the timings of this run include it" ;;
    esac
    sleep 0.5
  done
  local tdone c1 peak_kb
  tdone=$(now); c1=$(cputicks "$SRV_PID"); peak_kb=$(hwm_kb "$SRV_PID"); local bdone; bdone=$(busyticks)
  local steps metrics loud
  steps=$(python3 -c '
import json, sys
from datetime import datetime
t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
for s in json.load(sys.stdin)["steps"]:
    print("%s_s=%.3f" % (s["name"], t(s["finished_at"]) - t(s["started_at"])))' <<<"$body")
  metrics=$(curl -sS "$SRV_URL/metrics" | grep '^lectern_step_seconds_total' | tr '\n' ';' || true)
  loud=$(curl -sS "$SRV_URL/v1/media/$media" | python3 -c '
import json, sys; l = json.load(sys.stdin)["loudness"] or {}
print("in=%.2f LUFS, out=%.2f LUFS / %.2f dBTP, gain=%.2f dB, passes=%s" % (l["input_lufs"], l["output_lufs"], l["output_true_peak_dbtp"], l["gain_db"], l["passes"]))')
  stop_server
  local bad; bad=$(plays "$hls/master.m3u8")
  [ -z "$bad" ] || die "Lectern's output does not play: $bad"
  local segs; segs=$(find "$hls" -name '*.m4s' | wc -l)
  # shellcheck disable=SC2046
  record tool=lectern label="$label" round="$round" $steps \
    upload_s="$(calc "$t202 - $t0")" job_s="$(calc "$tdone - $t202")" \
    cpu_s="$(calc "($c1 - $c202) / $TICK")" upload_cpu_s="$(calc "($c202 - $c0) / $TICK")" \
    first_segment_s="${tfirst:+$(calc "$tfirst - $t202")}" peak_rss_kb="$peak_kb" idle_rss_kb="$idle_kb" \
    segments="$segs" loudness="$loud" metrics="$metrics" \
    others_cpu_s="$(calc "($bdone - $b202 - ($c1 - $c202)) / $TICK")"
  log "lectern $label round $round: $(tail -1 "$RESULTS")"
  rm -rf "$SRV_DATA"
}

# --- ffmpeg ----------------------------------------------------------------------------------------
# The ladder after the filter chain CHAIN: resampled once to 48 kHz, split into the two rungs. The
# aformat pins the (stereo) layout: ffmpeg 5.1 cannot negotiate one between loudnorm and asplit.
ladder() { # ladder OUTDIR CHAIN: sets LADDER, the output arguments
  LADDER=(-filter_complex "[0:a]${2}aresample=48000,aformat=channel_layouts=stereo,asplit=2[r0][r1]" -map '[r0]' -map '[r1]'
    -c:a aac -b:a:0 64k -b:a:1 128k -f hls -hls_time 6 -hls_playlist_type vod -hls_segment_type fmp4
    -hls_fmp4_init_filename init.mp4 -master_pl_name master.m3u8 -var_stream_map 'a:0,name:a64 a:1,name:a128'
    -hls_segment_filename "$1/%v/seg%05d.m4s" "$1/%v/index.m3u8")
}
timed() { # timed TIMEFILE LOGFILE ffmpeg-args...: /usr/bin/time -> "wall user sys maxrss_kb others_cpu_s"
  local tf=$1 lf=$2; shift 2
  local b0 b1; b0=$(busyticks)
  /usr/bin/time -f '%e %U %S %M' -o "$tf" ffmpeg -nostdin -hide_banner -nostats -y "${FF_THREADS[@]}" "$@" 2>"$lf" ||
    { tail -20 "$lf" >&2; die "ffmpeg failed"; }
  b1=$(busyticks)
  local w u s m; read -r w u s m <"$tf"
  echo "$w $u $s $m $(calc "($b1 - $b0) / $TICK - $u - $s")" >"$tf"
}
last_json() { python3 -c 'import sys,re,json; print(json.dumps(json.loads(re.findall(r"\{[^{}]*\}", open(sys.argv[1]).read())[-1])))' "$1"; }

ffmpeg_a() { # ffmpeg_a ROUND FILE
  local out=$WORK/ff-a; rm -rf "$out"; mkdir -p "$out"
  ladder "$out" ''
  wait_quiet
  timed "$WORK/a.time" "$WORK/a.log" -i "$2" "${LADDER[@]}"
  local w u s m o; read -r w u s m o <"$WORK/a.time"
  local bad; bad=$(plays "$out/master.m3u8"); [ -z "$bad" ] || die "ffmpeg (a) output does not play: $bad"
  record tool=ffmpeg-a label=main round="$1" wall_s="$w" cpu_s="$(calc "$u + $s")" peak_rss_kb="$m" others_cpu_s="$o" \
    segments="$(find "$out" -name '*.m4s' | wc -l)"
  log "ffmpeg-a round $1: $(tail -1 "$RESULTS")"
  rm -rf "$out"
}

ffmpeg_b() { # ffmpeg_b ROUND FILE
  local out=$WORK/ff-b; rm -rf "$out"; mkdir -p "$out"
  wait_quiet
  timed "$WORK/b1.time" "$WORK/b1.log" -i "$2" \
    -af "loudnorm=I=$TARGET_I:TP=$TARGET_TP:LRA=$LRA:print_format=json" -f null -
  local m1; m1=$(last_json "$WORK/b1.log")
  local mi mtp mlra mth off
  read -r mi mtp mlra mth off < <(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(j["input_i"], j["input_tp"], j["input_lra"], j["input_thresh"], j["target_offset"])' "$m1")
  local chain="loudnorm=I=$TARGET_I:TP=$TARGET_TP:LRA=$LRA:measured_I=$mi:measured_TP=$mtp:measured_LRA=$mlra:measured_thresh=$mth:offset=$off:linear=true:print_format=json,"
  ladder "$out" "$chain"
  timed "$WORK/b2.time" "$WORK/b2.log" -i "$2" "${LADDER[@]}"
  local m2; m2=$(last_json "$WORK/b2.log")
  local w1 u1 s1 r1 o1 w2 u2 s2 r2 o2
  read -r w1 u1 s1 r1 o1 <"$WORK/b1.time"; read -r w2 u2 s2 r2 o2 <"$WORK/b2.time"
  local bad; bad=$(plays "$out/master.m3u8"); [ -z "$bad" ] || die "ffmpeg (b) output does not play: $bad"
  local loud; loud=$(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print("in=%s LUFS, out=%s LUFS / %s dBTP, mode=%s" % (j["input_i"], j["output_i"], j["output_tp"], j["normalization_type"]))' "$m2")
  record tool=ffmpeg-b label=main round="$1" wall_s="$(calc "$w1 + $w2")" cpu_s="$(calc "$u1 + $s1 + $u2 + $s2")" \
    pass1_wall_s="$w1" pass2_wall_s="$w2" peak_rss_kb="$((r1 > r2 ? r1 : r2))" loudness="$loud" \
    others_cpu_s="$(calc "$o1 + $o2")" \
    segments="$(find "$out" -name '*.m4s' | wc -l)"
  log "ffmpeg-b round $1: $(tail -1 "$RESULTS")"
  rm -rf "$out"
}

ffmpeg_ref() { # ffmpeg_ref ROUND FILE: decode + resample only, to /dev/null (the floor under both)
  wait_quiet
  timed "$WORK/ref.time" "$WORK/ref.log" -i "$2" -af aresample=48000,aformat=channel_layouts=stereo -f null -
  local w u s m o; read -r w u s m o <"$WORK/ref.time"
  record tool=ffmpeg-decode label=main round="$1" wall_s="$w" cpu_s="$(calc "$u + $s")" peak_rss_kb="$m" others_cpu_s="$o"
}

# --- the runs --------------------------------------------------------------------------------------
log "inputs: $(basename "$IN_MAIN"), $(basename "$IN_SHORT"), $(basename "$IN_LONG"); rounds: $ROUNDS; work dir: $WORK"
for r in $(seq "$ROUNDS"); do
  lectern_run main "$r" "$IN_MAIN"
  ffmpeg_a "$r" "$IN_MAIN"
  ffmpeg_b "$r" "$IN_MAIN"
  ffmpeg_ref "$r" "$IN_MAIN"
done
lectern_run short 1 "$IN_SHORT"
lectern_run long 1 "$IN_LONG" first-segment

# --- summary ---------------------------------------------------------------------------------------
cp "$RESULTS" "$MEDIA/transcode_vs_ffmpeg-last.jsonl"
{
python3 - "$RESULTS" "$MINUTES" "$SHORT_MINUTES" "$LONG_MINUTES" "${BENCH_FF_THREADS:-default}" "$REV" <<'PY'
import json, statistics, sys, subprocess
rows = [json.loads(l) for l in open(sys.argv[1])]
minutes, short_m, long_m, threads, rev = sys.argv[2:7]
f = lambda r, k: float(r[k])
def med(tool, key, label="main"):
    v = [f(r, key) for r in rows if r["tool"] == tool and r["label"] == label and r.get(key)]
    return statistics.median(v) if v else float("nan")
ff = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]
print(f"\n== Lectern transcode vs ffmpeg: {minutes}-min 44.1 kHz stereo 128k MP3 -> 48 kHz AAC-LC 64k+128k stereo, 6 s fMP4 HLS")
print(f"   lectern {rev} (release); {ff}; ffmpeg threads: {threads}; rounds: {len([r for r in rows if r['tool'] == 'lectern' and r['label'] == 'main'])} (median shown)\n")
L = {"wall": med("lectern", "transcode_s"), "cpu": med("lectern", "cpu_s"), "rss": med("lectern", "peak_rss_kb")}
print(f"{'contender':58} {'wall s':>8} {'CPU s':>8} {'x realtime':>10} {'peak RSS':>10}")
def line(name, wall, cpu, rss):
    print(f"{name:58} {wall:8.1f} {cpu:8.1f} {float(minutes) * 60 / wall:10.1f} {rss / 1024:8.1f} MiB")
line("Lectern (transcode step; CPU = probe + transcode)", L["wall"], L["cpu"], L["rss"])
for tool, name in [("ffmpeg-a", "ffmpeg (a) same ladder, no loudness normalisation"),
                   ("ffmpeg-b", "ffmpeg (b) 2-pass loudnorm -16 LUFS/-1 dBTP + ladder")]:
    line(name, med(tool, "wall_s"), med(tool, "cpu_s"), med(tool, "peak_rss_kb"))
line("reference: ffmpeg decode + resample only, no encode", med("ffmpeg-decode", "wall_s"), med("ffmpeg-decode", "cpu_s"),
     med("ffmpeg-decode", "peak_rss_kb"))
print()
for tool, name in [("ffmpeg-a", "(a) no normalisation"), ("ffmpeg-b", "(b) 2-pass loudnorm")]:
    print(f"Lectern / ffmpeg {name:22}: wall {L['wall'] / med(tool, 'wall_s'):.2f}x, CPU {L['cpu'] / med(tool, 'cpu_s'):.2f}x")
print(f"ffmpeg (b) pass 1 / pass 2 wall: {med('ffmpeg-b', 'pass1_wall_s'):.1f} s / {med('ffmpeg-b', 'pass2_wall_s'):.1f} s")
print(f"Lectern upload (curl -> 202): {med('lectern', 'upload_s'):.2f} s, probe step {med('lectern', 'probe_s'):.2f} s, "
      f"202 -> job succeeded {med('lectern', 'job_s'):.1f} s")
s, l = [r for r in rows if r["label"] == "short"][0], [r for r in rows if r["label"] == "long"][0]
print(f"\nLectern peak RSS (VmHWM): {short_m}-min {f(s, 'peak_rss_kb') / 1024:.1f} MiB, {long_m}-min {f(l, 'peak_rss_kb') / 1024:.1f} MiB "
      f"(idle server {f(s, 'idle_rss_kb') / 1024:.1f} MiB)")
print(f"Lectern {long_m}-min: 202 -> first playable segment {f(l, 'first_segment_s'):.1f} s; transcode step {f(l, 'transcode_s'):.1f} s; CPU {f(l, 'cpu_s'):.1f} s")
print("\nevery run (others' CPU = what the rest of the machine used meanwhile, in CPU-seconds):")
for r in rows:
    wall = r.get("transcode_s") or r.get("wall_s")
    print(f"  {r['tool']:13} {r['label']:5} round {r['round']}: wall {float(wall):7.1f} s, CPU {f(r, 'cpu_s'):7.1f} s, "
          f"others' CPU {f(r, 'others_cpu_s'):6.1f} s")
print("\nloudness reported by each tool (pre-AAC):")
for r in rows:
    if r.get("loudness") and r["label"] == "main" and r["round"] == "1":
        print(f"  {r['tool']:9} {r['loudness']}")
print("segments per run: " + ", ".join(f"{r['tool']}/{r['label']}={r['segments']}" for r in rows if r["round"] == "1" and r.get("segments")))
m = [r for r in rows if r["tool"] == "lectern" and r["label"] == "main"]
if m:
    print("Lectern /metrics (last main run): " + m[-1].get("metrics", "").replace(";", " "))
PY
} | tee "$MEDIA/transcode_vs_ffmpeg-last.txt"
