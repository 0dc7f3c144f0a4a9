// `npm run bench:serve`: `rank1 serve` on the shipped toy base (models/toy, CPU) as a child process on
// 127.0.0.1, under load from this process. Two measurements (issue 20):
//
//   load  (default) requests/s and p50/p99 latency of whole chat completions (max_tokens 16, greedy) at 8 and
//         32 concurrent clients, each run bounded by time (--duration) and count (--max-requests): a closed
//         loop as autocannon runs one, every client sending its next request when its last one is answered.
//   stall (--stall) the largest gap between chunks of a live stream while large invalid requests arrive
//         (--big of them, --big-chars characters each, far past the toy's context of 1024 tokens): the event
//         loop is blocked for as long as one of them is tokenized in one go. With --context N the server runs
//         in this process with the toy's weights but a context of N tokens, as a real model's (Qwen2.5: 32 768)
//         is: then 1 MB is within the character bound, and the messages are counted in slices.
//
//   npm run bench:serve -- [--stall [--context N]] [--concurrency 8,32] [--duration 10] [--max-requests 2000] [--label TEXT] [--out FILE]
//
// The server and the load share this machine's cores (2 here, with other jobs): compare figures from one run.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command } from 'commander';
import { describeEnvironment, repoRoot } from './environment.ts';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { loadQwen2Checkpoint } from '../src/model/load.ts';
import { loadTokenizer } from '../src/model/tokenizer.ts';
import { loadChatTemplate } from '../src/model/chat-template.ts';
import { DecodeScheduler } from '../src/serve/scheduler.ts';
import { buildServer, closeGracefully } from '../src/serve/server.ts';

const program = new Command()
  .option('--stall', 'measure the stream\'s largest gap under large invalid requests instead of the load')
  .option('--concurrency <list>', 'concurrent clients, comma-separated', (v: string) => v.split(',').map(Number), [8, 32])
  .option('--duration <seconds>', 'length of each load run', Number, 10)
  .option('--max-requests <n>', 'requests per load run at most', Number, 2000)
  .option('--max-tokens <n>', 'max_tokens of each load request', Number, 16)
  .option('--big <n>', 'large invalid requests sent at once (stall)', Number, 4)
  .option('--big-chars <n>', 'characters in each large request\'s message (stall)', Number, 1_000_000)
  .option('--rounds <n>', 'rounds of large requests (stall)', Number, 3)
  .option('--context <n>', 'stall: serve in this process with this context length (tokens) instead of the toy\'s 1024', Number)
  .option('--label <text>', 'a note stored with the results (e.g. "before: tokenized on the loop")', '')
  .option('--out <file>', 'also write the results JSON here');
program.parse();
const options = program.opts<{ context?: number; stall?: boolean; concurrency: number[]; duration: number; maxRequests: number; maxTokens: number; big: number; bigChars: number; rounds: number; label: string; out?: string }>();

const toy = path.join(repoRoot, 'models/toy');
const QUESTION = 'What is the last digit of 7 * 8?';

/** `rank1 serve` as a child process; resolves with its base URL once it prints its address line. */
async function startServer(): Promise<{ child: ChildProcess; base: string }> {
  const args = [path.join(repoRoot, 'bin/rank1.js'), 'serve', '--model', toy, '--backend', 'cpu', '--host', '127.0.0.1', '--port', '0', '--max-queue', '256', '--body-limit', String(2 ** 23)];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const base = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /(http:\/\/127\.0\.0\.1:\d+)\/v1/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.on('exit', (code) => reject(new Error(`rank1 serve exited with ${code}`)));
  });
  return { child, base };
}

/** The server in this process, on the toy's weights with a context of `contextLength` tokens. */
async function startInProcess(contextLength: number): Promise<{ base: string; stop: () => Promise<void> }> {
  const { model } = await loadQwen2Checkpoint(toy, getCpuBackend());
  const tokenizer = (await loadTokenizer(toy))!;
  const scheduler = new DecodeScheduler(model, { maxQueue: 256 });
  const app = buildServer({ scheduler, tokenizer, chatTemplate: await loadChatTemplate(toy), modelId: 'toy', contextLength, bodyLimit: 2 ** 23 });
  const base = await app.listen({ port: 0, host: '127.0.0.1' });
  return { base, stop: async () => { await closeGracefully(app, scheduler, { timeoutMs: 1000 }); model.dispose(); } };
}

async function stopServer(child: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 10_000))]);
  if (child.exitCode === null) child.kill('SIGKILL');
}

const quantile = (sorted: readonly number[], q: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! : NaN);
const round = (x: number, digits = 1) => Number(x.toFixed(digits));

interface LoadResult { concurrency: number; seconds: number; completed: number; byStatus: Record<string, number>; requestsPerSecond: number; p50Ms: number; p99Ms: number; meanCompletionTokens: number }

