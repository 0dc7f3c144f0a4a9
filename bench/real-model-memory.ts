// `npx tsx bench/real-model-memory.ts`: the memory each step of the paper's recipe needs on the real
// Qwen2.5 sizes, from the same estimates the commands use (src/train/memory.ts for training, the forward
// estimate of `rank1 info`), printed as the Markdown table the README's recipe shows. Configs are the
// published Qwen2.5-Instruct ones; nothing is downloaded. Estimates, not measurements: the training estimate
// is calibrated against one measured step at a smaller shape (bench/loss-memory.ts --calibrate,
// bench/results/2026-12-07-memory-calibration.json; test/memory-estimate.test.ts at tiny shapes).
//
// The loss and the ablation's KL run from the final hidden states in row chunks (tensor/linear-cross-entropy.ts),
// so the [T, V] logits terms are [chunk, V] terms; the columns marked "before" keep the old [T, V] figure beside.
import type { Qwen2Config } from '../src/model/config.ts';
import { dimsFromConfig } from '../src/model/load.ts';
import { estimateTrainingMemory, formatBytes } from '../src/train/memory.ts';
import { describeModel } from '../src/cli/model-commands.ts';
import { defaultLossChunkRows } from '../src/tensor/linear-cross-entropy.ts';
import { QWEN25_05B } from '../src/model/random-model.ts';

const QWEN25_15B: Qwen2Config = { ...QWEN25_05B, hiddenSize: 1536, intermediateSize: 8960, numHiddenLayers: 28, numAttentionHeads: 12, numKeyValueHeads: 2, headDim: 128 };
const QWEN25_32B: Qwen2Config = {
  ...QWEN25_05B, hiddenSize: 5120, intermediateSize: 27648, numHiddenLayers: 64, numAttentionHeads: 40, numKeyValueHeads: 8, headDim: 128,
  vocabSize: 152064, tieWordEmbeddings: false,
};

function parameterCount(config: Qwen2Config): number {
  const { hiddenSize: H, intermediateSize: I, numHiddenLayers: L, numAttentionHeads: heads, numKeyValueHeads: kv, headDim: hd, vocabSize: V } = config;
  const attention = H * heads * hd + 2 * H * kv * hd + heads * hd * H + (heads * hd + 2 * kv * hd); // + q/k/v biases
  const mlp = 3 * H * I;
  return L * (attention + mlp + 2 * H) + V * H * (config.tieWordEmbeddings ? 1 : 2) + H;
}

const rows: string[] = [
  '| model | bf16 weights | rank-1 adapters (7·L, parameters) | train (micro-batch 1, 20 000 tokens, checkpointing): before → chunked loss | extract / ablate forward (2 048 tokens) | ablate batch of 7 variants (2 048 tokens): before → chunked KL | SAE (d = 7·L, 8×, batch 512) |',
  '|---|---|---|---|---|---|---|',
];
for (const [name, config] of [['Qwen2.5-0.5B-Instruct', QWEN25_05B], ['Qwen2.5-1.5B-Instruct', QWEN25_15B], ['Qwen2.5-32B-Instruct', QWEN25_32B]] as const) {
  const dims = dimsFromConfig(config);
  const weightBytes = 2 * parameterCount(config);
  const info = describeModel(config, weightBytes);
  const adapterParameters = info.adapterParameters;
  const train = estimateTrainingMemory(dims, weightBytes, adapterParameters, 1, 20000, true);
  const chunk = defaultLossChunkRows(config.vocabSize);
  // Before: the loss phase held the [T, V] logits, their gradient and a temporary in place of the two
  // [chunk, V] buffers (the other phases as today: src/train/memory.ts, calibrated against measurements).
  const { terms } = train;
  const lossBefore = terms.loss - 4 * Math.min(20000, chunk) * config.vocabSize * 2 + 4 * 20000 * config.vocabSize * 3;
  const trainBefore = train.total - train.activations + terms.checkpoints + Math.max(terms.forward, terms.layer, lossBefore);
  const forward = info.memory.cpu.forward2048;
  // The sweep's batch: 7 variants' residual streams on top of the weights, and before, their logits [7, T, V]
  // f32; now one chunk of the full run's logits and one of an ablated row's ([chunk, V] each) at a time.
  const activations = 7 * 4 * 2048 * (6 * config.hiddenSize + 3 * config.intermediateSize);
  const ablateBefore = weightBytes + activations + 7 * 4 * 2048 * config.vocabSize;
  const ablate = weightBytes + activations + 2 * 4 * chunk * config.vocabSize;
  const d = 7 * config.numHiddenLayers;
  const F = 8 * d;
  // W_enc, W_dec (+ grads, 2 Adam moments) and the [512, F] activations of one step, f32.
  const sae = 4 * (4 * 2 * d * F + 6 * 512 * F);
  rows.push(`| ${name} | ${formatBytes(weightBytes)} | ${7 * config.numHiddenLayers} (${(adapterParameters / 1e6).toFixed(2)} M) | ${formatBytes(trainBefore)} → ${formatBytes(train.total)} | ${formatBytes(forward)} | ${formatBytes(ablateBefore)} → ${formatBytes(ablate)} | ${formatBytes(sae)} |`);
}
console.log(rows.join('\n'));
