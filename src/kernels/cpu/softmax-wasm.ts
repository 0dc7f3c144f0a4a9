// The CPU backend's row kernels for softmax, log-sum-exp and cross-entropy over a wide vocabulary, as
// WebAssembly SIMD generated at startup (wasm-assembler.ts): a vectorised exp and the three passes over a row
// that every one of them is made of — its max, the sum of exp(x - max) (optionally storing each exp), and a
// scale in place (swiglu.ts builds its kernel on the same exp). Scalar Math.exp costs about 10 ns per logit;
// four lanes of a polynomial exp cost well under one. The JavaScript side copies one row at a time into the
// module's own (unshared) memory, padded with -Infinity to a whole number of unrolled steps, so no pass has a
// scalar tail.
//
// exp (Cephes' expf, with mul + add, so every runtime gives the same bits): n = round(x·log2 e) (by the
// 1.5·2²³ trick, which also leaves n in the bits that make 2ⁿ),
// r = x − n·ln 2 (in two parts, the first exact), exp(x) = 2ⁿ · (1 + r + r²·P(r)) with P of degree 5 on
// |r| ≤ ln 2 / 2. Within 1 ulp of Math.exp for x in [−87.33, 88.02] (9 in 10 equal on a 4 M-point grid;
// the tests allow 2 for any f32); exactly 1 at 0; 0 below
// −87.34 (where exp is under f32's smallest normal, 2⁻¹²⁶); +Infinity above 88.02 (the users here only pass
// x − max ≤ 0); NaN stays NaN.
//
// Legend: n elements of a row (padded to ROW_STEP), V vocab.

import { WasmModule, type WasmFunction } from './wasm-assembler.ts';
import { wasmSimdSupported } from './matmul-wasm.ts';

/** Floats per unrolled step of every pass (four v128): rows are padded to a multiple of this. */
export const ROW_STEP = 16;
/** Floats summed in f32 lanes before the partial sum is added to the f64 total. */
const SUM_BLOCK = 1024;

const LOG2E = 1.4426950408889634;
const LN2_HI = 0.693359375; // 355/512: n · LN2_HI is exact in f32 for |n| ≤ 128
const LN2_LO = -2.12194440e-4;
/** ln 2⁻¹²⁶: below this exp is under the smallest normal f32 and comes out 0. */
export const EXP_MIN_INPUT = -87.33654475;
/** ln 2¹²⁷ (rounded down): above this the 2ⁿ scale would overflow its exponent field, so exp is +Infinity. */
export const EXP_MAX_INPUT = 88.02969;
/** Cephes expf's P(r), highest degree first. */
const EXP_POLY = [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1];

export interface ExpConstants {
  low: number; high: number; log2e: number; roundBias: number; ln2Hi: number; ln2Lo: number; one: number;
  zero: number; infinity: number; poly: number[];
}

/** 1.5 · 2²³: adding it rounds an f32 of magnitude under 2²² to an integer, which lands in the low mantissa bits. */
const ROUND_BIAS = 12582912;

/** Splats every constant exp needs into v128 locals once per call, outside the loops. */
export function expConstants(f: WasmFunction): ExpConstants {
  const splat = (value: number) => {
    const local = f.local('v128');
    f.f32(value).op('f32x4.splat').set(local);
    return local;
  };
  return {
    low: splat(EXP_MIN_INPUT), high: splat(EXP_MAX_INPUT), log2e: splat(LOG2E), roundBias: splat(ROUND_BIAS),
    ln2Hi: splat(LN2_HI), ln2Lo: splat(LN2_LO), one: splat(1), zero: splat(0), infinity: splat(Infinity), poly: EXP_POLY.map(splat),
  };
}

/**
 * Pushes exp(x) for the v128 in local `x` (four f32 lanes); `t` are four v128 scratch locals. `nonPositive`:
 * the caller guarantees x ≤ 0 or NaN (x − max over a row), so the upper clamp and the +Infinity test go.
 */
