// Zero-ablation sweeps (the paper's Figure 1 and Table 2): how much does the model's next-token distribution
// move when a group of rank-1 adapters contributes nothing? Measured as KL(full ‖ ablated) over the
// vocabulary, averaged over all positions of a sequence, then over sequences; plus each ablated model's
// mean next-token cross-entropy.
//
// Cost: a group whose lowest adapter sits in layer l changes nothing below l, so its forward starts at l from
// the full run's residual stream `resid_pre` of layer l (a shared prefix). Groups starting at the same layer
// run together as one batch, each batch row ablating its own adapters (the hook multiplies A·x by a per-row
// 0/1 mask). A sweep over all 7·L single adapters costs about (L+1)/2 full forwards per 7 adapters batched,
// not 7·L forwards.
//
// No [T, V] logits: both runs stop at the final hidden states [B, T, H], and the KL and cross-entropy are read
// off them in row chunks through the head (tensor/linear-cross-entropy.ts), the full run's logits computed
// once per chunk and compared with every ablated row. Nothing here needs a gradient: it all runs under noGrad.
import { Random } from '../tensor/random.ts';
import { cat, expand, mean, mul, sum, tensor } from '../tensor/ops.ts';
import { linearCrossEntropyRows, linearKlDivRows } from '../tensor/linear-cross-entropy.ts';
import { noGrad } from '../tensor/autograd.ts';
import { keep, tidy, type Tensor } from '../tensor/tensor.ts';
import { PROJECTIONS, adapterHookName, hookName, isAttentionProjection, parseAdapterHookName, type Projection } from '../model/hooks.ts';
import { withHooks, type HookSpec } from '../model/hook-registry.ts';
import { runWithCache } from '../model/activation-cache.ts';
import type { Qwen2Dims, Qwen2Model } from '../model/qwen2.ts';

export type AblationKind = 'layer' | 'block' | 'adapter' | 'mlp' | 'attention' | 'all';

export interface AblationGroup {
  name: string;
  kind: AblationKind;
  /** Adapter hook names (PEFT module paths) zeroed together. */
  adapters: string[];
}

export interface AblationGroupResult extends AblationGroup {
  /** Mean over sequences of the mean over positions of KL(full ‖ ablated), in nats. */
  kl: number;
  /** Mean over sequences of the ablated model's mean next-token cross-entropy, in nats. */
  ce: number;
  /** The per-sequence KL, in `examples` order. */
  kl_by_example: number[];
  /** The per-sequence CE of the ablated model, in `examples` order. */
  ce_by_example: number[];
}

export interface AblationResult {
  /** Row numbers of the input file used, in order. */
  examples: number[];
  /** Tokens over all examples. */
  tokens: number;
  /** Mean over sequences of the full model's mean next-token cross-entropy. */
  full_ce: number;
  groups: AblationGroupResult[];
  /** The full model's per-sequence CE, in `examples` order. */
  full_ce_by_example: number[];
  /** Tokens of each sequence, in `examples` order. */
  tokens_by_example: number[];
}

/** One sequence's numbers: its full model's CE and, per group, the KL and the ablated CE. */
export interface AblationSequence {
  example: number;
  tokens: number;
  fullCe: number;
  kl: readonly number[];
  ce: readonly number[];
}

/** A Float64 sum in sequence order over the count: the one mean of the sweep and of merged shards. */
function meanInOrder(values: readonly number[]): number {
  let sum = 0;
  for (const v of values) sum += v;
  return sum / values.length;
}

/**
 * The result from per-sequence numbers (the sequences in order): every mean is taken here, so a sweep over all
 * sequences and the merge of shards that each swept a share (`rank1 ablate --merge`) agree to the last bit.
 */
export function ablationFromSequences(groups: readonly AblationGroup[], sequences: readonly AblationSequence[]): AblationResult {
  const fullCe = sequences.map((s) => s.fullCe);
  return {
    examples: sequences.map((s) => s.example),
    tokens: sequences.reduce((n, s) => n + s.tokens, 0),
    full_ce: meanInOrder(fullCe),
    groups: groups.map((group, g) => {
      const kl = sequences.map((s) => s.kl[g]!);
      const ce = sequences.map((s) => s.ce[g]!);
      return { ...group, kl: meanInOrder(kl), ce: meanInOrder(ce), kl_by_example: kl, ce_by_example: ce };
    }),
    full_ce_by_example: fullCe,
    tokens_by_example: sequences.map((s) => s.tokens),
  };
}

/** The per-sequence numbers of a result (a sweep's, or one read from ablation.json). */
export function sequencesOf(result: AblationResult): AblationSequence[] {
  return result.examples.map((example, e) => ({
    example,
    tokens: result.tokens_by_example[e]!,
    fullCe: result.full_ce_by_example[e]!,
    kl: result.groups.map((g) => g.kl_by_example[e]!),
    ce: result.groups.map((g) => g.ce_by_example[e]!),
  }));
}

