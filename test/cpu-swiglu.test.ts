// The CPU SwiGLU kernels (src/kernels/cpu/swiglu.ts: WebAssembly SIMD in f32 on softmax-wasm.ts's exp, and the
// plain f64 loop) against silu(gate) · up in float64: for any length (across the SIMD kernel's 4096-element
// chunks, not a multiple of 4), any values, and at the edges (±0, ±Infinity, NaN, gates beyond exp's range).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { scalarSwiglu, swiglu, swigluKernel } from '../src/kernels/cpu/swiglu.ts';
import { wasmSimdSupported } from '../src/kernels/cpu/matmul-wasm.ts';
import { CpuStorage } from '../src/kernels/cpu/storage.ts';

if (!wasmSimdSupported()) throw new Error('these tests need WebAssembly SIMD (Node 22 and later have it)');
type Kernel = ReturnType<typeof swigluKernel>;

/** silu(g) · u in float64, from the f32 inputs. */
const reference = (g: number, u: number) => (g * u) / (1 + Math.exp(-g));

/** got within `tolerance` of silu(g) · u, or equal to it where that overflows f32 (huge g · u: ±Infinity). */
function expectSwiglu(got: number, g: number, u: number, where: string): void {
  const want = reference(g, u);
  if (!Number.isFinite(Math.fround(want))) expect(got, where).toBe(Math.fround(want));
  else expect(Math.abs(got - want), `${where}: gate ${g} up ${u}: got ${got}, want ${want}`).toBeLessThanOrEqual(tolerance(g, u, want));
}

function run(kernel: Kernel, gate: Float32Array, up: Float32Array): Float32Array {
  const out = swiglu(new CpuStorage('f32', gate), new CpuStorage('f32', up), gate.length, kernel);
  return (out as CpuStorage).data as Float32Array;
}

/**
 * |got − want| allowed: exp(−g) is within 2 ulp (relative 2⁻²²), which 1 + exp(−g) keeps or shrinks, plus three
 * roundings to f32 (2⁻²⁴ each: 1 + e, the division, the product); and |g·u|·2⁻¹²⁶ where exp(−g) leaves f32's range
 * (g < −88.03: the kernel's exp is +Infinity and the result 0, the true one under that bound); and the rounding
 * of a subnormal silu(g) (2⁻¹⁵⁰, times |u|) and of a subnormal result.
 */
const tolerance = (g: number, u: number, want: number) => (2 ** -22 + 3 * 2 ** -24) * Math.abs(want) + Math.abs(g * u) * 2 ** -126 + (1 + Math.abs(u)) * 2 ** -149;

/** Gates mostly moderate, some far out (where exp(−g) over- or underflows), any up. */
const gateArb = fc.oneof(
  { weight: 8, arbitrary: fc.float({ min: -20, max: 20, noNaN: true }) },
  { weight: 1, arbitrary: fc.float({ noNaN: true, noDefaultInfinity: true }) },
  { weight: 1, arbitrary: fc.constantFrom(0, -0, 87.3, -87.3, 88.5, -88.5, 100, -100, 1e-30, -1e-30) },
);
const upArb = fc.float({ min: -1e3, max: 1e3, noNaN: true });

const cases = fc.integer({ min: 1, max: 70 }).chain((n) => fc.tuple(fc.array(gateArb, { minLength: n, maxLength: n }), fc.array(upArb, { minLength: n, maxLength: n })));

describe.each([['wasm-simd', swigluKernel()], ['scalar', scalarSwiglu]] as [string, Kernel][])('the %s swiglu kernel', (_, kernel) => {
  it('equals silu(gate) · up in float64 within exp’s 2 ulp and three roundings, for any length and values (fast-check)', () => {
    fc.assert(fc.property(cases, ([gates, ups]) => {
      const g = Float32Array.from(gates);
      const u = Float32Array.from(ups);
      const got = run(kernel, g, u);
      for (let i = 0; i < g.length; i++) expectSwiglu(got[i]!, g[i]!, u[i]!, `element ${i}`);
    }), { numRuns: 300 });
  });

  it('is right across its 4096-element chunks (lengths around 1, 2 and 3 chunks)', () => {
    for (const n of [4095, 4096, 4097, 4864, 8191, 8193, 12_289]) {
      const g = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) * 12);
      const u = Float32Array.from({ length: n }, (_, i) => Math.cos(i * 0.11) * 3);
      const got = run(kernel, g, u);
      for (let i = 0; i < n; i++) expectSwiglu(got[i]!, g[i]!, u[i]!, `n ${n}, element ${i}`);
    }
  });

  it('gives silu’s limits at the edges: ±0 at ±0, g·u for large g, about −0 for very negative g, NaN for NaN', () => {
    const g = new Float32Array([0, -0, 1e4, Infinity, -1e4, -100, NaN, 2, -Infinity]);
    const u = new Float32Array([5, 5, 3, 2, 3, 1, 1, NaN, 1]);
    const got = Array.from(run(kernel, g, u));
    expect(got.slice(0, 5)).toEqual([0, -0, 3e4, Infinity, -0]);
    // silu(−100) = −3.7e-42: a subnormal in f64, −0 where exp(100) overflows f32.
    expect(got[5]).toBeLessThanOrEqual(0);
    expect(got[5]).toBeGreaterThanOrEqual(-4e-42);
    expect(got[6]).toBeNaN();
    expect(got[7]).toBeNaN();
    expect(got[8]).toBeNaN(); // −∞ / (1 + ∞), as torch's silu(−inf) = −inf · sigmoid(−inf) = nan
  });
});
