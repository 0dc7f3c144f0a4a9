// `npm run bench:ablate`: the time of a full zero-ablation sweep (`rank1 ablate`'s groups: each layer, blocks,
// each single adapter, MLP, attention, all) against its peer, the naive sweep that runs one full ablated
// forward per group, in the same run. Two shapes: the shipped toy base (models/toy) and a Qwen2.5-0.5B-shaped
// random bf16 model. Adapters are random rank-1 with non-zero B (the time does not depend on their values).
// The peer does the same work per group (forward, KL against the full logits, CE). For the 0.5B shape it is
// estimated from measured parts: one full forward + groups × one measured ablated run (running it would take
// ~200 forwards).
//
//   npm run bench:ablate                                     # both shapes, results JSON to stdout
//   npm run bench:ablate -- --out bench/results/DATE-ablate.json --tokens05b 64
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command } from 'commander';
import type { Backend } from '../src/kernels/backend.ts';
import { getCpuBackend, initBackend } from '../src/tensor/engine.ts';
import { cat, crossEntropyRows, klDivRows, mean, slice, tensor } from '../src/tensor/ops.ts';
import { tidy, type Tensor } from '../src/tensor/tensor.ts';
import { Random } from '../src/tensor/random.ts';
import { adapterHookNames } from '../src/model/hooks.ts';
import { withHooks, zeroAblate } from '../src/model/hook-registry.ts';
import { loadQwen2Checkpoint } from '../src/model/load.ts';
import type { Qwen2Model } from '../src/model/qwen2.ts';
import { QWEN25_05B, fastRandomBf16Qwen2Model, randomRankOneAdapters } from '../src/model/random-model.ts';
import { ablationGroups, ablationSweep, type AblationExample } from '../src/interp/ablate.ts';
import { describeEnvironment, repoRoot } from './environment.ts';

const program = new Command()
  .option('--backend <name>', 'cpu or webgpu', 'cpu')
  .option('--toy-examples <n>', 'sequences for the toy base', Number, 4)
  .option('--toy-tokens <n>', 'tokens per toy sequence', Number, 256)
  .option('--tokens05b <n>', 'tokens of the one 0.5B-shaped sequence (0: skip that shape)', Number, 64)
  .option('--out <file>', 'also write the results JSON here');
program.parse();
const options = program.opts<{ backend: 'cpu' | 'webgpu'; toyExamples: number; toyTokens: number; tokens05b: number; out?: string }>();

function attachRandomAdapter(model: Qwen2Model, backend: Backend): void {
  model.adapters = randomRankOneAdapters(model.dims, 1, backend);
}

function examplesFor(model: Qwen2Model, count: number, tokens: number): AblationExample[] {
  const rng = new Random(7);
  return Array.from({ length: count }, (_, e) => ({ example: e, inputIds: Int32Array.from({ length: tokens }, () => rng.int(model.dims.vocab)) }));
}

/** One full forward of `ids`, logits [1, T, V] kept (the caller disposes). */
function forwardLogits(model: Qwen2Model, ids: Int32Array): Tensor {
  return tidy(() => model.forward(tensor(ids, [1, ids.length], { backend: model.backend, dtype: 'i32' })));
}

/** One naive ablated run: a full forward, then the same KL and CE the sweep reports, read back. */
async function ablatedRunMs(model: Qwen2Model, ids: Int32Array, full: Tensor): Promise<number> {
  const started = performance.now();
  const T = ids.length;
  await tidy(() => {
    const logits = forwardLogits(model, ids);
    const targets = tensor(ids.slice(1), [1, T - 1], { backend: model.backend, dtype: 'i32' });
    return cat([mean(klDivRows(full, logits), -1), mean(crossEntropyRows(slice(logits, 1, 0, T - 1), targets), -1)], 0); // [2]
  }).toFloat32Array();
  return performance.now() - started;
}

