// BullMQ + Redis counterpart of `benches/pipeline.rs`: durable no-op 3-step jobs (a → b → c), each
// step storing a tiny output file atomically (temp file, fsync, rename, fsync directory), with the
// chain kept in Redis.
//
// A job is one BullMQ flow (FlowProducer): `c` is the parent of `b`, `b` the parent of `a`. BullMQ
// runs children before parents, so `a` runs first, `b` is moved to `wait` only after `a` completed,
// and `c` only after `b` completed. The three jobs are written to Redis in one MULTI/EXEC when the
// flow is added, so the whole chain is durable from the moment `add()` returns, like Lectern's
// enqueue.
//
// Queue layout (BULLMQ_LAYOUT):
// - `per-step` (default): queues `a`, `b`, `c`, one Worker per queue with `concurrency = WORKERS`
//   (3 × WORKERS steps may run at once);
// - `shared`: the three steps of a flow all go to one queue `noop`, served by one Worker with
//   `concurrency = WORKERS`, the processor dispatching on the job name. This is the shape of the
//   Lectern bench, whose three steps share one stage `noop` with WORKERS workers.
//
// Two measurements, printed as `key=value` lines with the same keys as the Lectern bench:
// - throughput: JOBS flows added one at a time (awaiting each `add()`), time until every step `c`
//   has completed (jobs/s, steps/s), and the enqueue rate;
// - latency: flows added one at a time at RATE/s, `add()` call → step `a` processor start,
//   p50/p99/max.
//
// Knobs (environment, shared with the Lectern bench): LECTERN_BENCH_JOBS (2000), LECTERN_BENCH_RATE
// (100), LECTERN_BENCH_LAT_JOBS (500), LECTERN_BENCH_WORKERS (2), LECTERN_BENCH_DIR (where step
// outputs go; default the OS temp dir). Redis: REDIS_HOST (127.0.0.1), REDIS_PORT (6379).
// Completed jobs are kept (BullMQ's default), as Lectern keeps its succeeded jobs in the journal.
//
// Run: `node bench.mjs` (smoke size: `node bench.mjs --smoke`).

import { createHash, randomUUID } from 'node:crypto';
import { access, mkdtemp, mkdir, open, rename, rm, unlink } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { FlowProducer, Worker } from 'bullmq';
import IORedis from 'ioredis';

const here = dirname(fileURLToPath(import.meta.url));

function knob(name, dflt) {
  const v = Number.parseInt(process.env[name] ?? '', 10);
  return Number.isFinite(v) ? v : dflt;
}

const smoke = process.argv.includes('--smoke');
const WORKERS = knob('LECTERN_BENCH_WORKERS', 2);
const JOBS = smoke ? 20 : knob('LECTERN_BENCH_JOBS', 2000);
const LAT_JOBS = smoke ? 20 : knob('LECTERN_BENCH_LAT_JOBS', 500);
const RATE = knob('LECTERN_BENCH_RATE', 100);
const LAYOUT = process.env.BULLMQ_LAYOUT ?? 'per-step';
if (!['per-step', 'shared'].includes(LAYOUT)) throw new Error(`BULLMQ_LAYOUT must be per-step or shared, not ${LAYOUT}`);
const QUEUE = LAYOUT === 'shared' ? { a: 'noop', b: 'noop', c: 'noop' } : { a: 'a', b: 'b', c: 'c' };
const connection = {
  host: process.env.REDIS_HOST ?? '127.0.0.1',
  port: knob('REDIS_PORT', 6379),
  maxRetriesPerRequest: null, // required by BullMQ for Worker connections
};

