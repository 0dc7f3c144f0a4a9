// The two halves of a rank-1 LoRA adapter, each one pass over its [R, C] operand: rowDot reads A·x per row
// (u = x a), addOuter adds (A·x) · scale·B to the projection's output (base + u vᵀ) without an [R, C] product in
// between; and their backwards, each one pass too.
import type { Storage } from '../backend.ts';
import { CpuStorage, f32Of } from './storage.ts';

// base [R, C], u [R], v [C] -> out [R, C] = base + u vᵀ
export function addOuter(base: Storage, u: Storage, v: Storage, rows: number, cols: number): Storage {
  const b = f32Of(base, 'addOuter');
  const uu = f32Of(u, 'addOuter');
  const vv = f32Of(v, 'addOuter');
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const ur = uu[r]!;
    const at = r * cols;
    for (let c = 0; c < cols; c++) out[at + c] = b[at + c]! + ur * vv[c]!;
  }
  return new CpuStorage('f32', out);
}

// dy [R, C], u [R], v [C] -> du [R] = Σ_c dy[r, c] v[c], dv [C] = Σ_r dy[r, c] u[r]
export function addOuterBackward(dy: Storage, u: Storage, v: Storage, rows: number, cols: number): { du: Storage; dv: Storage } {
  const g = f32Of(dy, 'addOuterBackward');
  const uu = f32Of(u, 'addOuterBackward');
  const vv = f32Of(v, 'addOuterBackward');
  const du = new Float32Array(rows);
  const dv = new Float64Array(cols); // summed over every row: f64 keeps long sequences exact enough
  for (let r = 0; r < rows; r++) {
    const ur = uu[r]!;
    const at = r * cols;
    let dot = 0;
    for (let c = 0; c < cols; c++) {
      const d = g[at + c]!;
      dot += d * vv[c]!;
      dv[c] += d * ur;
    }
    du[r] = dot;
  }
  return { du: new CpuStorage('f32', du), dv: new CpuStorage('f32', Float32Array.from(dv)) };
}

// x [R, C], a [C] -> u [R] = Σ_c x[r, c] a[c]
export function rowDot(x: Storage, a: Storage, rows: number, cols: number): Storage {
  const xx = f32Of(x, 'rowDot');
  const aa = f32Of(a, 'rowDot');
  const out = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const at = r * cols;
    let dot = 0;
    for (let c = 0; c < cols; c++) dot += xx[at + c]! * aa[c]!;
    out[r] = dot;
  }
  return new CpuStorage('f32', out);
}

// x [R, C], a [C], du [R] -> dx [R, C] = du[r] a[c], da [C] = Σ_r du[r] x[r, c]
export function rowDotBackward(x: Storage, a: Storage, du: Storage, rows: number, cols: number): { dx: Storage; da: Storage } {
  const xx = f32Of(x, 'rowDotBackward');
  const aa = f32Of(a, 'rowDotBackward');
  const g = f32Of(du, 'rowDotBackward');
  const dx = new Float32Array(rows * cols);
  const da = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const gr = g[r]!;
    const at = r * cols;
    for (let c = 0; c < cols; c++) {
      dx[at + c] = gr * aa[c]!;
      da[c] += gr * xx[at + c]!;
    }
  }
  return { dx: new CpuStorage('f32', dx), da: new CpuStorage('f32', Float32Array.from(da)) };
}
