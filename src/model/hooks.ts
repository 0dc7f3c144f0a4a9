// Hook points: named places in the forward pass where a value can be read, replaced or steered
// (TransformerLens's HookPoint). Names follow the Hugging Face / PEFT module paths, so an adapter's hook is
// called exactly what its PEFT key says: `model.layers.12.mlp.gate_proj`. Every name is built by `hookName`
// below; the model and the listing (`listHookPoints`, `rank1 hooks`) both use it, so they cannot drift.
//
// Every hook point in forward order, with its shape (B batch, T tokens of this call, S tokens in the KV cache
// after this call (S = T without a cache), H hidden, I intermediate, V vocab, nh query heads, kv key/value
// heads, hd head dim):
//   model.embed_tokens.output                       [B, T, H]       token embeddings
//   per layer l:
//   model.layers.{l}.resid_pre                      [B, T, H]       residual stream entering layer l
//   model.layers.{l}.self_attn.{q,k,v}_proj         [B, T]          rank-1 adapter activation A·x (raw: no scale, no B)
//   model.layers.{l}.self_attn.{q,k,v}_proj.output  [B, T, nh·hd | kv·hd | kv·hd]  projection output, adapter included
//   model.layers.{l}.self_attn.q                    [B, T, nh, hd]  queries after RoPE
//   model.layers.{l}.self_attn.k                    [B, T, kv, hd]  keys after RoPE (this call's tokens)
//   model.layers.{l}.self_attn.v                    [B, T, kv, hd]  values (this call's tokens)
//   model.layers.{l}.self_attn.pattern              [B, nh, T, S]   softmax attention probabilities; read-only
//   model.layers.{l}.self_attn.o_proj.input         [B, T, nh·hd]   attention output per head, before o_proj (TL's z)
//   model.layers.{l}.self_attn.o_proj(.output)      [B, T] / [B, T, H]
//   model.layers.{l}.resid_mid                      [B, T, H]       after the attention residual add
//   model.layers.{l}.mlp.{gate,up}_proj(.output)    [B, T] / [B, T, I]
//   model.layers.{l}.mlp.act                        [B, T, I]       silu(gate)·up, the input of down_proj
//   model.layers.{l}.mlp.down_proj(.output)         [B, T] / [B, T, H]
//   model.layers.{l}.resid_post                     [B, T, H]       after the MLP residual add
//   model.norm.output                               [B, T, H]       final RMSNorm (T = 1 with lastPositionOnly)
//   lm_head.output                                  [B, T, V]       logits
// Adapter hooks fire only where an adapter is loaded. The attention is fused and never materialises its
// probabilities, so the pattern is recomputed from q and k only when a hook is installed there.
import { Tensor, keep, tidy } from '../tensor/tensor.ts';
import { add, cat, detach, full, mul, unsqueeze } from '../tensor/ops.ts';

/** The seven adapted projections, in the paper's order within a layer: index 7·layer + j. */
export const PROJECTIONS = ['gate_proj', 'up_proj', 'down_proj', 'q_proj', 'k_proj', 'v_proj', 'o_proj'] as const;
export type Projection = (typeof PROJECTIONS)[number];

export function isAttentionProjection(projection: Projection): boolean {
  return projection === 'q_proj' || projection === 'k_proj' || projection === 'v_proj' || projection === 'o_proj';
}

const layerPath = (layer: number) => `model.layers.${layer}`;

/** `model.layers.{l}.self_attn.q_proj` / `model.layers.{l}.mlp.gate_proj`. */
export function adapterHookName(layer: number, projection: Projection): string {
  return `${layerPath(layer)}.${isAttentionProjection(projection) ? 'self_attn' : 'mlp'}.${projection}`;
}

/** Every adapter hook name in the paper's order (7·L of them). */
export function adapterHookNames(layers: number): string[] {
  const names: string[] = [];
  for (let l = 0; l < layers; l++) for (const p of PROJECTIONS) names.push(adapterHookName(l, p));
  return names;
}

