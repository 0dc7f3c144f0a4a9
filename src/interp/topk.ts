// Max-activating examples: for every adapter direction, both polarities as separate features
// (`L{l}_{proj}_pos`, `L{l}_{proj}_neg`), the top k tokens of the store by |A·x| with ±context tokens around
// each, plus counts, mean, extreme and a histogram. The same for the MLP-neuron baseline when the store has it.
//
// One streaming pass over the store: a bounded min-heap of k entries per feature (memory independent of the
// store's size), and a histogram whose bin width doubles (merging bin pairs) whenever a value exceeds its
// range, so it needs no first pass to find the range. Ordering is total: |value| descending, then example
// and position ascending, so the result equals a full sort of the store, ties included.
import type { Tokenizer } from '../model/tokenizer.ts';
import { featureName, type Polarity } from '../model/hooks.ts';
import type { ActivationStore, StoreExample } from './activation-store.ts';

export interface TopExample {
  /** Row number in the input file of `rank1 extract`. */
  example: number;
  /** Token position within the example. */
  position: number;
  value: number;
  /** Token ids from position − context to position + context (clipped to the example). */
  context_ids: number[];
  /** Each context id decoded on its own (empty when no tokenizer was given). */
  context_tokens: string[];
  /** This feature's column at every context token (signed, raw; `value` is context_values[center]). */
  context_values?: number[];
  /** Index of the activating token within context_ids. */
  center: number;
}

export interface FeatureHistogram {
  /** Bin edges (signed, ascending): counts[i] counts values in [edges[i], edges[i+1]). */
  edges: number[];
  counts: number[];
}

export interface FeatureTopExamples {
  feature: string;
  hook: string;
  polarity: Polarity;
  /** Tokens whose value has this polarity and |value| > minAbs. */
  active_count: number;
  /** Mean of the active values (signed), 0 when none. */
  mean: number;
  /** The most extreme active value (signed: the most negative for _neg), 0 when none. */
  max: number;
  histogram: FeatureHistogram;
  /** Sorted by |value|, descending. */
  examples: TopExample[];
}

export interface TopkOptions {
  k?: number;
  context?: number;
  minAbs?: number;
  /** Also the MLP-neuron baseline, when the store has it (default true). */
  mlp?: boolean;
  histogramBins?: number;
  tokenizer?: Tokenizer | null;
  onProgress?: (done: { shards: number; totalShards: number; tokens: number }) => void;
}

export const TOPK_DEFAULTS = { k: 64, context: 30, minAbs: 0.01, histogramBins: 32 } as const;

interface HeapEntry {
  magnitude: number;
  value: number;
  example: number;
  position: number;
  contextIds: Int32Array;
  contextValues: Float32Array;
  center: number;
}

/** a ranks before b: larger |value|, then smaller example, then smaller position. */
function ranksBefore(a: HeapEntry, b: { magnitude: number; example: number; position: number }): boolean {
  if (a.magnitude !== b.magnitude) return a.magnitude > b.magnitude;
  if (a.example !== b.example) return a.example < b.example;
  return a.position < b.position;
}

/** A min-heap of at most k entries whose root is the lowest-ranked kept entry. */
class BoundedHeap {
  readonly items: HeapEntry[] = [];
  constructor(readonly k: number) {}

  /** Would an entry with this rank get in? */
  admits(magnitude: number, example: number, position: number): boolean {
    if (this.items.length < this.k) return this.k > 0;
    return ranksBefore({ magnitude, example, position } as HeapEntry, this.items[0]!);
  }

