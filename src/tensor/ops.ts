// Every differentiable operation: shape checks, layout preparation for the backend kernels, and the
// backward rule right next to the forward (micrograd's layout). Kernels live in src/kernels/<backend>/;
// this file never computes numbers itself.
import type { AttentionParams, Backend, BinaryOp, DType, Storage, UnaryOp } from '../kernels/backend.ts';
import { narrowFromF32 } from '../kernels/dtype.ts';
import { getDefaultBackend } from './engine.ts';
import { noGrad, record, registerGradAdd, requireGrad } from './autograd.ts';
import { Tensor, contiguousStrides, formatShape, numelOf, tidy } from './tensor.ts';

export type TensorLike = Tensor | number;

export interface CreateOptions {
  dtype?: DType;
  backend?: Backend;
  requiresGrad?: boolean;
  name?: string;
}

// ---- helpers ------------------------------------------------------------------------------------

function backendOf(op: string, tensors: readonly Tensor[]): Backend {
  const backend = tensors[0]!.liveRef(op).backend;
  for (const t of tensors) {
    if (t.liveRef(op).backend !== backend) {
      throw new Error(`${op}: inputs live on different backends (${backend.name} and ${t.backend.name}); move one first`);
    }
  }
  return backend;
}

function wrap(backend: Backend, storage: Storage, shape: readonly number[]): Tensor {
  return Tensor.fromStorage(backend, storage, shape);
}

function normalizeAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) throw new Error(`${op}: axis ${axis} is out of range for rank ${rank}`);
  return a;
}

function requireFloat(op: string, t: Tensor): void {
  if (t.liveRef(op).storage.dtype === 'i32') throw new Error(`${op}: expected a float tensor, got i32 ${formatShape(t.shape)}`);
}

/** Contiguous f32 at offset 0: what fused kernels take. Returns t itself when it already is. */
function f32Contiguous(t: Tensor, op: string): Tensor {
  requireFloat(op, t);
  if (t.dtype === 'f32' && t.isContiguous && t.offset === 0) return t;
  return wrap(t.backend, t.backend.copy(t, 'f32'), t.shape);
}

function i32Contiguous(t: Tensor, op: string): Tensor {
  if (t.liveRef(op).storage.dtype !== 'i32') throw new Error(`${op}: expected an i32 tensor of ids, got ${t.dtype} ${formatShape(t.shape)}`);
  if (t.isContiguous && t.offset === 0) return t;
  return wrap(t.backend, t.backend.copy(t, 'i32'), t.shape);
}

function checkShape(op: string, what: string, t: Tensor, expected: readonly number[]): void {
  if (t.shape.length !== expected.length || t.shape.some((d, i) => d !== expected[i])) {
    throw new Error(`${op}: ${what} must have shape ${formatShape(expected)}, got ${formatShape(t.shape)}`);
  }
}

export function broadcastShapes(op: string, a: readonly number[], b: readonly number[]): number[] {
  const rank = Math.max(a.length, b.length);
  const out = new Array<number>(rank);
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new Error(`${op}: shapes ${formatShape(a)} and ${formatShape(b)} cannot be broadcast together (dim ${i}: ${da} vs ${db})`);
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Strides that read t as if it had `shape` (stride 0 on broadcast axes). */
function broadcastStrides(t: Tensor, shape: readonly number[]): number[] {
  const lead = shape.length - t.shape.length;
  return shape.map((d, i) => {
    const td = t.shape[i - lead];
    if (td === undefined) return 0;
    return td === 1 && d !== 1 ? 0 : t.strides[i - lead]!;
  });
}

/** Sums a gradient over the axes along which `shape` was broadcast to produce it. */
export function sumToShape(grad: Tensor, shape: readonly number[]): Tensor {
  if (grad.shape.join() === shape.join()) return grad;
  const lead = grad.shape.length - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < grad.shape.length; i++) {
    if (i < lead || (shape[i - lead] === 1 && grad.shape[i] !== 1)) axes.push(i);
  }
  const summed = sum(grad, axes, true);
  return reshape(summed, shape);
}

// ---- creation -----------------------------------------------------------------------------------

/** A tensor from JavaScript numbers (or raw half bits when data is a Uint16Array and dtype is f16/bf16). */
export function tensor(
  data: ArrayLike<number> | Float32Array | Int32Array | Uint16Array,
  shape?: readonly number[],
  options: CreateOptions = {},
): Tensor {
  const dtype = options.dtype ?? (data instanceof Int32Array ? 'i32' : 'f32');
  const finalShape = shape ?? [data.length];
  if (numelOf(finalShape) !== data.length) {
    throw new Error(`tensor: ${data.length} values do not fill shape ${formatShape(finalShape)} (${numelOf(finalShape)} elements)`);
  }
  const backend = options.backend ?? getDefaultBackend();
  let payload: Float32Array | Int32Array | Uint16Array;
  if (dtype === 'f32') payload = data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>);
  else if (dtype === 'i32') {
    payload = data instanceof Int32Array ? data : Int32Array.from(data as ArrayLike<number>);
    for (let i = 0; i < data.length; i++) {
      if (!Number.isInteger((data as ArrayLike<number>)[i])) throw new Error(`tensor: i32 value at index ${i} is not an integer: ${(data as ArrayLike<number>)[i]}`);
    }
  } else payload = data instanceof Uint16Array ? data : narrowFromF32(data as ArrayLike<number>, dtype);
  const t = wrap(backend, backend.upload(payload, dtype), finalShape);
  if (options.name) t.name = options.name;
  if (options.requiresGrad) requireGrad(t);
  return t;
}

export function full(shape: readonly number[], value: number, options: CreateOptions = {}): Tensor {
  const backend = options.backend ?? getDefaultBackend();
  const t = wrap(backend, backend.full(numelOf(shape), value, options.dtype ?? 'f32'), shape);
  if (options.name) t.name = options.name;
  if (options.requiresGrad) requireGrad(t);
  return t;
}

export const zeros = (shape: readonly number[], options: CreateOptions = {}) => full(shape, 0, options);
export const ones = (shape: readonly number[], options: CreateOptions = {}) => full(shape, 1, options);

// ---- layout (views where possible) --------------------------------------------------------------

