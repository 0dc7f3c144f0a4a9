// The elementwise passes of the blocked CPU attention (attention.ts): max, exp and sum of a score row and the
// softmax backward over the block of scores the matmul just wrote, and the accumulation of dK and dV; and the
// two products of one query against a KV cache (decoding), the scores q·K and the mix PᵀV. Two
// implementations of one interface: WebAssembly SIMD (four lanes, a Cephes-style polynomial exp) where the
// runtime has it, and plain TypeScript (a table exp) everywhere else. The wasm kernels work on their own
// memory, so the attention's working arrays live there (`workspace` hands out a view on it) and nothing is
// copied in or out.
//
// Every row is `n` contiguous f32 at element `at` of an array from workspace(); sums are accumulated in f64,
// except the decode products', which sum f32 as the matmul they replace does.
import { WasmModule, unsignedLeb128, type WasmFunction } from './wasm-assembler.ts';
import { wasmSimdSupported } from './matmul-wasm.ts';

export interface RowKernels {
  readonly name: 'wasm simd' | 'typescript';
  /** An f32 array of `floats` elements, zeroed or stale, to cut the working arrays from (valid until the next call). */
  workspace(floats: number): Float32Array;
  /** max over i < n of scale * x[at + i] (-Infinity when n = 0). */
  scaledMax(x: Float32Array, at: number, n: number, scale: number): number;
  /** x[at + i] = exp(scale * x[at + i] - shift) for i < n; returns their sum. */
  expShifted(x: Float32Array, at: number, n: number, scale: number, shift: number): number;
  /** sum over i < n of x[a + i] * x[b + i]. */
  dot(x: Float32Array, a: number, b: number, n: number): number;
  /** P at p and dP at dp in; out crosswise: x[p + i] = scale * P_i * (dP_i - delta) (dS), x[dp + i] = P_i. */
  softmaxGrad(x: Float32Array, p: number, dp: number, n: number, delta: number, scale: number): void;
  /** x[to + i] += x[from + i] for i < n. */
  addInto(x: Float32Array, to: number, from: number, n: number): void;
  /** x[out + r] = sum over i < n of x[q + i] * x[k + r * stride + i], for r < rows (one query's scores). */
  rowDots(x: Float32Array, q: number, k: number, stride: number, n: number, rows: number, out: number): void;
  /** x[out + i] = sum over r < rows of x[p + r] * x[v + r * stride + i], for i < n (the mix of value rows). */
  weightedRows(x: Float32Array, p: number, v: number, stride: number, n: number, rows: number, out: number): void;
}

// ---- TypeScript ------------------------------------------------------------------------------------------

// exp(x) for x <= 0 as 2^(-j/64) from a table times a cubic for the remaining e^r, |r| < ln2/64: relative
// error below 1e-9, about four times faster than Math.exp in V8.
const EXP_STEPS = 64;
/** Below 2^-150 every value rounds to zero in f32. */
const EXP_TABLE_SIZE = 150 * EXP_STEPS;
const EXP_TABLE = Float64Array.from({ length: EXP_TABLE_SIZE }, (_, j) => 2 ** (-j / EXP_STEPS));
const STEPS_PER_NEG_UNIT = EXP_STEPS * Math.LOG2E;
const UNIT_PER_STEP = Math.LN2 / EXP_STEPS;

function expFast(x: number): number {
  const z = -x * STEPS_PER_NEG_UNIT;
  if (z >= 0 && z < EXP_TABLE_SIZE) {
    const j = z | 0;
    const r = (j - z) * UNIT_PER_STEP;
    return EXP_TABLE[j]! * (1 + r * (1 + r * (0.5 + r * (1 / 6))));
  }
  return z >= EXP_TABLE_SIZE ? 0 : Math.exp(x); // x > 0 or NaN: the exact path
}

