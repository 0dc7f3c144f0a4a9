// swiglu: gate, up [n] -> silu(gate) * up, and its backward; strided maps over contiguous vectors.

import type { Storage, View } from '../backend.ts';
import { asWebGpuStorage, type WebGpuRuntime, type WebGpuStorage } from './runtime.ts';
import { runStridedMap } from './strided.ts';

const SIGMOID = 'fn sigmoid(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }\n';

function vector(storage: Storage, n: number): View {
  return { storage: asWebGpuStorage(storage), shape: [n], strides: [1], offset: 0 };
}

// gate, up [n] -> out [n] = gate * sigmoid(gate) * up
export function swiglu(rt: WebGpuRuntime, gate: Storage, up: Storage, n: number): WebGpuStorage {
  return runStridedMap(rt, {
    name: 'swiglu', shape: [n], inputs: [{ view: vector(gate, n) }, { view: vector(up, n) }], outDtype: 'f32',
    helpers: SIGMOID, body: ([g, u]) => `${g} * sigmoid(${g}) * ${u}`,
  })!;
}

// gate, up, dy [n] -> dgate [n] = dy * up * silu'(gate), dup [n] = dy * silu(gate)
export function swigluBackward(
  rt: WebGpuRuntime, gate: Storage, up: Storage, dy: Storage, n: number,
): { dgate: WebGpuStorage; dup: WebGpuStorage } {
  const inputs = [{ view: vector(gate, n) }, { view: vector(up, n) }, { view: vector(dy, n) }];
  const dgate = runStridedMap(rt, {
    name: 'swigluBackward.gate', shape: [n], inputs, outDtype: 'f32', helpers: SIGMOID,
    body: ([g, u, d]) => `${d} * ${u} * sigmoid(${g}) * (1.0 + ${g} * (1.0 - sigmoid(${g})))`,
  })!;
  const dup = runStridedMap(rt, {
    name: 'swigluBackward.up', shape: [n], inputs, outDtype: 'f32', helpers: SIGMOID,
    body: ([g, , d]) => `${d} * ${g} * sigmoid(${g})`,
  })!;
  return { dgate, dup };
}