export function emitExp(
  f: WasmFunction, k: ExpConstants, x: number, t: readonly [number, number, number, number], nonPositive: boolean,
): void {
  const [xc, j, n, r] = t;
  // xc = clamp(x) keeps n within [-126, 127], so 2ⁿ is a normal f32 built from its exponent bits. pmax/pmin
  // keep a NaN x (the comparison fails, x is kept).
  f.get(x).get(k.low).op('f32x4.pmax');
  if (!nonPositive) f.get(k.high).op('f32x4.pmin');
  f.set(xc);
  // j = xc·log2e + 1.5·2²³ holds n = round(xc·log2e) in its low mantissa bits; n as f32 = j − 1.5·2²³.
  f.get(xc).get(k.log2e).op('f32x4.mul').get(k.roundBias).op('f32x4.add').tee(j).get(k.roundBias).op('f32x4.sub').set(n);
  f.get(xc).get(n).get(k.ln2Hi).op('f32x4.mul').op('f32x4.sub')
    .get(n).get(k.ln2Lo).op('f32x4.mul').op('f32x4.sub').set(r);
  f.get(k.poly[0]!);
  for (const c of k.poly.slice(1)) f.get(r).op('f32x4.mul').get(c).op('f32x4.add');
  // P(r)·r² + r + 1
  f.get(r).get(r).op('f32x4.mul').op('f32x4.mul').get(r).op('f32x4.add').get(k.one).op('f32x4.add');
  // · 2ⁿ: j << 23 leaves n << 23 (the bias's bits shift out); adding 1.0's bits adds the exponent's 127.
  f.get(j).i32(23).op('i32x4.shl').get(k.one).op('i32x4.add').op('f32x4.mul');
  // Out of range: 0 below (v & ~(x < low)), +Infinity above (pmax(v, inf & (x > high))); NaN fails both tests.
  f.get(x).get(k.low).op('f32x4.lt').op('v128.andnot');
  if (!nonPositive) f.get(k.infinity).get(x).get(k.high).op('f32x4.gt').op('v128.and').op('f32x4.pmax');
}

/** Bytes per unrolled step. */
const STEP_BYTES = ROW_STEP * 4;

/** exp(ptr[i]) in place for n floats (n a multiple of ROW_STEP). */
function emitExpInPlace(module: WasmModule): void {
  const f = module.addFunction('expInPlace', ['i32', 'i32'], []);
  const [ptr, n] = [f.param(0), f.param(1)];
  const k = expConstants(f);
  const [i, end, x] = [f.local('i32'), f.local('i32'), f.local('v128')];
  const t = [f.local('v128'), f.local('v128'), f.local('v128'), f.local('v128')] as const;
  f.get(ptr).get(n).i32(2).op('i32.shl').op('i32.add').set(end);
  f.forRange(i, () => f.get(ptr), () => f.get(end), 16, () => {
    f.get(i).mem('v128.load').set(x);
    f.get(i);
    emitExp(f, k, x, t, false);
    f.mem('v128.store');
  });
}

/** max over ptr[0, n) (n a multiple of ROW_STEP), in four v128 accumulators. -> f32 */
function emitRowMax(module: WasmModule): void {
  const f = module.addFunction('rowMax', ['i32', 'i32'], ['f32']);
  const [ptr, n] = [f.param(0), f.param(1)];
  const [i, end] = [f.local('i32'), f.local('i32')];
  const acc = [0, 1, 2, 3].map(() => f.local('v128'));
  for (const a of acc) f.f32(-Infinity).op('f32x4.splat').set(a);
  f.get(ptr).get(n).i32(2).op('i32.shl').op('i32.add').set(end);
  f.forRange(i, () => f.get(ptr), () => f.get(end), STEP_BYTES, () => {
    acc.forEach((a, j) => f.get(a).get(i).mem('v128.load', 16 * j).op('f32x4.pmax').set(a));
  });
  f.get(acc[0]!).get(acc[1]!).op('f32x4.pmax').get(acc[2]!).get(acc[3]!).op('f32x4.pmax').op('f32x4.pmax').set(acc[0]!);
  f.get(acc[0]!).extractF32(0);
  for (const lane of [1, 2, 3]) f.get(acc[0]!).extractF32(lane).op('f32.max');
}