export function contiguous(t: Tensor): Tensor {
  t.liveRef('contiguous');
  if (t.isContiguous) return t;
  const out = wrap(t.backend, t.backend.copy(t, t.dtype), t.shape);
  return record('contiguous', out, [t], [], (g) => [g]);
}

/** The same values, cut from the graph: a view that does not require grad. */
export function detach(t: Tensor): Tensor {
  t.liveRef('detach');
  return t.view(t.shape, t.strides, t.offset);
}

/** Changes the storage dtype. Differentiable (gradient flows as f32) when casting between float types. */
export function cast(t: Tensor, dtype: DType): Tensor {
  if (t.liveRef('cast').storage.dtype === dtype) return t;
  const out = wrap(t.backend, t.backend.copy(t, dtype), t.shape);
  if (dtype === 'i32') return out;
  return record('cast', out, [t], [], (g) => [g]);
}

export function reshape(t: Tensor, shape: readonly number[]): Tensor {
  const op = 'reshape';
  t.liveRef(op);
  const inferred = shape.indexOf(-1);
  const target = [...shape];
  if (inferred >= 0) {
    const known = numelOf(shape.filter((_, i) => i !== inferred));
    target[inferred] = known === 0 ? 0 : t.size / known;
  }
  if (numelOf(target) !== t.size || target.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`${op}: cannot reshape ${formatShape(t.shape)} (${t.size} elements) to ${formatShape(shape)}`);
  }
  const source = t.isContiguous ? t : contiguous(t);
  const out = source.view(target, contiguousStrides(target), source.offset);
  if (source !== t) source.dispose();
  const inputShape = t.shape;
  return record(op, out, [t], [], (g) => [reshape(g, inputShape)]);
}

export function permute(t: Tensor, axes: readonly number[]): Tensor {
  const op = 'permute';
  t.liveRef(op);
  const normalized = axes.map((a) => normalizeAxis(op, a, t.rank));
  if (normalized.length !== t.rank || new Set(normalized).size !== t.rank) {
    throw new Error(`${op}: ${formatShape(axes)} is not a permutation of the ${t.rank} axes of ${formatShape(t.shape)}`);
  }
  const out = t.view(normalized.map((a) => t.shape[a]!), normalized.map((a) => t.strides[a]!), t.offset);
  const inverse = new Array<number>(t.rank);
  normalized.forEach((a, i) => (inverse[a] = i));
  return record(op, out, [t], [], (g) => [permute(g, inverse)]);
}

export function transpose(t: Tensor, axis0 = -2, axis1 = -1): Tensor {
  const a0 = normalizeAxis('transpose', axis0, t.rank);
  const a1 = normalizeAxis('transpose', axis1, t.rank);
  const axes = Array.from({ length: t.rank }, (_, i) => i);
  axes[a0] = a1;
  axes[a1] = a0;
  return permute(t, axes);
}

/** Elements [start, end) along axis, as a view. */
export function slice(t: Tensor, axis: number, start: number, end: number = t.shape[normalizeAxis('slice', axis, t.rank)]!): Tensor {
  const op = 'slice';
  const a = normalizeAxis(op, axis, t.rank);
  const length = t.shape[a]!;
  if (!(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start <= end && end <= length)) {
    throw new Error(`${op}: range [${start}, ${end}) is outside axis ${axis} of length ${length} in ${formatShape(t.shape)}`);
  }
  const shape = [...t.shape];
  shape[a] = end - start;
  const out = t.view(shape, t.strides, t.offset + start * t.strides[a]!);
  const inputShape = t.shape;
  return record(op, out, [t], [], (g) => {
    const backend = g.backend;
    const padded = wrap(backend, backend.full(numelOf(inputShape), 0, 'f32'), inputShape);
    const window = padded.view(shape, padded.strides, start * padded.strides[a]!);
    backend.assign(window, g);
    window.dispose();
    return [padded];
  });
}

/** Broadcasts size-1 axes (and new leading axes) to `shape` without copying. */
export function expand(t: Tensor, shape: readonly number[]): Tensor {
  const op = 'expand';
  t.liveRef(op);
  const target = broadcastShapes(op, t.shape, shape);
  if (target.join() !== shape.join()) throw new Error(`${op}: cannot expand ${formatShape(t.shape)} to ${formatShape(shape)}`);
  const out = t.view(target, broadcastStrides(t, target), t.offset);
  const inputShape = t.shape;
  return record(op, out, [t], [], (g) => [sumToShape(g, inputShape)]);
}

export function unsqueeze(t: Tensor, axis: number): Tensor {
  const a = normalizeAxis('unsqueeze', axis, t.rank + 1);
  const shape = [...t.shape];
  shape.splice(a, 0, 1);
  return reshape(t, shape);
}

export function squeeze(t: Tensor, axis: number): Tensor {
  const a = normalizeAxis('squeeze', axis, t.rank);
  if (t.shape[a] !== 1) throw new Error(`squeeze: axis ${axis} of ${formatShape(t.shape)} has size ${t.shape[a]}, not 1`);
  return reshape(t, t.shape.filter((_, i) => i !== a));
}

/** Concatenates along axis. */
export function cat(tensors: readonly Tensor[], axis: number): Tensor {
  const op = 'cat';
  if (tensors.length === 0) throw new Error(`${op}: nothing to concatenate`);
  const backend = backendOf(op, tensors);
  const first = tensors[0]!;
  const a = normalizeAxis(op, axis, first.rank);
  for (const t of tensors) {
    if (t.rank !== first.rank || t.shape.some((d, i) => i !== a && d !== first.shape[i])) {
      throw new Error(`${op}: shapes ${tensors.map((x) => formatShape(x.shape)).join(', ')} differ outside axis ${axis}`);
    }
  }
  const dtype = first.dtype === 'i32' ? 'i32' : 'f32';
  const shape = [...first.shape];
  shape[a] = tensors.reduce((s, t) => s + t.shape[a]!, 0);
  const out = wrap(backend, backend.full(numelOf(shape), 0, dtype), shape);
  let start = 0;
  for (const t of tensors) {
    const windowShape = [...shape];
    windowShape[a] = t.shape[a]!;
    const window = out.view(windowShape, out.strides, start * out.strides[a]!);
    backend.assign(window, t);
    window.dispose();
    start += t.shape[a]!;
  }
  const lengths = tensors.map((t) => t.shape[a]!);
  return record(op, out, tensors, [], (g) => {
    let offset = 0;
    return lengths.map((length) => {
      const part = contiguous(slice(g, a, offset, offset + length));
      offset += length;
      return part;
    });
  });
}

