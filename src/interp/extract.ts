// Extraction's pieces: the text and token ids of a row as extraction sees it (the training rendering, or the
// paper's extraction text), and one sequence's adapter scalars A·x (and optionally the first n up_proj neurons
// of each layer, the paper's MLP baseline), read with runWithCache. The job that streams a data set into an
// activation store with them is src/jobs/extract.ts.
import { createReadStream } from 'node:fs';
import { parquetMetadataAsync, asyncBufferFromFile } from 'hyparquet';
import { cat, detach, slice, unsqueeze } from '../tensor/ops.ts';
import { keep, tidy, type Tensor } from '../tensor/tensor.ts';
import { noGrad } from '../tensor/autograd.ts';
import { hookName } from '../model/hooks.ts';
import { withHooks, type HookSpec } from '../model/hook-registry.ts';
import { runWithCache } from '../model/activation-cache.ts';
import type { Qwen2Model } from '../model/qwen2.ts';
import type { Tokenizer } from '../model/tokenizer.ts';
import { fileMagic, tokenizeRow, TrainingDataError } from '../train/data.ts';
import type { TrainingRow } from '../train/data-rows.ts';
import type { StoreRendering } from './activation-store.ts';

/** The paper's extraction prompt (reasoning-lora-interp): a system turn, and no `<|im_end|>` between turns. */
export const PAPER_SYSTEM_PROMPT = 'You are a helpful mathematics assistant.';

/**
 * The text the paper's extraction feeds the model for an s1K row, byte for byte:
 * `<|im_start|>system\n{system}\n<|im_start|>user\n{question}\n<|im_start|>assistant\n<|im_start|>think\n
 * {trajectory}\n<|im_start|>answer\n{attempt}<|im_end|>`.
 */
export function paperExtractionText(question: string, trajectory: string | readonly string[], attempt: string): string {
  const thinking = typeof trajectory === 'string' ? trajectory : trajectory.join('\n');
  return `<|im_start|>system\n${PAPER_SYSTEM_PROMPT}\n<|im_start|>user\n${question}\n<|im_start|>assistant\n`
    + `<|im_start|>think\n${thinking}\n<|im_start|>answer\n${attempt}<|im_end|>`;
}

/** Token ids of one row as extraction sees it, cut to maxTokens. */
export function extractionIds(row: TrainingRow, tokenizer: Tokenizer | null, rendering: StoreRendering, template: string, maxTokens: number): Int32Array {
  if (rendering === 'paper') {
    if (row.kind !== 's1k') throw new TrainingDataError(`${row.source}: --format paper renders s1K-1.1 rows {question, deepseek_thinking_trajectory, deepseek_attempt}; this is a ${row.kind} row`);
    if (!tokenizer) throw new TrainingDataError(`${row.source}: --format paper needs the model's tokenizer.json`);
    const ids = tokenizer.encode(paperExtractionText(row.question, row.trajectory, row.attempt), { addSpecialTokens: false });
    return Int32Array.from(ids.slice(0, maxTokens));
  }
  return tokenizeRow(row, tokenizer, template, maxTokens, { ifNoAssistant: 'score-all' }).inputIds;
}

/** Rows in a JSONL (non-empty lines) or Parquet file (its metadata), without parsing them: for progress. */
export async function countRows(file: string): Promise<number> {
  if (await fileMagic(file) === 'PAR1') return Number((await parquetMetadataAsync(await asyncBufferFromFile(file))).num_rows);
  let count = 0;
  let inLine = false;
  for await (const chunk of createReadStream(file)) {
    for (const byte of chunk as Buffer) {
      if (byte === 10) {
        if (inLine) count++;
        inLine = false;
      } else if (byte !== 13 && byte !== 32 && byte !== 9) inLine = true;
    }
  }
  return count + (inLine ? 1 : 0);
}

/**
 * Adapter activations of one sequence: ids [T] -> acts [T, hooks] (raw A·x, columns in `hooks` order) and,
 * with mlpNeurons n > 0, mlp [T, L·n] (the first n up_proj outputs of each layer).
 */
export async function adapterActivations(
  model: Qwen2Model, ids: Int32Array, hooks: readonly string[], mlpNeurons = 0,
): Promise<{ acts: Float32Array; mlp: Float32Array | null }> {
  // The MLP baseline keeps only the first n columns of each up_proj output: sliced in the hook, so a whole
  // [T, I] output per layer is never kept.
  const mlpRecorded: Tensor[] = [];
  const mlpHooks: HookSpec = mlpNeurons > 0
    ? Array.from({ length: model.dims.layers }, (_, l) => [hookName.projectionOutput(l, 'up_proj'), (value: Tensor) => {
      mlpRecorded[l] = keep(detach(slice(value, -1, 0, mlpNeurons)));
    }] as const)
    : [];
  try {
    // No graph: nothing here is differentiated, and a forward without one holds a layer at a time instead of
    // every layer's saved intermediates (118 → 63 GiB for Qwen2.5-32B at 2 048 tokens, src/train/memory.ts).
    const { logits, cache } = withHooks(model, mlpHooks, () => noGrad(() => runWithCache(model, ids, hooks, { lastPositionOnly: true })));
    logits.dispose();
    try {
      const missing = hooks.filter((name) => !cache.has(name));
      if (missing.length > 0) throw new Error(`extraction: no activation reached ${missing[0]} (is its adapter loaded?)`);
      const acts = await concatenatedValues(() => hooks.map((name) => unsqueeze(cache.get(name), -1))); // [1, T, hooks]
      const mlp = mlpNeurons > 0 ? await concatenatedValues(() => mlpRecorded) : null; // [1, T, L·n]
      return { acts, mlp };
    } finally {
      cache.dispose();
    }
  } finally {
    for (const t of mlpRecorded) t?.dispose();
  }
}

/** The values of tensors joined along their last axis. */
async function concatenatedValues(parts: () => Tensor[]): Promise<Float32Array> {
  const joined = tidy(() => cat(parts(), -1));
  try {
    return await joined.toFloat32Array();
  } finally {
    joined.dispose();
  }
}