/** Every hook point's name: the one place they are spelled (the model and the listing both call these). */
export const hookName = {
  /** [B, T, H] token embeddings. */
  embed: () => 'model.embed_tokens.output',
  /** [B, T, H] residual stream entering the layer. */
  residPre: (layer: number) => `${layerPath(layer)}.resid_pre`,
  /** [B, T, H] after the attention residual add. */
  residMid: (layer: number) => `${layerPath(layer)}.resid_mid`,
  /** [B, T, H] after the MLP residual add. */
  residPost: (layer: number) => `${layerPath(layer)}.resid_post`,
  /** [B, T] rank-1 adapter activation A·x (the PEFT module path). */
  adapter: adapterHookName,
  /** [B, T, out] the projection's output, its adapter included. */
  projectionOutput: (layer: number, projection: Projection) => `${adapterHookName(layer, projection)}.output`,
  /** [B, T, nh, hd] queries after RoPE. */
  q: (layer: number) => `${layerPath(layer)}.self_attn.q`,
  /** [B, T, kv, hd] keys after RoPE. */
  k: (layer: number) => `${layerPath(layer)}.self_attn.k`,
  /** [B, T, kv, hd] values. */
  v: (layer: number) => `${layerPath(layer)}.self_attn.v`,
  /** [B, nh, T, S] attention probabilities (read-only). */
  pattern: (layer: number) => `${layerPath(layer)}.self_attn.pattern`,
  /** [B, T, nh·hd] attention output per head, before o_proj (TransformerLens's hook_z, heads flattened). */
  z: (layer: number) => `${layerPath(layer)}.self_attn.o_proj.input`,
  /** [B, T, I] silu(gate)·up, the input of down_proj. */
  mlpAct: (layer: number) => `${layerPath(layer)}.mlp.act`,
  /** [B, T, H] the final RMSNorm's output. */
  finalNorm: () => 'model.norm.output',
  /** [B, T, V] logits. */
  logits: () => 'lm_head.output',
} as const;

/** Families of hook points (what `rank1 hooks --kind` filters by). */
export const HOOK_KINDS = [
  'embed', 'resid_pre', 'adapter', 'projection_output', 'attn_q', 'attn_k', 'attn_v', 'attn_pattern', 'attn_z',
  'resid_mid', 'mlp_act', 'resid_post', 'final_norm', 'logits',
] as const;
export type HookKind = (typeof HOOK_KINDS)[number];

/**
 * A per-layer hook point by its short name (TransformerLens's `cache['resid_post', 3]`): a projection is its
 * adapter, `{projection}.output` the projection's output, q/k/v/pattern/z the attention's.
 */
export type LayerHookKey =
  | 'resid_pre' | 'resid_mid' | 'resid_post' | Projection | `${Projection}.output` | 'q' | 'k' | 'v' | 'pattern' | 'z' | 'mlp_act';

/** The hook name of a per-layer key, or of a suffix after `model.layers.{l}.` (e.g. `mlp.act`). */
export function layerHookName(key: LayerHookKey | (string & {}), layer: number): string {
  switch (key) {
    case 'resid_pre': return hookName.residPre(layer);
    case 'resid_mid': return hookName.residMid(layer);
    case 'resid_post': return hookName.residPost(layer);
    case 'q': return hookName.q(layer);
    case 'k': return hookName.k(layer);
    case 'v': return hookName.v(layer);
    case 'pattern': return hookName.pattern(layer);
    case 'z': return hookName.z(layer);
    case 'mlp_act': return hookName.mlpAct(layer);
  }
  const projection = PROJECTIONS.find((p) => key === p || key === `${p}.output`);
  if (projection) return key.endsWith('.output') ? hookName.projectionOutput(layer, projection) : hookName.adapter(layer, projection);
  return `${layerPath(layer)}.${key}`;
}

/** The sizes the listing's shapes need (a Qwen2Dims fits). */
export interface HookDims {
  layers: number;
  hidden: number;
  intermediate: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
}

export interface HookPointInfo {
  name: string;
  kind: HookKind;
  /** The layer, for per-layer hooks (absent for the embedding, final norm and logits). */
  layer?: number;
  /** The short per-layer name (`ActivationCache.layer(key, l)`), for per-layer hooks. */
  key?: LayerHookKey;
  /** The projection, for adapter and projection-output hooks. */
  projection?: Projection;
  /** Index 7·layer + j in the paper's adapter order, for adapter hooks. */
  adapterIndex?: number;
  /** Shape with symbolic batch and token axes, e.g. "[B, T, 896]". */
  shape: string;
  description: string;
}

/** Attention projections run in this order in the forward pass, then the MLP's. */
const FORWARD_ATTENTION: readonly Projection[] = ['q_proj', 'k_proj', 'v_proj'];

/**
 * Every hook point of a model in forward order, with its shape. The positional form (layers, hidden,
 * intermediate) is the older one: it shows head sizes and the vocabulary as symbols (nh, kv, hd, V).
 */