/**
 * Σ exp(src[i] − max) over n floats (n a multiple of ROW_STEP) -> f64. 'store': each exp is also written to
 * `other` (which may be src). 'kl': also Σ exp(src[i] − max) · (src[i] − other[i]), a term whose exp is 0
 * counting 0 (so −Infinity padding and P = 0 add nothing) -> (f64, f64). Summed in 16 f32 lanes per SUM_BLOCK
 * floats, the blocks' sums in f64.
 */
function emitExpSum(module: WasmModule, name: string, mode: 'sum' | 'store' | 'kl'): void {
  const f = module.addFunction(name, ['i32', 'i32', 'i32', 'f32'], mode === 'kl' ? ['f64', 'f64'] : ['f64']);
  const [src, other, n, max] = [f.param(0), f.param(1), f.param(2), f.param(3)];
  const k = expConstants(f);
  const [i, end, blockEnd] = [f.local('i32'), f.local('i32'), f.local('i32')];
  const [maxv, x, e, p] = [f.local('v128'), f.local('v128'), f.local('v128'), f.local('v128')];
  const t = [f.local('v128'), f.local('v128'), f.local('v128'), f.local('v128')] as const;
  const acc = [0, 1, 2, 3].map(() => f.local('v128'));
  const dots = mode === 'kl' ? [0, 1, 2, 3].map(() => f.local('v128')) : [];
  const [total, dotTotal] = [f.local('f64'), f.local('f64')];
  /** total += the four lanes of a0 + a1 + a2 + a3, in f64. */
  const flush = (accumulators: number[], into: number) => {
    f.get(accumulators[0]!).get(accumulators[1]!).op('f32x4.add').get(accumulators[2]!).get(accumulators[3]!).op('f32x4.add').op('f32x4.add').set(e);
    for (const lane of [0, 1, 2, 3]) f.get(into).get(e).extractF32(lane).op('f64.promote_f32').op('f64.add').set(into);
  };
  f.get(max).op('f32x4.splat').set(maxv);
  f.get(n).i32(2).op('i32.shl').set(end);
  f.i32(0).set(i);
  f.block((done) => f.loop((nextBlock) => {
    f.get(i).get(end).op('i32.ge_u').brIf(done);
    // blockEnd = min(i + SUM_BLOCK floats, end)
    f.get(i).i32(SUM_BLOCK * 4).op('i32.add').tee(blockEnd).get(end).get(blockEnd).get(end).op('i32.lt_u').op('select').set(blockEnd);
    for (const a of [...acc, ...dots]) f.v128([0, 0, 0, 0]).set(a);
    f.loop((nextStep) => {
      acc.forEach((a, j) => {
        f.get(src).get(i).op('i32.add').mem('v128.load', 16 * j).tee(p).get(maxv).op('f32x4.sub').set(x);
        emitExp(f, k, x, t, true); // x − max ≤ 0
        f.set(e);
        if (mode === 'store') f.get(other).get(i).op('i32.add').get(e).mem('v128.store', 16 * j);
        f.get(a).get(e).op('f32x4.add').set(a);
        if (mode === 'kl') {
          // dot += (e · (p − q)) & (e > 0)
          f.get(dots[j]!).get(e).get(p).get(other).get(i).op('i32.add').mem('v128.load', 16 * j).op('f32x4.sub').op('f32x4.mul')
            .get(e).get(k.zero).op('f32x4.gt').op('v128.and').op('f32x4.add').set(dots[j]!);
        }
      });
      f.get(i).i32(STEP_BYTES).op('i32.add').tee(i).get(blockEnd).op('i32.lt_u').brIf(nextStep);
    });
    flush(acc, total);
    if (mode === 'kl') flush(dots, dotTotal);
    f.br(nextBlock);
  }));
  f.get(total);
  if (mode === 'kl') f.get(dotTotal);
}

