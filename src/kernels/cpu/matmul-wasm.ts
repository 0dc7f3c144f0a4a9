// Generates the WebAssembly module behind the CPU matmul: a SIMD micro-kernel, panel packers and the
// GotoBLAS/BLIS loop nest around them, plus a task loop that every thread (main and workers) runs on the
// same shared memory. Only the thread pool and the copies in and out of the memory live in JavaScript.
//
// Blocking (GotoBLAS): for each NC-column panel of B and KC-deep slice of K, B is packed into NR-wide
// slivers [KC, NR]; for each MC-row block of A, A is packed into MR-tall slivers [KC, MR]; the micro-kernel
// then sweeps the MR x NR tiles of C with the B sliver held in L1 and the A block in L2.

import { WasmModule, type WasmFunction } from './wasm-assembler.ts';

/** Rows of C per micro-tile (MR): 6 where the compiler keeps the kernel's order, else 4; see emitMicroKernel. */
export type TileRows = 4 | 6;
/** Columns of C per micro-tile (two v128). */
export const NR = 8;
/** Most K per packed panel: a [KC, NR] B sliver is 12 KiB, so it stays in L1 while A streams past it. */
export const KC = 384;
/** Most rows of A per packed block: [256, KC] f32 is 384 KiB, under half of a Zen 4 L2 (1 MiB). */
const MC_LIMIT = 256;

/** Rows of A per packed block (MC): the most whole tiles of `rows` that fit MC_LIMIT (256 for 4, 252 for 6). */
function rowsPerBlock(rows: TileRows): number {
  return Math.floor(MC_LIMIT / rows) * rows;
}
/** Columns of B per packed panel: [KC, NC] f32 is 2 MiB, meant for L3. */
export const NC = 2048;

/** Byte layout of the shared memory (everything below the data region is fixed for the pool's lifetime). */
export const LAYOUT = {
  /** Int32 words the threads synchronise on; see CONTROL. */
  control: 0,
  /** The job descriptor, i32 words; see JOB. */
  job: 256,
  /** 65536 f32: the value of every f16 bit pattern, so packing widens f16 with one load. */
  f16Table: 65536,
  /** Per-thread packing buffers follow; thread t's start at scratch + t * SCRATCH_BYTES. */
  scratch: 65536 + 65536 * 4,
} as const;

const A_PACK_BYTES = MC_LIMIT * KC * 4;
const B_PACK_BYTES = KC * NC * 4;
const TILE_BYTES = 6 * NR * 4; // the larger tile, so the layout is the same for both
export const SCRATCH_BYTES = A_PACK_BYTES + B_PACK_BYTES + TILE_BYTES + 64;

/** Word indices into the control block. */
export const CONTROL = {
  /** Bumped by the main thread to start a job (workers wait on it). */
  generation: 0,
  /** Workers that joined the current job and have finished it (the main thread waits on it). */
  finished: 1,
  /** Nonzero: workers exit. */
  shutdown: 2,
  /** Nonzero: a worker threw; the main thread rethrows. */
  failed: 3,
  /** How many threads (main included) take part in the current job. */
  threads: 4,
  /** Workers that have started (the pool waits for all of them before the first job). */
  ready: 5,
  /** Microseconds a thread polls for the next job after this one before it sleeps (set per job). */
  spinMicroseconds: 6,
  /** Who may still join the current job; see ADMISSION and matmul-worker-pool.ts. */
  admission: 7,
} as const;

/**
 * The admission word's fields: the job's tag (its generation's low 15 bits) from bit `tagShift`, the `closed`
 * bit the main thread sets when no task is left, and in the low bits (`joinedMask`) the workers that joined.
 */
export const ADMISSION = { tagShift: 17, tagMask: 0x7fff, closed: 1 << 16, joinedMask: 0xffff } as const;

/** Word indices into the job descriptor. Byte fields are absolute addresses or byte strides. */
export const JOB = {
  nextTask: 0, // atomic counter the threads pull task indices from
  numTasks: 1,
  tasksPerBatch: 2,
  nSplits: 3,
  taskRows: 4,
  taskCols: 5,
  m: 6,
  n: 7,
  k: 8,
  a: 9,
  aBatchBytes: 10,
  lda: 11,
  transA: 12,
  b: 13,
  bBatchBytes: 14,
  ldb: 15,
  transB: 16,
  bDtype: 17,
  c: 18,
  cBatchBytes: 19,
  ldc: 20,
  /** Nonzero: m = 1 against a transposed f32/bf16 b: dot products on b as copied, no packing. */
  gemv: 21,
} as const;

export const B_DTYPE_CODE = { f32: 0, f16: 1, bf16: 2 } as const;
export type BDtype = keyof typeof B_DTYPE_CODE;

const ELEMENT_BYTES: Record<BDtype, number> = { f32: 4, f16: 2, bf16: 2 };

export interface MatmulModuleExports {
  /** Pull tasks from the job at LAYOUT.job until none are left; `thread` picks the scratch buffers. */
  runTasks(thread: number): void;
}

/** Bytes of a wasm module that validates only where relaxed SIMD is on (it holds one f32x4.relaxed_madd). */
function relaxedSimdProbe(): Uint8Array<ArrayBuffer> {
  const module = new WasmModule(null);
  const fn = module.addFunction('probe', ['v128'], ['v128']);
  fn.get(0).get(0).get(0).op('f32x4.relaxed_madd');
  return module.encode();
}

/** WebAssembly SIMD: what the generated module needs (threads, which need shared memory, are optional). */
export function wasmSimdSupported(): boolean {
  if (typeof WebAssembly !== 'object') return false;
  const module = new WasmModule(null);
  const fn = module.addFunction('probe', ['v128'], ['v128']);
  fn.get(0).get(0).op('f32x4.mul');
  try {
    return WebAssembly.validate(module.encode());
  } catch {
    return false;
  }
}

export function relaxedSimdSupported(): boolean {
  try {
    return WebAssembly.validate(relaxedSimdProbe());
  } catch {
    return false;
  }
}

