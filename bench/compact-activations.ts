// `npx tsx bench/compact-activations.ts`: what compact activations (issue 18, must 2) hold in one rank-1
// training step, measured as the CPU backend's own count of live storage bytes (deterministic, so the settings
// share one process): a Qwen2.5-0.5B-wide model cut to a few layers and a small vocabulary (the loss phase out
// of the way), one sequence of T tokens, forward + backward, with f32 checkpoints, bf16 checkpoints
// (Qwen2Model.checkpointDtype) and bf16 checkpoints with token-chunked MLP sub-blocks (Qwen2Model.layerTokenChunk).
//
//   npx tsx bench/compact-activations.ts [--tokens 512,1024,2048] [--layers 4] [--chunk 256] [--out bench/results/x.json]
import * as fs from 'node:fs';
import { Command } from 'commander';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { backward } from '../src/tensor/autograd.ts';
import { div, tidy } from '../src/tensor/index.ts';
import { QWEN25_05B, fastRandomBf16Qwen2Model, randomRankOneAdapters } from '../src/model/random-model.ts';
import { makeBatch } from '../src/train/data-batch.ts';
import { batchLossSum } from '../src/train/trainer.ts';

interface Setting {
  name: string;
  checkpointDtype: 'f32' | 'bf16';
  layerTokenChunk: number | null;
}

const options = new Command()
  .option('--tokens <list>', 'block sizes', '512,1024,2048')
  .option('--layers <n>', 'decoder layers', '4')
  .option('--chunk <n>', 'layerTokenChunk of the chunked setting', '256')
  .option('--out <file>', 'write the figures as JSON')
  .parse()
  .opts<{ tokens: string; layers: string; chunk: string; out?: string }>();

const cpu = getCpuBackend();
const config = { ...QWEN25_05B, numHiddenLayers: Number(options.layers), vocabSize: 4096 };
const settings: Setting[] = [
  { name: 'f32 checkpoints', checkpointDtype: 'f32', layerTokenChunk: null },
  { name: 'bf16 checkpoints', checkpointDtype: 'bf16', layerTokenChunk: null },
  { name: `bf16 checkpoints, MLP in chunks of ${options.chunk}`, checkpointDtype: 'bf16', layerTokenChunk: Number(options.chunk) },
];

/** Bytes the forward leaves held, the forward's peak and the step's peak, each less what was live before. */
function measure(tokens: number, setting: Setting) {
  const model = fastRandomBf16Qwen2Model(config, cpu);
  model.adapters = randomRankOneAdapters(model.dims, 1, cpu);
  model.gradientCheckpointing = true;
  model.checkpointDtype = setting.checkpointDtype;
  model.layerTokenChunk = setting.layerTokenChunk;
  const inputIds = Int32Array.from({ length: tokens }, (_, i) => (i * 7919) % config.vocabSize);
  const batch = makeBatch([{ inputIds, lossMask: new Uint8Array(tokens).fill(1) }], 0);
  const before = cpu.memory().liveBytes;
  cpu.resetPeak();
  const started = performance.now();
  const loss = tidy(() => div(batchLossSum(model, batch, 256), batch.tokens));
  const forwardHeld = cpu.memory().liveBytes - before;
  const forwardPeak = cpu.memory().peakBytes - before;
  backward(loss);
  const stepPeak = cpu.memory().peakBytes - before;
  const seconds = (performance.now() - started) / 1000;
  loss.dispose();
  model.adapters.dispose();
  model.dispose();
  return { forwardHeld, forwardPeak, stepPeak, seconds };
}

const rows = [];
for (const tokens of options.tokens.split(',').map(Number)) {
  for (const setting of settings) {
    const m = measure(tokens, setting);
    const row = { tokens, setting: setting.name, checkpointDtype: setting.checkpointDtype, layerTokenChunk: setting.layerTokenChunk, ...m };
    console.log(JSON.stringify(row));
    rows.push(row);
  }
}
const result = {
  what: 'issue 18, must 2: live storage bytes of one checkpointed rank-1 training step (CPU backend high-water mark), f32 vs bf16 checkpoints vs bf16 + token-chunked MLP sub-blocks',
  date: new Date().toISOString(),
  command: `npx tsx bench/compact-activations.ts --tokens ${options.tokens} --layers ${options.layers} --chunk ${options.chunk}`,
  model: { hidden: config.hiddenSize, intermediate: config.intermediateSize, heads: config.numAttentionHeads, kvHeads: config.numKeyValueHeads, layers: config.numHiddenLayers, vocab: config.vocabSize, weights: 'random bf16' },
  lossChunk: 256,
  rows,
};
if (options.out) fs.writeFileSync(options.out, `${JSON.stringify(result, null, 2)}\n`);
