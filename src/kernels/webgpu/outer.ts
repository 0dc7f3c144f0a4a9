// The two halves of a rank-1 LoRA adapter: rowDot (u = x a, a product reduced over each row) and addOuter
// (base + u vᵀ as one strided map, u and v broadcast by stride 0), and their backwards as broadcast maps and
// reductions over a row or a column.

import type { Storage, View } from '../backend.ts';
import { reduce } from './reduce.ts';
import { asWebGpuStorage, type WebGpuRuntime, type WebGpuStorage } from './runtime.ts';
import { runStridedMap } from './strided.ts';

function matrix(storage: Storage, rows: number, cols: number): View {
  return { storage: asWebGpuStorage(storage), shape: [rows, cols], strides: [cols, 1], offset: 0 };
}
// u [R] seen as [R, C] (the same value along a row), v [C] seen as [R, C] (the same value down a column).
function alongRows(storage: Storage, rows: number, cols: number): View {
  return { storage: asWebGpuStorage(storage), shape: [rows, cols], strides: [1, 0], offset: 0 };
}
function downColumns(storage: Storage, rows: number, cols: number): View {
  return { storage: asWebGpuStorage(storage), shape: [rows, cols], strides: [0, 1], offset: 0 };
}

// base [R, C], u [R], v [C] -> out [R, C] = base + u vᵀ
export function addOuter(rt: WebGpuRuntime, base: Storage, u: Storage, v: Storage, rows: number, cols: number): WebGpuStorage {
  return runStridedMap(rt, {
    name: 'addOuter', shape: [rows, cols], outDtype: 'f32',
    inputs: [{ view: matrix(base, rows, cols) }, { view: alongRows(u, rows, cols) }, { view: downColumns(v, rows, cols) }],
    body: ([b, x, y]) => `${b} + ${x} * ${y}`,
  })!;
}

// a ⊙ b over [R, C] (either broadcast by its view), summed over columns -> [R] or over rows -> [C].
function productSummed(rt: WebGpuRuntime, name: string, a: View, b: View, over: 'columns' | 'rows', rows: number, cols: number): WebGpuStorage {
  const product = runStridedMap(rt, {
    name, shape: [rows, cols], outDtype: 'f32', inputs: [{ view: a }, { view: b }], body: ([p, q]) => `${p} * ${q}`,
  })!;
  const out = over === 'columns' ? reduce(rt, 'sum', product, rows, cols, 1) : reduce(rt, 'sum', product, 1, rows, cols);
  rt.free(product);
  return out;
}

// dy [R, C], u [R], v [C] -> du [R] = Σ_c dy[r, c] v[c], dv [C] = Σ_r dy[r, c] u[r]
export function addOuterBackward(
  rt: WebGpuRuntime, dy: Storage, u: Storage, v: Storage, rows: number, cols: number,
): { du: WebGpuStorage; dv: WebGpuStorage } {
  return {
    du: productSummed(rt, 'addOuterBackward.du', matrix(dy, rows, cols), downColumns(v, rows, cols), 'columns', rows, cols),
    dv: productSummed(rt, 'addOuterBackward.dv', matrix(dy, rows, cols), alongRows(u, rows, cols), 'rows', rows, cols),
  };
}

// x [R, C], a [C] -> u [R] = Σ_c x[r, c] a[c]
export function rowDot(rt: WebGpuRuntime, x: Storage, a: Storage, rows: number, cols: number): WebGpuStorage {
  return productSummed(rt, 'rowDot', matrix(x, rows, cols), downColumns(a, rows, cols), 'columns', rows, cols);
}

// x [R, C], a [C], du [R] -> dx [R, C] = du[r] a[c], da [C] = Σ_r du[r] x[r, c]
export function rowDotBackward(
  rt: WebGpuRuntime, x: Storage, a: Storage, du: Storage, rows: number, cols: number,
): { dx: WebGpuStorage; da: WebGpuStorage } {
  const dx = runStridedMap(rt, {
    name: 'rowDotBackward.dx', shape: [rows, cols], outDtype: 'f32',
    inputs: [{ view: alongRows(du, rows, cols) }, { view: downColumns(a, rows, cols) }], body: ([p, q]) => `${p} * ${q}`,
  })!;
  return { dx, da: productSummed(rt, 'rowDotBackward.da', matrix(x, rows, cols), alongRows(du, rows, cols), 'rows', rows, cols) };
}