/**
 * The paper's groups for the adapters present (hook names): each layer, blocks of `block` layers, each single
 * adapter (the 7 × L matrix), all MLP adapters, all attention adapters, all adapters.
 */
export function ablationGroups(layers: number, present: readonly string[], block = 8): AblationGroup[] {
  if (!Number.isInteger(block) || block < 1) throw new RangeError(`--block must be a positive integer, got ${block}`);
  const have = new Set(present);
  const ordered: { name: string; layer: number; projection: Projection }[] = [];
  for (let layer = 0; layer < layers; layer++) {
    for (const projection of PROJECTIONS) {
      const name = adapterHookName(layer, projection);
      if (have.has(name)) ordered.push({ name, layer, projection });
    }
  }
  if (ordered.length === 0) throw new Error('ablation: the adapter has no rank-1 adapters to ablate');
  const groups: AblationGroup[] = [];
  for (let layer = 0; layer < layers; layer++) {
    const adapters = ordered.filter((a) => a.layer === layer).map((a) => a.name);
    if (adapters.length) groups.push({ name: `layer ${layer}`, kind: 'layer', adapters });
  }
  for (let from = 0; from < layers; from += block) {
    const to = Math.min(layers, from + block) - 1;
    const adapters = ordered.filter((a) => a.layer >= from && a.layer <= to).map((a) => a.name);
    if (adapters.length) groups.push({ name: `layers ${from}-${to}`, kind: 'block', adapters });
  }
  for (const a of ordered) groups.push({ name: a.name, kind: 'adapter', adapters: [a.name] });
  const mlp = ordered.filter((a) => !isAttentionProjection(a.projection)).map((a) => a.name);
  const attention = ordered.filter((a) => isAttentionProjection(a.projection)).map((a) => a.name);
  if (mlp.length) groups.push({ name: 'all MLP adapters', kind: 'mlp', adapters: mlp });
  if (attention.length) groups.push({ name: 'all attention adapters', kind: 'attention', adapters: attention });
  groups.push({ name: 'all adapters', kind: 'all', adapters: ordered.map((a) => a.name) });
  return groups;
}

export interface AblationExample {
  /** Row number in the input file. */
  example: number;
  inputIds: Int32Array;
}

/**
 * Which rows to use: those with more than `minTokens` tokens (after truncation), then `count` of them drawn
 * without replacement with `seed` (all of them with count 'all'), returned in row order.
 */
export function chooseExamples(lengths: readonly { example: number; tokens: number }[], count: number | 'all', seed: number, minTokens: number): number[] {
  const eligible = lengths.filter((l) => l.tokens > minTokens).map((l) => l.example);
  if (eligible.length === 0) {
    throw new Error(`ablation: no example has more than ${minTokens} tokens (of ${lengths.length}); lower --min-tokens`);
  }
  if (count === 'all' || count >= eligible.length) return eligible;
  const rng = new Random(seed);
  const pool = [...eligible];
  for (let i = 0; i < count; i++) {
    const j = i + rng.int(pool.length - i);
    [pool[i], pool[j]] = [pool[j]!, pool[i]!];
  }
  return pool.slice(0, count).sort((a, b) => a - b);
}

export interface AblationOptions {
  /** Ablated variants run together in one forward (default: as many as fit ~512 MB of activations, at most 16). */
  batch?: number;
  /** Rows per chunk of the KL and cross-entropy (default: defaultLossChunkRows(V)). */
  lossChunk?: number;
  onProgress?: (done: { examples: number; totalExamples: number; forwards: number; totalForwards: number }) => void;
}

/**
 * Default variants per forward: a batch's activations kept near 512 MB. With the logits read in chunks, a
 * variant holds its residual stream and one layer's intermediates at a time, about T · (6H + 3I) f32.
 */
export function defaultAblationBatch(tokens: number, dims: Pick<Qwen2Dims, 'hidden' | 'intermediate'>): number {
  return Math.max(1, Math.min(16, Math.floor((512 * 2 ** 20) / (tokens * (6 * dims.hidden + 3 * dims.intermediate) * 4))));
}

/**
 * The sweep: for each example, one full forward, then each group's ablated forward from its lowest layer,
 * batched. Returns every group's KL and CE per sequence and their means (ablationFromSequences).
 */