/** The peer: per example one full forward, then per group one ablated forward with its KL and CE. */
async function naiveSweepMs(model: Qwen2Model, examples: readonly AblationExample[], groups: ReturnType<typeof ablationGroups>): Promise<number> {
  const started = performance.now();
  for (const { inputIds } of examples) {
    const full = forwardLogits(model, inputIds);
    await full.toFloat32Array();
    for (const group of groups) await withHooks(model, group.adapters.map((name) => [name, zeroAblate] as const), () => ablatedRunMs(model, inputIds, full));
    full.dispose();
  }
  return performance.now() - started;
}

const backend = options.backend === 'cpu' ? getCpuBackend() : (await initBackend('webgpu')).backend;
const results: Record<string, unknown>[] = [];

{
  const { model } = await loadQwen2Checkpoint(path.join(repoRoot, 'models/toy'), backend);
  attachRandomAdapter(model, backend);
  const groups = ablationGroups(model.dims.layers, adapterHookNames(model.dims.layers));
  const examples = examplesFor(model, options.toyExamples, options.toyTokens);
  await ablationSweep(model, examples.slice(0, 1), groups); // warm-up
  const started = performance.now();
  await ablationSweep(model, examples, groups);
  const sweepMs = performance.now() - started;
  const naiveMs = await naiveSweepMs(model, examples, groups);
  results.push({ shape: 'toy base (models/toy)', layers: model.dims.layers, groups: groups.length, sequences: examples.length, tokensPerSequence: options.toyTokens, sweepMs, naiveMs, naiveMeasured: true, speedup: naiveMs / sweepMs });
  console.error(`toy base: ${groups.length} groups × ${examples.length} sequences of ${options.toyTokens} tokens: sweep ${(sweepMs / 1000).toFixed(2)} s, naive ${(naiveMs / 1000).toFixed(2)} s (${(naiveMs / sweepMs).toFixed(1)}× faster)`);
  model.dispose();
}

if (options.tokens05b > 0) {
  const model = fastRandomBf16Qwen2Model(QWEN25_05B, backend);
  attachRandomAdapter(model, backend);
  const groups = ablationGroups(model.dims.layers, adapterHookNames(model.dims.layers));
  const examples = examplesFor(model, 1, options.tokens05b);
  // The naive sweep estimated from measured parts: one full forward, then per group one ablated run.
  const ids = examples[0]!.inputIds;
  const warm = forwardLogits(model, ids); // warm-up
  await warm.toFloat32Array();
  warm.dispose();
  let forwardMs = Infinity;
  for (let i = 0; i < 2; i++) {
    const started = performance.now();
    const full = forwardLogits(model, ids);
    await full.toFloat32Array();
    forwardMs = Math.min(forwardMs, performance.now() - started);
    full.dispose();
  }
  const full = forwardLogits(model, ids);
  const runMs = Math.min(await ablatedRunMs(model, ids, full), await ablatedRunMs(model, ids, full));
  full.dispose();
  const started = performance.now();
  await ablationSweep(model, examples, groups);
  const sweepMs = performance.now() - started;
  const naiveMs = forwardMs + runMs * groups.length;
  results.push({ shape: 'Qwen2.5-0.5B-shaped (random bf16)', layers: model.dims.layers, groups: groups.length, sequences: 1, tokensPerSequence: options.tokens05b, fullForwardMs: forwardMs, ablatedRunMs: runMs, sweepMs, naiveMs, naiveMeasured: false, speedup: naiveMs / sweepMs });
  console.error(`0.5B shape: ${groups.length} groups × 1 sequence of ${options.tokens05b} tokens: sweep ${(sweepMs / 1000).toFixed(1)} s, naive ≈ ${(naiveMs / 1000).toFixed(1)} s (1 forward of ${forwardMs.toFixed(0)} ms + ${groups.length} ablated runs of ${runMs.toFixed(0)} ms; ${(naiveMs / sweepMs).toFixed(1)}× faster)`);
  model.dispose();
}

const report = { bench: 'ablation sweep vs naive (one forward per group)', date: new Date().toISOString(), backend: backend.description, environment: describeEnvironment({ reason: 'not probed (this bench runs on the backend named above)' }), results };
const text = `${JSON.stringify(report, null, 2)}\n`;
if (options.out) fs.writeFileSync(options.out, text);
process.stdout.write(text);
process.exit(0);