export function listHookPoints(dims: HookDims): HookPointInfo[];
export function listHookPoints(layers: number, hidden: number, intermediate: number): HookPointInfo[];
export function listHookPoints(dimsOrLayers: HookDims | number, hiddenSize?: number, intermediateSize?: number): HookPointInfo[] {
  const dims: Partial<HookDims> & Pick<HookDims, 'layers' | 'hidden' | 'intermediate'> = typeof dimsOrLayers === 'number'
    ? { layers: dimsOrLayers, hidden: hiddenSize!, intermediate: intermediateSize! }
    : dimsOrLayers;
  const H = String(dims.hidden);
  const I = String(dims.intermediate);
  const nh = dims.heads === undefined ? 'nh' : String(dims.heads);
  const kv = dims.kvHeads === undefined ? 'kv' : String(dims.kvHeads);
  const hd = dims.headDim === undefined ? 'hd' : String(dims.headDim);
  const V = dims.vocab === undefined ? 'V' : String(dims.vocab);
  const product = (heads: number | undefined, symbol: string) =>
    heads !== undefined && dims.headDim !== undefined ? String(heads * dims.headDim) : `${symbol}·${hd}`;
  const outputSize: Record<Projection, string> = {
    q_proj: product(dims.heads, nh), k_proj: product(dims.kvHeads, kv), v_proj: product(dims.kvHeads, kv), o_proj: H,
    gate_proj: I, up_proj: I, down_proj: H,
  };
  const points: HookPointInfo[] = [];
  points.push({ name: hookName.embed(), kind: 'embed', shape: `[B, T, ${H}]`, description: 'token embeddings' });
  for (let layer = 0; layer < dims.layers; layer++) {
    const at = (key: LayerHookKey, kind: HookKind, shape: string, description: string, projection?: Projection): void => {
      points.push({
        name: layerHookName(key, layer), kind, layer, key, shape, description,
        ...(projection ? { projection } : {}),
        ...(kind === 'adapter' ? { adapterIndex: 7 * layer + PROJECTIONS.indexOf(projection!) } : {}),
      });
    };
    const projection = (p: Projection, input: string): void => {
      at(p, 'adapter', '[B, T]', `rank-1 adapter activation A·x of ${p} (raw: no scale, no B)`, p);
      at(`${p}.output`, 'projection_output', `[B, T, ${outputSize[p]}]`, `${p}(${input}), adapter included`, p);
    };
    at('resid_pre', 'resid_pre', `[B, T, ${H}]`, 'residual stream entering the layer');
    for (const p of FORWARD_ATTENTION) projection(p, 'rmsNorm(resid_pre)');
    at('q', 'attn_q', `[B, T, ${nh}, ${hd}]`, 'queries after RoPE');
    at('k', 'attn_k', `[B, T, ${kv}, ${hd}]`, 'keys after RoPE (this call\'s tokens)');
    at('v', 'attn_v', `[B, T, ${kv}, ${hd}]`, 'values (this call\'s tokens)');
    at('pattern', 'attn_pattern', `[B, ${nh}, T, S]`, 'attention probabilities, causal (S keys incl. the KV cache); read-only, computed only when hooked');
    at('z', 'attn_z', `[B, T, ${product(dims.heads, nh)}]`, 'attention output per head, the input of o_proj');
    projection('o_proj', 'the attention');
    at('resid_mid', 'resid_mid', `[B, T, ${H}]`, 'residual stream after attention');
    projection('gate_proj', 'rmsNorm(resid_mid)');
    projection('up_proj', 'rmsNorm(resid_mid)');
    at('mlp_act', 'mlp_act', `[B, T, ${I}]`, 'silu(gate)·up, the input of down_proj');
    projection('down_proj', 'mlp.act');
    at('resid_post', 'resid_post', `[B, T, ${H}]`, 'residual stream after the MLP');
  }
  points.push({ name: hookName.finalNorm(), kind: 'final_norm', shape: `[B, T, ${H}]`, description: 'final RMSNorm (T = 1 with lastPositionOnly)' });
  points.push({ name: hookName.logits(), kind: 'logits', shape: `[B, T, ${V}]`, description: 'logits (T = 1 with lastPositionOnly)' });
  return points;
}

export interface HookContext {
  name: string;
  /** Position of this call's first token in the sequence (non-zero during KV-cache generation). */
  positionOffset: number;
}

/** Reads a value (return nothing) or replaces it (return a tensor of the same shape). */
export type HookFn = (value: Tensor, context: HookContext) => Tensor | void;

/** The hooks installed on a model. Patterns ending in `*` match every name with that prefix. */
export class HookRegistry {
  private readonly exact = new Map<string, HookFn[]>();
  private readonly prefixes: [string, HookFn][] = [];

  get size(): number {
    let n = this.prefixes.length;
    for (const fns of this.exact.values()) n += fns.length;
    return n;
  }

