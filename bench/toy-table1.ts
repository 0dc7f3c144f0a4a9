// Table 1 at toy scale, end to end, timed: from the shipped base (models/toy) and a world made by
// `rank1 world make` with the base's seed, train rank-1 adapters (the paper's defaults) and a full finetune on
// the reasoning rows, evaluate base, rank 1 and full on the held-out problems with `rank1 eval --bench toy`,
// then the rank-1 adapter again with every MLP adapter and with every attention adapter zero-ablated
// (`rank1 eval --ablate mlp|attention`, the paper's Table 2), and print `rank1 eval --compare`. Every step is the rank1 command a user would type (printed before it
// runs); the times and the table go to bench/results/<date>-toy-table1-world-v<N>.json (N: the base's world version).
//
//   npm run toy:table1                      # everything, into runs/toy-table1
//   npm run toy:table1 -- --out DIR --model DIR --lora-lr 1e-3,3e-3 --full-lr 3e-4,1e-4
// With several learning rates (comma-separated) each is trained and evaluated; Table 1 uses the first of each
// list (the paper's 1e-3 for rank 1 by default) and a sweep table lists them all.
import * as fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { repoRoot } from './environment.ts';
import { rank1Step, worldMakeArgs, type StepTiming } from './toy-steps.ts';
import { worldOptionsFromManifest, type WorldManifest } from '../src/world/make.ts';

const { values: args } = parseArgs({
  options: {
    model: { type: 'string', default: path.join(repoRoot, 'models/toy') },
    out: { type: 'string', default: 'runs/toy-table1' },
    'lora-lr': { type: 'string', default: '1e-3' },
    'full-lr': { type: 'string', default: '3e-4' },
    batch: { type: 'string', default: '64' },
    limit: { type: 'string' },
    'no-record': { type: 'boolean', default: false },
  },
});

const out = path.resolve(args.out!);
const world = path.join(out, 'world');
const timings: StepTiming[] = [];

const step = (name: string, argv: string[], capture = false) => rank1Step(timings, name, argv, capture ? 'quiet' : undefined);