export interface MatmulModuleOptions {
  /** Use f32x4.relaxed_madd (one fused op, no temporary register) instead of mul + add. */
  fusedMultiplyAdd: boolean;
  /** Rows of the micro-tile (preferredTileRows picks them for the runtime). */
  tileRows: TileRows;
  /** Memory limits in 64 KiB pages; must match the WebAssembly.Memory the module is instantiated with. */
  initialPages: number;
  maximumPages: number;
  /**
   * Import a shared memory (worker threads). A page without cross-origin isolation has no SharedArrayBuffer:
   * there the module runs single-threaded on an ordinary memory (atomics on it are still valid).
   */
  shared: boolean;
}

export function buildMatmulModule(options: MatmulModuleOptions): Uint8Array<ArrayBuffer> {
  const module = new WasmModule({
    module: 'env', name: 'memory', initial: options.initialPages, maximum: options.maximumPages, shared: options.shared,
  });
  const rows = options.tileRows;
  const kernel = emitMicroKernel(module, options.fusedMultiplyAdd, rows);
  const macroKernel = emitMacroKernel(module, kernel, rows);
  const packARows = emitPackRows(module, 'packARows', rows, 'f32');
  const packACols = emitPackCols(module, 'packACols', rows, 'f32');
  const gemms = {} as Record<BDtype, WasmFunction>;
  for (const dtype of ['f32', 'f16', 'bf16'] as const) {
    const packBRows = emitPackRows(module, `packBRows_${dtype}`, NR, dtype);
    const packBCols = emitPackCols(module, `packBCols_${dtype}`, NR, dtype);
    gemms[dtype] = emitGemm(module, dtype, rows, { packARows, packACols, packBRows, packBCols, macroKernel });
  }
  const gemvs = { f32: emitGemv(module, 'f32', options.fusedMultiplyAdd), bf16: emitGemv(module, 'bf16', options.fusedMultiplyAdd) };
  emitRunTasks(module, gemms, gemvs);
  return module.encode();
}

/** Pushes min(x, y) of two i32 locals (signed). */
function minLocal(f: WasmFunction, x: number, y: number): void {
  f.get(x).get(y).get(x).get(y).op('i32.lt_s').op('select');
}

/**
 * The tile rows for this runtime: 6 (12 accumulators) with the fused kernel where V8 compiles WebAssembly
 * with Turboshaft (V8 13 and later: Node 24, 26), else 4. Anywhere else (another engine, a page) 4, the
 * tile that never spills.
 */
export function preferredTileRows(fusedMultiplyAdd: boolean): TileRows {
  const v8 = (globalThis as { process?: { versions?: { v8?: string } } }).process?.versions?.v8;
  const major = v8 === undefined ? 0 : Number.parseInt(v8, 10);
  return fusedMultiplyAdd && major >= 13 ? 6 : 4;
}

/**
 * C[MR, NR] (+)= A_sliver[kc, MR]^T @ B_sliver[kc, NR]: a (packed A), b (packed B), c, ldcBytes, kc, accumulate.
 *
 * Per K step: load the two B vectors, then row by row one A splat and its two multiply-adds, so only one
 * splat is live. x64 gives V8 15 allocatable xmm registers: 6x8 holds 12 accumulators + 2 B + 1 splat, and
 * the fused multiply-add needs no temporary; per K step 6x8 does 12 multiply-adds for 8 loads (4x8: 8 for
 * 6). Measured on this VM's AMD EPYC (2 v128 multiply-adds per cycle: 12 independent chains and nothing else
 * reach 66 GFLOP/s per thread, 8 chains 59), one thread, GFLOP/s at 1024² (the kernel alone on L1-resident
 * panels in brackets):
 *   Node 26 (Turboshaft, keeps this order): fma 4x8 53 (57), fma 6x8 58-60 (66-71), mul+add 6x8 31 (spills:
 *     mul+add needs a temporary, 16 registers).
 *   Node 20/22 (TurboFan): its scheduler hoists every load of a basic block above the arithmetic, so 6x8
 *     holds all 6 splats at once and spills: 4x8 55-58, 6x8 31 (Node 20 mul+add), 42 (Node 22 fma).
 * Two K steps per iteration with the exit test between them halve the loop overhead and, under TurboFan,
 * keep the second step's loads below the first step's arithmetic (4x8 K plainly unrolled: 28; with the
 * exit test: 45, Node 20).
 */
function emitMicroKernel(module: WasmModule, fused: boolean, MR: TileRows): WasmFunction {
  const f = module.addFunction('microKernel', ['i32', 'i32', 'i32', 'i32', 'i32', 'i32'], [], false);
  const [a, b, c, ldc, kc, accumulate] = [0, 1, 2, 3, 4, 5];
  const vectors = NR / 4;
  const acc: number[][] = [];
  for (let i = 0; i < MR; i++) acc.push(Array.from({ length: vectors }, () => f.local('v128')));
  const bv = Array.from({ length: vectors }, () => f.local('v128'));
  const av = f.local('v128');
  const row = f.local('i32');

  f.get(accumulate).if(() => {
    f.get(c).set(row);
    for (let i = 0; i < MR; i++) {
      for (let j = 0; j < vectors; j++) f.get(row).mem('v128.load', 16 * j).set(acc[i]![j]!);
      if (i < MR - 1) f.get(row).get(ldc).op('i32.add').set(row);
    }
  }, () => {
    for (const rowAcc of acc) for (const v of rowAcc) f.v128([0, 0, 0, 0]).set(v);
  });
  const step = (p: number) => {
    for (let j = 0; j < vectors; j++) f.get(b).mem('v128.load', (p * NR + 4 * j) * 4).set(bv[j]!);
    for (let i = 0; i < MR; i++) {
      f.get(a).mem('v128.load32_splat', (p * MR + i) * 4).set(av);
      for (let j = 0; j < vectors; j++) {
        const sum = acc[i]![j]!;
        if (fused) f.get(av).get(bv[j]!).get(sum).op('f32x4.relaxed_madd').set(sum);
        else f.get(sum).get(av).get(bv[j]!).op('f32x4.mul').op('f32x4.add').set(sum);
      }
    }
  };
  f.block((exit) => {
    f.loop((repeat) => {
      step(0);
      f.get(kc).i32(1).op('i32.sub').tee(kc).op('i32.eqz').brIf(exit);
      step(1);
      f.get(a).i32(2 * MR * 4).op('i32.add').set(a);
      f.get(b).i32(2 * NR * 4).op('i32.add').set(b);
      f.get(kc).i32(1).op('i32.sub').tee(kc).brIf(repeat);
    });
  });
  f.get(c).set(row);
  for (let i = 0; i < MR; i++) {
    for (let j = 0; j < vectors; j++) f.get(row).get(acc[i]![j]!).mem('v128.store', 16 * j);
    if (i < MR - 1) f.get(row).get(ldc).op('i32.add').set(row);
  }
  return f;
}

