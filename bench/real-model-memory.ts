// `npx tsx bench/real-model-memory.ts`: the device memory of the paper's recipe on the real Qwen2.5 sizes
// (0.5B, 1.5B, 7B, 32B; published Qwen2.5-Instruct configs, nothing downloaded) at 2 048 and 20 000 tokens, from
// src/train/memory.ts: a rank-1 training step (micro-batch 1, gradient checkpointing) with today's defaults,
// with whole layers, and with --offload-checkpoints, extraction (`rank1 extract`, one sequence) and one ablation batch (`rank1
// ablate`, defaultAblationBatch variants). Printed as the Markdown table the README shows (test/readme-memory-
// table.test.ts keeps the two equal). Estimates: the estimator's terms are measured at small shapes on the CPU
// and WebGPU backends (test/memory-estimate*.test.ts, test/memory-forward-estimate.test.ts) and on a 2-layer
// Qwen2.5-0.5B shape at real width and vocabulary (bench/results/2026-12-07-memory-calibration*.json); the
// figures here are those terms at the real sizes, not measurements.
//
// "before" columns keep what the same calibrated terms give for the code before issue 18: the loss over
// [T, V] logits (the logits, their gradient and a temporary, f32), f32 checkpoints, whole layers; the ablation's
// KL over the batch's [B, T, V] logits and the full run's [T, V].
import { pathToFileURL } from 'node:url';
import type { Qwen2Config } from '../src/model/config.ts';
import { dimsFromConfig } from '../src/model/load.ts';
import {
  estimateAblationActivations, estimateExtractionActivations, estimateTrainingMemory, formatBytes, type MemoryEstimate,
} from '../src/train/memory.ts';
import { describeModel } from '../src/cli/model-commands.ts';
import { defaultAblationBatch } from '../src/interp/ablate.ts';
import { defaultLossChunkRows } from '../src/tensor/linear-cross-entropy.ts';
import { QWEN25_05B } from '../src/model/random-model.ts';
import { DEFAULT_LAYER_TOKEN_CHUNK } from '../src/train/trainer.ts';

const QWEN25_15B: Qwen2Config = { ...QWEN25_05B, hiddenSize: 1536, intermediateSize: 8960, numHiddenLayers: 28, numAttentionHeads: 12, numKeyValueHeads: 2, headDim: 128 };
const QWEN25_7B: Qwen2Config = {
  ...QWEN25_05B, hiddenSize: 3584, intermediateSize: 18944, numHiddenLayers: 28, numAttentionHeads: 28, numKeyValueHeads: 4, headDim: 128,
  vocabSize: 152064, tieWordEmbeddings: false,
};
const QWEN25_32B: Qwen2Config = {
  ...QWEN25_05B, hiddenSize: 5120, intermediateSize: 27648, numHiddenLayers: 64, numAttentionHeads: 40, numKeyValueHeads: 8, headDim: 128,
  vocabSize: 152064, tieWordEmbeddings: false,
};

export const MODELS = [
  ['Qwen2.5-0.5B', QWEN25_05B], ['Qwen2.5-1.5B', QWEN25_15B], ['Qwen2.5-7B', QWEN25_7B], ['Qwen2.5-32B', QWEN25_32B],
] as const;
export const BLOCKS = [2048, 20000] as const;

/** The training figures issue 18 opened with (20 000 tokens, the estimator of the time). */
const ISSUE_FIGURES: Record<string, string> = { 'Qwen2.5-0.5B': '41 GiB', 'Qwen2.5-1.5B': '48 GiB', 'Qwen2.5-32B': '145 GiB' };

function parameterCount(config: Qwen2Config): number {
  const { hiddenSize: H, intermediateSize: I, numHiddenLayers: L, numAttentionHeads: heads, numKeyValueHeads: kv, headDim: hd, vocabSize: V } = config;
  const attention = H * heads * hd + 2 * H * kv * hd + heads * hd * H + (heads * hd + 2 * kv * hd); // + q/k/v biases
  const mlp = 3 * H * I;
  return L * (attention + mlp + 2 * H) + V * H * (config.tieWordEmbeddings ? 1 : 2) + H;
}