export async function ablationSweep(
  model: Qwen2Model, examples: readonly AblationExample[], groups: readonly AblationGroup[], options: AblationOptions = {},
): Promise<AblationResult> {
  if (!model.adapters) throw new Error('ablation needs a rank-1 adapter loaded on the model (--adapter DIR)');
  if (examples.length === 0) throw new Error('ablation: no examples');
  for (const group of groups) {
    for (const name of group.adapters) {
      if (!parseAdapterHookName(name)) throw new Error(`ablation group "${group.name}": "${name}" is not an adapter hook name (e.g. model.layers.0.self_attn.q_proj)`);
      if (!model.adapters.adapters.has(name)) throw new Error(`ablation group "${group.name}": the adapter has no ${name}`);
    }
  }
  const lowestLayer = groups.map((g) => Math.min(...g.adapters.map((n) => parseAdapterHookName(n)!.layer)));
  // Groups in runs of equal starting layer, each run cut into batches.
  const order = groups.map((_, i) => i).sort((a, b) => lowestLayer[a]! - lowestLayer[b]! || a - b);
  const sequences: AblationSequence[] = [];
  let forwardsDone = 0;
  const { layers } = model.dims;
  const residPreNames = Array.from({ length: layers }, (_, l) => hookName.residPre(l));

  for (let e = 0; e < examples.length; e++) {
    const { inputIds } = examples[e]!;
    const T = inputIds.length;
    if (T < 2) throw new Error(`ablation: example ${examples[e]!.example} has ${T} token(s); cross-entropy needs at least 2`);
    const batch = options.batch ?? defaultAblationBatch(T, model.dims);
    const batches: number[][] = [];
    for (let i = 0; i < order.length;) {
      const start = lowestLayer[order[i]!]!;
      const run: number[] = [];
      while (i < order.length && lowestLayer[order[i]!] === start && run.length < batch) run.push(order[i++]!);
      batches.push(run);
    }
    const totalForwards = examples.length * (1 + batches.length);

    // The full model: its final hidden states [1, T, H] and the residual stream entering every layer.
    const ids = tensor(inputIds, [1, T], { backend: model.backend, dtype: 'i32' });
    // Next-token targets at every position (the last one's is a placeholder, masked out): no [T-1, V] slices.
    const nextIds = new Int32Array(T);
    nextIds.set(inputIds.subarray(1));
    const targetsAllPositions = keep(tensor(nextIds, [1, T], { backend: model.backend, dtype: 'i32' }));
    const scoredPositions = keep(tensor(Float32Array.from({ length: T }, (_, t) => (t < T - 1 ? 1 : 0)), [1, T], { backend: model.backend }));
    const head = model.lmHeadWeight; // [V, H]
    const chunk = options.lossChunk !== undefined ? { chunkRows: options.lossChunk } : {};
    const { logits: full, cache: residuals } = noGrad(() => runWithCache(model, ids, residPreNames, { hiddenOnly: true }));
    const fullCe = (await noGrad(() => tidy(() => sum(linearCrossEntropyRows(full, head, targetsAllPositions, { mask: scoredPositions, ...chunk })))).toFloat32Array())[0]! / (T - 1);
    const kl = new Array<number>(groups.length);
    const ce = new Array<number>(groups.length);
    options.onProgress?.({ examples: e, totalExamples: examples.length, forwards: ++forwardsDone, totalForwards });

    try {
      for (const run of batches) {
        const B = run.length;
        const startLayer = lowestLayer[run[0]!]!;
        // Per ablated adapter, a [B, 1] mask: 0 in the rows whose group ablates it.
        const masks = new Map<string, Float32Array>();
        run.forEach((g, row) => {
          for (const name of groups[g]!.adapters) {
            let mask = masks.get(name);
            if (!mask) masks.set(name, (mask = new Float32Array(B).fill(1)));
            mask[row] = 0;
          }
        });
        const maskTensors = new Map([...masks].map(([name, mask]) => [name, keep(tensor(mask, [B, 1], { backend: model.backend }))]));
        const maskHooks: HookSpec = [...maskTensors].map(([name, mask]) => [name, (value: Tensor) => mul(value, mask)] as const);
        let stats: Float32Array;
        try {
          stats = await withHooks(model, maskHooks, () => noGrad(() => tidy(() => {
            const residual = expand(residuals.get(hookName.residPre(startLayer)), [B, T, model.dims.hidden]);
            const batchIds = expand(ids, [B, T]);
            const hidden = model.forward(batchIds, { startLayer, residual, hiddenOnly: true }); // [B, T, H]
            // The full run's hidden states broadcast over the B rows; scored on every position but the last (mask).
            const kl = mean(linearKlDivRows(full, hidden, head, chunk), -1); // [B]
            const ce = sum(linearCrossEntropyRows(hidden, head, expand(targetsAllPositions, [B, T]), { mask: expand(scoredPositions, [B, T]), ...chunk }), -1); // [B]
            return cat([kl, mul(ce, 1 / (T - 1))], 0); // [2B]
          }))).toFloat32Array();
        } finally {
          for (const t of maskTensors.values()) t.dispose();
        }
        run.forEach((g, row) => {
          kl[g] = Math.max(0, stats[row]!);
          ce[g] = stats[B + row]!;
        });
        options.onProgress?.({ examples: e, totalExamples: examples.length, forwards: ++forwardsDone, totalForwards });
      }
    } finally {
      full.dispose();
      targetsAllPositions.dispose();
      scoredPositions.dispose();
      ids.dispose();
      residuals.dispose();
    }
    sequences.push({ example: examples[e]!.example, tokens: T, fullCe, kl, ce });
    options.onProgress?.({ examples: e + 1, totalExamples: examples.length, forwards: forwardsDone, totalForwards });
  }
  return ablationFromSequences(groups, sequences);
}
