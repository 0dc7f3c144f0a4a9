// Tensor: a strided view on a reference-counted backend storage, plus its place in the autograd graph.
// Views (reshape, transpose, slice, expand) share the storage; the storage is freed when the last view
// on it is disposed. Every tensor is registered in the innermost `tidy` scope, which disposes what the
// scope's function did not return.
import type { Backend, DType, Storage, View } from '../kernels/backend.ts';

/** One allocation shared by every view on it. */
export class StorageRef {
  private refs = 1;
  constructor(readonly backend: Backend, readonly storage: Storage) {}
  retain(): void {
    this.refs++;
  }
  release(): void {
    if (--this.refs === 0) this.backend.free(this.storage);
  }
}

/** How a tensor was made: its inputs and the rule that maps the output's gradient to theirs. */
export interface GradNode {
  readonly op: string;
  readonly inputs: readonly Tensor[];
  /** Handles on what backward reads, kept alive even if the user disposes the originals. */
  readonly saved: readonly Tensor[];
  /** grads[i] for inputs[i]; entries for inputs that do not need a gradient may be null. */
  readonly backward: (grad: Tensor, saved: readonly Tensor[], needsGrad: readonly boolean[]) => (Tensor | null)[];
  released: boolean;
}

let nextTensorId = 0;
const scopes: Set<Tensor>[] = [];

export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let stride = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    strides[d] = stride;
    stride *= shape[d]!;
  }
  return strides;
}

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

export class Tensor implements View {
  readonly id = nextTensorId++;
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  readonly offset: number;
  requiresGrad = false;
  /** Accumulated gradient of a leaf that requires grad; summed over backward calls until zeroGrad. */
  grad: Tensor | null = null;
  gradNode: GradNode | null = null;
  /** Optional label used in error messages and hook listings. */
  name: string | undefined;
  private ref: StorageRef | null;

  /** Internal: use the creation functions in ops.ts. Takes ownership of one reference on `ref`. */
  constructor(ref: StorageRef, shape: readonly number[], strides?: readonly number[], offset = 0) {
    this.ref = ref;
    this.shape = Object.freeze([...shape]);
    this.strides = Object.freeze(strides ? [...strides] : contiguousStrides(shape));
    this.offset = offset;
    scopes.at(-1)?.add(this);
  }

  static fromStorage(backend: Backend, storage: Storage, shape: readonly number[]): Tensor {
    if (storage.numel < numelOf(shape)) {
      throw new Error(`Tensor: storage of ${storage.numel} elements cannot hold shape ${formatShape(shape)}`);
    }
    return new Tensor(new StorageRef(backend, storage), shape);
  }

  get storage(): Storage {
    return this.liveRef('storage').storage;
  }
  get backend(): Backend {
    return this.liveRef('backend').backend;
  }
  get dtype(): DType {
    return this.liveRef('dtype').storage.dtype;
  }
  get rank(): number {
    return this.shape.length;
  }
  get size(): number {
    return numelOf(this.shape);
  }
  get isDisposed(): boolean {
    return this.ref === null;
  }
  /** Row-major contiguous (offset may be non-zero). */
  get isContiguous(): boolean {
    let expected = 1;
    for (let d = this.shape.length - 1; d >= 0; d--) {
      if (this.shape[d] !== 1 && this.strides[d] !== expected) return false;
      expected *= this.shape[d]!;
    }
    return true;
  }

  /** Throws the use-after-dispose error, naming the operation that tried. */
  liveRef(op: string): StorageRef {
    if (this.ref === null) {
      const label = this.name ? ` "${this.name}"` : '';
      throw new Error(`${op}: tensor${label} ${formatShape(this.shape)} was used after dispose`);
    }
    return this.ref;
  }

  /**
   * A new view on the same storage (shares and retains it), outside autograd: the view has no gradient
   * node. Use the ops (reshape, slice, transpose, ...) for views that gradients must flow through.
   */
  view(shape: readonly number[], strides: readonly number[], offset: number): Tensor {
    const ref = this.liveRef('view');
    ref.retain();
    return new Tensor(ref, shape, strides, offset);
  }

  dispose(): void {
    if (this.ref === null) return;
    this.ref.release();
    this.ref = null;
    for (const scope of scopes) scope.delete(this);
  }

  /** The elements in row-major order (floats widened to f32). */
  async toArray(): Promise<Float32Array | Int32Array> {
    this.liveRef('toArray');
    return this.backend.read(this);
  }

  async toFloat32Array(): Promise<Float32Array> {
    const data = await this.toArray();
    return data instanceof Float32Array ? data : Float32Array.from(data);
  }

  /** The single element of a one-element tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item: tensor ${formatShape(this.shape)} has ${this.size} elements, not 1`);
    return (await this.toArray())[0]!;
  }

  /** Nested arrays, for printing and tests. */
  async toNested(): Promise<unknown> {
    const data = Array.from(await this.toArray());
    const build = (dim: number, start: number): unknown => {
      if (dim === this.shape.length) return data[start];
      const inner = numelOf(this.shape.slice(dim + 1));
      return Array.from({ length: this.shape[dim]! }, (_, i) => build(dim + 1, start + i * inner));
    };
    return build(0, 0);
  }

  toString(): string {
    return `Tensor(${formatShape(this.shape)}, ${this.ref ? this.dtype : 'disposed'}${this.requiresGrad ? ', requiresGrad' : ''})`;
  }
}

// ---- scopes -----------------------------------------------------------------------------------

function collectTensors(value: unknown, into: Set<Tensor>, seen = new Set<unknown>()): void {
  if (value instanceof Tensor) {
    into.add(value);
    return;
  }
  if (value === null || typeof value !== 'object' || seen.has(value)) return;
  seen.add(value);
  if (value instanceof Map) {
    for (const v of value.values()) collectTensors(v, into, seen);
  } else if (Array.isArray(value) || Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) collectTensors(v, into, seen);
  }
}

/**
 * Runs fn and disposes every tensor created during it, except those reachable from its result
 * (tensors, arrays, plain objects, Maps) and those passed to keep(). Synchronous functions only: an
 * async function would let other work's tensors leak into the scope.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } finally {
    scopes.pop();
  }
  if (result instanceof Promise) throw new Error('tidy: the function must be synchronous (it returned a Promise)');
  const kept = new Set<Tensor>();
  collectTensors(result, kept);
  for (const tensor of scope) {
    if (kept.has(tensor)) scopes.at(-1)?.add(tensor);
    else tensor.dispose();
  }
  return result;
}

/** Exempts a tensor from every enclosing tidy scope (parameters, caches, gradients). */
export function keep<T extends Tensor>(tensor: T): T {
  for (const scope of scopes) scope.delete(tensor);
  return tensor;
}

/** Disposes every tensor reachable from value. */
export function disposeAll(value: unknown): void {
  const found = new Set<Tensor>();
  collectTensors(value, found);
  for (const t of found) t.dispose();
}
