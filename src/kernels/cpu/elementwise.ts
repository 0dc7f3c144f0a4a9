import type { BinaryOp, Storage, UnaryOp, View } from '../backend.ts';
import { CpuStorage, isContiguousView, readF32 } from './storage.ts';
import { allocateF32Overwritten } from './array-pool.ts';

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

function unaryFunction(op: UnaryOp, param: number): (x: number) => number {
  switch (op) {
    case 'neg': return (x) => -x;
    case 'exp': return Math.exp;
    case 'log': return Math.log;
    case 'sqrt': return Math.sqrt;
    case 'rsqrt': return (x) => 1 / Math.sqrt(x);
    case 'silu': return (x) => x * sigmoid(x);
    case 'sigmoid': return sigmoid;
    case 'abs': return Math.abs;
    case 'square': return (x) => x * x;
    case 'pow': return (x) => Math.pow(x, param);
    case 'mulScalar': return (x) => x * param;
    case 'addScalar': return (x) => x + param;
  }
}

function binaryFunction(op: BinaryOp): (a: number, b: number) => number {
  switch (op) {
    case 'add': return (a, b) => a + b;
    case 'sub': return (a, b) => a - b;
    case 'mul': return (a, b) => a * b;
    case 'div': return (a, b) => a / b;
    case 'maximum': return (a, b) => (a >= b || Number.isNaN(a) ? a : b);
    case 'eq': return (a, b) => (a === b ? 1 : 0);
    case 'gt': return (a, b) => (a > b ? 1 : 0);
    case 'siluGrad': return (x, dy) => {
      const s = sigmoid(x);
      return dy * s * (1 + x * (1 - s));
    };
  }
}

// unary: x [...] strided -> y [...] contiguous. Every op has its own loop: a call through a per-op closure
// inside the loop turns megamorphic once several ops have run, and then costs ~50× the arithmetic.
export function unary(op: UnaryOp, x: View, param: number): Storage {
  const input = readF32(x, `unary ${op}`);
  const out = allocateF32Overwritten(input.length);
  const n = input.length;
  switch (op) {
    case 'mulScalar': for (let i = 0; i < n; i++) out[i] = input[i]! * param; break;
    case 'addScalar': for (let i = 0; i < n; i++) out[i] = input[i]! + param; break;
    case 'neg': for (let i = 0; i < n; i++) out[i] = -input[i]!; break;
    case 'square': for (let i = 0; i < n; i++) out[i] = input[i]! * input[i]!; break;
    case 'exp': for (let i = 0; i < n; i++) out[i] = Math.exp(input[i]!); break;
    case 'log': for (let i = 0; i < n; i++) out[i] = Math.log(input[i]!); break;
    case 'sqrt': for (let i = 0; i < n; i++) out[i] = Math.sqrt(input[i]!); break;
    case 'rsqrt': for (let i = 0; i < n; i++) out[i] = 1 / Math.sqrt(input[i]!); break;
    case 'abs': for (let i = 0; i < n; i++) out[i] = Math.abs(input[i]!); break;
    case 'sigmoid': for (let i = 0; i < n; i++) out[i] = 1 / (1 + Math.exp(-input[i]!)); break;
    case 'silu': for (let i = 0; i < n; i++) { const v = input[i]!; out[i] = v / (1 + Math.exp(-v)); } break;
    case 'pow': for (let i = 0; i < n; i++) out[i] = Math.pow(input[i]!, param); break;
    default: {
      const f = unaryFunction(op, param);
      for (let i = 0; i < n; i++) out[i] = f(input[i]!);
    }
  }
  return new CpuStorage('f32', out);
}

/**
 * How `b` broadcasts against a contiguous `a` of outShape when it is a contiguous block repeated over the
 * leading axes (a bias [H] over [B, T, H], a per-row scale [B, T, 1] is not this case): the block's length,
 * or 0 when b is not of that form.
 */
