// Elementwise kernels on strided f32 views: unary (with a scalar param) and broadcast binary.
// Both are one strided map (strided.ts): out [...shape] contiguous f32.

import type { BinaryOp, UnaryOp, View } from '../backend.ts';
import type { WebGpuRuntime, WebGpuStorage } from './runtime.ts';
import { runStridedMap } from './strided.ts';

const ELEMENTWISE_HELPERS = /* wgsl */ `
fn sigmoid(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }

// x ^ p with JavaScript's Math.pow semantics for negative bases and integer exponents.
fn pow_js(x: f32, p: f32) -> f32 {
  if (p == 0.0) { return 1.0; }
  if (p == 1.0) { return x; }
  if (p == 2.0) { return x * x; }
  if (p == -1.0) { return 1.0 / x; }
  if (p == 0.5) { return sqrt(x); }
  let a = abs(x);
  var magnitude: f32;
  if (a == 0.0) { magnitude = select(1.0 / a, 0.0, p > 0.0); } else { magnitude = pow(a, p); }
  if (x >= 0.0) { return magnitude; }
  if (floor(p) != p) { return nan_f32(); }
  return select(magnitude, -magnitude, abs(p) % 2.0 == 1.0);
}

// a = x, b = dy: dy * d/dx (x * sigmoid(x))
fn silu_grad(x: f32, dy: f32) -> f32 {
  let s = sigmoid(x);
  return dy * s * (1.0 + x * (1.0 - s));
}
`;

const UNARY_BODIES: Record<UnaryOp, (x: string) => string> = {
  neg: (x) => `-${x}`,
  exp: (x) => `exp(${x})`,
  log: (x) => `log(${x})`,
  sqrt: (x) => `sqrt(${x})`,
  rsqrt: (x) => `1.0 / sqrt(${x})`, // inverseSqrt may be a ~12-bit estimate on some drivers
  silu: (x) => `${x} * sigmoid(${x})`,
  sigmoid: (x) => `sigmoid(${x})`,
  abs: (x) => `abs(${x})`,
  square: (x) => `${x} * ${x}`,
  pow: (x) => `pow_js(${x}, params.scalar)`,
  mulScalar: (x) => `${x} * params.scalar`,
  addScalar: (x) => `${x} + params.scalar`,
};

const BINARY_BODIES: Record<BinaryOp, (a: string, b: string) => string> = {
  add: (a, b) => `${a} + ${b}`,
  sub: (a, b) => `${a} - ${b}`,
  mul: (a, b) => `${a} * ${b}`,
  div: (a, b) => `${a} / ${b}`,
  maximum: (a, b) => `max(${a}, ${b})`,
  eq: (a, b) => `select(0.0, 1.0, ${a} == ${b})`,
  gt: (a, b) => `select(0.0, 1.0, ${a} > ${b})`,
  siluGrad: (a, b) => `silu_grad(${a}, ${b})`,
};

// x: strided f32 view [...shape] -> out [...shape] f32
export function unary(rt: WebGpuRuntime, op: UnaryOp, x: View, param: number): WebGpuStorage {
  const body = UNARY_BODIES[op];
  if (body === undefined) throw new Error(`unary: unknown op ${op}`);
  return runStridedMap(rt, {
    name: `unary.${op}`, shape: x.shape, inputs: [{ view: x }], outDtype: 'f32', scalar: param,
    body: ([value]) => body(value!), helpers: ELEMENTWISE_HELPERS,
  })!;
}

// a, b: strided f32 views already broadcast to outShape (stride 0 on broadcast axes) -> out [...outShape] f32
export function binary(rt: WebGpuRuntime, op: BinaryOp, a: View, b: View, outShape: readonly number[]): WebGpuStorage {
  const body = BINARY_BODIES[op];
  if (body === undefined) throw new Error(`binary: unknown op ${op}`);
  for (const [name, view] of [['a', a], ['b', b]] as const) {
    if (view.shape.length !== outShape.length || view.shape.some((size, i) => size !== outShape[i])) {
      throw new Error(`binary ${op}: ${name} has shape [${view.shape}], expected the broadcast shape [${outShape}]`);
    }
  }
  return runStridedMap(rt, {
    name: `binary.${op}`, shape: outShape, inputs: [{ view: a }, { view: b }], outDtype: 'f32',
    body: ([x, y]) => body(x!, y!), helpers: ELEMENTWISE_HELPERS,
  })!;
}