// ---- elementwise ----------------------------------------------------------------------------------

function unaryOp(op: UnaryOp, t: Tensor, param = 0): Tensor {
  const x = t.liveRef(op).storage.dtype === 'f32' ? t : f32Contiguous(t, op);
  requireFloat(op, t);
  const out = wrap(t.backend, t.backend.unary(op, x, param), t.shape);
  if (x !== t) x.dispose();
  return out;
}

function binaryOp(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  const backend = backendOf(op, [a, b]);
  const shape = broadcastShapes(op, a.shape, b.shape);
  const left = a.dtype === 'f32' ? a : f32Contiguous(a, op);
  const right = b.dtype === 'f32' ? b : f32Contiguous(b, op);
  const out = wrap(
    backend,
    backend.binary(
      op,
      { storage: left.storage, shape, strides: broadcastStrides(left, shape), offset: left.offset },
      { storage: right.storage, shape, strides: broadcastStrides(right, shape), offset: right.offset },
      shape,
    ),
    shape,
  );
  if (left !== a) left.dispose();
  if (right !== b) right.dispose();
  return out;
}

export function add(a: Tensor, b: TensorLike): Tensor {
  if (typeof b === 'number') {
    const out = unaryOp('addScalar', a, b);
    return record('add', out, [a], [], (g) => [g]);
  }
  const out = binaryOp('add', a, b);
  return record('add', out, [a, b], [], (g) => [sumToShape(g, a.shape), sumToShape(g, b.shape)]);
}

export function sub(a: Tensor, b: TensorLike): Tensor {
  if (typeof b === 'number') return add(a, -b);
  const out = binaryOp('sub', a, b);
  return record('sub', out, [a, b], [], (g, _s, needs) => [
    sumToShape(g, a.shape),
    needs[1] ? sumToShape(neg(g), b.shape) : null,
  ]);
}

export function mul(a: Tensor, b: TensorLike): Tensor {
  if (typeof b === 'number') {
    const out = unaryOp('mulScalar', a, b);
    return record('mul', out, [a], [], (g) => [mul(g, b)]);
  }
  const out = binaryOp('mul', a, b);
  return record('mul', out, [a, b], [a, b], (g, [sa, sb], needs) => [
    needs[0] ? sumToShape(mul(g, sb!), a.shape) : null,
    needs[1] ? sumToShape(mul(g, sa!), b.shape) : null,
  ]);
}

export function div(a: Tensor, b: TensorLike): Tensor {
  if (typeof b === 'number') return mul(a, 1 / b);
  const out = binaryOp('div', a, b);
  // d(a/b)/da = 1/b; d(a/b)/db = -a/b^2 = -out/b.
  return record('div', out, [a, b], [b, out], (g, [sb, sOut], needs) => [
    needs[0] ? sumToShape(div(g, sb!), a.shape) : null,
    needs[1] ? sumToShape(neg(div(mul(g, sOut!), sb!)), b.shape) : null,
  ]);
}

export function neg(t: Tensor): Tensor {
  return record('neg', unaryOp('neg', t), [t], [], (g) => [neg(g)]);
}

export function exp(t: Tensor): Tensor {
  const out = unaryOp('exp', t);
  return record('exp', out, [t], [out], (g, [y]) => [mul(g, y!)]);
}

export function log(t: Tensor): Tensor {
  return record('log', unaryOp('log', t), [t], [t], (g, [x]) => [div(g, x!)]);
}

export function sqrt(t: Tensor): Tensor {
  const out = unaryOp('sqrt', t);
  return record('sqrt', out, [t], [out], (g, [y]) => [div(mul(g, 0.5), y!)]);
}

export function rsqrt(t: Tensor): Tensor {
  const out = unaryOp('rsqrt', t);
  // d/dx x^-1/2 = -1/2 x^-3/2 = -1/2 y^3.
  return record('rsqrt', out, [t], [out], (g, [y]) => [mul(mul(g, unaryOp('pow', y!, 3)), -0.5)]);
}

export function square(t: Tensor): Tensor {
  return record('square', unaryOp('square', t), [t], [t], (g, [x]) => [mul(mul(g, x!), 2)]);
}

export function pow(t: Tensor, exponent: number): Tensor {
  return record('pow', unaryOp('pow', t, exponent), [t], [t], (g, [x]) => [
    mul(mul(g, unaryOp('pow', x!, exponent - 1)), exponent),
  ]);
}

export function abs(t: Tensor): Tensor {
  // Gradient sign(x), 0 at 0 like torch.
  return record('abs', unaryOp('abs', t), [t], [t], (g, [x]) => [mul(g, div(x!, maximum(unaryOp('abs', x!), 1e-30)))]);
}

export function sigmoid(t: Tensor): Tensor {
  const out = unaryOp('sigmoid', t);
  return record('sigmoid', out, [t], [out], (g, [y]) => [mul(g, mul(y!, add(neg(y!), 1)))]);
}

export function silu(t: Tensor): Tensor {
  return record('silu', unaryOp('silu', t), [t], [t], (g, [x]) => [binaryOp('siluGrad', x!, g)]);
}

/** Elementwise max with a tensor or scalar (not differentiable: used for clamps and masks). */
export function maximum(a: Tensor, b: TensorLike): Tensor {
  const other = typeof b === 'number' ? full([], b, { backend: a.backend }) : b;
  const out = binaryOp('maximum', a, other);
  if (other !== b) other.dispose();
  return out;
}

/** max(x, 0), differentiable: the gradient passes where x > 0 (and not at 0, as PyTorch's relu). */
export function relu(t: Tensor): Tensor {
  requireFloat('relu', t);
  const zero = full([], 0, { backend: t.backend });
  const out = binaryOp('maximum', t, zero);
  zero.dispose();
  return record('relu', out, [t], [out], (g, [y]) => {
    // y > 0 exactly where x > 0.
    const z = full([], 0, { backend: y!.backend });
    const mask = binaryOp('gt', y!, z);
    z.dispose();
    const grad = binaryOp('mul', g, mask);
    mask.dispose();
    return [grad];
  });
}

/** 1 where a == b else 0 (not differentiable). */
export function equal(a: Tensor, b: Tensor): Tensor {
  return binaryOp('eq', a, b);
}