export const typescriptRowKernels: RowKernels = {
  name: 'typescript',
  workspace: (floats) => new Float32Array(floats),
  scaledMax(x, at, n, scale) {
    let max = -Infinity;
    for (let i = at; i < at + n; i++) {
      const value = x[i]! * scale;
      if (value > max) max = value;
    }
    return max;
  },
  expShifted(x, at, n, scale, shift) {
    let sum = 0;
    for (let i = at; i < at + n; i++) {
      const e = expFast(x[i]! * scale - shift);
      x[i] = e;
      sum += e;
    }
    return sum;
  },
  dot(x, a, b, n) {
    let sum = 0;
    for (let i = 0; i < n; i++) sum += x[a + i]! * x[b + i]!;
    return sum;
  },
  softmaxGrad(x, p, dp, n, delta, scale) {
    for (let i = 0; i < n; i++) {
      const prob = x[p + i]!;
      x[p + i] = prob * (x[dp + i]! - delta) * scale;
      x[dp + i] = prob;
    }
  },
  addInto(x, to, from, n) {
    for (let i = 0; i < n; i++) x[to + i]! += x[from + i]!;
  },
  rowDots(x, q, k, stride, n, rows, out) {
    for (let r = 0; r < rows; r++) {
      const row = k + r * stride;
      let sum = 0;
      for (let i = 0; i < n; i++) sum += x[q + i]! * x[row + i]!;
      x[out + r] = sum;
    }
  },
  weightedRows(x, p, v, stride, n, rows, out) {
    x.fill(0, out, out + n);
    for (let r = 0; r < rows; r++) {
      const weight = x[p + r]!;
      const row = v + r * stride;
      for (let i = 0; i < n; i++) x[out + i]! += weight * x[row + i]!;
    }
  },
};

// ---- WebAssembly SIMD ------------------------------------------------------------------------------------

const PAGE_BYTES = 65536;
/** 2 GiB: the pointers are i32. */
const MAXIMUM_PAGES = 32768;
/** The workspace starts here; the tail of a row is read as a whole v128, so 16 bytes past its end stay mapped. */
const WORKSPACE_BASE = 64;
const TAIL_SLACK_BYTES = 16;

// Opcodes the shared assembler (wasm-assembler.ts) does not name, emitted as raw bytes. pmin/pmax, not
// min/max: they are one x64 instruction each (min/max need a NaN- and signed-zero-exact sequence).
const SIMD_OP = {
  f64x2ExtractLane: 0x21, f64x2PromoteLowF32x4: 0x5f, i32x4Add: 0xae,
  f32x4Pmin: 0xea, f32x4Pmax: 0xeb, f64x2Add: 0xf0, f64x2Mul: 0xf2,
} as const;
const SCALAR_OP = { f32Max: 0x97, f64Add: 0xa0, f64Mul: 0xa2, f64PromoteF32: 0xbb } as const;

function simd(f: WasmFunction, opcode: number, ...immediates: number[]): void {
  f.code.push(0xfd, ...unsignedLeb128(opcode), ...immediates);
}

function scalar(f: WasmFunction, opcode: number): void {
  f.code.push(opcode);
}

/** v128.const of four equal f32 lanes. */
function f32x4Const(f: WasmFunction, value: number): void {
  const lanes = new Int32Array(new Float32Array([value, value, value, value]).buffer);
  f.v128([lanes[0]!, lanes[1]!, lanes[2]!, lanes[3]!]);
}

/** 1.5 * 2^23: adding it rounds an f32 of magnitude < 2^22 to an integer, which lands in the low mantissa bits. */
const ROUNDING_MAGIC = 12582912;
const ROUNDING_MAGIC_BITS = 0x4b400000;

/**
 * Pops x (f32x4), pushes exp(x), after Cephes expf: n = round(x log2 e); r = x - n ln2 in two parts (exact
 * in f32); e^r by a degree-7 polynomial (about 1 ulp); 2^n written into the exponent bits. x is clamped to
 * [-87.3, 88] so 2^n stays a normal number (exp(-87.3) ~ 1e-38 stands for anything smaller); NaN stays NaN
 * (pmax/pmin return their first operand when a comparison fails).
 */
