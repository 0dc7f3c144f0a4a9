// Hook points: named places in the forward pass where a value can be read, replaced or steered
// (TransformerLens's HookPoint). Names follow the Hugging Face / PEFT module paths, so an adapter's hook is
// called exactly what its PEFT key says: `model.layers.12.mlp.gate_proj`.
//
// Every hook point, with its shape (B batch, T tokens of this call, H hidden, I intermediate):
//   model.layers.{l}.{self_attn|mlp}.{proj}   [B, T]     rank-1 adapter activation A·x (raw: no scale, no B)
//   model.layers.{l}.resid_pre                 [B, T, H]  residual stream entering layer l
//   model.layers.{l}.resid_mid                 [B, T, H]  after the attention residual add
//   model.layers.{l}.resid_post                [B, T, H]  after the MLP residual add
//   model.layers.{l}.mlp.up_proj.output        [B, T, I]  up_proj output (adapter included)
//   model.layers.{l}.mlp.act                   [B, T, I]  silu(gate)·up, the input of down_proj
import { Tensor, keep, tidy } from '../tensor/tensor.ts';
import { add, cat, detach, full, mul, unsqueeze } from '../tensor/ops.ts';

/** The seven adapted projections, in the paper's order within a layer: index 7·layer + j. */
export const PROJECTIONS = ['gate_proj', 'up_proj', 'down_proj', 'q_proj', 'k_proj', 'v_proj', 'o_proj'] as const;
export type Projection = (typeof PROJECTIONS)[number];

export function isAttentionProjection(projection: Projection): boolean {
  return projection === 'q_proj' || projection === 'k_proj' || projection === 'v_proj' || projection === 'o_proj';
}

/** `model.layers.{l}.self_attn.q_proj` / `model.layers.{l}.mlp.gate_proj`. */
export function adapterHookName(layer: number, projection: Projection): string {
  return `model.layers.${layer}.${isAttentionProjection(projection) ? 'self_attn' : 'mlp'}.${projection}`;
}

/** Every adapter hook name in the paper's order (7·L of them). */
export function adapterHookNames(layers: number): string[] {
  const names: string[] = [];
  for (let l = 0; l < layers; l++) for (const p of PROJECTIONS) names.push(adapterHookName(l, p));
  return names;
}

export type HookKind = 'adapter' | 'resid_pre' | 'resid_mid' | 'resid_post' | 'mlp_up' | 'mlp_act';

export interface HookPointInfo {
  name: string;
  kind: HookKind;
  layer: number;
  /** The projection, for adapter hooks. */
  projection?: Projection;
  /** Index 7·layer + j in the paper's adapter order, for adapter hooks. */
  adapterIndex?: number;
  /** Shape with symbolic batch and token axes, e.g. "[B, T, 896]". */
  shape: string;
  description: string;
}

export function listHookPoints(layers: number, hidden: number, intermediate: number): HookPointInfo[] {
  const points: HookPointInfo[] = [];
  for (let layer = 0; layer < layers; layer++) {
    points.push({ name: `model.layers.${layer}.resid_pre`, kind: 'resid_pre', layer, shape: `[B, T, ${hidden}]`, description: 'residual stream entering the layer' });
    PROJECTIONS.forEach((projection, j) => {
      points.push({
        name: adapterHookName(layer, projection),
        kind: 'adapter',
        layer,
        projection,
        adapterIndex: 7 * layer + j,
        shape: '[B, T]',
        description: `rank-1 adapter activation A·x of ${projection} (raw: no scale, no B)`,
      });
    });
    points.push({ name: `model.layers.${layer}.resid_mid`, kind: 'resid_mid', layer, shape: `[B, T, ${hidden}]`, description: 'residual stream after attention' });
    points.push({ name: `model.layers.${layer}.mlp.up_proj.output`, kind: 'mlp_up', layer, shape: `[B, T, ${intermediate}]`, description: 'up_proj output (MLP neurons before gating)' });
    points.push({ name: `model.layers.${layer}.mlp.act`, kind: 'mlp_act', layer, shape: `[B, T, ${intermediate}]`, description: 'silu(gate)·up, the input of down_proj' });
    points.push({ name: `model.layers.${layer}.resid_post`, kind: 'resid_post', layer, shape: `[B, T, ${hidden}]`, description: 'residual stream after the MLP' });
  }
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

  /** Runs the hooks at `name` in installation order, each seeing the previous one's output. */
  run(name: string, value: Tensor, positionOffset: number): Tensor {
    if (this.size === 0) return value;
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