  /** Installs fn at name (or at every name matching `prefix*`); returns the function that removes it. */
  add(pattern: string, fn: HookFn): () => void {
    if (pattern.endsWith('*')) {
      const entry: [string, HookFn] = [pattern.slice(0, -1), fn];
      this.prefixes.push(entry);
      return () => {
        const i = this.prefixes.indexOf(entry);
        if (i >= 0) this.prefixes.splice(i, 1);
      };
    }
    const list = this.exact.get(pattern) ?? [];
    list.push(fn);
    this.exact.set(pattern, list);
    return () => {
      const i = list.indexOf(fn);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.exact.delete(pattern);
    };
  }

  /** Whether any hook would run at `name` (installed there or at a matching prefix). */
  has(name: string): boolean {
    return this.exact.has(name) || this.prefixes.some(([prefix]) => name.startsWith(prefix));
  }

  /** Runs the hooks at `name` in installation order, each seeing the previous one's output. */
  run(name: string, value: Tensor, positionOffset: number): Tensor {
    if (this.exact.size === 0 && this.prefixes.length === 0) return value;
    const fns = [...(this.exact.get(name) ?? []), ...this.prefixes.filter(([p]) => name.startsWith(p)).map(([, f]) => f)];
    let current = value;
    for (const fn of fns) {
      const replaced = fn(current, { name, positionOffset });
      if (replaced) {
        if (replaced.shape.join() !== current.shape.join()) {
          throw new Error(`hook at ${name} returned shape [${replaced.shape.join(', ')}], expected [${current.shape.join(', ')}]`);
        }
        current = replaced;
      }
    }
    return current;
  }
}

/** Something that has hooks: the model. */
export interface Hookable {
  readonly hooks: HookRegistry;
}

export type HookSpec = Record<string, HookFn> | readonly (readonly [string, HookFn])[];

/**
 * Installs hooks for the duration of fn (sync or async) and removes them afterwards, also when fn throws.
 */
export function withHooks<T>(model: Hookable, spec: HookSpec, fn: () => T): T {
  const entries = Array.isArray(spec) ? spec : Object.entries(spec);
  const removers = entries.map(([name, hook]) => model.hooks.add(name, hook));
  const removeAll = () => removers.forEach((remove) => remove());
  let result: T;
  try {
    result = fn();
  } catch (error) {
    removeAll();
    throw error;
  }
  if (result instanceof Promise) return result.finally(removeAll) as T;
  removeAll();
  return result;
}

// ---- ready-made hooks -------------------------------------------------------------------------

/** Replaces the value with a constant (e.g. a mean activation: mean ablation). */
export function constantAblate(constant: number): HookFn {
  return (value) => full(value.shape, constant, { backend: value.backend });
}

/** Replaces the value with zeros (zero ablation: the adapter contributes nothing). */
export const zeroAblate: HookFn = constantAblate(0);

/** Adds a constant: steering (the paper uses magnitudes up to 50× an activation's typical size). */
export function steer(delta: number): HookFn {
  return (value) => add(value, delta);
}

/** Multiplies by a factor. */
export function scaleBy(factor: number): HookFn {
  return (value) => mul(value, factor);
}

/**
 * Records what passes through the matched hook points, kept on the device (no sync per layer or token).
 * During generation each call appends one chunk per hook; `get` concatenates along the token axis.
 */
export class HookRecorder {
  readonly chunks = new Map<string, Tensor[]>();

  readonly hook: HookFn = (value, { name }) => {
    const list = this.chunks.get(name) ?? [];
    list.push(keep(detach(value)));
    this.chunks.set(name, list);
  };

  /** Everything recorded at name, concatenated over calls along the token axis (axis 1). */
  get(name: string): Tensor {
    const list = this.chunks.get(name);
    if (!list || list.length === 0) throw new Error(`HookRecorder: nothing was recorded at ${name}`);
    if (list.length === 1) return list[0]!;
    const outsideTokens = (t: Tensor) => t.shape.filter((_, axis) => axis !== 1).join();
    if (list.some((t) => outsideTokens(t) !== outsideTokens(list[0]!))) {
      throw new Error(`HookRecorder: the ${list.length} values recorded at ${name} differ outside the token axis (an attention pattern's key axis grows with the KV cache): read recorder.chunks.get(name)`);
    }
    const joined = keep(cat(list, 1));
    for (const t of list) t.dispose();
    this.chunks.set(name, [joined]);
    return joined;
  }

  get names(): string[] {
    return [...this.chunks.keys()];
  }

  /** The listed hook values stacked on a new last axis: [B, T, names.length]. */
  stack(names: readonly string[]): Tensor {
    return tidy(() => cat(names.map((n) => unsqueeze(this.get(n), -1)), -1));
  }

  dispose(): void {
    for (const list of this.chunks.values()) for (const t of list) t.dispose();
    this.chunks.clear();
  }
}