/** A closed loop of `concurrency` clients until `durationMs` has passed or `maxRequests` were sent. */
async function runLoad(base: string, concurrency: number): Promise<LoadResult> {
  const body = JSON.stringify({ model: 'toy', messages: [{ role: 'user', content: QUESTION }], max_tokens: options.maxTokens, temperature: 0 });
  const latencies: number[] = [];
  const byStatus: Record<string, number> = {};
  let sent = 0;
  let completionTokens = 0;
  const start = performance.now();
  const end = start + options.duration * 1000;
  const client = async () => {
    while (performance.now() < end && sent < options.maxRequests) {
      sent++;
      const t0 = performance.now();
      try {
        const response = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(60_000) });
        const answer = await response.json() as { usage?: { completion_tokens: number } };
        byStatus[response.status] = (byStatus[response.status] ?? 0) + 1;
        if (response.status === 200) {
          latencies.push(performance.now() - t0);
          completionTokens += answer.usage?.completion_tokens ?? 0;
        }
      } catch (error) {
        byStatus[(error as Error).name] = (byStatus[(error as Error).name] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, client));
  const seconds = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    concurrency, seconds: round(seconds, 2), completed: latencies.length, byStatus,
    requestsPerSecond: round(latencies.length / seconds), p50Ms: round(quantile(latencies, 0.5)), p99Ms: round(quantile(latencies, 0.99)),
    meanCompletionTokens: round(completionTokens / Math.max(1, latencies.length)),
  };
}

/** Streams long answers back to back until stopped; records each chunk's arrival, per stream. */
function keepStreaming(base: string): { stop: () => Promise<void>; chunks: number[][] } {
  const chunks: number[][] = [];
  let stopped = false;
  // An answer the toy cannot end early: an array of at least 1000 digits, cut at max_tokens.
  const body = JSON.stringify({
    model: 'toy', messages: [{ role: 'user', content: QUESTION }], max_tokens: 900, temperature: 1, stream: true,
    response_format: { type: 'json_schema', json_schema: { name: 'digits', schema: { type: 'array', items: { type: 'integer', minimum: 0, maximum: 9 }, minItems: 1000 } } },
  });
  const loop = (async () => {
    while (!stopped) {
      const times: number[] = [];
      chunks.push(times);
      const response = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      const reader = response.body!.getReader();
      for (let part = await reader.read(); !part.done; part = await reader.read()) {
        times.push(performance.now());
        if (stopped) {
          await reader.cancel();
          break;
        }
      }
    }
  })();
  return { chunks, stop: async () => { stopped = true; await loop; } };
}

/** The largest gap between consecutive chunks of one stream, among chunks that arrived in [from, to]. */
function largestGap(chunks: readonly number[][], from: number, to: number): number {
  let largest = 0;
  for (const times of chunks) {
    for (let i = 1; i < times.length; i++) if (times[i]! >= from && times[i - 1]! <= to) largest = Math.max(largest, times[i]! - times[i - 1]!);
  }
  return largest;
}

async function runStall(base: string) {
  const streaming = keepStreaming(base);
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const quietFrom = performance.now();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const quietGapMs = largestGap(streaming.chunks, quietFrom, performance.now());
  const message = 'word '.repeat(Math.ceil(options.bigChars / 5)).slice(0, options.bigChars);
  const body = JSON.stringify({ model: 'toy', messages: [{ role: 'user', content: message }] });
  const rounds = [];
  for (let r = 0; r < options.rounds; r++) {
    const from = performance.now();
    const answers = await Promise.all(Array.from({ length: options.big }, async () => {
      const t0 = performance.now();
      const response = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      const answer = await response.json() as { error?: { code: string | null } };
      return { status: response.status, code: answer.error?.code ?? null, ms: performance.now() - t0 };
    }));
    await new Promise((resolve) => setTimeout(resolve, 300));
    rounds.push({
      largestGapMs: round(largestGap(streaming.chunks, from, performance.now())),
      answers: answers.map((a) => ({ status: a.status, code: a.code, ms: round(a.ms) })),
    });
  }
  await streaming.stop();
  return { quietLargestGapMs: round(quietGapMs), big: options.big, bigChars: options.bigChars, rounds, largestGapMs: Math.max(...rounds.map((r) => r.largestGapMs)) };
}

const server = options.context ? await startInProcess(options.context) : await startServer();
const { base } = server;
let results: object;
try {
  if (options.stall) {
    const where = options.context ? `toy weights with a context of ${options.context} tokens, in this process` : 'toy, child process';
    results = { bench: `rank1 serve: largest gap between chunks of a live stream while large invalid requests arrive (${where}, CPU)`, context: options.context ?? 1024, ...(await runStall(base)) };
  } else {
    const runs: LoadResult[] = [];
    await runLoad(base, 2); // warm-up: the first requests compile and fill caches
    for (const concurrency of options.concurrency) runs.push(await runLoad(base, concurrency));
    results = { bench: 'rank1 serve: whole chat completions under a closed-loop load (toy, CPU, greedy)', maxTokens: options.maxTokens, durationSeconds: options.duration, maxRequests: options.maxRequests, runs };
  }
} finally {
  await ('child' in server ? stopServer(server.child) : server.stop());
}
const record = {
  ...results, label: options.label, date: new Date().toISOString(),
  environment: describeEnvironment({ reason: 'not probed (CPU backend)' }),
  note: 'server and load generator share a 2-core machine with other jobs: compare numbers from the same run',
};
console.log(JSON.stringify(record, null, 2));
if (options.out) fs.writeFileSync(options.out, JSON.stringify(record, null, 2) + '\n');