  push(entry: HeapEntry): void {
    const items = this.items;
    if (items.length < this.k) {
      items.push(entry);
      let i = items.length - 1;
      while (i > 0) {
        const parent = (i - 1) >> 1;
        if (!ranksBefore(items[parent]!, items[i]!)) break; // parent must rank lower (closer to dropping)
        [items[parent], items[i]] = [items[i]!, items[parent]!];
        i = parent;
      }
      return;
    }
    items[0] = entry;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let lowest = i;
      if (left < items.length && ranksBefore(items[lowest]!, items[left]!)) lowest = left;
      if (right < items.length && ranksBefore(items[lowest]!, items[right]!)) lowest = right;
      if (lowest === i) break;
      [items[lowest], items[i]] = [items[i]!, items[lowest]!];
      i = lowest;
    }
  }

  sorted(): HeapEntry[] {
    return [...this.items].sort((a, b) => (ranksBefore(a, b) ? -1 : ranksBefore(b, a) ? 1 : 0));
  }
}

/** A histogram of |value| over [0, width·bins) whose width doubles (merging bin pairs) to fit any value. */
class DoublingHistogram {
  readonly counts: Float64Array;
  width: number;
  constructor(readonly bins: number, initialWidth: number) {
    this.counts = new Float64Array(bins);
    this.width = initialWidth;
  }

  add(magnitude: number): void {
    while (magnitude >= this.width * this.bins) {
      for (let i = 0; i < this.bins / 2; i++) this.counts[i] = this.counts[2 * i]! + this.counts[2 * i + 1]!;
      this.counts.fill(0, this.bins / 2);
      this.width *= 2;
    }
    this.counts[Math.floor(magnitude / this.width)]!++;
  }

  /** Signed, ascending edges for the polarity; trailing empty bins dropped. */
  toJson(polarity: Polarity): FeatureHistogram {
    let used = this.bins;
    while (used > 1 && this.counts[used - 1] === 0) used--;
    const edges = Array.from({ length: used + 1 }, (_, i) => i * this.width);
    const counts = Array.from(this.counts.subarray(0, used));
    if (polarity === 'pos') return { edges, counts };
    return { edges: edges.reverse().map((e) => (e === 0 ? 0 : -e)), counts: counts.reverse() };
  }
}

interface FeatureState {
  hook: string;
  polarity: Polarity;
  feature: string;
  heap: BoundedHeap;
  histogram: DoublingHistogram;
  count: number;
  sum: number;
  extreme: number;
}

/**
 * The max-activating examples of every feature of the store, in store column order (each hook's _pos then
 * _neg; adapters, then MLP neurons).
 */
export async function topActivations(store: ActivationStore, options: TopkOptions = {}): Promise<FeatureTopExamples[]> {
  const useMlp = (options.mlp ?? true) && store.index.mlp_neurons.length > 0;
  const groups: ColumnGroup[] = [{ names: store.index.hooks, polarities: 'both', valuesOf: (ex) => ex.acts }];
  if (useMlp) groups.push({ names: store.index.mlp_neurons, polarities: 'both', valuesOf: (ex) => ex.mlp! });
  return topActivationsOfColumns(store, groups, options);
}

/** Columns whose values are derived per example (the store's own, or e.g. an SAE's latents of them). */
export interface ColumnGroup {
  /** One per column: the `hook` of its features. */
  names: readonly string[];
  /** 'both': _pos and _neg features per column; 'pos': only positive values, one feature per column. */
  polarities: 'both' | 'pos';
  /** [T, names.length] values of one example. */
  valuesOf: (example: StoreExample) => Float32Array | Promise<Float32Array>;
  /** Feature name of column c (default: featureName(hook, polarity)). */
  featureOf?: (column: number, polarity: Polarity) => string;
}

