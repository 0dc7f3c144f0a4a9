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

/**
 * Parsing names: the one place a hook name or a feature name is read back (the inverse of `hookName` and
 * `featureName`). Analysis, figures, the dashboard and the playground all go through these.
 */

/** A per-layer hook name read back: its layer, and its projection when it is an adapter or projection hook. */
export interface ParsedHookName {
  layer: number;
  /** `adapter`: `model.layers.{l}.{mlp|self_attn}.{proj}`; `projection_output`: the same + `.output`;
   *  `neuron`: one column of a projection output, `…{proj}.output[{n}]`; `layer`: any other per-layer point. */
  kind: 'adapter' | 'projection_output' | 'neuron' | 'layer';
  projection?: Projection;
  /** The column, for `neuron`. */
  neuron?: number;
  /** What follows `model.layers.{l}.` (e.g. `self_attn.q_proj`, `resid_pre`). */
  suffix: string;
}

const LAYER_HOOK = /^model\.layers\.(\d+)\.(.+)$/;
const PROJECTION_SUFFIX = /^(self_attn|mlp)\.(\w+_proj)(\.output(?:\[(\d+)\])?)?$/;

/** A per-layer hook name read back, or null for a name outside the layers (embedding, final norm, logits, typos). */
export function parseHookName(name: string): ParsedHookName | null {
  const layerMatch = LAYER_HOOK.exec(name);
  if (!layerMatch) return null;
  const layer = Number(layerMatch[1]);
  const suffix = layerMatch[2]!;
  const projectionMatch = PROJECTION_SUFFIX.exec(suffix);
  if (!projectionMatch) return { layer, kind: 'layer', suffix };
  const projection = PROJECTIONS.find((p) => p === projectionMatch[2]);
  // `mlp.q_proj` is not a hook: the module must be the projection's own.
  if (!projection || adapterHookName(layer, projection) !== `model.layers.${layer}.${projectionMatch[1]}.${projection}`) {
    return { layer, kind: 'layer', suffix };
  }
  if (projectionMatch[4] !== undefined) return { layer, kind: 'neuron', projection, neuron: Number(projectionMatch[4]), suffix };
  return { layer, kind: projectionMatch[3] ? 'projection_output' : 'adapter', projection, suffix };
}

/** The layer and projection of an adapter hook name (`model.layers.3.self_attn.q_proj`), or null. */
export function parseAdapterHookName(name: string): { layer: number; projection: Projection } | null {
  const parsed = parseHookName(name);
  return parsed?.kind === 'adapter' ? { layer: parsed.layer, projection: parsed.projection! } : null;
}

/** `L3 q_proj` for a hook name of layer 3's q_proj adapter (short labels for figures); the name itself otherwise. */
export function shortHookLabel(name: string): string {
  const parsed = parseHookName(name);
  return parsed ? `L${parsed.layer} ${parsed.projection ?? parsed.suffix}` : name;
}

/** The sign of a feature's activations: the positive or the negative side of a direction. */
export type Polarity = 'pos' | 'neg';
export const polarityOf = (value: number): Polarity => (value >= 0 ? 'pos' : 'neg');

/** What a feature is: an adapter direction, an MLP neuron, an SAE latent, or anything else. */
export type FeatureKind = 'adapter' | 'mlp' | 'sae' | 'other';

/** `L3_q_proj_pos` for `model.layers.3.self_attn.q_proj`; `L3_up_neuron17_neg` for column 17 of layer 3's up_proj output. */
export function featureName(hook: string, polarity: Polarity): string {
  const parsed = parseHookName(hook);
  if (parsed?.kind === 'adapter') return `L${parsed.layer}_${parsed.projection}_${polarity}`;
  if (parsed?.kind === 'neuron' && parsed.projection === 'up_proj') return `L${parsed.layer}_up_neuron${parsed.neuron}_${polarity}`;
  return `${hook}_${polarity}`;
}

/** The name of SAE latent i. */
export const saeFeatureName = (latent: number): string => `sae_${latent}`;

/** A feature name read back (the inverse of `featureName` and `saeFeatureName`). */
export interface ParsedFeatureName {
  kind: FeatureKind;
  layer?: number;
  /** The adapter's projection; `up_proj` for MLP neurons. */
  projection?: Projection;
  polarity?: Polarity;
  neuron?: number;
  latent?: number;
}

const ADAPTER_FEATURE = /^L(\d+)_(\w+_proj)_(pos|neg)$/;
const NEURON_FEATURE = /^L(\d+)_up_neuron(\d+)_(pos|neg)$/;
const SAE_FEATURE = /^sae_(\d+)$/;

export function parseFeatureName(name: string): ParsedFeatureName {
  const sae = SAE_FEATURE.exec(name);
  if (sae) return { kind: 'sae', latent: Number(sae[1]) };
  const neuron = NEURON_FEATURE.exec(name);
  if (neuron) return { kind: 'mlp', layer: Number(neuron[1]), projection: 'up_proj', neuron: Number(neuron[2]), polarity: neuron[3] as Polarity };
  const adapter = ADAPTER_FEATURE.exec(name);
  const projection = adapter && PROJECTIONS.find((p) => p === adapter[2]);
  if (adapter && projection) return { kind: 'adapter', layer: Number(adapter[1]), projection, polarity: adapter[3] as Polarity };
  return { kind: 'other' };
}

/** adapter directions (L3_q_proj_pos), MLP neurons (L3_up_neuron12_pos), SAE latents (sae_7), other. */
export const featureKind = (name: string): FeatureKind => parseFeatureName(name).kind;

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