/** 1 where a > b else 0, with a tensor or scalar b; 0 where either is NaN (not differentiable: a mask). */
export function greater(a: Tensor, b: TensorLike): Tensor {
  const other = typeof b === 'number' ? full([], b, { backend: a.backend }) : b;
  const out = binaryOp('gt', a, other);
  if (other !== b) other.dispose();
  return out;
}

/**
 * A 0/1 mask of the `count` largest values: over the whole tensor (`over: 'all'`: BatchTopK's selection across
 * a batch) or within each row of the last axis (`over: 'row'`). Ties go to the lower index, so there are
 * exactly min(count, n) ones per group. A constant (no gradient): multiply by it to keep the selected values,
 * whose gradient then flows through the product.
 */
export function topkMask(values: Tensor, count: number, over: 'all' | 'row' = 'all'): Tensor {
  const op = 'topkMask';
  requireFloat(op, values);
  if (!Number.isInteger(count) || count < 0) throw new RangeError(`${op}: count must be a non-negative integer, got ${count}`);
  if (over === 'row' && values.rank < 1) throw new Error(`${op}: over 'row' needs at least one axis, got ${formatShape(values.shape)}`);
  const size = over === 'all' ? values.size : values.shape.at(-1)!;
  const groups = size === 0 ? 0 : values.size / size;
  const vc = f32Contiguous(values, op);
  const out = wrap(values.backend, values.backend.topkMask(vc.storage, groups, size, count), values.shape);
  if (vc !== values) vc.dispose();
  return out;
}

/**
 * (a ⊙ mask) w for a [R, K], a constant 0/1 mask [R, K] and w [K, N] -> [R, N]: a product whose left operand is
 * mostly masked out (BatchTopK's decoder: k·B of B·F latents selected). Equal to matmul(mul(a, mask), w); the
 * CPU backend visits only the mask's ones, forward and backward. Gradients flow to a (only where mask is 1)
 * and to w; the mask is a constant.
 */
export function maskedMatmul(a: Tensor, mask: Tensor, w: Tensor): Tensor {
  const op = 'maskedMatmul';
  const backend = backendOf(op, [a, mask, w]);
  if (a.rank !== 2 || w.rank !== 2) throw new Error(`${op}: a and w must be 2-D, got a ${formatShape(a.shape)} and w ${formatShape(w.shape)}`);
  const [rows, inner] = a.shape as [number, number];
  if (w.shape[0] !== inner) throw new Error(`${op}: inner dimensions differ: a ${formatShape(a.shape)} has k=${inner}, w ${formatShape(w.shape)} has k=${w.shape[0]}`);
  checkShape(op, 'mask', mask, a.shape);
  const cols = w.shape[1]!;
  const ac = f32Contiguous(a, op);
  const mc = f32Contiguous(mask, op);
  const wc = f32Contiguous(w, op);
  const out = wrap(backend, backend.maskedMatmul(ac.storage, mc.storage, wc.storage, rows, inner, cols), [rows, cols]);
  const result = record(op, out, [a, w], [ac, mc, wc], (g, [sa, sm, sw], needs) => {
    const dy = f32Contiguous(g, op);
    const { da, dw } = backend.maskedMatmulBackward(sa!.storage, sm!.storage, sw!.storage, dy.storage, rows, inner, cols);
    if (dy !== g) dy.dispose();
    const daTensor = wrap(backend, da, a.shape);
    const dwTensor = wrap(backend, dw, w.shape);
    if (!needs[0]) daTensor.dispose();
    if (!needs[1]) dwTensor.dispose();
    return [needs[0] ? daTensor : null, needs[1] ? dwTensor : null];
  });
  if (ac !== a) ac.dispose();
  if (mc !== mask) mc.dispose();
  if (wc !== w) wc.dispose();
  return result;
}

// ---- reductions -----------------------------------------------------------------------------------

function normalizeAxes(op: string, axes: number | readonly number[] | undefined, rank: number): number[] {
  const list = axes === undefined ? Array.from({ length: rank }, (_, i) => i) : typeof axes === 'number' ? [axes] : axes;
  const normalized = [...new Set(list.map((a) => normalizeAxis(op, a, rank)))].sort((x, y) => x - y);
  return normalized;
}

function reduceOp(op: 'sum' | 'max', t: Tensor, axes: number[], keepDims: boolean): Tensor {
  const keptShape = t.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const outShape = keepDims ? keptShape : t.shape.filter((_, i) => !axes.includes(i));
  const backend = t.backend;
  if (axes.length === 0) return wrap(backend, backend.copy(t, 'f32'), outShape);
  const isBlock = axes.every((a, i) => i === 0 || a === axes[i - 1]! + 1);
  let source: Tensor;
  let outer: number;
  let size: number;
  let inner: number;
  if (isBlock) {
    source = f32Contiguous(t, op);
    outer = numelOf(t.shape.slice(0, axes[0]));
    size = numelOf(axes.map((a) => t.shape[a]!));
    inner = numelOf(t.shape.slice(axes.at(-1)! + 1));
  } else {
    // Move reduced axes last, then reduce rows.
    const kept = t.shape.map((_, i) => i).filter((i) => !axes.includes(i));
    const order = [...kept, ...axes];
    const permuted = t.view(order.map((a) => t.shape[a]!), order.map((a) => t.strides[a]!), t.offset);
    source = wrap(backend, backend.copy(permuted, 'f32'), permuted.shape);
    permuted.dispose();
    outer = numelOf(kept.map((a) => t.shape[a]!));
    size = numelOf(axes.map((a) => t.shape[a]!));
    inner = 1;
  }
  const out = wrap(backend, backend.reduce(op, source.storage, outer, size, inner), outShape);
  if (source !== t) source.dispose();
  return out;
}

export function sum(t: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  requireFloat('sum', t);
  const normalized = normalizeAxes('sum', axes, t.rank);
  const out = reduceOp('sum', t, normalized, keepDims);
  const keptShape = t.shape.map((d, i) => (normalized.includes(i) ? 1 : d));
  return record('sum', out, [t], [], (g) => [contiguous(expand(reshape(g, keptShape), t.shape))]);
}

export function mean(t: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  const normalized = normalizeAxes('mean', axes, t.rank);
  const count = numelOf(normalized.map((a) => t.shape[a]!));
  return tidy(() => mul(sum(t, normalized, keepDims), 1 / count));
}