function repeatedBlock(b: View, outShape: readonly number[]): number {
  let d = outShape.length;
  let block = 1;
  // The trailing axes where b is laid out contiguously…
  while (d > 0 && b.strides[d - 1] === block) {
    block *= outShape[d - 1]!;
    d--;
  }
  // …and stride 0 on every axis before them.
  for (let k = 0; k < d; k++) if (b.strides[k] !== 0 && outShape[k] !== 1) return 0;
  return block;
}

/** How many trailing axes of outShape multiply to `block`. */
function countTrailing(outShape: readonly number[], block: number): number {
  let product = 1;
  let axes = 0;
  while (product < block) product *= outShape[outShape.length - 1 - axes++]!;
  return axes;
}

/**
 * b's one value per row when it is broadcast along outShape's last axis (a per-row scale or norm [R, 1] over
 * [R, C]), else null.
 */
function valuePerRow(b: View, outShape: readonly number[]): Float32Array | null {
  const rank = outShape.length;
  if (rank < 2 || b.strides[rank - 1] !== 0 || outShape[rank - 1]! < 2 || b.strides.every((stride) => stride === 0)) return null;
  return readF32({ ...b, shape: outShape.slice(0, -1), strides: b.strides.slice(0, -1) }, 'binary');
}

/** left [R, C] op rows [R] (broadcast along C) -> [R, C]: each row against its one value. */
function binaryPerRow(op: BinaryOp, left: Float32Array, rows: Float32Array, cols: number): Float32Array {
  const out = allocateF32Overwritten(left.length);
  for (let r = 0, base = 0; r < rows.length; r++, base += cols) binaryWithScalarInto(op, left, rows[r]!, out, base, base + cols);
  return out;
}

/**
 * The operands of `op` as a contiguous one and a value per row, when one is broadcast along the last axis:
 * a [R, C] op b [R, 1], or (add and mul commute exactly) a [R, 1] op b [R, C]. Else null.
 */
function perRowOperands(op: BinaryOp, a: View, b: View, outShape: readonly number[]): { full: View; rows: Float32Array } | null {
  if (op !== 'add' && op !== 'sub' && op !== 'mul' && op !== 'div') return null;
  const contiguous = (v: View) => isContiguousView({ ...v, shape: outShape });
  const rowsOfB = contiguous(a) ? valuePerRow(b, outShape) : null;
  if (rowsOfB) return { full: a, rows: rowsOfB };
  const rowsOfA = (op === 'add' || op === 'mul') && contiguous(b) ? valuePerRow(a, outShape) : null;
  return rowsOfA ? { full: b, rows: rowsOfA } : null;
}

// binary: a, b already broadcast by strides to outShape -> contiguous outShape.
export function binary(op: BinaryOp, a: View, b: View, outShape: readonly number[]): Storage {
  // A value per row (W / ‖W‖ with ‖W‖ [F, 1]; along [F, 1] · W): read once per row, not materialised.
  const perRow = perRowOperands(op, a, b, outShape);
  if (perRow) {
    const full = readF32({ ...perRow.full, shape: outShape }, `binary ${op}`);
    return new CpuStorage('f32', binaryPerRow(op, full, perRow.rows, outShape.at(-1)!));
  }
  const block = (op === 'add' || op === 'mul') && isContiguousView({ ...a, shape: outShape }) ? repeatedBlock(b, outShape) : 0;
  if (block > 0) {
    // a + bias / a * weight: read b's block in place instead of materialising its broadcast.
    const left = readF32({ ...a, shape: outShape }, `binary ${op}`);
    const axes = countTrailing(outShape, block);
    const right = readF32({ ...b, shape: outShape.slice(outShape.length - axes), strides: b.strides.slice(outShape.length - axes) }, `binary ${op}`);
    const out = allocateF32Overwritten(left.length);
    for (let base = 0; base < out.length; base += block) {
      if (op === 'add') for (let j = 0; j < block; j++) out[base + j] = left[base + j]! + right[j]!;
      else for (let j = 0; j < block; j++) out[base + j] = left[base + j]! * right[j]!;
    }
    return new CpuStorage('f32', out);
  }
  const left = readF32({ ...a, shape: outShape }, `binary ${op}`);
  if (op !== 'siluGrad' && b.strides.every((stride, d) => stride === 0 || outShape[d] === 1)) {
    // b is one value broadcast over everything (a clamp, a threshold): no broadcast copy of it.
    return new CpuStorage('f32', binaryWithScalar(op, left, readF32({ ...b, shape: [] }, `binary ${op}`)[0]!));
  }
  const right = readF32({ ...b, shape: outShape }, `binary ${op}`);
  const out = allocateF32Overwritten(left.length);
  const n = out.length;
  // One loop per op (see unary: no closure call per element).
  switch (op) {
    case 'add': for (let i = 0; i < n; i++) out[i] = left[i]! + right[i]!; break;
    case 'sub': for (let i = 0; i < n; i++) out[i] = left[i]! - right[i]!; break;
    case 'mul': for (let i = 0; i < n; i++) out[i] = left[i]! * right[i]!; break;
    case 'div': for (let i = 0; i < n; i++) out[i] = left[i]! / right[i]!; break;
    case 'maximum': maximumInto(left, right, out); break;
    // Comparisons through Number(bool) (a set-on-condition, no branch: random signs would mispredict half the time).
    case 'eq': for (let i = 0; i < n; i++) out[i] = Number(left[i] === right[i]); break;
    case 'gt': for (let i = 0; i < n; i++) out[i] = Number(left[i]! > right[i]!); break;
    default: {
      const f = binaryFunction(op);
      for (let i = 0; i < n; i++) out[i] = f(left[i]!, right[i]!);
    }
  }
  return new CpuStorage('f32', out);
}

