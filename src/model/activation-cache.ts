// run_with_cache (TransformerLens): one forward pass that keeps what passes through the chosen hook points,
// detached and on the device, indexed by name or TransformerLens-style by (key, layer).
//
//   const { logits, cache } = runWithCache(model, [1, 2, 3], 'model.layers.3.*');
//   cache.layer('resid_post', 3)   // [B, T, H]
//   cache.layer('q_proj', 3)       // [B, T] the adapter's A·x
//   cache.dispose();
import { Tensor, keep, tidy } from '../tensor/tensor.ts';
import { cat, detach, tensor, unsqueeze } from '../tensor/ops.ts';
import { adapterHookNames, layerHookName, listHookPoints, parseAdapterHookName, type LayerHookKey } from './hooks.ts';
import { withHooks } from './hook-registry.ts';
import type { ForwardOptions, Qwen2Model } from './qwen2.ts';

/**
 * Which hook points to keep: a list of names, a predicate, or one name (a prefix when it ends in `*`).
 * Nothing (undefined) keeps every hook point.
 */
export type HookFilter = readonly string[] | ((name: string) => boolean) | string;

/** Token ids: one sequence, or a batch of equally long rows. */
export type TokenIds = readonly number[] | Int32Array | readonly (readonly number[])[];

/** Token ids as a tensor [B, T] i32: one sequence (number[] / Int32Array) is [1, T]. */
export function fromIds(ids: TokenIds, backend: Tensor['backend']): Tensor {
  if (ids instanceof Int32Array) return tensor(ids, [1, ids.length], { backend, dtype: 'i32' });
  if (ids.length > 0 && Array.isArray(ids[0])) {
    const rows = ids as readonly (readonly number[])[];
    const width = rows[0]!.length;
    if (rows.some((row) => row.length !== width)) throw new Error('fromIds: every row of a batch must have the same number of tokens');
    return tensor(Int32Array.from(rows.flat()), [rows.length, width], { backend, dtype: 'i32' });
  }
  const flat = ids as readonly number[];
  return tensor(Int32Array.from(flat), [1, flat.length], { backend, dtype: 'i32' });
}

/** The names of `model`'s hook points that `filter` selects, in forward order. */
export function selectHookPoints(model: Qwen2Model, filter?: HookFilter): string[] {
  const all = listHookPoints(model.dims).map((p) => p.name);
  if (filter === undefined) return all;
  if (typeof filter === 'function') return all.filter(filter);
  if (typeof filter === 'string' && filter.endsWith('*')) {
    const prefix = filter.slice(0, -1);
    return all.filter((name) => name.startsWith(prefix));
  }
  const wanted = new Set(typeof filter === 'string' ? [filter] : filter);
  const unknown = [...wanted].filter((name) => !all.includes(name));
  if (unknown.length) throw new Error(`runWithCache: not hook points of this model: ${unknown.join(', ')} (see \`rank1 hooks\`)`);
  return all.filter((name) => wanted.has(name));
}

/** Activations by hook name, kept (outside every tidy scope) until dispose(). */
export class ActivationCache {
  private readonly values = new Map<string, Tensor>();

  constructor(readonly layers: number) {}

  /** Stores a kept copy of value (a detached view: no graph, no copy). Replaces an earlier value at name. */
  set(name: string, value: Tensor): void {
    this.values.get(name)?.dispose();
    this.values.set(name, keep(detach(value)));
  }

  has(name: string): boolean {
    return this.values.has(name);
  }

  get(name: string): Tensor {
    const value = this.values.get(name);
    if (!value) {
      const hint = parseAdapterHookName(name) ? ' (adapter hooks fire only where an adapter is loaded)' : '';
      throw new Error(`ActivationCache: nothing cached at ${name}${hint}`);
    }
    return value;
  }

  /** Names cached, in the order they fired (forward order). */
  get names(): string[] {
    return [...this.values.keys()];
  }

  /** A per-layer activation: `layer('resid_post', 3)`, `layer('q_proj', 2)` (adapter), `layer('mlp.act', 0)`. */
  layer(key: LayerHookKey | (string & {}), layer: number): Tensor {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.layers) {
      throw new Error(`ActivationCache.layer: layer ${layer} is outside [0, ${this.layers})`);
    }
    return this.get(layerHookName(key, layer));
  }

  /** The adapter hook names cached, in the paper's order (7·layer + j over gate, up, down, q, k, v, o). */
  get adapterNames(): string[] {
    return adapterHookNames(this.layers).filter((name) => this.values.has(name));
  }

  /**
   * The adapter activations stacked on a new last axis in the paper's order: [B, T, n] over the adapters
   * cached, so [B, T, 7L] with index 7·layer + j when every projection has an adapter. Caller disposes.
   */
  adapters(): Tensor {
    const names = this.adapterNames;
    if (names.length === 0) throw new Error('ActivationCache.adapters: no adapter activation was cached (no adapters loaded, or filtered out)');
    return tidy(() => cat(names.map((name) => unsqueeze(this.get(name), -1)), -1));
  }

  dispose(): void {
    for (const value of this.values.values()) value.dispose();
    this.values.clear();
  }
}

/**
 * One forward pass of ids ([B, T] i32, or plain ids: see fromIds) keeping the activations at
 * the hook points `filter` selects (default: all). Returns the logits [B, T, V] and the cache; dispose both.
 * Hooks already installed on the model still run, before the cache's.
 */
export function runWithCache(
  model: Qwen2Model, ids: Tensor | TokenIds, filter?: HookFilter, options: ForwardOptions = {},
): { logits: Tensor; cache: ActivationCache } {
  const names = selectHookPoints(model, filter);
  const cache = new ActivationCache(model.dims.layers);
  const input = ids instanceof Tensor ? ids : fromIds(ids, model.backend);
  try {
    const logits = withHooks(model, names.map((name) => [name, (value: Tensor) => cache.set(name, value)] as const), () => model.forward(input, options));
    return { logits, cache };
  } catch (error) {
    cache.dispose();
    throw error;
  } finally {
    if (input !== ids) input.dispose();
  }
}
