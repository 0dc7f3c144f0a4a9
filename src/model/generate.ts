// Autoregressive generation with a KV cache: the prompt is run once, then one token per step. Hooks stay
// active throughout (each step's hook values cover one token, with positionOffset set). generateBatch
// decodes several independent prompts together: each keeps its own cache (its own length and positions)
// while the projections of every step run as one batched matmul, so a step reads the weights once.
import { Random } from '../tensor/random.ts';
import { tensor } from '../tensor/ops.ts';
import { KVCache, type Qwen2Model } from './qwen2.ts';
import type { LoraAdapters } from './lora.ts';

export interface SamplingOptions {
  /** 0 (default) is greedy decoding. */
  temperature?: number;
  /** Nucleus sampling: keep the smallest set of tokens whose probability reaches topP (default 1). */
  topP?: number;
  seed?: number;
}

export interface GenerateOptions extends SamplingOptions {
  maxTokens: number;
  /** Token ids that end generation (included in the output). */
  stopIds?: readonly number[];
  /** Strings that end generation once the decoded output contains one; needs `decode`. */
  stopStrings?: readonly string[];
  decode?: (ids: readonly number[]) => string;
  /** Called with each new token as soon as it is chosen (for streaming). */
  onToken?: (id: number) => void;
}

/** What `decodeTokens` needs: sampling, a length, the stop ids, and optionally a wrapper for each forward. */
export interface DecodeOptions extends SamplingOptions {
  maxTokens: number;
  /** Token ids that end generation (yielded, then the loop ends). */
  stopIds?: readonly number[];
  /**
   * Runs each forward (the prompt's, then one per token), e.g. inside withHooks so hooks are on the model
   * only while it computes. Default: the forward itself.
   */
  eachForward?: (forward: () => Promise<Float32Array>) => Promise<Float32Array>;
}

export type StopReason = 'stop_id' | 'stop_string' | 'max_tokens';

export interface GenerateResult {
  /** Generated ids only (not the prompt). */
  ids: number[];
  stopReason: StopReason;
}

/** Index of the largest value (first one on ties, as torch.argmax). */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

/** Picks a token from one row of logits. */
export function sampleToken(logits: Float32Array, options: SamplingOptions, rng: Random): number {
  const temperature = options.temperature ?? 0;
  if (temperature <= 0) return argmax(logits);
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  const probs = new Float64Array(logits.length);
  let total = 0;
  for (let i = 0; i < logits.length; i++) {
    probs[i] = Math.exp((logits[i]! - max) / temperature);
    total += probs[i]!;
  }
  const topP = options.topP ?? 1;
  let candidates = Array.from({ length: logits.length }, (_, i) => i);
  if (topP < 1) {
    candidates.sort((a, b) => probs[b]! - probs[a]!);
    let cumulative = 0;
    let keep = 0;
    while (keep < candidates.length && cumulative < topP * total) cumulative += probs[candidates[keep++]!]!;
    candidates = candidates.slice(0, Math.max(keep, 1));
    total = cumulative;
  }
  let r = rng.uniform() * total;
  for (const i of candidates) {
    r -= probs[i]!;
    if (r <= 0) return i;
  }
  return candidates.at(-1)!;
}

/**
 * Picks a token from one row of logits among those `allowed` accepts (structured outputs): sampling as
 * sampleToken, a rejected token masked and the draw repeated; greedy, or after 64 rejections, the best allowed
 * token by logit. Null when no token is allowed.
 */
export function sampleTokenWhere(logits: Float32Array, options: SamplingOptions, rng: Random, allowed: (id: number) => boolean): number | null {
  const temperature = options.temperature ?? 0;
  if (temperature > 0) {
    const masked = Float32Array.from(logits);
    for (let tries = 0; tries < 64; tries++) {
      const id = sampleToken(masked, options, rng);
      if (masked[id] === -Infinity) break;
      if (allowed(id)) return id;
      masked[id] = -Infinity;
    }
  }
  // The best token is usually allowed: try it before sorting the whole vocabulary.
  const best = argmax(logits);
  if (allowed(best)) return best;
  const order = Array.from({ length: logits.length }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b);
  for (const id of order) if (id !== best && allowed(id)) return id;
  return null;
}

/** The prompt (or the next token) through the model into `cache`: the last position's logits [V]. */
export async function prefillLogits(model: Qwen2Model, promptIds: readonly number[], cache: KVCache, adapterRows?: readonly (LoraAdapters | null)[]): Promise<Float32Array> {
  const ids = tensor(Int32Array.from(promptIds), [1, promptIds.length], { backend: model.backend, dtype: 'i32' });
  const logits = model.forward(ids, { cache, lastPositionOnly: true, ...(adapterRows ? { adapterRows } : {}) });
  ids.dispose();
  const row = await logits.toFloat32Array();
  logits.dispose();
  return row;
}

/**
 * One decoding step for several sequences, each with its own cache: the last token of each in, logits
 * [n, V] out (row i for sequence i), one batched forward and one read. adapterRows: each sequence's adapter
 * (null: the base), in place of model.adapters (ForwardOptions.adapterRows).
 */
export async function decodeStepLogits(model: Qwen2Model, lastIds: readonly number[], caches: readonly KVCache[], adapterRows?: readonly (LoraAdapters | null)[]): Promise<Float32Array> {
  const ids = tensor(Int32Array.from(lastIds), [lastIds.length, 1], { backend: model.backend, dtype: 'i32' });
  const logits = model.forward(ids, { caches: [...caches], lastPositionOnly: true, ...(adapterRows ? { adapterRows } : {}) });
  ids.dispose();
  const rows = await logits.toFloat32Array();
  logits.dispose();
  return rows;
}