/** ptr[i] *= s over n floats (n a multiple of ROW_STEP). */
function emitScale(module: WasmModule): void {
  const f = module.addFunction('scale', ['i32', 'i32', 'f32'], []);
  const [ptr, n, s] = [f.param(0), f.param(1), f.param(2)];
  const [i, end, sv] = [f.local('i32'), f.local('i32'), f.local('v128')];
  f.get(s).op('f32x4.splat').set(sv);
  f.get(ptr).get(n).i32(2).op('i32.shl').op('i32.add').set(end);
  f.forRange(i, () => f.get(ptr), () => f.get(end), STEP_BYTES, () => {
    for (let j = 0; j < 4; j++) f.get(i).get(i).mem('v128.load', 16 * j).get(sv).op('f32x4.mul').mem('v128.store', 16 * j);
  });
}

const MAXIMUM_PAGES = 32768; // 2 GiB: rows of up to 500 M floats

export function buildSoftmaxModule(): Uint8Array<ArrayBuffer> {
  const module = new WasmModule({ module: 'env', name: 'memory', initial: 1, maximum: MAXIMUM_PAGES, shared: false });
  emitExpInPlace(module);
  emitRowMax(module);
  emitExpSum(module, 'sumExp', 'sum');
  emitExpSum(module, 'storeExpSum', 'store');
  emitExpSum(module, 'klTerms', 'kl');
  emitScale(module);
  return module.encode();
}

interface SoftmaxModuleExports {
  expInPlace(ptr: number, n: number): void;
  rowMax(ptr: number, n: number): number;
  sumExp(src: number, dst: number, n: number, max: number): number;
  storeExpSum(src: number, dst: number, n: number, max: number): number;
  klTerms(p: number, q: number, n: number, max: number): [number, number];
  scale(ptr: number, n: number, s: number): void;
}

/**
 * One row at a time through the passes softmax and cross-entropy are made of. `load` copies a row in; the
 * other methods work on the loaded row. Two implementations: WebAssembly SIMD (wasmRowKernels) and plain
 * TypeScript with Math.exp (scalarRowKernels), used where WebAssembly SIMD is missing.
 */
export interface RowKernels {
  readonly name: 'wasm-simd' | 'scalar';
  /** Loads x[base, base + cols) as the current row. */
  load(x: Float32Array, base: number, cols: number): void;
  /** max of the row. */
  max(): number;
  /** Σ exp(row − max), in f64. */
  sumExp(max: number): number;
  /** row ← exp(row − max); returns its Σ, in f64. */
  expInPlace(max: number): number;
  /** row · s into out[base, base + cols). */
  scaleInto(s: number, out: Float32Array, base: number): void;
  /** Loads y[base, base + cols) as the second row (cols as the current row's), for klTerms. */
  loadSecond(y: Float32Array, base: number): void;
  /**
   * With p the row and q the second row: Σ exp(p − max) and Σ exp(p − max) · (p − q), a term whose exp is 0
   * counting 0; in f64.
   */
  klTerms(max: number): { sum: number; dot: number };
}

const PAGE_BYTES = 65536;

class WasmRowKernels implements RowKernels {
  readonly name = 'wasm-simd';
  private readonly memory = new WebAssembly.Memory({ initial: 1, maximum: MAXIMUM_PAGES });
  private readonly kernels: SoftmaxModuleExports;
  private row = new Float32Array(this.memory.buffer);
  private cols = 0;
  private padded = 0;

  constructor(module: WebAssembly.Module) {
    this.kernels = new WebAssembly.Instance(module, { env: { memory: this.memory } }).exports as unknown as SoftmaxModuleExports;
  }

