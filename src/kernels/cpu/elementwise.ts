import type { BinaryOp, Storage, UnaryOp, View } from '../backend.ts';
import { CpuStorage, readF32 } from './storage.ts';

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
    case 'siluGrad': return (x, dy) => {
      const s = sigmoid(x);
      return dy * s * (1 + x * (1 - s));
    };
  }
}

// unary: x [...] strided -> y [...] contiguous.
export function unary(op: UnaryOp, x: View, param: number): Storage {
  const input = readF32(x, `unary ${op}`);
  const f = unaryFunction(op, param);
  const out = new Float32Array(input.length);
  for (let i = 0; i < input.length; i++) out[i] = f(input[i]!);
  return new CpuStorage('f32', out);
}

// binary: a, b already broadcast by strides to outShape -> contiguous outShape.
export function binary(op: BinaryOp, a: View, b: View, outShape: readonly number[]): Storage {
  const left = readF32({ ...a, shape: outShape }, `binary ${op}`);
  const right = readF32({ ...b, shape: outShape }, `binary ${op}`);
  const f = binaryFunction(op);
  const out = new Float32Array(left.length);
  if (op === 'add') for (let i = 0; i < out.length; i++) out[i] = left[i]! + right[i]!;
  else if (op === 'mul') for (let i = 0; i < out.length; i++) out[i] = left[i]! * right[i]!;
  else for (let i = 0; i < out.length; i++) out[i] = f(left[i]!, right[i]!);
  return new CpuStorage('f32', out);
}
