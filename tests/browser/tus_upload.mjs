// Uploads a file with tus-js-client (the reference tus client) and prints one JSON line.
// Usage: node tus_upload.mjs FILE ENDPOINT [--stop-after BYTES] [--resume UPLOAD_URL]
//   --stop-after: abort once at least BYTES were acknowledged (prints {"url", "acked"});
//   --resume: continue that upload from the offset the server reports (prints {"url", "done"}).
import fs from 'node:fs';
import path from 'node:path';
import * as tus from 'tus-js-client';

const [file, endpoint, ...rest] = process.argv.slice(2);
const opt = (name) => { const i = rest.indexOf(name); return i >= 0 ? rest[i + 1] : undefined; };
const stopAfter = opt('--stop-after') ? Number(opt('--stop-after')) : undefined;
const resume = opt('--resume');
const data = fs.readFileSync(file);

const upload = new tus.Upload(data, {
  endpoint,
  uploadUrl: resume,
  chunkSize: 64 * 1024,
  retryDelays: [0, 200, 500],
  metadata: { filename: path.basename(file), filetype: 'application/octet-stream', title: 'tus upload' },
  onError: (e) => { console.log(JSON.stringify({ error: String(e) })); process.exit(1); },
  onChunkComplete: (_chunk, acked) => {
    if (stopAfter !== undefined && acked >= stopAfter) {
      upload.abort(false).then(() => { console.log(JSON.stringify({ url: upload.url, acked })); process.exit(0); });
    }
  },
  onSuccess: () => { console.log(JSON.stringify({ url: upload.url, done: true })); },
});
upload.start();