export function max(t: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  requireFloat('max', t);
  const normalized = normalizeAxes('max', axes, t.rank);
  const out = reduceOp('max', t, normalized, keepDims);
  const keptShape = t.shape.map((d, i) => (normalized.includes(i) ? 1 : d));
  // The gradient is shared equally by the elements that attain the max (torch.amax's rule).
  return record('max', out, [t], [t, out], (g, [x, y]) => {
    const mask = equal(x!, reshape(y!, keptShape));
    const count = sum(mask, normalized, true);
    return [mul(mask, div(reshape(g, keptShape), count))];
  });
}

// ---- linear algebra -------------------------------------------------------------------------------

export interface MatmulOptions {
  /** Use a's last two axes transposed. */
  transA?: boolean;
  /** Use b's last two axes transposed (b in the [out, in] Linear-weight layout). */
  transB?: boolean;
}

interface MatrixOperand {
  tensor: Tensor; // what the kernel reads (may be a temporary copy)
  trans: boolean; // layout flag for the kernel
  batchStride: number;
}

/**
 * Brings an operand into a layout the kernel reads directly: a row-major matrix or its transpose (a
 * transposed view just flips the flag), batch axes either broadcast (stride 0) or evenly strided.
 */
function matrixOperand(t: Tensor, trans: boolean, batchShape: readonly number[], allowHalf: boolean): MatrixOperand {
  const rank = t.rank;
  const rows = t.shape[rank - 2]!;
  const cols = t.shape[rank - 1]!;
  const rowStride = t.strides[rank - 2]!;
  const colStride = t.strides[rank - 1]!;
  const batchDims = t.shape.slice(0, rank - 2);
  const batchCount = numelOf(batchDims);
  const dtypeOk = t.dtype === 'f32' || (allowHalf && (t.dtype === 'f16' || t.dtype === 'bf16'));
  const rowMajor = (colStride === 1 || cols === 1) && (rowStride === cols || rows === 1);
  const columnMajor = !rowMajor && (rowStride === 1 || rows === 1) && (colStride === rows || cols === 1);
  const matrixSize = rows * cols;
  let batchStride = matrixSize;
  let batchOk = true;
  if (batchCount === 1) batchStride = 0;
  else if (batchDims.join() !== batchShape.slice(batchShape.length - batchDims.length).join() || batchDims.length !== batchShape.length) batchOk = false;
  else {
    // Batch axes must step through memory evenly in row-major order.
    let expected = matrixSize;
    for (let d = rank - 3; d >= 0; d--) {
      if (t.shape[d] !== 1 && t.strides[d] !== expected) batchOk = false;
      expected *= t.shape[d]!;
    }
  }
  if (dtypeOk && (rowMajor || columnMajor) && batchOk) {
    return { tensor: t, trans: columnMajor ? !trans : trans, batchStride };
  }
  const fullShape = batchCount === 1 ? [rows, cols] : [...batchShape, rows, cols];
  const source = batchCount === 1 ? t.view([rows, cols], [rowStride, colStride], t.offset) : t;
  const expanded = batchCount === 1 ? source : source.view(fullShape, broadcastStrides(source, fullShape), source.offset);
  const dtype = dtypeOk ? t.dtype : 'f32';
  const copy = wrap(t.backend, t.backend.copy(expanded, dtype), fullShape);
  if (source !== t) source.dispose();
  if (expanded !== source && expanded !== t) expanded.dispose();
  return { tensor: copy, trans, batchStride: batchCount === 1 ? 0 : matrixSize };
}