/**
 * C[mc, nc] (+)= Apack @ Bpack over every MR x NR tile: aPack, bPack, c, ldc (elements), mc, nc, kc,
 * accumulate, tile. Edge tiles are computed whole in `tile` (the packs are zero-padded) and only their
 * valid part is copied to and from C.
 */
function emitMacroKernel(module: WasmModule, kernel: WasmFunction, MR: TileRows): WasmFunction {
  const f = module.addFunction('macroKernel', Array(9).fill('i32'), [], false);
  const [aPack, bPack, c, ldc, mc, nc, kc, accumulate, tile] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const [jr, ir, ap, bp, cp, ldcBytes, rows, cols, i, j, addr, tileAddr, limit] =
    Array.from({ length: 13 }, () => f.local('i32'));

  f.get(ldc).i32(4).op('i32.mul').set(ldcBytes);
  f.get(bPack).set(bp);
  f.forRange(jr, () => f.i32(0), () => f.get(nc), NR, () => {
    f.get(aPack).set(ap);
    f.forRange(ir, () => f.i32(0), () => f.get(mc), MR, () => {
      f.get(c).get(ir).get(ldcBytes).op('i32.mul').op('i32.add').get(jr).i32(4).op('i32.mul').op('i32.add').set(cp);
      f.get(ir).i32(MR).op('i32.add').get(mc).op('i32.le_s');
      f.get(jr).i32(NR).op('i32.add').get(nc).op('i32.le_s');
      f.op('i32.and').if(() => {
        f.get(ap).get(bp).get(cp).get(ldcBytes).get(kc).get(accumulate).call(kernel);
      }, () => {
        // Same arithmetic as a full tile (load C, accumulate, store), so results do not depend on where
        // the task split puts the edges, i.e. on the thread count.
        f.get(mc).get(ir).op('i32.sub').set(rows);
        f.i32(MR).set(limit);
        minLocal(f, rows, limit);
        f.set(rows);
        f.get(nc).get(jr).op('i32.sub').set(cols);
        f.i32(NR).set(limit);
        minLocal(f, cols, limit);
        f.set(cols);
        const eachValid = (body: () => void) => {
          f.forRange(i, () => f.i32(0), () => f.get(rows), 1, () => {
            f.forRange(j, () => f.i32(0), () => f.get(cols), 1, () => {
              f.get(tile).get(i).i32(NR).op('i32.mul').get(j).op('i32.add').i32(4).op('i32.mul').op('i32.add')
                .set(tileAddr);
              f.get(cp).get(i).get(ldcBytes).op('i32.mul').op('i32.add').get(j).i32(4).op('i32.mul').op('i32.add')
                .set(addr);
              body();
            });
          });
        };
        f.get(accumulate).if(() => eachValid(() => f.get(tileAddr).get(addr).mem('i32.load').mem('i32.store')));
        f.get(ap).get(bp).get(tile).i32(NR * 4).get(kc).get(accumulate).call(kernel);
        eachValid(() => f.get(addr).get(tileAddr).mem('i32.load').mem('i32.store'));
      });
      f.get(ap).get(kc).i32(MR * 4).op('i32.mul').op('i32.add').set(ap);
    });
    f.get(bp).get(kc).i32(NR * 4).op('i32.mul').op('i32.add').set(bp);
  });
  return f;
}

/** Pushes the f32 bits (as i32) of the element of `dtype` at the address on the stack. */
function loadAsF32Bits(f: WasmFunction, dtype: BDtype): void {
  if (dtype === 'f32') {
    f.mem('i32.load');
  } else if (dtype === 'bf16') {
    f.mem('i32.load16_u').i32(16).op('i32.shl'); // bf16 is the top half of an f32
  } else {
    f.mem('i32.load16_u').i32(2).op('i32.shl').mem('i32.load', LAYOUT.f16Table);
  }
}

/** Byte indices for i8x16.shuffle that interleave 32-bit lanes (x0 y0 x1 y1 / x2 y2 x3 y3) or 64-bit halves. */
const SHUFFLE = {
  low32: [0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23],
  high32: [8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31],
  low64: [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23],
  high64: [8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31],
} as const;

/** Pushes 4 consecutive elements of `dtype` at the address on the stack as 4 f32 (v128). */
function loadFourAsF32(f: WasmFunction, dtype: 'f32' | 'bf16', offset = 0): void {
  if (dtype === 'f32') f.mem('v128.load', offset);
  else f.mem('v128.load16x4_u', offset).i32(16).op('i32x4.shl');
}

/**
 * Packs `rows` source rows of which each holds kc contiguous elements (src, ld in elements) into R-row
 * slivers [ceil(rows / R)][kc][R] f32 at dst, zero-filling the rows past `rows`. This is A when not
 * transposed (rows = M) and B when transposed (rows = N, the Linear-weight layout).
 * Signature: (src, ld, rows, kc, dst).
 *
 * Full slivers go 4 rows x 4 K at a time (four v128 loads, a 4x4 transpose in registers, four stores), and
 * the last 2 rows of a 6-row sliver 2 x 4 (two loads, two shuffles, four 8-byte stores).
 */