/** Room for the prompt and a first stretch of output; the cache doubles when a long generation needs more. */
function initialCacheCapacity(promptLength: number, maxTokens: number): number {
  return Math.max(16, promptLength + Math.min(maxTokens, 512));
}

function checkPrompt(promptIds: readonly number[], vocab: number, what: string): void {
  if (promptIds.length === 0) throw new Error(`${what}: the prompt is empty`);
  for (const [i, id] of promptIds.entries()) {
    if (!Number.isInteger(id) || id < 0 || id >= vocab) throw new Error(`${what}: prompt token ${i} is ${id}, outside the vocabulary [0, ${vocab})`);
  }
}

/** Why a sequence stops after `next`, if it does. */
function stopReasonAfter(generated: readonly number[], options: GenerateOptions, stopIds: ReadonlySet<number>): StopReason | null {
  if (stopIds.has(generated.at(-1)!)) return 'stop_id';
  if (options.stopStrings?.length) {
    const text = options.decode!(generated);
    if (options.stopStrings.some((s) => text.includes(s))) return 'stop_string';
  }
  return generated.length >= options.maxTokens ? 'max_tokens' : null;
}

/**
 * Generates a continuation for each prompt, decoding all of them together. Results equal
 * `generate` on each prompt alone (greedy); with sampling, each prompt gets its own seeded stream.
 * onToken is not called (several sequences interleave); use generate for streaming.
 */
export async function generateBatch(
  model: Qwen2Model, prompts: readonly (readonly number[])[], options: GenerateOptions,
): Promise<GenerateResult[]> {
  prompts.forEach((p, i) => checkPrompt(p, model.dims.vocab, `generateBatch: prompt ${i}`));
  if ((options.stopStrings?.length ?? 0) > 0 && !options.decode) throw new Error('generateBatch: stopStrings need a decode function (a tokenizer)');
  const stopIds = new Set(options.stopIds ?? []);
  const results: GenerateResult[] = prompts.map(() => ({ ids: [], stopReason: 'max_tokens' }));
  if (options.maxTokens <= 0) return results;
  const rngs = prompts.map((_, i) => new Random((options.seed ?? 0) + i));
  const caches = prompts.map((p) => new KVCache(model.dims, 1, model.backend, initialCacheCapacity(p.length, options.maxTokens)));
  try {
    // Prefill each prompt on its own (their lengths differ), then decode the live ones together.
    const pending: number[] = [];
    for (const [i, prompt] of prompts.entries()) {
      const next = sampleToken(await prefillLogits(model, prompt, caches[i]!), options, rngs[i]!);
      results[i]!.ids.push(next);
      const reason = stopReasonAfter(results[i]!.ids, options, stopIds);
      if (reason) results[i]!.stopReason = reason;
      else pending.push(i);
    }
    let live = pending;
    while (live.length > 0) {
      const rows = await decodeStepLogits(model, live.map((i) => results[i]!.ids.at(-1)!), live.map((i) => caches[i]!)); // [live, V]
      const vocab = model.dims.vocab;
      const stillLive: number[] = [];
      live.forEach((i, row) => {
        const next = sampleToken(rows.subarray(row * vocab, (row + 1) * vocab), options, rngs[i]!);
        results[i]!.ids.push(next);
        const reason = stopReasonAfter(results[i]!.ids, options, stopIds);
        if (reason) results[i]!.stopReason = reason;
        else stillLive.push(i);
      });
      live = stillLive;
    }
    return results;
  } finally {
    for (const cache of caches) cache.dispose();
  }
}

/**
 * One sequence's tokens, each yielded as soon as it is chosen: the prompt through the model once, then one
 * token per forward, until a stop id (yielded) or maxTokens. The loop `generate` and the playground share.
 * The next forward runs only when the next token is asked for, so a caller can first read what hooks
 * captured for this one; leaving the loop early frees the cache.
 */
export async function* decodeTokens(model: Qwen2Model, promptIds: readonly number[], options: DecodeOptions): AsyncGenerator<number, void> {
  if (options.maxTokens <= 0) return;
  const rng = new Random(options.seed ?? 0);
  const stopIds = new Set(options.stopIds ?? []);
  const eachForward = options.eachForward ?? ((forward) => forward());
  const cache = new KVCache(model.dims, 1, model.backend, initialCacheCapacity(promptIds.length, options.maxTokens));
  try {
    let input = promptIds;
    for (let produced = 0; produced < options.maxTokens; produced++) {
      const next = sampleToken(await eachForward(() => prefillLogits(model, input, cache)), options, rng);
      yield next;
      if (stopIds.has(next)) return;
      input = [next];
    }
  } finally {
    cache.dispose();
  }
}

export async function generate(model: Qwen2Model, promptIds: readonly number[], options: GenerateOptions): Promise<GenerateResult> {
  checkPrompt(promptIds, model.dims.vocab, 'generate');
  if ((options.stopStrings?.length ?? 0) > 0 && !options.decode) throw new Error('generate: stopStrings need a decode function (a tokenizer)');
  const generated: number[] = [];
  const stopIds = new Set(options.stopIds ?? []);
  for await (const next of decodeTokens(model, promptIds, options)) {
    generated.push(next);
    options.onToken?.(next);
    const reason = stopReasonAfter(generated, options, stopIds);
    if (reason) return { ids: generated, stopReason: reason };
  }
  return { ids: generated, stopReason: 'max_tokens' };
}