function emitExp(f: WasmFunction, x: number, k: number, n: number, r: number): void {
  f.set(x);
  f.get(x);
  f32x4Const(f, -87.33654);
  simd(f, SIMD_OP.f32x4Pmax);
  f32x4Const(f, 88);
  simd(f, SIMD_OP.f32x4Pmin);
  f.tee(x);
  // k = x log2 e + magic: its bits are magic's plus n = round(x log2 e); n as a float is k - magic.
  f32x4Const(f, Math.LOG2E);
  f.op('f32x4.mul');
  f32x4Const(f, ROUNDING_MAGIC);
  f.op('f32x4.add').tee(k);
  f32x4Const(f, ROUNDING_MAGIC);
  f.op('f32x4.sub').set(n);
  f.get(x).get(n);
  f32x4Const(f, 0.693359375);
  f.op('f32x4.mul').op('f32x4.sub').get(n);
  f32x4Const(f, -2.12194440e-4);
  f.op('f32x4.mul').op('f32x4.sub').set(r);
  f32x4Const(f, 1.9875691500e-4);
  for (const c of [1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1]) {
    f.get(r).op('f32x4.mul');
    f32x4Const(f, c);
    f.op('f32x4.add');
  }
  f.get(r).get(r).op('f32x4.mul').op('f32x4.mul').get(r).op('f32x4.add');
  f32x4Const(f, 1);
  f.op('f32x4.add');
  // 2^n: exponent field n + 127, i.e. (bits(k) - magic bits + 127) << 23 (the shift drops the high bits).
  f.get(k).v128([127 - ROUNDING_MAGIC_BITS, 127 - ROUNDING_MAGIC_BITS, 127 - ROUNDING_MAGIC_BITS, 127 - ROUNDING_MAGIC_BITS]);
  simd(f, SIMD_OP.i32x4Add);
  f.i32(23).op('i32x4.shl');
  f.op('f32x4.mul');
}

/**
 * Adds the four lanes of the f32x4 local `v`, widened to f64, into the f64x2 locals `low` and `high` (two
 * accumulators, so consecutive quads do not wait on one add's latency).
 */
function emitAccumulate(f: WasmFunction, v: number, low: number, high: number): void {
  f.get(low).get(v);
  simd(f, SIMD_OP.f64x2PromoteLowF32x4);
  simd(f, SIMD_OP.f64x2Add);
  f.set(low);
  f.get(high).get(v).get(v).shuffle([8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15]);
  simd(f, SIMD_OP.f64x2PromoteLowF32x4);
  simd(f, SIMD_OP.f64x2Add);
  f.set(high);
}

/** Pushes the sum of the lanes of the f64x2 locals `low` and `high`. */
function emitHorizontalSum(f: WasmFunction, low: number, high: number): void {
  f.get(low).get(high);
  simd(f, SIMD_OP.f64x2Add);
  f.set(low);
  f.get(low);
  simd(f, SIMD_OP.f64x2ExtractLane, 0);
  f.get(low);
  simd(f, SIMD_OP.f64x2ExtractLane, 1);
  scalar(f, SCALAR_OP.f64Add);
}

/**
 * Loops over a row of n f32 in quads: `o` (a byte offset) from 0 while o + 16 <= 4n; `tail` then runs with
 * `o` at the first of the 0-3 elements left and `end` = 4n.
 */
function emitRowLoops(f: WasmFunction, o: number, end: number, n: number, quad: () => void, tail: () => void): void {
  f.get(n).i32(2).op('i32.shl').set(end);
  f.i32(0).set(o);
  f.block((exit) => {
    f.loop((repeat) => {
      f.get(o).i32(16).op('i32.add').get(end).op('i32.gt_s').brIf(exit);
      quad();
      f.get(o).i32(16).op('i32.add').set(o).br(repeat);
    });
  });
  tail();
}

/** Pushes base + o (byte addresses). */
function address(f: WasmFunction, base: number, o: number): void {
  f.get(base).get(o).op('i32.add');
}

/** Pushes the f32x4 splat of the f32 local `value`, hoisted out of the loops by the caller. */
function splatLocal(f: WasmFunction, value: number): number {
  const v = f.local('v128');
  f.get(value).op('f32x4.splat').set(v);
  return v;
}