const int32View = (x: Float32Array) => new Int32Array(x.buffer, x.byteOffset, x.length);

/**
 * out = x >= y || x is NaN ? x : y, elementwise, with `right` of length n or 1 (one value for all). A bitwise
 * select on the f32 bits under a mask from set-on-condition comparisons, not a branch: on random signs (a
 * ReLU's input) the branch mispredicts half the time and costs 10× this loop (31 vs 3 ms on [512, 3584]).
 */
function maximumInto(left: Float32Array, right: Float32Array, out: Float32Array): void {
  const [l, r, o] = [int32View(left), int32View(right), int32View(out)];
  const n = out.length;
  if (right.length === 1) {
    const y = right[0]!;
    const yBits = r[0]!;
    for (let i = 0; i < n; i++) {
      const x = left[i]!;
      const keep = -(Number(x >= y) | Number(x !== x)); // all ones where x wins
      o[i] = (l[i]! & keep) | (yBits & ~keep);
    }
    return;
  }
  for (let i = 0; i < n; i++) {
    const x = left[i]!;
    const keep = -(Number(x >= right[i]!) | Number(x !== x));
    o[i] = (l[i]! & keep) | (r[i]! & ~keep);
  }
}

/** out[i] = left[i] op value for i in [from, to), one loop per op. */
function binaryWithScalarInto(op: BinaryOp, left: Float32Array, value: number, out: Float32Array, from: number, to: number): void {
  switch (op) {
    case 'add': for (let i = from; i < to; i++) out[i] = left[i]! + value; break;
    case 'sub': for (let i = from; i < to; i++) out[i] = left[i]! - value; break;
    case 'mul': for (let i = from; i < to; i++) out[i] = left[i]! * value; break;
    case 'div': for (let i = from; i < to; i++) out[i] = left[i]! / value; break;
    case 'maximum': maximumInto(left.subarray(from, to), new Float32Array([value]), out.subarray(from, to)); break;
    case 'eq': for (let i = from; i < to; i++) out[i] = Number(left[i] === value); break;
    case 'gt': for (let i = from; i < to; i++) out[i] = Number(left[i]! > value); break;
    default: {
      const f = binaryFunction(op);
      for (let i = from; i < to; i++) out[i] = f(left[i]!, value);
    }
  }
}

/** left [n] op one value -> [n]. */
function binaryWithScalar(op: BinaryOp, left: Float32Array, value: number): Float32Array {
  const out = allocateF32Overwritten(left.length);
  binaryWithScalarInto(op, left, value, out, 0, out.length);
  return out;
}