function emitPackRows(module: WasmModule, name: string, R: number, dtype: BDtype): WasmFunction {
  if (R % 4 !== 0 && R % 4 !== 2) throw new RangeError(`emitPackRows: ${R} rows per sliver (a multiple of 2 is needed)`);
  const f = module.addFunction(name, ['i32', 'i32', 'i32', 'i32', 'i32'], [], false);
  const [src, ld, rows, kc, dst] = [0, 1, 2, 3, 4];
  const [r, paddedRows, s, dEnd, d, fullRows, p, ldBytes, sliver] = Array.from({ length: 9 }, () => f.local('i32'));
  const rowPointers = Array.from({ length: 4 }, () => f.local('i32'));
  const vectors = Array.from({ length: 4 }, () => f.local('v128'));
  const mixed = Array.from({ length: 4 }, () => f.local('v128'));
  const eb = ELEMENT_BYTES[dtype];
  f.get(rows).i32(R - 1).op('i32.add').i32(R).op('i32.div_u').i32(R).op('i32.mul').set(paddedRows);
  f.i32(0).set(fullRows);
  if (dtype !== 'f16') {
    f.get(rows).i32(R).op('i32.div_u').i32(R).op('i32.mul').set(fullRows);
    f.get(ld).i32(eb).op('i32.mul').set(ldBytes);
    /** Rows r + g .. r + g + count - 1 (count 4 or 2) of the sliver at `sliver`. */
    const packRowGroup = (count: number, g: number) => {
      f.get(sliver).set(d);
      for (let t = 0; t < count; t++) {
        f.get(src).get(r).i32(g + t).op('i32.add').get(ldBytes).op('i32.mul').op('i32.add').set(rowPointers[t]!);
      }
      f.forRange(p, () => f.i32(0), () => f.get(kc).i32(3).op('i32.sub'), 4, () => {
        for (let t = 0; t < count; t++) {
          f.get(rowPointers[t]!);
          loadFourAsF32(f, dtype);
          f.set(vectors[t]!);
        }
        const [v0, v1, v2, v3] = vectors as [number, number, number, number];
        const [t0, t1, t2, t3] = mixed as [number, number, number, number];
        if (count === 4) {
          f.get(v0).get(v1).shuffle(SHUFFLE.low32).set(t0); // r0k0 r1k0 r0k1 r1k1
          f.get(v2).get(v3).shuffle(SHUFFLE.low32).set(t1); // r2k0 r3k0 r2k1 r3k1
          f.get(v0).get(v1).shuffle(SHUFFLE.high32).set(t2);
          f.get(v2).get(v3).shuffle(SHUFFLE.high32).set(t3);
          f.get(d).get(t0).get(t1).shuffle(SHUFFLE.low64).mem('v128.store', 4 * g);
          f.get(d).get(t0).get(t1).shuffle(SHUFFLE.high64).mem('v128.store', R * 4 + 4 * g);
          f.get(d).get(t2).get(t3).shuffle(SHUFFLE.low64).mem('v128.store', 2 * R * 4 + 4 * g);
          f.get(d).get(t2).get(t3).shuffle(SHUFFLE.high64).mem('v128.store', 3 * R * 4 + 4 * g);
        } else {
          f.get(v0).get(v1).shuffle(SHUFFLE.low32).set(t0); // r0k0 r1k0 r0k1 r1k1
          f.get(v0).get(v1).shuffle(SHUFFLE.high32).set(t1); // r0k2 r1k2 r0k3 r1k3
          f.get(d).get(t0).storeLane('v128.store64_lane', 4 * g, 0);
          f.get(d).get(t0).storeLane('v128.store64_lane', R * 4 + 4 * g, 1);
          f.get(d).get(t1).storeLane('v128.store64_lane', 2 * R * 4 + 4 * g, 0);
          f.get(d).get(t1).storeLane('v128.store64_lane', 3 * R * 4 + 4 * g, 1);
        }
        for (let t = 0; t < count; t++) f.get(rowPointers[t]!).i32(4 * eb).op('i32.add').set(rowPointers[t]!);
        f.get(d).i32(4 * R * 4).op('i32.add').set(d);
      });
      // K remainder (kc % 4), one element per row; p is where the vector loop stopped.
      f.block((done) => {
        f.loop((repeat) => {
          f.get(p).get(kc).op('i32.ge_s').brIf(done);
          for (let t = 0; t < count; t++) {
            f.get(d).get(rowPointers[t]!);
            loadAsF32Bits(f, dtype);
            f.mem('i32.store', 4 * (g + t));
            f.get(rowPointers[t]!).i32(eb).op('i32.add').set(rowPointers[t]!);
          }
          f.get(d).i32(R * 4).op('i32.add').set(d);
          f.get(p).i32(1).op('i32.add').set(p).br(repeat);
        });
      });
    };
    // r walks whole slivers; within one, rows g .. g + 3 (or g + 1) sit at byte offset 4 g of each [R] row.
    f.forRange(r, () => f.i32(0), () => f.get(fullRows), R, () => {
      f.get(dst).get(r).i32(R).op('i32.div_u').get(kc).op('i32.mul').i32(R * 4).op('i32.mul').op('i32.add').set(sliver);
      for (let g = 0; g < R; g += 4) packRowGroup(Math.min(4, R - g), g);
    });
  }
  // The last, partial sliver (and every row for f16): one row at a time, scalar.
  f.forRange(r, () => f.get(fullRows), () => f.get(paddedRows), 1, () => {
    // d = dst + (r / R) * kc * R * 4 + (r % R) * 4
    f.get(dst).get(r).i32(R).op('i32.div_u').get(kc).op('i32.mul').i32(R * 4).op('i32.mul').op('i32.add')
      .get(r).i32(R).op('i32.rem_u').i32(4).op('i32.mul').op('i32.add').set(d);
    f.get(d).get(kc).i32(R * 4).op('i32.mul').op('i32.add').set(dEnd);
    f.get(r).get(rows).op('i32.lt_s').if(() => {
      f.get(src).get(r).get(ld).op('i32.mul').i32(eb).op('i32.mul').op('i32.add').set(s);
      f.loop((repeat) => {
        f.get(d).get(s);
        loadAsF32Bits(f, dtype);
        f.mem('i32.store');
        f.get(s).i32(eb).op('i32.add').set(s);
        f.get(d).i32(R * 4).op('i32.add').tee(d).get(dEnd).op('i32.lt_u').brIf(repeat);
      });
    }, () => {
      f.loop((repeat) => {
        f.get(d).i32(0).mem('i32.store');
        f.get(d).i32(R * 4).op('i32.add').tee(d).get(dEnd).op('i32.lt_u').brIf(repeat);
      });
    });
  });
  return f;
}