/** The streaming top-k pass over the store for any column groups (see topActivations). */
export async function topActivationsOfColumns(store: ActivationStore, groups: readonly ColumnGroup[], options: TopkOptions = {}): Promise<FeatureTopExamples[]> {
  const k = options.k ?? TOPK_DEFAULTS.k;
  const context = options.context ?? TOPK_DEFAULTS.context;
  const minAbs = options.minAbs ?? TOPK_DEFAULTS.minAbs;
  const bins = options.histogramBins ?? TOPK_DEFAULTS.histogramBins;
  if (!Number.isInteger(k) || k < 1) throw new RangeError(`topk: --k must be a positive integer, got ${k}`);
  if (!Number.isInteger(context) || context < 0) throw new RangeError(`topk: --context must be a non-negative integer, got ${context}`);
  if (!(minAbs >= 0)) throw new RangeError(`topk: --min-abs must be ≥ 0, got ${minAbs}`);
  if (!Number.isInteger(bins) || bins < 2 || bins % 2 !== 0) throw new RangeError(`topk: histogram bins must be an even integer ≥ 2, got ${bins}`);
  const initialWidth = Math.max(minAbs, 1e-3) * 4 / bins;
  const states = groups.map((group) => group.names.flatMap((hook, column) => (group.polarities === 'both' ? ['pos', 'neg'] as const : ['pos'] as const)
    .map((polarity): FeatureState => ({
      hook, polarity, feature: group.featureOf?.(column, polarity) ?? featureName(hook, polarity),
      heap: new BoundedHeap(k), histogram: new DoublingHistogram(bins, initialWidth), count: 0, sum: 0, extreme: 0,
    }))));

  const scan = (group: ColumnGroup, groupStates: FeatureState[], values: Float32Array, ids: Int32Array, example: number) => {
    const T = ids.length;
    const columns = group.names.length;
    if (values.length !== T * columns) throw new Error(`topk: ${values.length} values for example ${example}, expected [${T}, ${columns}]`);
    const both = group.polarities === 'both';
    for (let t = 0; t < T; t++) {
      const row = t * columns;
      for (let c = 0; c < columns; c++) {
        const value = values[row + c]!;
        const magnitude = Math.abs(value);
        if (!(magnitude > minAbs)) continue;
        if (!both && value < 0) continue;
        const state = groupStates[both ? 2 * c + (value > 0 ? 0 : 1) : c]!;
        state.count++;
        state.sum += value;
        if (magnitude > Math.abs(state.extreme)) state.extreme = value;
        state.histogram.add(magnitude);
        if (state.heap.admits(magnitude, example, t)) {
          const from = Math.max(0, t - context);
          const to = Math.min(T, t + context + 1);
          // This feature's column over the context too (the dashboard colours every token by it).
          const contextValues = new Float32Array(to - from);
          for (let u = from; u < to; u++) contextValues[u - from] = values[u * columns + c]!;
          state.heap.push({ magnitude, value, example, position: t, contextIds: ids.slice(from, to), contextValues, center: t - from });
        }
      }
    }
  };

  let tokens = 0;
  let shard = -1;
  for await (const ex of store.examples()) {
    if (ex.shard !== shard) {
      if (shard >= 0) options.onProgress?.({ shards: shard + 1, totalShards: store.shardCount, tokens });
      shard = ex.shard;
    }
    for (let g = 0; g < groups.length; g++) scan(groups[g]!, states[g]!, await groups[g]!.valuesOf(ex), ex.inputIds, ex.example);
    tokens += ex.inputIds.length;
  }
  options.onProgress?.({ shards: store.shardCount, totalShards: store.shardCount, tokens });

  const tokenizer = options.tokenizer ?? null;
  const decodeOne = (id: number) => (tokenizer ? tokenizer.decode([id]) : '');
  return states.flat().map((state) => ({
    feature: state.feature,
    hook: state.hook,
    polarity: state.polarity,
    active_count: state.count,
    mean: state.count > 0 ? state.sum / state.count : 0,
    max: state.extreme,
    histogram: state.histogram.toJson(state.polarity),
    examples: state.heap.sorted().map((e) => ({
      example: e.example,
      position: e.position,
      value: e.value,
      context_ids: Array.from(e.contextIds),
      context_tokens: Array.from(e.contextIds, decodeOne),
      context_values: Array.from(e.contextValues, (v) => Number(v.toPrecision(5))),
      center: e.center,
    })),
  }));
}
