// Plays HLS streams to the end, one after the other, with hls.js in headless Chromium and prints one
// JSON line per stream: {"ended", "errors", "currentTime", "duration", "mseAac", "levels", "url"}.
// hls.js is given a buffer longer than the stream and playback starts once every segment has been
// loaded and appended (BUFFER_EOS): a fast playback rate then checks decoding to the very end
// without racing the loader (which, on a loaded machine, shows up as non-fatal buffer stalls).
// Every hls.js error event is reported (with the playhead and buffered ranges), fatal or not.
// Usage: node play.mjs MASTER_URL[,MASTER_URL...] [PLAYBACK_RATE] [TIMEOUT_MS (per stream)]
import { chromium } from 'playwright-core';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const [url, rateArg, timeoutArg] = process.argv.slice(2);
if (!url) {
  console.error('usage: node play.mjs MASTER_URL [PLAYBACK_RATE] [TIMEOUT_MS]');
  process.exit(2);
}
const rate = Number(rateArg ?? 8);
const timeout = Number(timeoutArg ?? 60000);
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
  ],
});
async function play(url) {
  const page = await browser.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.setContent('<!doctype html><html><body><audio id="a" muted></audio></body></html>');
  await page.addScriptTag({ path: require.resolve('hls.js/dist/hls.min.js') });
  const result = await page.evaluate(({ url, rate, timeout }) => new Promise((resolve) => {
    const audio = document.getElementById('a');
    const errors = [];
    const mseAac = window.MediaSource?.isTypeSupported('audio/mp4; codecs="mp4a.40.2"') ?? false;
    const done = (ended) => resolve({
      ended, errors, mseAac, currentTime: audio.currentTime, duration: audio.duration,
      levels: hls.levels.map((l) => ({ bitrate: l.bitrate, codecs: l.audioCodec || l.codecSet })),
    });
    // eslint-disable-next-line no-undef
    // hls.js keeps its default stall watchdog: every error event, fatal or not, fails the test.
    const hls = new Hls({ enableWorker: false, maxBufferLength: 3600, maxMaxBufferLength: 3600, maxBufferSize: 1 << 30 });
    const ranges = () => Array.from({ length: audio.buffered.length }, (_, i) => [audio.buffered.start(i), audio.buffered.end(i)]);
    hls.on(Hls.Events.ERROR, (_, d) => errors.push({
      type: d.type, details: d.details, fatal: d.fatal, at: audio.currentTime, buffered: ranges(),
    }));
    let started = false;
    hls.on(Hls.Events.BUFFER_EOS, () => {
      if (started) return;
      started = true;
      audio.playbackRate = rate;
      audio.play().catch((e) => errors.push({ type: 'play', details: String(e), fatal: true }));
    });
    audio.addEventListener('ended', () => done(true));
    audio.addEventListener('error', () => errors.push({ type: 'media', details: String(audio.error?.message), fatal: true }));
    setTimeout(() => done(false), timeout);
    hls.loadSource(url);
    hls.attachMedia(audio);
  }), { url, rate, timeout });
  result.pageErrors = pageErrors;
  result.url = url;
  console.log(JSON.stringify(result));
  await page.close();
}
try {
  for (const one of url.split(',')) await play(one);
} finally {
  await browser.close();
}