/**
 * Copies `count` consecutive source elements at s + sOffset (bytes), converted to f32, to d + dOffset:
 * 4 at a time, then a pair (f32: one 8-byte load and store) or single elements.
 */
function copyConverted(f: WasmFunction, d: number, s: number, count: number, dtype: BDtype, sOffset: number, dOffset: number): void {
  const eb = ELEMENT_BYTES[dtype];
  const quads = Math.floor(count / 4);
  for (let q = 0; q < quads; q++) {
    if (dtype === 'f16') {
      for (let e = 0; e < 4; e++) copyOneConverted(f, d, s, dtype, sOffset + (4 * q + e) * 2, dOffset + (4 * q + e) * 4);
    } else {
      f.get(d).get(s);
      loadFourAsF32(f, dtype, sOffset + 4 * q * eb);
      f.mem('v128.store', dOffset + 16 * q);
    }
  }
  let e = 4 * quads;
  if (dtype === 'f32' && count - e >= 2) {
    f.get(d).get(s).mem('v128.load64_zero', sOffset + e * 4).storeLane('v128.store64_lane', dOffset + e * 4, 0);
    e += 2;
  }
  for (; e < count; e++) copyOneConverted(f, d, s, dtype, sOffset + e * eb, dOffset + e * 4);
}

/** Copies the element of `dtype` at s + sOffset (bytes), as f32, to d + dOffset. */
function copyOneConverted(f: WasmFunction, d: number, s: number, dtype: BDtype, sOffset: number, dOffset: number): void {
  f.get(d).get(s).i32(sOffset).op('i32.add');
  loadAsF32Bits(f, dtype);
  f.mem('i32.store', dOffset);
}

/**
 * Packs a [kc, cols] source block whose rows are contiguous (src, ld in elements) into R-column slivers
 * [ceil(cols / R)][kc][R] f32 at dst, zero-filling the columns past `cols`. This is B when not transposed
 * and A when transposed. Signature: (src, ld, cols, kc, dst).
 *
 * Columns go 16 at a time (a 64-byte line of f32; 12 when R = 6) into GROUP / R slivers, so each source row is
 * visited once per line: a row stride of 4 KiB would otherwise map every visit to the same L1 set.
 */
function emitPackCols(module: WasmModule, name: string, R: number, dtype: BDtype): WasmFunction {
  const f = module.addFunction(name, ['i32', 'i32', 'i32', 'i32', 'i32'], [], false);
  const [src, ld, cols, kc, dst] = [0, 1, 2, 3, 4];
  const [j0, width, s, d, dEnd, ldBytes, j, out, sliverBytes] = Array.from({ length: 9 }, () => f.local('i32'));
  const GROUP = R * Math.floor(16 / R); // 16 columns for R = 4 or 8, 12 for 6
  const groupPointers = Array.from({ length: GROUP / R }, () => f.local('i32'));
  const eb = ELEMENT_BYTES[dtype];
  f.get(ld).i32(eb).op('i32.mul').set(ldBytes);
  f.get(kc).i32(R * 4).op('i32.mul').set(sliverBytes);
  f.i32(0).set(j0);
  f.block((groupsDone) => {
    f.loop((nextGroup) => {
      f.get(j0).i32(GROUP).op('i32.add').get(cols).op('i32.gt_s').brIf(groupsDone);
      f.get(src).get(j0).i32(eb).op('i32.mul').op('i32.add').set(s);
      f.get(dst).get(j0).i32(R).op('i32.div_u').get(sliverBytes).op('i32.mul').op('i32.add').set(d);
      groupPointers.forEach((pointer, g) => f.get(d).get(sliverBytes).i32(g).op('i32.mul').op('i32.add').set(pointer));
      f.get(groupPointers[1] ?? d).set(dEnd); // the first sliver ends where the second begins
      if (GROUP / R === 1) f.get(d).get(sliverBytes).op('i32.add').set(dEnd);
      f.loop((repeat) => {
        groupPointers.forEach((pointer, g) => copyConverted(f, pointer, s, R, dtype, g * R * eb, 0));
        f.get(s).get(ldBytes).op('i32.add').set(s);
        groupPointers.forEach((pointer) => f.get(pointer).i32(R * 4).op('i32.add').set(pointer));
        f.get(groupPointers[0]!).get(dEnd).op('i32.lt_u').brIf(repeat);
      });
      f.get(j0).i32(GROUP).op('i32.add').set(j0).br(nextGroup);
    });
  });
  // Remaining columns (fewer than GROUP): one sliver at a time.
  f.get(dst).get(j0).i32(R).op('i32.div_u').get(sliverBytes).op('i32.mul').op('i32.add').set(d);
  f.forRange(j0, () => f.get(j0), () => f.get(cols), R, () => {
    f.get(src).get(j0).i32(eb).op('i32.mul').op('i32.add').set(s);
    f.get(d).get(sliverBytes).op('i32.add').set(dEnd);
    f.get(cols).get(j0).op('i32.sub').set(width);
    f.get(width).i32(R).op('i32.ge_s').if(() => {
      f.loop((repeat) => {
        copyConverted(f, d, s, R, dtype, 0, 0);
        f.get(s).get(ldBytes).op('i32.add').set(s);
        f.get(d).i32(R * 4).op('i32.add').tee(d).get(dEnd).op('i32.lt_u').brIf(repeat);
      });
    }, () => {
      f.loop((repeat) => {
        f.forRange(j, () => f.i32(0), () => f.i32(R), 1, () => {
          f.get(d).get(j).i32(4).op('i32.mul').op('i32.add').set(out);
          f.get(j).get(width).op('i32.lt_s').if(() => {
            f.get(out).get(s).get(j).i32(eb).op('i32.mul').op('i32.add');
            loadAsF32Bits(f, dtype);
            f.mem('i32.store');
          }, () => {
            f.get(out).i32(0).mem('i32.store');
          });
        });
        f.get(s).get(ldBytes).op('i32.add').set(s);
        f.get(d).i32(R * 4).op('i32.add').tee(d).get(dEnd).op('i32.lt_u').brIf(repeat);
      });
    });
  });
  return f;
}

interface GemmParts {
  packARows: WasmFunction;
  packACols: WasmFunction;
  packBRows: WasmFunction;
  packBCols: WasmFunction;
  macroKernel: WasmFunction;
}