/**
 * Batched matrix product over the last two axes, batch axes broadcast. a: [..., m, k] ([..., k, m] with
 * transA); b: [..., k, n] ([..., n, k] with transB). b may be f16/bf16 (frozen weights, read packed).
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  const op = 'matmul';
  const backend = backendOf(op, [a, b]);
  requireFloat(op, a);
  requireFloat(op, b);
  if (a.rank < 2 || b.rank < 2) {
    throw new Error(`${op}: both operands need at least 2 axes, got a ${formatShape(a.shape)} and b ${formatShape(b.shape)}`);
  }
  const transA = options.transA ?? false;
  const transB = options.transB ?? false;
  const m = transA ? a.shape.at(-1)! : a.shape.at(-2)!;
  const ka = transA ? a.shape.at(-2)! : a.shape.at(-1)!;
  const kb = transB ? b.shape.at(-1)! : b.shape.at(-2)!;
  const n = transB ? b.shape.at(-2)! : b.shape.at(-1)!;
  if (ka !== kb) {
    throw new Error(
      `${op}: inner dimensions differ: a ${formatShape(a.shape)}${transA ? 'ᵀ' : ''} has k=${ka}, ` +
        `b ${formatShape(b.shape)}${transB ? 'ᵀ' : ''} has k=${kb}`,
    );
  }
  const batchShape = broadcastShapes(op, a.shape.slice(0, -2), b.shape.slice(0, -2));
  const batch = numelOf(batchShape);
  const left = matrixOperand(a, transA, batchShape, false);
  const right = matrixOperand(b, transB, batchShape, true);
  const storage = backend.matmul(left.tensor.storage, left.tensor.offset, right.tensor.storage, right.tensor.offset, {
    batch, m, n, k: ka, transA: left.trans, transB: right.trans, aBatchStride: left.batchStride, bBatchStride: right.batchStride,
  });
  if (left.tensor !== a) left.tensor.dispose();
  if (right.tensor !== b) right.tensor.dispose();
  const out = wrap(backend, storage, [...batchShape, m, n]);
  // C = op(A) op(B): d op(A) = dC op(B)ᵀ, d op(B) = op(A)ᵀ dC; transpose back when the operand was stored transposed.
  return record(op, out, [a, b], [a, b], (g, [sa, sb], needs) => {
    let da: Tensor | null = null;
    let db: Tensor | null = null;
    if (needs[0]) {
      const dOpA = matmul(g, sb!, { transB: !transB });
      da = sumToShape(transA ? transpose(dOpA) : dOpA, a.shape);
    }
    if (needs[1]) {
      const dOpB = matmul(sa!, g, { transA: !transA });
      db = sumToShape(transB ? transpose(dOpB) : dOpB, b.shape);
    }
    return [da, db];
  });
}

/** y = x Wᵀ + bias for x [..., in], weight [out, in] (the Hugging Face layout), bias [out]. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor): Tensor {
  const op = 'linear';
  if (weight.rank !== 2) throw new Error(`${op}: weight must be [out, in], got ${formatShape(weight.shape)}`);
  const [outFeatures, inFeatures] = weight.shape as [number, number];
  if (x.shape.at(-1) !== inFeatures) {
    throw new Error(`${op}: input ${formatShape(x.shape)} has ${x.shape.at(-1)} features, weight ${formatShape(weight.shape)} expects ${inFeatures}`);
  }
  if (bias) checkShape(op, 'bias', bias, [outFeatures]);
  if (x.rank >= 2 && numelOf(x.shape.slice(0, -2)) === 1) {
    // One batch row ([1, T, in]: a decoding step, a single sequence): the matmul takes x as it is, and its
    // [1, T, out] is the result, without the two reshapes (and their tensors) around it.
    const y = matmul(x, weight, { transB: true });
    if (!bias) return y;
    const out = add(y, bias);
    y.dispose();
    return out;
  }
  return tidy(() => {
    const rows = reshape(x, [-1, inFeatures]);
    let y = matmul(rows, weight, { transB: true });
    if (bias) y = add(y, bias);
    return reshape(y, [...x.shape.slice(0, -1), outFeatures]);
  });
}

// ---- fused neural-network ops ---------------------------------------------------------------------

function lastAxisRows(t: Tensor): [number, number] {
  const cols = t.shape.at(-1) ?? 1;
  return [t.size / Math.max(cols, 1), cols];
}

function softmaxLike(t: Tensor, axis: number, logSpace: boolean): Tensor {
  const op = logSpace ? 'logSoftmax' : 'softmax';
  const a = normalizeAxis(op, axis, t.rank);
  if (a !== t.rank - 1) {
    return tidy(() => transpose(softmaxLike(transpose(t, a, -1), -1, logSpace), a, -1));
  }
  const x = f32Contiguous(t, op);
  const [rows, cols] = lastAxisRows(t);
  const out = wrap(t.backend, t.backend.softmax(x.storage, rows, cols, logSpace), t.shape);
  if (x !== t) x.dispose();
  return record(op, out, [t], [out], (g, [y]) => {
    const dy = f32Contiguous(g, op);
    return [wrap(g.backend, g.backend.softmaxBackward(y!.storage, dy.storage, rows, cols, logSpace), t.shape)];
  });
}

export const softmax = (t: Tensor, axis = -1) => softmaxLike(t, axis, false);
export const logSoftmax = (t: Tensor, axis = -1) => softmaxLike(t, axis, true);

/** Rows of table [V, H] (any float dtype, read packed) picked by ids i32 [...] -> [..., H]. */
export function embedding(table: Tensor, ids: Tensor): Tensor {
  const op = 'embedding';
  const backend = backendOf(op, [table, ids]);
  requireFloat(op, table);
  if (table.rank !== 2) throw new Error(`${op}: table must be [vocab, hidden], got ${formatShape(table.shape)}`);
  const [vocab, hidden] = table.shape as [number, number];
  const idsC = i32Contiguous(ids, op);
  const tableC = table.isContiguous && table.offset === 0 ? table : wrap(backend, backend.copy(table, table.dtype), table.shape);
  const out = wrap(backend, backend.embedding(tableC.storage, idsC.storage, vocab, hidden), [...ids.shape, hidden]);
  if (tableC !== table) tableC.dispose();
  return record(op, out, [table], [idsC], (g, [savedIds]) => {
    const dy = f32Contiguous(g, op);
    return [wrap(backend, backend.embeddingBackward(dy.storage, savedIds!.storage, vocab, hidden), [vocab, hidden])];
  });
}

/** RMSNorm over the last axis, Hugging Face semantics: w · x · rsqrt(mean(x²) + eps), computed in f32. */
export function rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor {
  const op = 'rmsNorm';
  const backend = backendOf(op, [x, weight]);
  const hidden = x.shape.at(-1)!;
  checkShape(op, 'weight', weight, [hidden]);
  requireFloat(op, weight);
  const xc = f32Contiguous(x, op);
  const wc = weight.isContiguous && weight.offset === 0 ? weight : f32Contiguous(weight, op);
  const rows = x.size / hidden;
  const { y, rstd } = backend.rmsNorm(xc.storage, wc.storage, rows, hidden, eps);
  const out = wrap(backend, y, x.shape);
  const rstdTensor = wrap(backend, rstd, [rows]);
  const result = record(op, out, [x, weight], [xc, wc, rstdTensor], (g, [sx, sw, sr]) => {
    const dy = f32Contiguous(g, op);
    const { dx, dweight } = backend.rmsNormBackward(dy.storage, sx!.storage, sw!.storage, sr!.storage, rows, hidden);
    return [wrap(backend, dx, x.shape), wrap(backend, dweight, [hidden])];
  });
  if (xc !== x) xc.dispose();
  if (wc !== weight) wc.dispose();
  rstdTensor.dispose();
  return result;
}

/**
 * Rotary position embedding (rotate-half convention) on x [B, T, nh, hd]; cos/sin [T, hd/2] are the
 * per-position tables (constants, no gradient).
 */
export function rope(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  const op = 'rope';
  const backend = backendOf(op, [x, cos, sin]);
  if (x.rank !== 4) throw new Error(`${op}: x must be [batch, tokens, heads, headDim], got ${formatShape(x.shape)}`);
  const [batch, tokens, heads, headDim] = x.shape as [number, number, number, number];
  if (headDim % 2 !== 0) throw new Error(`${op}: head dim ${headDim} must be even`);
  checkShape(op, 'cos', cos, [tokens, headDim / 2]);
  checkShape(op, 'sin', sin, [tokens, headDim / 2]);
  const xc = f32Contiguous(x, op);
  const cc = f32Contiguous(cos, op);
  const sc = f32Contiguous(sin, op);
  const out = wrap(backend, backend.rope(xc.storage, cc.storage, sc.storage, batch, tokens, heads, headDim, false), x.shape);
  const result = record(op, out, [x], [cc, sc], (g, [sCos, sSin]) => {
    const dy = f32Contiguous(g, op);
    return [wrap(backend, backend.rope(dy.storage, sCos!.storage, sSin!.storage, batch, tokens, heads, headDim, true), x.shape)];
  });
  for (const [temp, original] of [[xc, x], [cc, cos], [sc, sin]] as const) if (temp !== original) temp.dispose();
  return result;
}