  load(x: Float32Array, base: number, cols: number): void {
    const padded = Math.ceil(cols / ROW_STEP) * ROW_STEP;
    const bytes = 2 * padded * 4; // the row and a second row (loadSecond) after it
    if (bytes > this.memory.buffer.byteLength) {
      this.memory.grow(Math.ceil((bytes - this.memory.buffer.byteLength) / PAGE_BYTES));
    }
    if (this.row.buffer !== this.memory.buffer || this.row.length < padded) this.row = new Float32Array(this.memory.buffer);
    this.row.set(x.subarray(base, base + cols), 0);
    this.row.fill(-Infinity, cols, padded); // exp(-inf - max) = 0; max unchanged
    this.cols = cols;
    this.padded = padded;
  }

  max(): number {
    return this.kernels.rowMax(0, this.padded);
  }

  sumExp(max: number): number {
    return this.kernels.sumExp(0, 0, this.padded, max);
  }

  expInPlace(max: number): number {
    return this.kernels.storeExpSum(0, 0, this.padded, max);
  }

  scaleInto(s: number, out: Float32Array, base: number): void {
    this.kernels.scale(0, this.padded, s);
    out.set(this.row.subarray(0, this.cols), base);
  }

  loadSecond(y: Float32Array, base: number): void {
    this.row.set(y.subarray(base, base + this.cols), this.padded);
    this.row.fill(-Infinity, this.padded + this.cols, 2 * this.padded);
  }

  klTerms(max: number): { sum: number; dot: number } {
    const [sum, dot] = this.kernels.klTerms(0, this.padded * 4, this.padded, max);
    return { sum, dot };
  }

  /** exp of every element of x (its own bits), for tests of the vectorised exp. */
  exp(x: Float32Array): Float32Array {
    this.load(x, 0, x.length);
    this.kernels.expInPlace(0, this.padded);
    return this.row.slice(0, x.length);
  }
}

export class ScalarRowKernels implements RowKernels {
  readonly name = 'scalar';
  private row = new Float32Array(0);
  private second = new Float32Array(0);

  load(x: Float32Array, base: number, cols: number): void {
    this.row = x.slice(base, base + cols);
  }

  max(): number {
    let max = -Infinity;
    for (const v of this.row) max = Math.max(max, v);
    return max;
  }

  sumExp(max: number): number {
    let sum = 0;
    for (const v of this.row) sum += Math.exp(v - max);
    return sum;
  }

  expInPlace(max: number): number {
    let sum = 0;
    for (let c = 0; c < this.row.length; c++) {
      this.row[c] = Math.exp(this.row[c]! - max);
      sum += this.row[c]!;
    }
    return sum;
  }

  scaleInto(s: number, out: Float32Array, base: number): void {
    for (let c = 0; c < this.row.length; c++) out[base + c] = this.row[c]! * s;
  }

  loadSecond(y: Float32Array, base: number): void {
    this.second = y.slice(base, base + this.row.length);
  }

  klTerms(max: number): { sum: number; dot: number } {
    let sum = 0;
    let dot = 0;
    for (let c = 0; c < this.row.length; c++) {
      const p = this.row[c]!;
      const e = Math.exp(p - max);
      sum += e;
      if (e > 0) dot += e * (p - this.second[c]!);
    }
    return { sum, dot };
  }
}

let compiled: WebAssembly.Module | null | undefined;

/** The WebAssembly SIMD row kernels (one instance per call, each with its own memory), or null without SIMD. */
export function wasmRowKernels(): WasmRowKernels | null {
  if (compiled === undefined) compiled = wasmSimdSupported() ? new WebAssembly.Module(buildSoftmaxModule()) : null;
  return compiled ? new WasmRowKernels(compiled) : null;
}

let shared: RowKernels | undefined;

/** The row kernels the CPU backend's softmax and losses use: WebAssembly SIMD where the runtime has it. */
export function rowKernels(): RowKernels {
  return (shared ??= wasmRowKernels() ?? new ScalarRowKernels());
}