// The world the base was pretrained on, remade from the manifest in its folder (same options, same bytes).
const manifest = JSON.parse(await fs.readFile(path.join(args.model!, 'world.json'), 'utf8')) as WorldManifest;
const o = worldOptionsFromManifest(manifest);
await fs.mkdir(out, { recursive: true });
await step('world', worldMakeArgs(o, world));
const remade = JSON.parse(await fs.readFile(path.join(world, 'world.json'), 'utf8')) as WorldManifest;
if (JSON.stringify(remade.files) !== JSON.stringify(manifest.files)) throw new Error(`the remade world differs from the one ${args.model} was pretrained on (world.json hashes)`);
const data = path.join(world, 'reasoning.jsonl');
const heldout = path.join(world, 'heldout.jsonl');
const common = ['--micro-batch', '16', '--no-gradient-checkpointing', '--no-progress', '--backend', 'cpu'];
const loraRates = args['lora-lr']!.split(',');
const fullRates = args['full-lr']!.split(',');
const evalArgs = ['--bench', 'toy', '--data', heldout, '--batch', args.batch!, '--backend', 'cpu', ...(args.limit ? ['--limit', args.limit] : [])];
const results = { base: path.join(out, 'base.jsonl'), lora: [] as string[], full: [] as string[] };
await fs.rm(results.base, { force: true });
await step('eval base', ['eval', '--model', args.model!, ...evalArgs, '--out', results.base], true);
for (const [kind, rates] of [['lora', loraRates], ['full', fullRates]] as const) {
  for (const lr of rates) {
    const dir = path.join(out, `${kind}-lr${lr}`);
    const file = `${dir}.jsonl`;
    await fs.rm(dir, { recursive: true, force: true });
    await fs.rm(file, { force: true });
    const name = kind === 'lora' ? 'rank 1' : 'full';
    await step(`train ${name} lr ${lr}`, ['train', '--model', args.model!, '--data', data, '--out', dir, '--lr', lr, ...(kind === 'full' ? ['--full'] : []), ...common]);
    const model = kind === 'lora' ? ['--model', args.model!, '--adapter', dir] : ['--model', dir];
    await step(`eval ${name} lr ${lr}`, ['eval', ...model, ...evalArgs, '--out', file], true);
    results[kind].push(file);
  }
}
// Table 2: the first rank-1 adapter with one kind of adapter removed, on the same problems.
const ablatedFiles = { mlp: path.join(out, `lora-lr${loraRates[0]}-mlp-ablated.jsonl`), attention: path.join(out, `lora-lr${loraRates[0]}-attention-ablated.jsonl`) };
for (const [group, file] of Object.entries(ablatedFiles)) {
  await fs.rm(file, { force: true });
  await step(`eval rank 1 --ablate ${group}`, ['eval', '--model', args.model!, '--adapter', path.join(out, `lora-lr${loraRates[0]}`), ...evalArgs, '--ablate', group, '--out', file], true);
}
const spec = `toy:base=${results.base},lora=${results.lora[0]},full=${results.full[0]},mlp_ablated=${ablatedFiles.mlp},attn_ablated=${ablatedFiles.attention}`;
process.stdout.write(await step('compare', ['eval', '--compare', spec], true));
const table = JSON.parse(await step('compare (json)', ['eval', '--compare', spec, '--json'], true));
const accuracy = async (file: string) => {
  const rows = (await fs.readFile(file, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { correct: boolean });
  return rows.filter((r) => r.correct).length / rows.length;
};
const base = await accuracy(results.base);
const sweep = [];
for (const [kind, rates] of [['lora', loraRates], ['full', fullRates]] as const) {
  for (const [i, lr] of rates.entries()) sweep.push({ kind, lr: Number(lr), accuracy: await accuracy(results[kind][i]!) });
}
const bestFull = Math.max(...sweep.filter((r) => r.kind === 'full').map((r) => r.accuracy));
process.stdout.write(`\nlearning-rate sweep (base ${(100 * base).toFixed(1)}%; recovery against the best full finetune, ${(100 * bestFull).toFixed(1)}%):\n`);
for (const r of sweep) {
  const recovery = r.kind === 'lora' && bestFull > base ? ` (${(100 * (r.accuracy - base) / (bestFull - base)).toFixed(0)}% recovery)` : '';
  process.stdout.write(`  ${r.kind === 'lora' ? 'rank 1' : 'full  '} lr ${String(r.lr).padEnd(6)} ${(100 * r.accuracy).toFixed(1)}%${recovery}\n`);
}

const seconds = (name: string) => timings.find((t) => t.step === name)!.seconds;
const summary = {
  trainRank1Seconds: seconds(`train rank 1 lr ${loraRates[0]}`),
  trainFullSeconds: seconds(`train full lr ${fullRates[0]}`),
  evalSeconds: seconds('eval base') + seconds(`eval rank 1 lr ${loraRates[0]}`) + seconds(`eval full lr ${fullRates[0]}`),
  /** Table 1 alone (world, the two trainings and three evaluations at the first rates). */
  tableSeconds: 0,
  /** The two ablated evaluations of Table 2. */
  ablatedEvalSeconds: seconds('eval rank 1 --ablate mlp') + seconds('eval rank 1 --ablate attention'),
  totalSeconds: timings.reduce((n, t) => n + t.seconds, 0),
};
summary.tableSeconds = seconds('world') + summary.trainRank1Seconds + summary.trainFullSeconds + summary.evalSeconds;
process.stdout.write(`\nrank-1 training ${summary.trainRank1Seconds.toFixed(0)} s (target ≤ 180), three evaluations ${summary.evalSeconds.toFixed(0)} s (target ≤ 180), ` +
  `Table 1 ${summary.tableSeconds.toFixed(0)} s (target ≤ 600); Table 2's two ablated evaluations ${summary.ablatedEvalSeconds.toFixed(0)} s; with the sweep ${summary.totalSeconds.toFixed(0)} s\n`);
if (!args['no-record']) {
  const date = new Date().toISOString().slice(0, 10);
  const file = path.join(repoRoot, 'bench/results', `${date}-toy-table1-world-v${o.version}.json`);
  await fs.writeFile(file, `${JSON.stringify({
    date: new Date().toISOString(), machine: { cpu: os.cpus()[0]?.model, cores: os.availableParallelism(), memoryGiB: os.totalmem() / 2 ** 30, node: process.version },
    settings: { loraLr: loraRates, fullLr: fullRates, evalBatch: args.batch, limit: args.limit ?? null }, summary, timings, table, base, sweep,
  }, null, 2)}\n`);
  process.stderr.write(`recorded in ${path.relative(repoRoot, file)}\n`);
}
