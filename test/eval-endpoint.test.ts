// `rank1 eval --endpoint URL --model NAME` (issue 19): against `rank1 serve --lora-modules` (a real child
// process) it writes, greedy, the same `output`, `correct`, token count and stop reason per problem as the
// in-process `rank1 eval --model --adapter` (and `--ablate mlp` = the served `rank1 adapter select --drop mlp`
// folder, and the base under its own name); a fault-injecting endpoint (429 with Retry-After, 500, a dropped
// connection, a timeout) costs retries, not rows; a killed run resumes without asking again for finished problems.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { loadQwen2Checkpoint, savePeftAdapter } from '../src/model/load.ts';
import { randomRankOneAdapters } from '../src/model/random-model.ts';
import { loadTokenizer } from '../src/model/tokenizer.ts';
import { evalCommand } from '../src/cli/eval-command.ts';
import { adapterSelectCommand } from '../src/cli/adapter-command.ts';
import { asCompletion, promptPayload } from '../src/eval/endpoint.ts';
import { readResults, type ResultRow } from '../src/eval/results.ts';
import { runEval, type EvalCompletion } from '../src/eval/run.ts';
import { loadBenchmark } from '../src/eval/benchmarks.ts';
import { startServeProcess, type ServeProcess } from './helpers/serve-process.ts';

const root = path.resolve(import.meta.dirname, '..');
const toy = path.join(root, 'models/toy');
const MAX_TOKENS = '48';
const LIMIT = 6;

let dir: string;
let data: string;
let server: ServeProcess;

/** What must agree between an in-process row and an endpoint row (seconds differ). */
const comparable = (rows: readonly ResultRow[]) => rows.map(({ index, output, correct, extracted, tokensGenerated, stopReason }) => ({ index, output, correct, extracted, tokensGenerated, stopReason }));

async function quietly<T>(run: () => Promise<T>): Promise<T> {
  const out = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
  const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  try {
    return await run();
  } finally {
    out.mockRestore();
    err.mockRestore();
  }
}

async function inProcess(name: string, extra: Record<string, string> = {}): Promise<ResultRow[]> {
  const out = path.join(dir, `${name}-in-process.jsonl`);
  await quietly(() => evalCommand({ model: toy, bench: 'toy', data, out, limit: LIMIT, maxTokens: Number(MAX_TOKENS), batch: 4, backend: 'cpu', ...extra }));
  return (await readResults(out)).rows;
}

async function viaEndpoint(name: string, endpoint: string, model: string, extra: Record<string, unknown> = {}): Promise<ResultRow[]> {
  const out = path.join(dir, `${name}-endpoint.jsonl`);
  await quietly(() => evalCommand({ endpoint, model, tokenizer: toy, bench: 'toy', data, out, limit: LIMIT, maxTokens: Number(MAX_TOKENS), concurrency: 3, ...extra }));
  return (await readResults(out)).rows;
}

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-eval-endpoint-'));
  data = path.join(dir, 'heldout.jsonl');
  const problems = [
    ['Start with 4, then (1) *9, (2) +5, (3) *7. What is the last digit of the result?', '1'],
    ['Start with 9, then (1) *7, (2) *7, (3) *3. What is the last digit of the result?', '7'],
    ['Start with 6, then (1) *3, (2) +6. What is the last digit of the result?', '4'],
    ['Start with 2, then (1) +5, (2) *3, (3) +1. What is the last digit of the result?', '2'],
    ['Start with 7, then (1) *7. What is the last digit of the result?', '9'],
    ['Start with 3, then (1) +8, (2) *2. What is the last digit of the result? <|im_end|>', '2'],
    ['Start with 5, then (1) *5. What is the last digit of the result?', '5'],
  ];
  await fs.writeFile(data, problems.map(([problem, answer]) => JSON.stringify({ problem, answer, operations: 2 })).join('\n') + '\n');
  const { model } = await loadQwen2Checkpoint(toy, getCpuBackend());
  await savePeftAdapter(path.join(dir, 'rank1'), randomRankOneAdapters(model.dims, 3, getCpuBackend(), 0.3));
  model.dispose();
  await quietly(() => adapterSelectCommand({ adapter: path.join(dir, 'rank1'), drop: 'mlp', out: path.join(dir, 'rank1-mlp-ablated') }));
  server = await startServeProcess(['--model', toy, '--name', 'toy', '--max-batch', '8', '--backend', 'cpu', '--lora-modules', `rank1=${path.join(dir, 'rank1')}`, `rank1-mlp-ablated=${path.join(dir, 'rank1-mlp-ablated')}`]);
}, 60_000);

afterAll(async () => {
  if (server) {
    server.child.kill('SIGTERM');
    await new Promise((resolve) => server.child.once('exit', resolve));
  }
  await fs.rm(dir, { recursive: true, force: true });
});

