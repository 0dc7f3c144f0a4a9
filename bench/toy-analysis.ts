// The paper's analysis at toy scale, end to end and timed, with the rank1 commands a user would type: on the
// shipped base (models/toy) and a rank-1 adapter trained on its world's reasoning traces (made here, or
// --adapter DIR, e.g. the one `npm run toy:table1` trained), run `rank1 extract`, `rank1 ablate`, `rank1 topk`,
// `rank1 sae train` and `rank1 sae features` over the traces. Figures and tables land in the output folder;
// the times and headline numbers in bench/results/<date>-toy-analysis.json (SAE: 10 epochs at lr 2e-3, since
// the toy store is ~60k tokens, not s1K's ~10M); the two ablation figures and
// Table 2 are also copied to docs/toy-analysis/ for the README.
//
//   npm run toy:analysis                                       # into runs/toy-analysis
//   npm run toy:analysis -- --adapter runs/toy-table1/lora-lr1e-3 --world runs/toy-table1/world
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
    out: { type: 'string', default: 'runs/toy-analysis' },
    adapter: { type: 'string' },
    world: { type: 'string' },
    'no-record': { type: 'boolean', default: false },
  },
});

const out = path.resolve(args.out!);
const timings: StepTiming[] = [];

const step = (name: string, argv: string[]) => rank1Step(timings, name, argv, 'echo');

await fs.mkdir(out, { recursive: true });
let world = args.world ? path.resolve(args.world) : path.join(out, 'world');
if (!args.world) {
  const o = worldOptionsFromManifest(JSON.parse(await fs.readFile(path.join(args.model!, 'world.json'), 'utf8')) as WorldManifest);
  await step('world', worldMakeArgs(o, world));
}
world = path.resolve(world);
const traces = path.join(world, 'reasoning.jsonl');
let adapter = args.adapter ? path.resolve(args.adapter) : path.join(out, 'lora');
if (!args.adapter) {
  await fs.rm(adapter, { recursive: true, force: true });
  await step('train rank 1', ['train', '--model', args.model!, '--data', traces, '--out', adapter, '--micro-batch', '16', '--no-gradient-checkpointing', '--no-progress', '--backend', 'cpu']);
}
adapter = path.resolve(adapter);
const store = path.join(out, 'store');
for (const dir of ['store', 'ablation', 'topk', 'sae', 'sae-features']) await fs.rm(path.join(out, dir), { recursive: true, force: true });
await step('extract', ['extract', '--model', args.model!, '--adapter', adapter, '--data', traces, '--out', store, '--mlp-neurons', '4', '--no-progress', '--backend', 'cpu']);
const table2 = await step('ablate', ['ablate', '--model', args.model!, '--adapter', adapter, '--data', traces, '--out', path.join(out, 'ablation'), '--no-progress', '--backend', 'cpu']);
await step('topk', ['topk', '--store', store, '--out', path.join(out, 'topk'), '--no-progress']);
// The paper's SAE defaults are sized for s1K's ~10M tokens; the toy store holds ~60k, so 10 epochs at lr 2e-3
// (k 16, 8×, batch 512 as the paper): about 1 100 steps.
await step('sae train', ['sae', 'train', '--store', store, '--out', path.join(out, 'sae'), '--epochs', '10', '--lr', '2e-3', '--no-progress', '--backend', 'cpu']);
await step('sae features', ['sae', 'features', '--sae', path.join(out, 'sae'), '--store', store, '--out', path.join(out, 'sae-features'), '--backend', 'cpu']);

const ablation = JSON.parse(await fs.readFile(path.join(out, 'ablation', 'ablation.json'), 'utf8')) as {
  examples: number[]; tokens: number; full_ce: number; groups: { name: string; kind: string; kl: number; ce: number }[];
};
const sae = JSON.parse(await fs.readFile(path.join(out, 'sae', 'metrics.json'), 'utf8')) as Record<string, number>;
const index = JSON.parse(await fs.readFile(path.join(store, 'index.json'), 'utf8')) as { examples: number; tokens: number };
const topAdapters = ablation.groups.filter((g) => g.kind === 'adapter').sort((a, b) => b.kl - a.kl).slice(0, 5).map((g) => ({ name: g.name, kl: g.kl }));
const kinds = Object.fromEntries(ablation.groups.filter((g) => ['mlp', 'attention', 'all'].includes(g.kind)).map((g) => [g.kind, { kl: g.kl, ce: g.ce }]));
const summary = { store: index, ablation: { examples: ablation.examples.length, tokens: ablation.tokens, fullCe: ablation.full_ce, ...kinds, topAdapters }, sae };
process.stdout.write(`\n${table2.trim()}\n\nSAE on ${index.tokens} tokens: held-out FVU ${sae['fvu']!.toFixed(3)}, L0 ${sae['l0']!.toFixed(1)}, ${sae['live']} live / ${sae['dead']} dead latents\n`);
const docs = path.join(repoRoot, 'docs/toy-analysis');
await fs.mkdir(docs, { recursive: true });
for (const file of ['kl-by-layer.svg', 'adapter-heatmap.svg', 'table2.md']) await fs.copyFile(path.join(out, 'ablation', file), path.join(docs, file));
await fs.copyFile(path.join(out, 'sae', 'loss-curve.svg'), path.join(docs, 'sae-loss-curve.svg'));
if (!args['no-record']) {
  const file = path.join(repoRoot, 'bench/results', `${new Date().toISOString().slice(0, 10)}-toy-analysis.json`);
  await fs.writeFile(file, `${JSON.stringify({
    date: new Date().toISOString(), machine: { cpu: os.cpus()[0]?.model, cores: os.availableParallelism(), node: process.version },
    adapter: path.relative(repoRoot, adapter), timings, summary,
  }, null, 2)}\n`);
  process.stderr.write(`recorded in ${path.relative(repoRoot, file)}; figures in docs/toy-analysis/\n`);
}