/**
 * One task: C[m, n] = op(A)[m, k] @ op(B)[k, n] with B of `dtype`, all addresses absolute, strides in
 * elements. Signature: (a, lda, transA, b, ldb, transB, c, ldc, m, n, k, scratch).
 */
function emitGemm(module: WasmModule, dtype: BDtype, MR: TileRows, parts: GemmParts): WasmFunction {
  const f = module.addFunction(`gemm_${dtype}`, Array(12).fill('i32'), [], false);
  const [a, lda, transA, b, ldb, transB, c, ldc, m, n, k, scratch] = Array.from({ length: 12 }, (_, i) => i);
  const [jc, pc, ic, nc, kc, mc, limit, aPack, bPack, tile, nStep, kStep, mStep] =
    Array.from({ length: 13 }, () => f.local('i32'));
  const eb = ELEMENT_BYTES[dtype];
  f.get(scratch).set(aPack);
  f.get(scratch).i32(A_PACK_BYTES).op('i32.add').set(bPack);
  f.get(bPack).i32(B_PACK_BYTES).op('i32.add').set(tile);
  /** out = min(size - start, the local step). */
  const clamp = (out: number, size: number, start: number, step: number) => {
    f.get(size).get(start).op('i32.sub').set(out);
    minLocal(f, out, step);
    f.set(out);
  };
  // Equal panels (k = 896 -> 3 x 299, not 384 + 384 + 128): a shallow last panel pays the C loads and
  // stores and the packing of a full one for a fraction of the work; likewise equal row blocks (a task of
  // 516 rows -> 174 + 174 + 168, not 252 + 252 + 12: a thin block reloads each B sliver for a few tiles).
  const balanced = (out: number, size: number, block: number, multiple: number) => {
    f.get(size).i32(block - 1).op('i32.add').i32(block).op('i32.div_u').set(limit); // panels
    f.get(size).get(limit).op('i32.add').i32(1).op('i32.sub').get(limit).op('i32.div_u'); // ceil(size / panels)
    f.i32(multiple - 1).op('i32.add').i32(multiple).op('i32.div_u').i32(multiple).op('i32.mul').set(out);
  };
  balanced(nStep, n, NC, NR);
  balanced(kStep, k, KC, 1);
  balanced(mStep, m, rowsPerBlock(MR), MR);
  f.forRange(jc, () => f.i32(0), () => f.get(n), () => f.get(nStep), () => {
    clamp(nc, n, jc, nStep);
    f.forRange(pc, () => f.i32(0), () => f.get(k), () => f.get(kStep), () => {
      clamp(kc, k, pc, kStep);
      // B block at (pc, jc): element offset jc * ldb + pc when transposed ([n, k]), else pc * ldb + jc.
      f.get(transB).if(() => {
        f.get(b).get(jc).get(ldb).op('i32.mul').get(pc).op('i32.add').i32(eb).op('i32.mul').op('i32.add');
        f.get(ldb).get(nc).get(kc).get(bPack).call(parts.packBRows);
      }, () => {
        f.get(b).get(pc).get(ldb).op('i32.mul').get(jc).op('i32.add').i32(eb).op('i32.mul').op('i32.add');
        f.get(ldb).get(nc).get(kc).get(bPack).call(parts.packBCols);
      });
      f.forRange(ic, () => f.i32(0), () => f.get(m), () => f.get(mStep), () => {
        clamp(mc, m, ic, mStep);
        f.get(transA).if(() => {
          f.get(a).get(pc).get(lda).op('i32.mul').get(ic).op('i32.add').i32(4).op('i32.mul').op('i32.add');
          f.get(lda).get(mc).get(kc).get(aPack).call(parts.packACols);
        }, () => {
          f.get(a).get(ic).get(lda).op('i32.mul').get(pc).op('i32.add').i32(4).op('i32.mul').op('i32.add');
          f.get(lda).get(mc).get(kc).get(aPack).call(parts.packARows);
        });
        f.get(aPack).get(bPack);
        f.get(c).get(ic).get(ldc).op('i32.mul').get(jc).op('i32.add').i32(4).op('i32.mul').op('i32.add');
        f.get(ldc).get(mc).get(nc).get(kc);
        f.get(pc).i32(0).op('i32.ne'); // later K slices accumulate onto the first
        f.get(tile).call(parts.macroKernel);
      });
    });
  });
  return f;
}

/**
 * The thread entry point: pull task indices from the job's atomic counter; task t is batch
 * t / tasksPerBatch, row block (t % tasksPerBatch) / nSplits and column block t % nSplits.
 */