function buildRowModule(): Uint8Array<ArrayBuffer> {
  const module = new WasmModule({ module: 'env', name: 'memory', initial: 1, maximum: MAXIMUM_PAGES, shared: false });

  {
    const f = module.addFunction('scaledMax', ['i32', 'i32', 'f32'], ['f32']);
    const [ptr, n, scale] = [0, 1, 2];
    const [o, end] = [f.local('i32'), f.local('i32')];
    const acc = f.local('v128');
    const max = f.local('f32');
    const scales = splatLocal(f, scale);
    f32x4Const(f, -Infinity);
    f.set(acc);
    emitRowLoops(f, o, end, n, () => {
      f.get(acc);
      address(f, ptr, o);
      f.mem('v128.load').get(scales).op('f32x4.mul');
      simd(f, SIMD_OP.f32x4Pmax);
      f.set(acc);
    }, () => {
      f.get(acc);
      f.extractF32(0);
      for (const lane of [1, 2, 3]) {
        f.get(acc);
        f.extractF32(lane);
        scalar(f, SCALAR_OP.f32Max);
      }
      f.set(max);
      f.forRange(o, () => f.get(o), () => f.get(end), 4, () => {
        f.get(max);
        address(f, ptr, o);
        f.mem('f32.load').get(scale).op('f32.mul');
        scalar(f, SCALAR_OP.f32Max);
        f.set(max);
      });
      f.get(max);
    });
  }

  {
    const f = module.addFunction('expShifted', ['i32', 'i32', 'f32', 'f32'], ['f64']);
    const [ptr, n, scale, shift] = [0, 1, 2, 3];
    const [o, end] = [f.local('i32'), f.local('i32')];
    const [x, k, m, r, e] = [f.local('v128'), f.local('v128'), f.local('v128'), f.local('v128'), f.local('v128')];
    const [low, high] = [f.local('v128'), f.local('v128')];
    const total = f.local('f64');
    const lane = f.local('f32');
    const scales = splatLocal(f, scale);
    const shifts = splatLocal(f, shift);
    const loadShifted = () => {
      address(f, ptr, o);
      f.mem('v128.load').get(scales).op('f32x4.mul').get(shifts).op('f32x4.sub');
      emitExp(f, x, k, m, r);
    };
    f.v128([0, 0, 0, 0]).set(low);
    f.v128([0, 0, 0, 0]).set(high);
    emitRowLoops(f, o, end, n, () => {
      address(f, ptr, o);
      loadShifted();
      f.tee(e).mem('v128.store');
      emitAccumulate(f, e, low, high);
    }, () => {
      emitHorizontalSum(f, low, high);
      f.set(total);
      // The 1-3 elements left: exp of the whole quad (reading past the row), stored and summed lane by lane.
      f.get(o).get(end).op('i32.lt_s').if(() => {
        loadShifted();
        f.set(e);
        for (const l of [0, 1, 2]) {
          f.get(o).i32(4 * l).op('i32.add').get(end).op('i32.lt_s').if(() => {
            f.get(e);
            f.extractF32(l);
            f.set(lane);
            address(f, ptr, o);
            f.get(lane).mem('f32.store', 4 * l);
            f.get(total).get(lane);
            scalar(f, SCALAR_OP.f64PromoteF32);
            scalar(f, SCALAR_OP.f64Add);
            f.set(total);
          });
        }
      });
      f.get(total);
    });
  }

  {
    const f = module.addFunction('dot', ['i32', 'i32', 'i32'], ['f64']);
    const [a, b, n] = [0, 1, 2];
    const [o, end] = [f.local('i32'), f.local('i32')];
    const [va, vb, low, high] = [f.local('v128'), f.local('v128'), f.local('v128'), f.local('v128')];
    const total = f.local('f64');
    const upperHalf = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15];
    f.v128([0, 0, 0, 0]).set(low);
    f.v128([0, 0, 0, 0]).set(high);
    emitRowLoops(f, o, end, n, () => {
      address(f, a, o);
      f.mem('v128.load').set(va);
      address(f, b, o);
      f.mem('v128.load').set(vb);
      f.get(low).get(va);
      simd(f, SIMD_OP.f64x2PromoteLowF32x4);
      f.get(vb);
      simd(f, SIMD_OP.f64x2PromoteLowF32x4);
      simd(f, SIMD_OP.f64x2Mul);
      simd(f, SIMD_OP.f64x2Add);
      f.set(low);
      f.get(high).get(va).get(va).shuffle(upperHalf);
      simd(f, SIMD_OP.f64x2PromoteLowF32x4);
      f.get(vb).get(vb).shuffle(upperHalf);
      simd(f, SIMD_OP.f64x2PromoteLowF32x4);
      simd(f, SIMD_OP.f64x2Mul);
      simd(f, SIMD_OP.f64x2Add);
      f.set(high);
    }, () => {
      emitHorizontalSum(f, low, high);
      f.set(total);
      f.forRange(o, () => f.get(o), () => f.get(end), 4, () => {
        f.get(total);
        address(f, a, o);
        f.mem('f32.load');
        scalar(f, SCALAR_OP.f64PromoteF32);
        address(f, b, o);
        f.mem('f32.load');
        scalar(f, SCALAR_OP.f64PromoteF32);
        scalar(f, SCALAR_OP.f64Mul);
        scalar(f, SCALAR_OP.f64Add);
        f.set(total);
      });
      f.get(total);
    });
  }

  {
    const f = module.addFunction('softmaxGrad', ['i32', 'i32', 'i32', 'f32', 'f32'], []);
    const [p, dp, n, delta, scale] = [0, 1, 2, 3, 4];
    const [o, end] = [f.local('i32'), f.local('i32')];
    const prob = f.local('v128');
    const probLane = f.local('f32');
    const deltas = splatLocal(f, delta);
    const scales = splatLocal(f, scale);
    emitRowLoops(f, o, end, n, () => {
      address(f, p, o);
      address(f, p, o);
      f.mem('v128.load').tee(prob);
      address(f, dp, o);
      f.mem('v128.load').get(deltas).op('f32x4.sub').op('f32x4.mul').get(scales).op('f32x4.mul').mem('v128.store');
      address(f, dp, o);
      f.get(prob).mem('v128.store');
    }, () => {
      f.forRange(o, () => f.get(o), () => f.get(end), 4, () => {
        address(f, p, o);
        address(f, p, o);
        f.mem('f32.load').tee(probLane);
        address(f, dp, o);
        f.mem('f32.load').get(delta).op('f32.sub').op('f32.mul').get(scale).op('f32.mul').mem('f32.store');
        address(f, dp, o);
        f.get(probLane).mem('f32.store');
      });
    });
  }

  {
    const f = module.addFunction('addInto', ['i32', 'i32', 'i32'], []);
    const [to, from, n] = [0, 1, 2];
    const [o, end] = [f.local('i32'), f.local('i32')];
    emitRowLoops(f, o, end, n, () => {
      address(f, to, o);
      address(f, to, o);
      f.mem('v128.load');
      address(f, from, o);
      f.mem('v128.load').op('f32x4.add').mem('v128.store');
    }, () => {
      f.forRange(o, () => f.get(o), () => f.get(end), 4, () => {
        address(f, to, o);
        address(f, to, o);
        f.mem('f32.load');
        address(f, from, o);
        f.mem('f32.load').op('f32.add').mem('f32.store');
      });
    });
  }

  {
    // One query's scores: per key row, four f32x4 accumulators over 16-float blocks (consecutive adds do not
    // wait on each other), single quads into the first, the lanes summed, then the 0-3 elements left.
    const f = module.addFunction('rowDots', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32'], []);
    const [q, k, stride, n, rows, out] = [0, 1, 2, 3, 4, 5];
    const [r, row, o, blocksEnd, quadsEnd, end] = [0, 1, 2, 3, 4, 5].map(() => f.local('i32')) as [number, number, number, number, number, number];
    const acc = [0, 1, 2, 3].map(() => f.local('v128'));
    const total = f.local('f32');
    emitByteBounds(f, n, blocksEnd, quadsEnd, end);
    f.get(stride).i32(2).op('i32.shl').set(stride);
    f.get(k).set(row);
    f.forRange(r, () => f.i32(0), () => f.get(rows), 1, () => {
      for (const a of acc) f.v128([0, 0, 0, 0]).set(a);
      f.forRange(o, () => f.i32(0), () => f.get(blocksEnd), 64, () => {
        acc.forEach((a, j) => {
          f.get(a);
          address(f, q, o);
          f.mem('v128.load', 16 * j);
          address(f, row, o);
          f.mem('v128.load', 16 * j).op('f32x4.mul').op('f32x4.add').set(a);
        });
      });
      f.forRange(o, () => f.get(o), () => f.get(quadsEnd), 16, () => {
        f.get(acc[0]!);
        address(f, q, o);
        f.mem('v128.load');
        address(f, row, o);
        f.mem('v128.load').op('f32x4.mul').op('f32x4.add').set(acc[0]!);
      });
      f.get(acc[0]!).get(acc[1]!).op('f32x4.add').get(acc[2]!).get(acc[3]!).op('f32x4.add').op('f32x4.add').set(acc[0]!);
      f.get(acc[0]!).extractF32(0).get(acc[0]!).extractF32(1).op('f32.add');
      f.get(acc[0]!).extractF32(2).get(acc[0]!).extractF32(3).op('f32.add').op('f32.add').set(total);
      f.forRange(o, () => f.get(o), () => f.get(end), 4, () => {
        f.get(total);
        address(f, q, o);
        f.mem('f32.load');
        address(f, row, o);
        f.mem('f32.load').op('f32.mul').op('f32.add').set(total);
      });
      f.get(out).get(r).i32(2).op('i32.shl').op('i32.add').get(total).mem('f32.store');
      f.get(row).get(stride).op('i32.add').set(row);
    });
  }

  {
    // The mix of value rows: out in blocks of 32 floats held in eight f32x4 accumulators while the rows go by
    // (each weight splatted once per block), then single quads, then the 0-3 elements left; each element sums
    // its rows in order.
    const f = module.addFunction('weightedRows', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32'], []);
    const [p, v, stride, n, rows, out] = [0, 1, 2, 3, 4, 5];
    const [r, row, o, blocksEnd, quadsEnd, end] = [0, 1, 2, 3, 4, 5].map(() => f.local('i32')) as [number, number, number, number, number, number];
    const acc = [0, 1, 2, 3, 4, 5, 6, 7].map(() => f.local('v128'));
    const weight = f.local('v128');
    const total = f.local('f32');
    const BLOCK = 32;
    emitByteBounds(f, n, blocksEnd, quadsEnd, end, BLOCK);
    f.get(stride).i32(2).op('i32.shl').set(stride);
    /** Runs body(r) over the rows with `row` at row r of v and `weight` the splat of p[r]. */
    const overRows = (body: () => void) => {
      f.get(v).set(row);
      f.forRange(r, () => f.i32(0), () => f.get(rows), 1, () => {
        f.get(p).get(r).i32(2).op('i32.shl').op('i32.add').mem('v128.load32_splat').set(weight);
        body();
        f.get(row).get(stride).op('i32.add').set(row);
      });
    };
    f.forRange(o, () => f.i32(0), () => f.get(blocksEnd), 4 * BLOCK, () => {
      for (const a of acc) f.v128([0, 0, 0, 0]).set(a);
      overRows(() => acc.forEach((a, j) => {
        f.get(a).get(weight);
        address(f, row, o);
        f.mem('v128.load', 16 * j).op('f32x4.mul').op('f32x4.add').set(a);
      }));
      acc.forEach((a, j) => {
        address(f, out, o);
        f.get(a).mem('v128.store', 16 * j);
      });
    });
    f.forRange(o, () => f.get(o), () => f.get(quadsEnd), 16, () => {
      f.v128([0, 0, 0, 0]).set(acc[0]!);
      overRows(() => {
        f.get(acc[0]!).get(weight);
        address(f, row, o);
        f.mem('v128.load').op('f32x4.mul').op('f32x4.add').set(acc[0]!);
      });
      address(f, out, o);
      f.get(acc[0]!).mem('v128.store');
    });
    f.forRange(o, () => f.get(o), () => f.get(end), 4, () => {
      f.f32(0).set(total);
      overRows(() => {
        f.get(total).get(weight).extractF32(0);
        address(f, row, o);
        f.mem('f32.load').op('f32.mul').op('f32.add').set(total);
      });
      address(f, out, o);
      f.get(total).mem('f32.store');
    });
  }

  return module.encode();
}

/**
 * Byte bounds for a row of n f32 taken `block` floats (a multiple of 4) at a time, then by quads, then one by
 * one: blocksEnd = 4 · (n rounded down to a block), quadsEnd = 4 · (n rounded down to 4), end = 4n.
 */
function emitByteBounds(f: WasmFunction, n: number, blocksEnd: number, quadsEnd: number, end: number, block = 16): void {
  f.get(n).get(n).i32(block).op('i32.rem_u').op('i32.sub').i32(2).op('i32.shl').set(blocksEnd);
  f.get(n).i32(-4).op('i32.and').i32(2).op('i32.shl').set(quadsEnd);
  f.get(n).i32(2).op('i32.shl').set(end);
}

interface RowExports {
  scaledMax(ptr: number, n: number, scale: number): number;
  expShifted(ptr: number, n: number, scale: number, shift: number): number;
  dot(a: number, b: number, n: number): number;
  softmaxGrad(p: number, dp: number, n: number, delta: number, scale: number): void;
  addInto(to: number, from: number, n: number): void;
  rowDots(q: number, k: number, stride: number, n: number, rows: number, out: number): void;
  weightedRows(p: number, v: number, stride: number, n: number, rows: number, out: number): void;
}

function createWasmRowKernels(): RowKernels {
  const memory = new WebAssembly.Memory({ initial: 1, maximum: MAXIMUM_PAGES });
  const module = new WebAssembly.Module(buildRowModule());
  const wasm = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as RowExports;
  /** Byte address of element `at` of x, which must be (a view into) the current workspace. */
  const ptr = (x: Float32Array, at: number) => {
    if (x.buffer !== memory.buffer) throw new Error('attention row kernels: the array is not a view on the current workspace');
    return x.byteOffset + 4 * at;
  };
  return {
    name: 'wasm simd',
    workspace(floats) {
      const bytes = WORKSPACE_BASE + 4 * floats + TAIL_SLACK_BYTES;
      const have = memory.buffer.byteLength;
      if (bytes > have) memory.grow(Math.ceil((bytes - have) / PAGE_BYTES));
      return new Float32Array(memory.buffer, WORKSPACE_BASE, floats);
    },
    scaledMax: (x, at, n, scale) => wasm.scaledMax(ptr(x, at), n, scale),
    expShifted: (x, at, n, scale, shift) => wasm.expShifted(ptr(x, at), n, scale, shift),
    dot: (x, a, b, n) => wasm.dot(ptr(x, a), ptr(x, b), n),
    softmaxGrad: (x, p, dp, n, delta, scale) => wasm.softmaxGrad(ptr(x, p), ptr(x, dp), n, delta, scale),
    addInto: (x, to, from, n) => wasm.addInto(ptr(x, to), ptr(x, from), n),
    rowDots: (x, q, k, stride, n, rows, out) => wasm.rowDots(ptr(x, q), ptr(x, k), stride, n, rows, ptr(x, out)),
    weightedRows: (x, p, v, stride, n, rows, out) => wasm.weightedRows(ptr(x, p), ptr(x, v), stride, n, rows, ptr(x, out)),
  };
}

let defaultKernels: RowKernels | null = null;

/** The wasm SIMD kernels where WebAssembly SIMD validates, else the TypeScript ones. */
export function rowKernels(): RowKernels {
  defaultKernels ??= wasmSimdSupported() ? createWasmRowKernels() : typescriptRowKernels;
  return defaultKernels;
}
