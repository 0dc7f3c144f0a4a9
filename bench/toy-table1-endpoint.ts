// Table 1 (and Table 2) at toy scale with generation on a serving engine — `rank1 serve --lora-modules` —
// compared row for row with the in-process `rank1 eval` (issue 19's "Done when"). From a finished
// `npm run toy:table1` folder (its world, rank-1 adapter and full finetune):
//   1. `rank1 adapter select --drop mlp|attention` writes the ablated variants as PEFT folders;
//   2. one `rank1 serve --model BASE --lora-modules rank1=… mlp_ablated=… attn_ablated=…` serves the base and
//      the three adapters by name (a second one serves the full finetune, a model of its own);
//   3. `rank1 eval --endpoint URL --model NAME` for each of the five, and the in-process `rank1 eval` for each;
//   4. `rank1 eval --compare` on both sets; every row's output and correct must agree, and the tables be equal.
// The record goes to bench/results/<date>-toy-table1-endpoint.json.
//
//   npm run toy:table1:endpoint -- --run runs/toy-table1 [--lora-lr 1e-3] [--full-lr 3e-4] [--limit N] [--batch 64]
import { spawn } from 'node:child_process';
import * as fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { repoRoot } from './environment.ts';
import { rank1Step, type StepTiming } from './toy-steps.ts';

const { values: args } = parseArgs({
  options: {
    run: { type: 'string', default: 'runs/toy-table1' },
    model: { type: 'string', default: path.join(repoRoot, 'models/toy') },
    'lora-lr': { type: 'string', default: '1e-3' },
    'full-lr': { type: 'string', default: '3e-4' },
    out: { type: 'string', default: 'runs/toy-table1-endpoint' },
    batch: { type: 'string', default: '64' },
    limit: { type: 'string' },
    'no-record': { type: 'boolean', default: false },
    /** The record's file (default bench/results/<date>-toy-table1-endpoint.json). */
    record: { type: 'string' },
  },
});

const run = path.resolve(args.run!);
const out = path.resolve(args.out!);
const base = path.resolve(args.model!);
const adapter = path.join(run, `lora-lr${args['lora-lr']}`);
const full = path.join(run, `full-lr${args['full-lr']}`);
const heldout = path.join(run, 'world/heldout.jsonl');
const timings: StepTiming[] = [];
const step = (name: string, argv: string[], capture = false) => rank1Step(timings, name, argv, capture ? 'quiet' : undefined);
await fs.rm(out, { recursive: true, force: true });
await fs.mkdir(out, { recursive: true });

const ablated = { mlp: path.join(out, 'rank1-mlp-ablated'), attention: path.join(out, 'rank1-attention-ablated') };
for (const [group, dir] of Object.entries(ablated)) await step(`adapter select --drop ${group}`, ['adapter', 'select', '--adapter', adapter, '--drop', group, '--out', dir]);

/** `rank1 serve` in the background on a free port; resolves with its /v1 URL and a stop function. */
async function serve(name: string, argv: string[]): Promise<{ url: string; stop: () => Promise<void>; command: string }> {
  const command = `rank1 serve ${argv.join(' ')}`;
  process.stderr.write(`\n$ ${command} &\n`);
  const child = spawn(process.execPath, [path.join(repoRoot, 'bin/rank1.js'), 'serve', '--port', '0', ...argv], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    let text = '';
    child.stdout.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      const m = /(http:\/\/127\.0\.0\.1:\d+\/v1)/.exec(text);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`${name}: rank1 serve exited with ${code}`)));
  });
  return { url, command, stop: () => new Promise((resolve) => { child.once('exit', () => resolve()); child.kill('SIGTERM'); }) };
}

const common = ['--bench', 'toy', '--data', heldout, ...(args.limit ? ['--limit', args.limit] : [])];
const served = await serve('base + adapters', ['--model', base, '--name', 'toy', '--max-batch', args.batch!, '--max-queue', '1024', '--backend', 'cpu',
  '--lora-modules', `rank1=${adapter}`, `mlp_ablated=${ablated.mlp}`, `attn_ablated=${ablated.attention}`]);