// Same side effect as Lectern's LocalFs::put: mkdir -p, temp file, write, fsync, rename, fsync dir.
async function putBlob(root, key, bytes) {
  const path = join(root, key);
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.out.json.tmp-${randomUUID().replaceAll('-', '')}`);
  try {
    const f = await open(tmp, 'w');
    try {
      await f.writeFile(bytes);
      await f.sync();
    } finally {
      await f.close();
    }
    await rename(tmp, path);
    const d = await open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch (e) {
    await unlink(tmp).catch(() => {});
    throw e;
  }
  return { key, sha256: createHash('sha256').update(bytes).digest('hex'), size: bytes.length };
}

const BODY = Buffer.from('{}');

async function start(label) {
  const base = process.env.LECTERN_BENCH_DIR ?? tmpdir();
  const root = await mkdtemp(join(base, 'bullmq-bench-'));
  // A fresh key prefix per measurement, like Lectern's fresh journal per measurement.
  const prefix = `bench-${process.pid}-${label}`;
  const starts = new Map();
  let done = 0;
  let waiter = null;
  const processor = async (job) => {
    if (job.name === 'a') starts.set(job.data.id, performance.now());
    if (smoke && job.name !== 'a') {
      // Sanity check of the chain: the previous step's output is there before this step starts.
      const prev = job.name === 'b' ? 'a' : 'b';
      await access(join(root, `jobs/${job.data.id}/${prev}/out.json`));
    }
    return putBlob(root, `jobs/${job.data.id}/${job.name}/out.json`, BODY);
  };
  const queues = [...new Set(Object.values(QUEUE))];
  const workers = queues.map((q) => new Worker(q, processor, { connection, prefix, concurrency: WORKERS }));
  for (const w of workers) {
    w.on('failed', (job, err) => {
      console.error(`step ${job?.name} of ${job?.data?.id} failed: ${err?.stack ?? err}`);
      process.exitCode = 1;
    });
    w.on('error', (err) => console.error(`worker error: ${err?.stack ?? err}`));
  }
  // A job is done when its last step's completion has been committed to Redis: the `completed`
  // event fires after the worker's moveToFinished script returned.
  for (const w of workers) {
    w.on('completed', (job) => {
      if (job.name !== 'c') return;
      done += 1;
      if (waiter && done >= waiter.n) waiter.resolve();
    });
  }
  const flows = new FlowProducer({ connection, prefix });
  await Promise.all([...workers.map((w) => w.waitUntilReady()), flows.waitUntilReady()]);
  return {
    starts,
    add(id) {
      return flows.add({
        name: 'c',
        queueName: QUEUE.c,
        data: { id },
        children: [
          { name: 'b', queueName: QUEUE.b, data: { id }, children: [{ name: 'a', queueName: QUEUE.a, data: { id } }] },
        ],
      });
    },
    waitAll(n) {
      if (done >= n) return Promise.resolve();
      return new Promise((resolve) => {
        waiter = { n, resolve };
      });
    },
    async close() {
      await Promise.all([...workers.map((w) => w.close()), flows.close()]);
      await rm(root, { recursive: true, force: true });
    },
  };
}

function percentile(sorted, p) {
  return sorted[Math.round((sorted.length - 1) * p)];
}

async function throughput(jobs, workers) {
  const b = await start('tp');
  const t0 = performance.now();
  for (let i = 0; i < jobs; i++) {
    await b.add(randomUUID());
  }
  const enqueuedAt = performance.now();
  await b.waitAll(jobs);
  const total = (performance.now() - t0) / 1e3;
  const enq = (enqueuedAt - t0) / 1e3;
  console.log(`throughput.jobs=${jobs}`);
  console.log(`throughput.workers=${workers}`);
  console.log(`throughput.layout=${LAYOUT}`);
  console.log(`throughput.enqueue_per_s=${(jobs / enq).toFixed(0)}`);
  console.log(`throughput.jobs_per_s=${(jobs / total).toFixed(1)}`);
  console.log(`throughput.steps_per_s=${((3 * jobs) / total).toFixed(1)}`);
  await b.close();
}

async function latency(jobs, rate, workers) {
  const b = await start('lat');
  const gap = 1e3 / rate;
  const enqueued = [];
  const t0 = performance.now();
  for (let i = 0; i < jobs; i++) {
    const wait = t0 + gap * i - performance.now();
    if (wait > 0) await sleep(wait);
    const id = randomUUID();
    const at = performance.now();
    await b.add(id);
    enqueued.push([id, at]);
  }
  await b.waitAll(jobs);
  const ms = enqueued.map(([id, at]) => b.starts.get(id) - at).sort((x, y) => x - y);
  console.log(`latency.jobs=${jobs}`);
  console.log(`latency.rate_per_s=${rate}`);
  console.log(`latency.enqueue_to_start_ms.p50=${percentile(ms, 0.5).toFixed(2)}`);
  console.log(`latency.enqueue_to_start_ms.p99=${percentile(ms, 0.99).toFixed(2)}`);
  console.log(`latency.enqueue_to_start_ms.max=${ms[ms.length - 1].toFixed(2)}`);
  await b.close();
}

async function main() {
  const bullmqVersion = JSON.parse(readFileSync(join(here, 'node_modules/bullmq/package.json'), 'utf8')).version;
  const redis = new IORedis(connection);
  const info = await redis.info('server');
  const redisVersion = /redis_version:(\S+)/.exec(info)?.[1];
  const [, aof] = await redis.config('GET', 'appendonly');
  const [, fsync] = await redis.config('GET', 'appendfsync');
  console.log(`bullmq.version=${bullmqVersion}`);
  console.log(`node.version=${process.versions.node}`);
  console.log(`redis.version=${redisVersion}`);
  console.log(`redis.appendonly=${aof}`);
  console.log(`redis.appendfsync=${fsync}`);
  const redisCpu = async () => {
    const cpu = await redis.info('cpu');
    return Number(/used_cpu_user:([\d.]+)/.exec(cpu)?.[1] ?? 0) + Number(/used_cpu_sys:([\d.]+)/.exec(cpu)?.[1] ?? 0);
  };
  const redisCpu0 = await redisCpu();
  await throughput(JOBS, WORKERS);
  await latency(LAT_JOBS, RATE, WORKERS);
  const redisCpuS = (await redisCpu()) - redisCpu0;
  const mem = await redis.info('memory');
  const peak = Number(/used_memory_peak:(\d+)/.exec(mem)?.[1] ?? 0);
  const rss = Number(/used_memory_rss:(\d+)/.exec(mem)?.[1] ?? 0);
  await redis.quit();
  // ru_maxrss is in KiB on Linux, like VmHWM.
  const { user, system } = process.cpuUsage();
  console.log(`peak_rss_kib=${process.resourceUsage().maxRSS}`);
  // CPU time over the whole run (both measurements): this process, and the Redis server.
  console.log(`cpu.user_s=${(user / 1e6).toFixed(3)}`);
  console.log(`cpu.sys_s=${(system / 1e6).toFixed(3)}`);
  console.log(`redis.cpu_s=${redisCpuS.toFixed(3)}`);
  console.log(`redis.used_memory_peak_kib=${Math.round(peak / 1024)}`);
  console.log(`redis.used_memory_rss_kib=${Math.round(rss / 1024)}`);
}

main().catch((e) => {
  console.error(e?.stack ?? e);
  process.exit(1);
});