function emitRunTasks(
  module: WasmModule, gemms: Record<BDtype, WasmFunction>, gemvs: Record<'f32' | 'bf16', WasmFunction>,
): void {
  const f = module.addFunction('runTasks', ['i32'], []);
  const thread = 0;
  const [scratch, task, batch, rest, i0, j0, rows, cols, limit, eb, aBase, bBase, cBase, dtype] =
    Array.from({ length: 14 }, () => f.local('i32'));
  const job = (word: number) => f.i32(LAYOUT.job).mem('i32.load', word * 4);
  f.i32(LAYOUT.scratch).get(thread).i32(SCRATCH_BYTES).op('i32.mul').op('i32.add').set(scratch);
  job(JOB.bDtype).set(dtype);
  f.i32(4).i32(2).get(dtype).op('i32.eqz').op('select').set(eb);
  f.block((done) => {
    f.loop((next) => {
      f.i32(LAYOUT.job).i32(1).mem('i32.atomic.rmw.add', JOB.nextTask * 4).tee(task);
      job(JOB.numTasks).op('i32.ge_s').brIf(done);
      f.get(task); job(JOB.tasksPerBatch); f.op('i32.div_u').set(batch);
      f.get(task); job(JOB.tasksPerBatch); f.op('i32.rem_u').set(rest);
      f.get(rest); job(JOB.nSplits); f.op('i32.div_u'); job(JOB.taskRows); f.op('i32.mul').set(i0);
      f.get(rest); job(JOB.nSplits); f.op('i32.rem_u'); job(JOB.taskCols); f.op('i32.mul').set(j0);
      job(JOB.m); f.get(i0).op('i32.sub').set(rows);
      job(JOB.taskRows); f.set(limit);
      minLocal(f, rows, limit);
      f.set(rows);
      job(JOB.n); f.get(j0).op('i32.sub').set(cols);
      job(JOB.taskCols); f.set(limit);
      minLocal(f, cols, limit);
      f.set(cols);
      // a + batch * aBatchBytes + (transA ? i0 : i0 * lda) * 4
      job(JOB.a); f.get(batch); job(JOB.aBatchBytes); f.op('i32.mul').op('i32.add');
      f.get(i0).get(i0); job(JOB.lda); f.op('i32.mul'); job(JOB.transA); f.op('select');
      f.i32(4).op('i32.mul').op('i32.add').set(aBase);
      // b + batch * bBatchBytes + (transB ? j0 * ldb : j0) * eb
      job(JOB.b); f.get(batch); job(JOB.bBatchBytes); f.op('i32.mul').op('i32.add');
      f.get(j0); job(JOB.ldb); f.op('i32.mul').get(j0); job(JOB.transB); f.op('select');
      f.get(eb).op('i32.mul').op('i32.add').set(bBase);
      // c + batch * cBatchBytes + (i0 * ldc + j0) * 4
      job(JOB.c); f.get(batch); job(JOB.cBatchBytes); f.op('i32.mul').op('i32.add');
      f.get(i0); job(JOB.ldc); f.op('i32.mul').get(j0).op('i32.add').i32(4).op('i32.mul').op('i32.add').set(cBase);
      const callGemm = (gemm: WasmFunction) => {
        f.get(aBase); job(JOB.lda); job(JOB.transA);
        f.get(bBase); job(JOB.ldb); job(JOB.transB);
        f.get(cBase); job(JOB.ldc);
        f.get(rows).get(cols); job(JOB.k);
        f.get(scratch).call(gemm);
      };
      const callGemv = (gemv: WasmFunction) => {
        f.get(aBase).get(bBase); job(JOB.ldb);
        f.get(cBase).get(cols); job(JOB.k);
        f.get(scratch).call(gemv);
      };
      job(JOB.gemv).if(() => {
        f.get(dtype).i32(B_DTYPE_CODE.f32).op('i32.eq').if(() => callGemv(gemvs.f32), () => callGemv(gemvs.bf16));
      }, () => {
        f.get(dtype).i32(B_DTYPE_CODE.f32).op('i32.eq').if(() => callGemm(gemms.f32), () => {
          f.get(dtype).i32(B_DTYPE_CODE.bf16).op('i32.eq').if(() => callGemm(gemms.bf16), () => callGemm(gemms.f16));
        });
      });
      f.br(next);
    });
  });
}


/**
 * Rows of b per GEMV pass, one accumulator each: 10 accumulators, x's evens and odds, the loaded row and the
 * mask make 14 of the 15 xmm registers V8 allocates on x64, so nothing spills (8 rows with an accumulator for
 * the evens and one for the odds spilled: 65 GB/s on cache-resident rows against 103 now).
 */
const GEMV_ROWS = 10;
/** GEMV steps (8 elements of k each) per loop iteration: the row pointers advance once per 4 steps. */
const GEMV_UNROLL = 4;
/** i8x16.shuffle of two f32x4 [x0 x1 x2 x3], [x4 x5 x6 x7] into the evens [x0 x2 x4 x6] and the odds [x1 x3 x5 x7]. */
const EVENS = [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27] as const;
const ODDS = [4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31] as const;

/**
 * c[1, n] = a[1, k] @ b[n, k]^T (b f32 or bf16, row stride ldb elements): one output is one dot product,
 * so b is read once, straight from where it was copied; packing it would cost more than the arithmetic.
 * Signature: (a, b, ldb, c, n, k, scratch).
 *
 * Decode streams every weight from DRAM once per token, so the kernel has to issue few instructions per
 * byte and keep many reads in flight. Per step (8 elements of k) and row: one 16-byte load of 8 bf16, the
 * evens widened by one shift (a bf16 pair's low half is the even element) and the odds by one mask, both
 * multiplied into the row's accumulator against x pre-split into evens and odds (in scratch, once per call),
 * so a row costs 5 instructions per 16 bytes (the 4-bf16 kernel before it: 5 per 8 bytes). 10 rows per
 * pass share the x loads; the offsets of 4 unrolled steps are load immediates.
 *
 * The rows of a pass are strided, not adjacent: pass j reads rows j, j + s, j + 2s, ... (s = n / 10), so
 * each of the 10 streams runs on through consecutive rows for the whole call instead of ending after one
 * row (1 792 bytes at k = 896) as adjacent rows' streams do; the hardware prefetcher keeps more of them
 * going. Cold weights (Node 26, this VM, 2 threads, alternated in one process, medians of 8 rounds), GB/s
 * strided / adjacent 8 rows: [4864, 896] 41.8 / 39.1, [896, 4864] 42.6 / 37.3, [896, 896] 40.2 / 35.8,
 * [128, 896] 19.1 / 17.2, the LM head 41.8 / 40.6; the same kernel with its arithmetic taken out (loads only)
 * streams 41.4 / 42.5 / 39.7 GB/s, so the cold products run at what WebAssembly's loads fetch in this order.
 * Tried and dropped (bench/README.md, the decode sections, has these and the kernels before this one):
 * touching a line ahead per row (a software prefetch: the LM head 20 % slower), one row per pass (one
 * sequential stream, instruction-bound on cached rows), a worker reading the next product's rows ahead.
 * Summation order differs from the GEMM's (per lane, each step's evens then its odds, then the k % 8 tail),
 * so the last bits differ from it; a row's result does not depend on which pass or thread computed it.
 */