export interface AttentionOptions {
  /** Defaults to headDim ** -0.5. */
  scale?: number;
  /** Causal mask (default true): query t sees keys s <= t + (S - T). */
  causal?: boolean;
}

/**
 * Scaled dot-product attention with grouped-query heads: q [B, T, nh, hd], k/v [B, S, kv, hd] ->
 * [B, T, nh, hd]. Fused (flash-style on WebGPU): no T×S matrix is materialised.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  const op = 'attention';
  const backend = backendOf(op, [q, k, v]);
  if (q.rank !== 4 || k.rank !== 4 || v.rank !== 4) {
    throw new Error(`${op}: q, k, v must be [batch, tokens, heads, headDim]; got q ${formatShape(q.shape)}, k ${formatShape(k.shape)}, v ${formatShape(v.shape)}`);
  }
  const [batch, tq, heads, headDim] = q.shape as [number, number, number, number];
  const [, tk, kvHeads] = k.shape as [number, number, number, number];
  checkShape(op, 'k', k, [batch, tk, kvHeads, headDim]);
  checkShape(op, 'v', v, [batch, tk, kvHeads, headDim]);
  if (heads % kvHeads !== 0) throw new Error(`${op}: ${heads} query heads are not a multiple of ${kvHeads} key/value heads`);
  const causal = options.causal ?? true;
  if (causal && tk < tq) throw new Error(`${op}: causal attention needs at least as many keys (${tk}) as queries (${tq})`);
  const params: AttentionParams = {
    batch, tq, tk, heads, kvHeads, headDim,
    scale: options.scale ?? 1 / Math.sqrt(headDim),
    causalOffset: causal ? tk - tq : Infinity,
  };
  const qc = f32Contiguous(q, op);
  const kc = f32Contiguous(k, op);
  const vc = f32Contiguous(v, op);
  const { out, lse } = backend.attention(qc.storage, kc.storage, vc.storage, params);
  const output = wrap(backend, out, q.shape);
  const lseTensor = wrap(backend, lse, [batch, heads, tq]);
  const result = record(op, output, [q, k, v], [qc, kc, vc, output, lseTensor], (g, [sq, sk, sv, so, sl]) => {
    const dout = f32Contiguous(g, op);
    const grads = backend.attentionBackward(sq!.storage, sk!.storage, sv!.storage, so!.storage, sl!.storage, dout.storage, params);
    return [wrap(backend, grads.dq, q.shape), wrap(backend, grads.dk, k.shape), wrap(backend, grads.dv, v.shape)];
  });
  for (const [temp, original] of [[qc, q], [kc, k], [vc, v]] as const) if (temp !== original) temp.dispose();
  lseTensor.dispose();
  return result;
}

/**
 * The probabilities the fused attention uses and never materialises, from plain ops: q [B, T, nh, hd],
 * k [B, S, kv, hd] -> [B, nh, T, S], softmax over S of scale · q·k with the same causal mask and GQA grouping
 * as `attention` (query head h reads key head floor(h / (nh / kv)); query t sees keys s <= t + S - T).
 * An O(T·S) matrix per head: for inspection (hooks), not for the forward pass.
 */
export function attentionPattern(q: Tensor, k: Tensor, options: AttentionOptions = {}): Tensor {
  const op = 'attentionPattern';
  const backend = backendOf(op, [q, k]);
  if (q.rank !== 4 || k.rank !== 4) {
    throw new Error(`${op}: q and k must be [batch, tokens, heads, headDim]; got q ${formatShape(q.shape)}, k ${formatShape(k.shape)}`);
  }
  const [batch, tq, heads, headDim] = q.shape as [number, number, number, number];
  const [, tk, kvHeads] = k.shape as [number, number, number, number];
  checkShape(op, 'k', k, [batch, tk, kvHeads, headDim]);
  if (heads % kvHeads !== 0) throw new Error(`${op}: ${heads} query heads are not a multiple of ${kvHeads} key/value heads`);
  const causal = options.causal ?? true;
  if (causal && tk < tq) throw new Error(`${op}: causal attention needs at least as many keys (${tk}) as queries (${tq})`);
  const group = heads / kvHeads;
  const scale = options.scale ?? 1 / Math.sqrt(headDim);
  return tidy(() => {
    // Query heads kvHead·group .. kvHead·group + group - 1 share a key head: one matmul per key head.
    const queries = reshape(permute(q, [0, 2, 1, 3]), [batch, kvHeads, group * tq, headDim]); // [B, kv, g·T, hd]
    const keys = permute(k, [0, 2, 1, 3]); // [B, kv, S, hd]
    let scores = reshape(mul(matmul(queries, keys, { transB: true }), scale), [batch, heads, tq, tk]); // [B, nh, T, S]
    if (causal) {
      // A finite -1e30 rather than -Infinity (WGSL need not honour infinities); exp underflows it to exactly 0.
      const offset = tk - tq;
      const mask = new Float32Array(tq * tk);
      for (let t = 0; t < tq; t++) mask.fill(-1e30, t * tk + t + offset + 1, (t + 1) * tk);
      scores = add(scores, tensor(mask, [tq, tk], { backend }));
    }
    return softmax(scores, -1);
  });
}

/**
 * x · a over the last axis: x [..., C], a [C] -> [...]. A LoRA adapter's read-out A·x per token, one pass over
 * x (a matmul with one output column would copy x into the matmul's memory first).
 * Backward: dx = du ⊗ a, da = xᵀ du.
 */
export function rowDot(x: Tensor, a: Tensor): Tensor {
  const op = 'rowDot';
  const backend = backendOf(op, [x, a]);
  if (x.shape.length < 1) throw new Error(`${op}: x must have at least one axis, got ${formatShape(x.shape)}`);
  const cols = x.shape.at(-1)!;
  checkShape(op, 'a', a, [cols]);
  const outShape = x.shape.slice(0, -1);
  const rows = numelOf(outShape);
  const xc = f32Contiguous(x, op);
  const ac = f32Contiguous(a, op);
  const out = wrap(backend, backend.rowDot(xc.storage, ac.storage, rows, cols), outShape);
  const result = record(op, out, [x, a], [xc, ac], (g, [sx, sa]) => {
    const du = f32Contiguous(g, op);
    const { dx, da } = backend.rowDotBackward(sx!.storage, sa!.storage, du.storage, rows, cols);
    if (du !== g) du.dispose();
    return [wrap(backend, dx, x.shape), wrap(backend, da, a.shape)];
  });
  for (const [temp, original] of [[xc, x], [ac, a]] as const) if (temp !== original) temp.dispose();
  return result;
}

