// Running hooks: the registry the model calls at every hook point, `withHooks` (install for the duration of a
// call, removed afterwards even when it throws), the ready-made hooks (ablate, steer) and the recorder that
// `runWithCache` builds on. Hook *names* — building and parsing them — live in hooks.ts.
import { Tensor, keep, tidy } from '../tensor/tensor.ts';
import { add, cat, detach, full, unsqueeze } from '../tensor/ops.ts';

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