function emitGemv(module: WasmModule, dtype: 'f32' | 'bf16', fused: boolean): WasmFunction {
  const f = module.addFunction(`gemv_${dtype}`, Array(7).fill('i32'), [], false);
  const [a, b, ldb, c, n, k, scratch] = [0, 1, 2, 3, 4, 5, 6];
  const [j, p, k8, ldBytes, xp, xBase, count] = Array.from({ length: 7 }, () => f.local('i32'));
  const rowPointers = Array.from({ length: GEMV_ROWS }, () => f.local('i32'));
  const stride = f.local('i32');
  const acc = Array.from({ length: GEMV_ROWS }, () => f.local('v128'));
  const xv = [f.local('v128'), f.local('v128')] as const;
  const w = f.local('v128');
  const oddsMask = f.local('v128');
  const tail = f.local('f32');
  const eb = ELEMENT_BYTES[dtype];
  f.get(ldb).i32(eb).op('i32.mul').set(ldBytes);
  f.get(k).i32(-8).op('i32.and').set(k8);
  if (dtype === 'bf16') {
    // x [k8] -> scratch [k8 / 8][evens 4, odds 4]
    f.get(scratch).set(xBase);
    f.forRange(p, () => f.i32(0), () => f.get(k8), 8, () => {
      f.get(a).get(p).i32(4).op('i32.mul').op('i32.add').set(xp);
      f.get(xp).mem('v128.load').set(xv[0]);
      f.get(xp).mem('v128.load', 16).set(xv[1]);
      f.get(scratch).get(p).i32(4).op('i32.mul').op('i32.add').set(xp);
      f.get(xp).get(xv[0]).get(xv[1]).shuffle(EVENS).mem('v128.store');
      f.get(xp).get(xv[0]).get(xv[1]).shuffle(ODDS).mem('v128.store', 16);
    });
  } else {
    f.get(a).set(xBase);
  }
  /** sum += (the v128 on the stack) * x */
  const multiplyAdd = (sum: number, x: number) => {
    if (fused) f.get(x).get(sum).op('f32x4.relaxed_madd').set(sum);
    else f.get(x).op('f32x4.mul').get(sum).op('f32x4.add').set(sum);
  };
  f.v128([-65536, -65536, -65536, -65536]).set(oddsMask);
  /** Step s of an iteration (8 elements of k) for every row: x at xp + 32 s, row r at rowPointers[r] + 8 s eb. */
  const step = (rows: number, s: number) => {
    f.get(xp).mem('v128.load', 32 * s).set(xv[0]);
    f.get(xp).mem('v128.load', 32 * s + 16).set(xv[1]);
    for (let r = 0; r < rows; r++) {
      const sum = acc[r]!;
      if (dtype === 'bf16') {
        f.get(rowPointers[r]!).mem('v128.load', 16 * s).set(w);
        f.get(w).i32(16).op('i32x4.shl');
        multiplyAdd(sum, xv[0]);
        f.get(w).get(oddsMask).op('v128.and');
        multiplyAdd(sum, xv[1]);
      } else {
        f.get(rowPointers[r]!).mem('v128.load', 32 * s);
        multiplyAdd(sum, xv[0]);
        f.get(rowPointers[r]!).mem('v128.load', 32 * s + 16);
        multiplyAdd(sum, xv[1]);
      }
    }
  };
  /** Pushes j + r * stride, the output (and row of b) of pass j's row r (r = 0 in the one-row passes). */
  const rowIndex = (r: number) => f.get(j).get(stride).i32(r).op('i32.mul').op('i32.add');
  /** Row r's pointer at element `offset` (a local) of its row. */
  const rowPointer = (r: number, offset: number | null) => {
    f.get(b); rowIndex(r); f.get(ldBytes).op('i32.mul').op('i32.add');
    if (offset !== null) f.get(offset).i32(eb).op('i32.mul').op('i32.add');
    f.set(rowPointers[r]!);
  };
  /** Outputs j .. j + rows - 1: vector dot over k8, scalar tail, horizontal sums. */
  const dotRows = (rows: number) => {
    for (let r = 0; r < rows; r++) {
      rowPointer(r, null);
      f.v128([0, 0, 0, 0]).set(acc[r]!);
    }
    f.get(xBase).set(xp);
    f.get(k).i32(3).op('i32.shr_u').set(count);
    f.block((exit) => {
      f.get(count).op('i32.eqz').brIf(exit);
      f.loop((repeat) => {
        for (let s = 0; s < GEMV_UNROLL; s++) {
          step(rows, s);
          if (s < GEMV_UNROLL - 1) f.get(count).i32(1).op('i32.sub').tee(count).op('i32.eqz').brIf(exit);
        }
        f.get(xp).i32(32 * GEMV_UNROLL).op('i32.add').set(xp);
        for (let r = 0; r < rows; r++) f.get(rowPointers[r]!).i32(8 * GEMV_UNROLL * eb).op('i32.add').set(rowPointers[r]!);
        f.get(count).i32(1).op('i32.sub').tee(count).brIf(repeat);
      });
    });
    for (let r = 0; r < rows; r++) {
      const v = acc[r]!;
      // k % 8 tail, scalar, from element k8 (the loop may have left the pointers anywhere in its last iteration)
      f.f32(0).set(tail);
      rowPointer(r, k8);
      f.get(a).get(k8).i32(4).op('i32.mul').op('i32.add').set(xp);
      f.forRange(p, () => f.get(k8), () => f.get(k), 1, () => {
        f.get(tail).get(xp).mem('f32.load').get(rowPointers[r]!);
        loadAsF32Bits(f, dtype);
        f.op('f32.reinterpret_i32').op('f32.mul').op('f32.add').set(tail);
        f.get(rowPointers[r]!).i32(eb).op('i32.add').set(rowPointers[r]!);
        f.get(xp).i32(4).op('i32.add').set(xp);
      });
      f.get(v).get(v).get(v).shuffle([8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7]).op('f32x4.add').set(v);
      f.get(v).get(v).get(v).shuffle([4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11]).op('f32x4.add').set(v);
      f.get(c); rowIndex(r); f.i32(4).op('i32.mul').op('i32.add');
      f.get(v).extractF32(0).get(tail).op('f32.add').mem('f32.store');
    }
  };
  // passes j < s read rows j + r s (r < 10); the last n % 10 rows, one per pass
  f.get(n).i32(GEMV_ROWS).op('i32.div_u').set(stride);
  f.forRange(j, () => f.i32(0), () => f.get(stride), 1, () => dotRows(GEMV_ROWS));
  f.forRange(j, () => f.get(stride).i32(GEMV_ROWS).op('i32.mul'), () => f.get(n), 1, () => dotRows(1));
  return f;
}