export interface ModelMemory {
  name: string;
  tokens: number;
  weightBytes: number;
  adapterParameters: number;
  /** Training step, device bytes: before issue 18, today's defaults (bf16 checkpoints, --layer-chunk DEFAULT_LAYER_TOKEN_CHUNK), whole layers, + --offload-checkpoints. */
  trainBefore: number;
  train: MemoryEstimate;
  trainWholeLayers: MemoryEstimate;
  trainOffloaded: MemoryEstimate;
  /** Extraction: as it ran before (with the adapters' autograd graph), and today (no graph). */
  extractBefore: number;
  extract: number;
  ablateBatch: number;
  ablateBefore: number;
  ablate: number;
}

export function modelMemory(name: string, config: Qwen2Config, tokens: number): ModelMemory {
  const dims = dimsFromConfig(config);
  const weightBytes = 2 * parameterCount(config);
  const { adapterParameters } = describeModel(config, weightBytes);
  const train = (options: Parameters<typeof estimateTrainingMemory>[6]) => estimateTrainingMemory(dims, weightBytes, adapterParameters, 1, tokens, true, options);
  const f32 = train({ checkpointDtype: 'f32' });
  const lossBefore = 4 * tokens * dims.vocab * 3 + 4 * tokens * (3 * dims.hidden + 24);
  const trainBefore = f32.weights + f32.optimizer + f32.terms.checkpoints + Math.max(f32.terms.forward, f32.terms.layer, lossBefore);
  const batch = defaultAblationBatch(tokens, dims);
  const ablation = estimateAblationActivations(dims, tokens, batch);
  // Before: the KL read the full run's [T, V] logits and the batch's [B, T, V] instead of two [c, V] chunks.
  const klBefore = ablation.terms.loss - 2 * 4 * Math.min(defaultLossChunkRows(dims.vocab), batch * tokens) * dims.vocab + 4 * (batch + 1) * tokens * dims.vocab;
  return {
    name, tokens, weightBytes, adapterParameters,
    trainBefore, train: train({ layerTokenChunk: DEFAULT_LAYER_TOKEN_CHUNK }), trainWholeLayers: train({}),
    trainOffloaded: train({ layerTokenChunk: DEFAULT_LAYER_TOKEN_CHUNK, offloadCheckpoints: true }),
    extractBefore: weightBytes + estimateExtractionActivations(dims, tokens, true), extract: weightBytes + estimateExtractionActivations(dims, tokens),
    ablateBatch: batch, ablateBefore: weightBytes + Math.max(ablation.terms.forward, klBefore), ablate: weightBytes + ablation.bytes,
  };
}

const gib = (bytes: number) => formatBytes(bytes);

export function memoryTable(): string {
  const rows = [
    `| model | tokens | bf16 weights | rank-1 adapters + AdamW | train: before issue 18 → today's defaults (chunked loss, bf16 checkpoints, \`--layer-chunk ${DEFAULT_LAYER_TOKEN_CHUNK}\`) | train with \`--layer-chunk 0\` (whole layers) | train + \`--offload-checkpoints\` (device; host) | extract: before → today (no autograd graph) | ablate batch (variants): before → today |`,
    '|---|---|---|---|---|---|---|---|---|',
  ];
  for (const [name, config] of MODELS) {
    for (const tokens of BLOCKS) {
      const m = modelMemory(name, config, tokens);
      const issue = tokens === 20000 && ISSUE_FIGURES[name] ? `(issue: ${ISSUE_FIGURES[name]}) ` : '';
      rows.push(`| ${name} | ${tokens} | ${gib(m.weightBytes)} | ${(m.adapterParameters / 1e6).toFixed(2)} M, ${gib(m.train.optimizer)} | ${issue}${gib(m.trainBefore)} → **${gib(m.train.total)}** | ${gib(m.trainWholeLayers.total)} | **${gib(m.trainOffloaded.total)}**; ${gib(m.trainOffloaded.host)} | ${gib(m.extractBefore)} → **${gib(m.extract)}** | (${m.ablateBatch}) ${gib(m.ablateBefore)} → ${gib(m.ablate)} |`);
    }
  }
  return rows.join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) console.log(memoryTable());