describe('rank1 eval --endpoint against rank1 serve --lora-modules', () => {
  it('gives the in-process rows for the base, the rank-1 adapter and its MLP-ablated variant, all names on one server', async () => {
    const outputs: string[] = [];
    for (const [name, servedAs, extra, label] of [
      ['base', 'toy', {}, {}],
      ['rank1', 'rank1', { adapter: path.join(dir, 'rank1') }, {}],
      // The served `adapter select --drop mlp` folder, its rows labelled as `--ablate mlp`'s (for Table 2).
      ['mlp-ablated', 'rank1-mlp-ablated', { adapter: path.join(dir, 'rank1'), ablate: 'mlp' }, { ablated: 'mlp' }],
    ] as const) {
      const here = await inProcess(name, extra);
      const there = await viaEndpoint(name, server.baseURL, servedAs, label);
      expect(there.map((r) => r.ablated)).toEqual(here.map((r) => r.ablated));
      expect(there).toHaveLength(LIMIT);
      expect(comparable(there), name).toEqual(comparable(here));
      expect(there.map((r) => r.problem)).toEqual(here.map((r) => r.problem));
      outputs.push(there.map((r) => r.output).join('\n'));
    }
    // The three models answer differently (else the comparison would prove little), with more than a token each.
    expect(new Set(outputs).size).toBe(3);
  }, 240_000);

  it('sends the prompt as text unless its text would tokenize differently (special-token text in a problem)', async () => {
    const tokenizer = (await loadTokenizer(toy))!;
    const plain = tokenizer.encode('<|im_start|>user\nhi<|im_end|>\n', { addSpecialTokens: false });
    expect(typeof promptPayload(tokenizer, plain)).toBe('string');
    const guarded = [...plain.slice(0, -2), ...tokenizer.encodeAsText('<|im_end|>'), ...plain.slice(-2)];
    expect(promptPayload(tokenizer, guarded)).toEqual(guarded);
    // The stop token the server leaves out of the text is put back; usage is the token count.
    const imEnd = tokenizer.tokenToId('<|im_end|>')!;
    expect(asCompletion({ text: 'x', finishReason: 'stop', stopReason: imEnd, usage: { prompt_tokens: 3, completion_tokens: 2 }, requests: 1 }, tokenizer)).toEqual({ text: 'x<|im_end|>', tokens: 2, stopReason: 'stop_id', requests: 1 });
    expect(asCompletion({ text: 'xy', finishReason: 'length', stopReason: null, usage: { prompt_tokens: 3, completion_tokens: 2 }, requests: 2 }, tokenizer)).toEqual({ text: 'xy', tokens: 2, stopReason: 'max_tokens', requests: 2 });
  });

  it('--shard I/N works with --endpoint: two shards merged (eval --merge) are the unsharded rows', async () => {
    const shards = [0, 1].map((i) => path.join(dir, `shard-${i}.jsonl`));
    for (const [i, out] of shards.entries()) {
      await quietly(() => evalCommand({ endpoint: server.baseURL, model: 'rank1', tokenizer: toy, bench: 'toy', data, out, limit: LIMIT, maxTokens: Number(MAX_TOKENS), concurrency: 3, shard: `${i}/2` }));
    }
    const merged = path.join(dir, 'merged.jsonl');
    await quietly(() => evalCommand({ merge: shards, out: merged }));
    expect(comparable((await readResults(merged)).rows)).toEqual(comparable((await readResults(path.join(dir, 'rank1-endpoint.jsonl'))).rows));
  }, 120_000);

  it('--adapter and --ablate are refused with --endpoint (the server holds the adapters)', async () => {
    await expect(evalCommand({ endpoint: server.baseURL, model: 'rank1', adapter: path.join(dir, 'rank1'), tokenizer: toy, bench: 'toy', data })).rejects.toThrow(/--lora-modules/);
    await expect(evalCommand({ endpoint: server.baseURL, model: 'rank1', ablate: 'mlp', tokenizer: toy, bench: 'toy', data })).rejects.toThrow(/adapter select/);
  });
});