const servedFull = await serve('full finetune', ['--model', full, '--name', 'full', '--max-batch', args.batch!, '--max-queue', '1024', '--backend', 'cpu']);
const cells = [
  { cell: 'base', name: 'toy', url: served.url, inProcess: ['--model', base] },
  { cell: 'lora', name: 'rank1', url: served.url, inProcess: ['--model', base, '--adapter', adapter] },
  { cell: 'full', name: 'full', url: servedFull.url, inProcess: ['--model', full] },
  { cell: 'mlp_ablated', name: 'mlp_ablated', url: served.url, inProcess: ['--model', base, '--adapter', adapter, '--ablate', 'mlp'], label: ['--ablated', 'mlp'] },
  { cell: 'attn_ablated', name: 'attn_ablated', url: served.url, inProcess: ['--model', base, '--adapter', adapter, '--ablate', 'attention'], label: ['--ablated', 'attention'] },
] as { cell: string; name: string; url: string; inProcess: string[]; label?: string[] }[];
const files: Record<string, { endpoint: string; inProcess: string }> = {};
try {
  for (const { cell, name, url, label } of cells) {
    const file = path.join(out, `${cell}-endpoint.jsonl`);
    await step(`eval --endpoint ${name}`, ['eval', '--endpoint', url, '--model', name, '--tokenizer', base, ...common, '--concurrency', args.batch!, ...(label ?? []), '--out', file], true);
    files[cell] = { endpoint: file, inProcess: '' };
  }
} finally {
  await served.stop();
  await servedFull.stop();
}
for (const { cell, inProcess } of cells) {
  const file = path.join(out, `${cell}-in-process.jsonl`);
  await step(`eval ${cell} in process`, ['eval', ...inProcess, ...common, '--batch', args.batch!, '--backend', 'cpu', '--out', file], true);
  files[cell]!.inProcess = file;
}

interface Row { index: number; output: string; correct: boolean; tokensGenerated: number; stopReason: string }
const read = async (file: string) => (await fs.readFile(file, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Row);
const agreement: Record<string, { rows: number; sameOutput: number; sameCorrect: number; sameTokens: number }> = {};
for (const { cell } of cells) {
  const [a, b] = [await read(files[cell]!.endpoint), await read(files[cell]!.inProcess)];
  if (a.length !== b.length) throw new Error(`${cell}: ${a.length} endpoint rows vs ${b.length} in process`);
  agreement[cell] = {
    rows: a.length,
    sameOutput: a.filter((r, k) => r.output === b[k]!.output).length,
    sameCorrect: a.filter((r, k) => r.correct === b[k]!.correct).length,
    sameTokens: a.filter((r, k) => r.tokensGenerated === b[k]!.tokensGenerated && r.stopReason === b[k]!.stopReason).length,
  };
}
const spec = (kind: 'endpoint' | 'inProcess') => `toy:${cells.map(({ cell }) => `${cell}=${files[cell]![kind]}`).join(',')}`;
process.stdout.write('\nthrough rank1 serve --lora-modules:\n' + await step('compare endpoint', ['eval', '--compare', spec('endpoint')], true));
process.stdout.write('\nin process:\n' + await step('compare in process', ['eval', '--compare', spec('inProcess')], true));
const tables = {
  endpoint: JSON.parse(await step('compare endpoint (json)', ['eval', '--compare', spec('endpoint'), '--json'], true)),
  inProcess: JSON.parse(await step('compare in process (json)', ['eval', '--compare', spec('inProcess'), '--json'], true)),
};
// The tables without their file names (which differ by construction).
const withoutFiles = (table: unknown) => JSON.stringify(table, (key, value) => (key === 'file' ? undefined : value));
const identical = withoutFiles(tables.endpoint) === withoutFiles(tables.inProcess) && Object.values(agreement).every((a) => a.sameOutput === a.rows && a.sameCorrect === a.rows && a.sameTokens === a.rows);
process.stdout.write(`\nrow agreement: ${JSON.stringify(agreement)}\nidentical: ${identical}\n`);
if (!args['no-record']) {
  const file = path.resolve(args.record ?? path.join(repoRoot, 'bench/results', `${new Date().toISOString().slice(0, 10)}-toy-table1-endpoint.json`));
  await fs.writeFile(file, `${JSON.stringify({
    date: new Date().toISOString(), machine: { cpu: os.cpus()[0]?.model, cores: os.availableParallelism(), memoryGiB: os.totalmem() / 2 ** 30, node: process.version },
    settings: { run: args.run, loraLr: args['lora-lr'], fullLr: args['full-lr'], batch: args.batch, limit: args.limit ?? null, servers: [served.command, servedFull.command] },
    identical, agreement, timings, tables,
  }, null, 2)}\n`);
  process.stderr.write(`recorded in ${path.relative(repoRoot, file)}\n`);
}
if (!identical) process.exitCode = 1;
