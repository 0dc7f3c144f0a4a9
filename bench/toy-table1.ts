// Table 1 at toy scale, end to end, timed: from the shipped base (models/toy) and a world made by
// `rank1 world make` with the base's seed, train rank-1 adapters (the paper's defaults) and a full finetune on
// the reasoning rows, evaluate base, rank 1 and full on the held-out problems with `rank1 eval --bench toy`,
// and print `rank1 eval --compare`. Every step is the rank1 command a user would type (printed before it
// runs); the times and the table go to bench/results/<date>-toy-table1.json.
//
//   npm run toy:table1                      # everything, into runs/toy-table1
//   npm run toy:table1 -- --out DIR --model DIR --lora-lr 1e-3 --full-lr 1e-4
import { spawn } from 'node:child_process';
import * as fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { repoRoot } from './environment.ts';

const { values: args } = parseArgs({
  options: {
    model: { type: 'string', default: path.join(repoRoot, 'models/toy') },
    out: { type: 'string', default: 'runs/toy-table1' },
    'lora-lr': { type: 'string', default: '1e-3' },
    'full-lr': { type: 'string', default: '1e-4' },
    batch: { type: 'string', default: '64' },
    limit: { type: 'string' },
    'no-record': { type: 'boolean', default: false },
  },
});

const rank1 = path.join(repoRoot, 'bin/rank1.js');
const out = path.resolve(args.out!);
const world = path.join(out, 'world');
const timings: { step: string; command: string; seconds: number }[] = [];

async function step(name: string, argv: string[], capture = false): Promise<string> {
  process.stderr.write(`\n$ rank1 ${argv.join(' ')}\n`);
  const started = performance.now();
  const child = spawn(process.execPath, [rank1, ...argv], { stdio: ['ignore', capture ? 'pipe' : 'inherit', 'inherit'] });
  let stdout = '';
  child.stdout?.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  if (code !== 0) throw new Error(`rank1 ${argv.join(' ')} exited with ${code}`);
  const seconds = (performance.now() - started) / 1000;
  timings.push({ step: name, command: `rank1 ${argv.join(' ')}`, seconds });
  process.stderr.write(`(${name}: ${seconds.toFixed(1)} s)\n`);
  return stdout;
}

const card = JSON.parse(await fs.readFile(path.join(args.model!, 'world.json'), 'utf8')) as { seed: number };
await fs.mkdir(out, { recursive: true });
await step('world', ['world', 'make', '--out', world, '--seed', String(card.seed)]);
const data = path.join(world, 'reasoning.jsonl');
const heldout = path.join(world, 'heldout.jsonl');
const common = ['--micro-batch', '16', '--no-gradient-checkpointing', '--no-progress', '--backend', 'cpu'];
await fs.rm(path.join(out, 'lora'), { recursive: true, force: true });
await fs.rm(path.join(out, 'full'), { recursive: true, force: true });
await step('train rank 1', ['train', '--model', args.model!, '--data', data, '--out', path.join(out, 'lora'), '--lr', args['lora-lr']!, ...common]);
await step('train full', ['train', '--model', args.model!, '--data', data, '--out', path.join(out, 'full'), '--full', '--lr', args['full-lr']!, ...common]);
const evalArgs = ['--bench', 'toy', '--data', heldout, '--batch', args.batch!, '--backend', 'cpu', ...(args.limit ? ['--limit', args.limit] : [])];
const results = { base: path.join(out, 'base.jsonl'), lora: path.join(out, 'lora.jsonl'), full: path.join(out, 'full.jsonl') };
for (const file of Object.values(results)) await fs.rm(file, { force: true });
await step('eval base', ['eval', '--model', args.model!, ...evalArgs, '--out', results.base], true);
await step('eval rank 1', ['eval', '--model', args.model!, '--adapter', path.join(out, 'lora'), ...evalArgs, '--out', results.lora], true);
await step('eval full', ['eval', '--model', path.join(out, 'full'), ...evalArgs, '--out', results.full], true);
const spec = `toy:base=${results.base},lora=${results.lora},full=${results.full}`;
process.stdout.write(await step('compare', ['eval', '--compare', spec], true));
const table = JSON.parse(await step('compare (json)', ['eval', '--compare', spec, '--json'], true));

const seconds = (name: string) => timings.find((t) => t.step === name)!.seconds;
const summary = {
  trainRank1Seconds: seconds('train rank 1'),
  trainFullSeconds: seconds('train full'),
  evalSeconds: seconds('eval base') + seconds('eval rank 1') + seconds('eval full'),
  totalSeconds: timings.reduce((n, t) => n + t.seconds, 0),
};
process.stdout.write(`\nrank-1 training ${summary.trainRank1Seconds.toFixed(0)} s (target ≤ 180), three evaluations ${summary.evalSeconds.toFixed(0)} s (target ≤ 180), ` +
  `everything ${summary.totalSeconds.toFixed(0)} s (target ≤ 600)\n`);
if (!args['no-record']) {
  const date = new Date().toISOString().slice(0, 10);
  const file = path.join(repoRoot, 'bench/results', `${date}-toy-table1.json`);
  await fs.writeFile(file, `${JSON.stringify({
    date: new Date().toISOString(), machine: { cpu: os.cpus()[0]?.model, cores: os.availableParallelism(), memoryGiB: os.totalmem() / 2 ** 30, node: process.version },
    settings: { loraLr: args['lora-lr'], fullLr: args['full-lr'], evalBatch: args.batch, limit: args.limit ?? null }, summary, timings, table,
  }, null, 2)}\n`);
  process.stderr.write(`recorded in ${path.relative(repoRoot, file)}\n`);
}