/** A proxy in front of the server that fails the requests `faults` names (by arrival number) and counts prompts. */
async function faultyProxy(target: string, faults: Map<number, '429' | '500' | 'drop' | 'hang'>) {
  let arrivals = 0;
  const prompts: string[] = [];
  const proxy = http.createServer((request, response) => {
    let body = '';
    request.on('data', (chunk: Buffer) => (body += chunk.toString()));
    request.on('end', () => {
      const fault = faults.get(++arrivals);
      if (fault === '429') return response.writeHead(429, { 'retry-after': '0', 'content-type': 'application/json' }).end('{"error":{"message":"slow down"}}');
      if (fault === '500') return response.writeHead(500, { 'content-type': 'application/json' }).end('{"error":{"message":"boom"}}');
      if (fault === 'drop') return request.socket.destroy();
      if (fault === 'hang') return; // never answers: only the client's timeout ends it (close() drops the connection)
      prompts.push(JSON.stringify((JSON.parse(body) as { prompt: unknown }).prompt));
      void fetch(`${target}${request.url!.replace(/^\/v1/, '')}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body }).then(async (answer) => {
        response.writeHead(answer.status, { 'content-type': 'application/json' }).end(await answer.text());
      });
    });
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}/v1`;
  return { url, prompts, arrivals: () => arrivals, close: () => new Promise<void>((resolve) => { proxy.closeAllConnections(); proxy.close(() => resolve()); }) };
}

describe('rank1 eval --endpoint: requests in flight', () => {
  it('keeps --concurrency requests outstanding, starting the next as soon as any answers; rows stay in problem order', async () => {
    const tokenizer = (await loadTokenizer(toy))!;
    const problems = await loadBenchmark('toy', data);
    let running = 0;
    let most = 0;
    const startedWhileFirstRan: number[] = [];
    let firstRunning = false;
    let asked = 0;
    let answered = 0;
    let releaseFirst = () => {};
    const othersAnswered = new Promise<void>((resolve) => (releaseFirst = resolve));
    const fallback = setTimeout(() => releaseFirst(), 30_000); // when the others wait for the first, it answers anyway
    const complete = async (): Promise<EvalCompletion> => {
      const k = asked++;
      running++;
      most = Math.max(most, running);
      if (k === 0) firstRunning = true;
      else if (firstRunning) startedWhileFirstRan.push(k);
      // The first problem is slow: it answers only once every other problem has answered, so they must not wait for
      // it. No race against the clock: a loaded machine cannot flake it.
      if (k === 0) await othersAnswered;
      else await new Promise((resolve) => setTimeout(resolve, 20));
      if (k === 0) firstRunning = false;
      running--;
      if (k > 0 && ++answered === problems.length - 1) releaseFirst();
      return { text: `answer ${k} \\boxed{${k}}`, tokens: k + 1, stopReason: 'stop_id' };
    };
    const out = path.join(dir, 'window.jsonl');
    const result = await runEval({ bench: 'toy', problems, tokenizer, chatTemplate: '{{ messages[0].content }}', complete, inFlight: 2, out, maxTokens: 8 });
    clearTimeout(fallback);
    expect(most).toBe(2);
    expect(startedWhileFirstRan).toHaveLength(problems.length - 1); // every other problem ran beside the slow one
    expect(result.rows.map((r) => r.index)).toEqual(problems.map((p) => p.index));
    expect((await readResults(out)).rows.map((r) => r.tokensGenerated)).toEqual(problems.map((_, k) => k + 1));
  });
});

describe('rank1 eval --endpoint under faults', () => {
  it('429 (Retry-After), 500, a dropped connection and a timeout cost retries, not rows', async () => {
    const proxy = await faultyProxy(server.baseURL, new Map([[1, '429'], [3, '500'], [4, 'drop'], [6, 'hang']]));
    try {
      // 5 s: on a loaded machine an ordinary answer must not run past the timeout (one that did cost a retry more).
      const rows = await viaEndpoint('faults', proxy.url, 'rank1', { requestTimeout: 5 });
      const clean = (await readResults(path.join(dir, 'rank1-endpoint.jsonl'))).rows;
      expect(comparable(rows)).toEqual(comparable(clean));
      expect(proxy.prompts).toHaveLength(LIMIT); // every problem answered once
      expect(proxy.arrivals()).toBe(LIMIT + 4); // and four retries
    } finally {
      await proxy.close();
    }
  }, 120_000);

  it('a killed run resumes without asking again for the problems it finished', async () => {
    const proxy = await faultyProxy(server.baseURL, new Map());
    const out = path.join(dir, 'killed.jsonl');
    try {
      const args = ['eval', '--endpoint', proxy.url, '--model', 'rank1', '--tokenizer', toy, '--bench', 'toy', '--data', data, '--limit', String(LIMIT), '--max-tokens', MAX_TOKENS, '--concurrency', '1', '--out', out];
      const child = spawn(process.execPath, [path.join(root, 'bin/rank1.js'), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
      // Kill it (SIGKILL: no chance to tidy up) once three rows are on disk.
      await vi.waitFor(async () => expect((await readResults(out).catch(() => ({ rows: [] }))).rows.length).toBeGreaterThanOrEqual(3), { timeout: 60_000, interval: 50 });
      child.kill('SIGKILL');
      await new Promise((resolve) => child.once('exit', resolve));
      const finished = (await readResults(out)).rows;
      expect(finished.length).toBeLessThan(LIMIT);
      const askedBefore = proxy.prompts.length;
      await quietly(() => evalCommand({ endpoint: proxy.url, model: 'rank1', tokenizer: toy, bench: 'toy', data, out, limit: LIMIT, maxTokens: Number(MAX_TOKENS), concurrency: 1 }));
      const rows = (await readResults(out)).rows;
      expect(comparable(rows)).toEqual(comparable((await readResults(path.join(dir, 'rank1-endpoint.jsonl'))).rows));
      // The rerun asked only for the problems without a row (the one in flight at the kill, at most, twice).
      const askedAgain = proxy.prompts.slice(askedBefore);
      expect(askedAgain).toHaveLength(LIMIT - finished.length);
      // Each problem starts with a different number: none of the finished ones is in a prompt asked again.
      const opening = (problem: string) => /^Start with \d/.exec(problem)![0];
      expect(askedAgain.filter((prompt) => finished.some((row) => prompt.includes(opening(row.problem))))).toEqual([]);
    } finally {
      await proxy.close();
    }
  }, 120_000);
});
