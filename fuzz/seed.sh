#!/usr/bin/env bash
# Writes the starting corpus (committed; re-run only to refresh it): tiny complete files of every
# upload format (0.3 s, made by ffmpeg from a sox tone), heads of the generated fixtures, and the
# bad-input corpus, for `sniff` and `decode`; text seeds for `http_inputs`; audio-shaped bytes for
# `packager`. Needs the fixtures (bash fixtures/generate.sh).
set -euo pipefail
cd "$(dirname "$0")"
fx=../fixtures/generated
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ff() { ffmpeg -nostdin -hide_banner -loglevel error -y "$@"; }
sox -n -r 48000 -c 2 -b 16 "$tmp/tone.wav" synth 0.3 sine 440 vol -12dB
ff -i "$tmp/tone.wav" -c:a libmp3lame -b:a 32k "$tmp/tiny.mp3"
ff -i "$tmp/tone.wav" -c:a aac -b:a 32k "$tmp/tiny.m4a"
ff -i "$tmp/tone.wav" -c:a aac -b:a 32k -movflags +faststart "$tmp/tiny-faststart.m4a"
ff -i "$tmp/tone.wav" -c:a flac "$tmp/tiny.flac"
ff -i "$tmp/tone.wav" -c:a libvorbis "$tmp/tiny-vorbis.ogg"
ff -i "$tmp/tone.wav" -c:a libopus -b:a 24k "$tmp/tiny-opus.ogg"
ff -i "$tmp/tone.wav" -c:a libopus -b:a 24k "$tmp/tiny.webm"
ff -i "$tmp/tone.wav" -c:a aac -b:a 32k "$tmp/tiny.mkv"
ff -i "$tmp/tone.wav" -c:a pcm_s16be "$tmp/tiny.aiff"
ff -i "$tmp/tone.wav" -ar 8000 -ac 1 "$tmp/tiny-8k.wav"
for t in sniff decode; do
  mkdir -p "corpus/$t"
  for f in "$tmp"/tiny* ; do cp "$f" "corpus/$t/$(basename "$f")"; done
  for f in "$fx"/bad/*; do [ "$(stat -c %s "$f")" -le 65536 ] && cp "$f" "corpus/$t/bad-$(basename "$f")"; done
done
for f in "$fx"/formats/*.*; do head -c 8192 "$f" > "corpus/sniff/head-$(basename "$f")"; done
mkdir -p corpus/http_inputs corpus/packager
printf 'filename c2VybW9uLm1wMw==,title U3VuZGF5,callback_url aHR0cHM6Ly9leGFtcGxlLm9yZy9ob29r' > corpus/http_inputs/tus-metadata
printf 'title=Sunday%%20%%E2%%80%%94%%20grace&callback_url=https%%3A%%2F%%2Fexample.org' > corpus/http_inputs/query
printf 'a64/seg-00042.m4s' > corpus/http_inputs/hls-path
printf 'media/med_0192f0a1b2c3d4e5f60718293a4b5c6d/source' > corpus/http_inputs/blob-key
printf 'Sunday \xe2\x80\x94 grace' > corpus/http_inputs/title
head -c 4096 "$tmp/tone.wav" | tail -c 4000 > corpus/packager/tone-pcm
printf '\x06\x01\x03' | cat - <(head -c 20000 /dev/urandom) > corpus/packager/random-48k-stereo
echo "corpus: $(find corpus -type f | wc -l) files, $(du -sh corpus | cut -f1)"