/**
 * base + u ⊗ v: base [..., C], u [...] (base's shape less its last axis), v [C] -> base[..., c] + u[...] · v[c].
 * A rank-1 update in one pass, fused: a LoRA adapter adds (A·x) · scale·B to its projection's output this way.
 * Backward: dbase = dy, du = dy v (over the last axis), dv = Σ dy · u (over every other axis).
 */
export function addOuter(base: Tensor, u: Tensor, v: Tensor): Tensor {
  const op = 'addOuter';
  const backend = backendOf(op, [base, u, v]);
  if (base.shape.length < 1) throw new Error(`${op}: base must have at least one axis, got ${formatShape(base.shape)}`);
  const cols = base.shape.at(-1)!;
  checkShape(op, 'u', u, base.shape.slice(0, -1));
  checkShape(op, 'v', v, [cols]);
  const rows = u.size;
  const bc = f32Contiguous(base, op);
  const uc = f32Contiguous(u, op);
  const vc = f32Contiguous(v, op);
  const out = wrap(backend, backend.addOuter(bc.storage, uc.storage, vc.storage, rows, cols), base.shape);
  const result = record(op, out, [base, u, v], [uc, vc], (g, [su, sv], needs) => {
    if (!needs[1] && !needs[2]) return [g, null, null];
    const dy = f32Contiguous(g, op);
    const { du, dv } = backend.addOuterBackward(dy.storage, su!.storage, sv!.storage, rows, cols);
    if (dy !== g) dy.dispose();
    return [g, wrap(backend, du, u.shape), wrap(backend, dv, v.shape)];
  });
  for (const [temp, original] of [[bc, base], [uc, u], [vc, v]] as const) if (temp !== original) temp.dispose();
  return result;
}

/** silu(gate) · up, fused. */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  const op = 'swiglu';
  const backend = backendOf(op, [gate, up]);
  checkShape(op, 'up', up, gate.shape);
  const gc = f32Contiguous(gate, op);
  const uc = f32Contiguous(up, op);
  const n = gate.size;
  const out = wrap(backend, backend.swiglu(gc.storage, uc.storage, n), gate.shape);
  const result = record(op, out, [gate, up], [gc, uc], (g, [sg, su]) => {
    const dy = f32Contiguous(g, op);
    const { dgate, dup } = backend.swigluBackward(sg!.storage, su!.storage, dy.storage, n);
    return [wrap(backend, dgate, gate.shape), wrap(backend, dup, gate.shape)];
  });
  if (gc !== gate) gc.dispose();
  if (uc !== up) uc.dispose();
  return result;
}

/**
 * Per-row masked cross-entropy: logits [..., V], targets i32 [...], mask f32 [...] (1 = scored) ->
 * [...] = mask · (logsumexp(logits) − logits[target]).
 */
export function crossEntropyRows(logits: Tensor, targets: Tensor, mask?: Tensor): Tensor {
  const op = 'crossEntropy';
  const backend = backendOf(op, mask ? [logits, targets, mask] : [logits, targets]);
  const vocab = logits.shape.at(-1)!;
  const rowShape = logits.shape.slice(0, -1);
  checkShape(op, 'targets', targets, rowShape);
  if (mask) checkShape(op, 'mask', mask, rowShape);
  const rows = numelOf(rowShape);
  const lc = f32Contiguous(logits, op);
  const tc = i32Contiguous(targets, op);
  const maskTensor = mask ? f32Contiguous(mask, op) : wrap(backend, backend.full(rows, 1, 'f32'), rowShape);
  const out = wrap(backend, backend.crossEntropy(lc.storage, tc.storage, maskTensor.storage, rows, vocab), rowShape);
  const result = record(op, out, [logits], [lc, tc, maskTensor], (g, [sl, st, sm]) => {
    const dRow = mul(f32Contiguous(g, op), sm!);
    return [wrap(backend, backend.crossEntropyBackward(sl!.storage, st!.storage, dRow.storage, rows, vocab), logits.shape)];
  });
  if (lc !== logits) lc.dispose();
  if (tc !== targets) tc.dispose();
  if (maskTensor !== mask) maskTensor.dispose();
  return result;
}

/**
 * Mean masked cross-entropy over the scored positions (a scalar; 0 when nothing is scored). Training and
 * ablation read the loss off the hidden states instead, in row chunks without [N, V] logits:
 * linearCrossEntropy / linearKlDivRows (linear-cross-entropy.ts).
 */
export function crossEntropy(logits: Tensor, targets: Tensor, mask?: Tensor): Tensor {
  return tidy(() => {
    const rows = crossEntropyRows(logits, targets, mask);
    const scored = mask ? noGrad(() => maximum(sum(mask), 1)) : rows.size;
    return div(sum(rows), scored);
  });
}

/** Per-row KL(softmax(p) ‖ softmax(q)) for logits p, q [..., V] -> [...]. */
export function klDivRows(p: Tensor, q: Tensor): Tensor {
  const op = 'klDiv';
  const backend = backendOf(op, [p, q]);
  checkShape(op, 'q', q, p.shape);
  const vocab = p.shape.at(-1)!;
  const rowShape = p.shape.slice(0, -1);
  const rows = numelOf(rowShape);
  const pc = f32Contiguous(p, op);
  const qc = f32Contiguous(q, op);
  const out = wrap(backend, backend.klDiv(pc.storage, qc.storage, rows, vocab), rowShape);
  const result = record(op, out, [p, q], [pc, qc], (g, [sp, sq]) => {
    const dRow = f32Contiguous(g, op);
    const { dp, dq } = backend.klDivBackward(sp!.storage, sq!.storage, dRow.storage, rows, vocab);
    return [wrap(backend, dp, p.shape), wrap(backend, dq, q.shape)];
  });
  if (pc !== p) pc.dispose();
  if (qc !== q) qc.dispose();
  return result;
}

registerGradAdd((a, b) => add(a, b));

