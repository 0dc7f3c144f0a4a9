// The CPU matmul: a WebAssembly SIMD GEMM generated at startup (matmul-wasm.ts) running on the main thread
// plus worker threads (matmul-worker-pool.ts) over one shared WebAssembly.Memory, with a plain TypeScript
// path (matmul-scalar.ts) for tiny problems and for runtimes without WebAssembly SIMD.
//
// Per call: copy a and b into the memory (b stays f16/bf16: packing widens it a panel at a time), run the
// job on every thread, copy C out. Problems bigger than the data budget are tiled over batch, M and N, so the
// memory stays bounded (e.g. Qwen's tied lm_head, b = [151936, 896] bf16, with thousands of rows of a).
//
// Half-precision b operands (frozen weights) stay resident: a region after the data region keeps their raw
// bits, keyed by the typed array object (WeakMap), offset, dtype and length, with least-recently-used
// eviction, so decoding (m = 1) does not copy every weight on every token. Only f16/bf16 arrays are kept:
// no kernel writes them in place (assign rejects half destinations, the optimizer updates f32 parameters,
// checkpoints and uploads hand over fresh arrays). A caller of matmulInto that rewrites a Uint16Array in
// place must call forgetResidentOperand on it first.

import os from 'node:os';
import type { MatmulParams } from '../backend.ts';
import {
  B_DTYPE_CODE, JOB, LAYOUT, NR, SCRATCH_BYTES,
  buildMatmulModule, preferredTileRows, relaxedSimdSupported, wasmSimdSupported,
  type MatmulModuleExports, type TileRows,
} from './matmul-wasm.ts';
import { MatmulWorkerPool } from './matmul-worker-pool.ts';
import { f16ValueTable, matmulScalarInto } from './matmul-scalar.ts';

type BDtype = 'f32' | 'f16' | 'bf16';

const PAGE_BYTES = 65536;
/** Default bytes of a, b and C held in the memory at once (env RANK1_MATMUL_MEMORY_MB); beyond it, tiles. */
const DEFAULT_DATA_BUDGET_MB = 192;
/** Default bytes of half-precision b operands kept resident (env RANK1_MATMUL_RESIDENT_MB; 0 turns it off). */
const DEFAULT_RESIDENT_MB = 2048;
/** Every address stays below 2 GiB: the generated code compares some of them as signed i32. */
const ADDRESS_LIMIT = 2 ** 31;
/** Bytes after each resident operand, so that no load at its end can reach past the memory. */
const RESIDENT_PADDING = 64;
const MAX_THREADS = 64;
/**
 * Default microseconds a thread polls before it sleeps after a GEMV (env RANK1_CPU_SPIN_US; 0 sleeps at once).
 * Measured in 0.5B decode: a polling worker starts within 1 µs of the job at the median, a sleeping one 40 µs
 * to 0.9 ms later. After 500 µs the worker had gone to sleep before 3–8 % of the GEMVs (a garbage collection,
 * the step between tokens), after 2 ms before 0.4–1.5 %, after 5 ms 0–0.2 %.
 */
const DEFAULT_SPIN_MICROSECONDS = 2000;
/** At or below this many multiply-adds the scalar loop beats copying into the memory and packing. */
const SCALAR_MAX_MACS = 2048;
/** Each extra thread must get at least this many multiply-adds to repay waking it (measured: 2 threads lose at 96^3, win from 128^3). */
const MIN_MACS_PER_THREAD = 1 << 20;
/**
 * A GEMV (decode: m = 1, b a weight read once from DRAM) gives each thread one contiguous block of rows: the
 * memory system streams a block faster than many small tasks taken in turn by both threads. Measured (0.5B
 * decode, in-process alternation of 4 × 8 tokens, polling on): one block per thread 32.1 ms/token, 256K-MAC
 * tasks 34.9, 512K 36.4, 64K 37.9; again one block 38.5 against two per thread 41.1 and 64K 44.1 (a slower
 * host). Microbenchmark on cold weights, two threads: the LM head [151 936, 896] 42.0 GB/s against 35.8 with
 * 64K tasks, gate/up [4 864, 896] 38.8 against 34.9. A second thread pays off from this many multiply-adds,
 * since after a GEMV a waiting thread polls before it sleeps. Not below it: decode's k/v [128, 896] on two
 * threads stream 21.6 GB/s against 15.2 on one back to back (cold weights, 7 alternated rounds), but in decode,
 * between q and the attention, the second thread costs more than it saves (in-process alternation, 5 × 12
 * tokens: 38.6 ms/token from 32K multiply-adds, 34.9 from 64K, 34.3 from 128K).
 */
const GEMV_MIN_MACS_PER_THREAD = 65536;
/** Tasks per thread when matrices are split: spare tasks let a busy core's thread fall behind gracefully. */
const TASKS_PER_THREAD = 4;
/** ...but no task smaller than this, since each one packs its own panels. */
const MIN_MACS_PER_TASK = 256 * 1024;

/** One resident b operand: its raw bits at `address` (bytes) of the memory. */
interface ResidentEntry {
  address: number;
  /** Bytes reserved, padding included. */
  size: number;
  lastUse: number;
  /** The map (the WeakMap's value for the array) that holds this entry under `key`. */
  owner: Map<string, ResidentEntry>;
  key: string;
}

interface Resident {
  base: number;
  capacity: number;
  /** Sorted by address. */
  entries: ResidentEntry[];
  byArray: WeakMap<Uint16Array, Map<string, ResidentEntry>>;
  clock: number;
  hits: number;
  misses: number;
  evictions: number;
}

interface Engine {
  memory: WebAssembly.Memory;
  runTasks: (thread: number) => void;
  pool: MatmulWorkerPool | null;
  threads: number;
  /** Microseconds threads poll after a GEMV before they sleep (GEMMs sleep at once). */
  spinMicroseconds: number;
  fusedMultiplyAdd: boolean;
  /** Rows of the micro-tile (MR): the task split keeps row blocks whole tiles. */
  tileRows: TileRows;
  /** First byte of the per-call data region (after control, f16 table and scratch). */
  dataBase: number;
  dataBudget: number;
  resident: Resident;
  f16TableLoaded: boolean;
  f32: Float32Array;
  u16: Uint16Array;
  i32: Int32Array;
}

let engine: Engine | null = null;
let simdSupport: boolean | null = null;

function simdAvailable(): boolean {
  simdSupport ??= wasmSimdSupported();
  return simdSupport;
}

/** An environment variable under Node; undefined in a browser (which has no process). */
function hostEnv(name: string): string | undefined {
  return (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.[name];
}

/**
 * A number from environment variable `name`, `fallback` when it is unset or blank; anything that is not a finite
 * number in [min, max] (an integer where `integer`) is an error naming the variable and `what` it must be.
 */
function numberFromEnv(
  name: string, fallback: number, { min, max = Infinity, integer = false, what }: { min: number; max?: number; integer?: boolean; what: string },
): number {
  const raw = hostEnv(name);
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || value > max || (integer && !Number.isInteger(value))) {
    throw new Error(`${name} must be ${what}, got "${raw}"`);
  }
  return value;
}

function configuredThreads(): number {
  const threads = numberFromEnv('RANK1_CPU_THREADS', os.availableParallelism(), { min: 1, integer: true, what: 'a positive integer' });
  return Math.min(threads, MAX_THREADS);
}

function configuredSpinMicroseconds(): number {
  return numberFromEnv('RANK1_CPU_SPIN_US', DEFAULT_SPIN_MICROSECONDS, {
    min: 0, max: 1e6, what: 'microseconds in [0, 1000000] (how long a matmul thread polls for the next job after a GEMV before it sleeps)',
  });
}

/** Tests only (env RANK1_TEST_MATMUL_WORKER_DELAY_MS): every worker sleeps this long before it joins a job. */
function configuredWorkerJoinDelay(): number {
  return numberFromEnv('RANK1_TEST_MATMUL_WORKER_DELAY_MS', 0, { min: 0, max: 60_000, what: 'milliseconds in [0, 60000]' });
}

function configuredDataBudget(): number {
  // Addresses stay below 2 GiB: the generated code compares some of them as signed i32.
  const megabytes = numberFromEnv('RANK1_MATMUL_MEMORY_MB', DEFAULT_DATA_BUDGET_MB, { min: 1, max: 1536, what: 'a number of megabytes in [1, 1536]' });
  return Math.floor(megabytes * 2 ** 20);
}

function configuredResidentBudget(): number {
  const megabytes = numberFromEnv('RANK1_MATMUL_RESIDENT_MB', DEFAULT_RESIDENT_MB, { min: 0, what: 'a non-negative number of megabytes' });
  return Math.floor(megabytes * 2 ** 20);
}

/**
 * The micro-kernel: relaxed SIMD's f32x4.relaxed_madd (a fused multiply-add on x86-64 with FMA3 and on arm64,
 * one rounding per step) or f32x4.mul + f32x4.add (two roundings, Node 20's kernel). Their outputs differ in
 * the last bits. Env RANK1_WASM_RELAXED_SIMD=1 or 0 forces one; unset, relaxed where the runtime has it.
 */
function configuredFusedMultiplyAdd(): boolean {
  const raw = hostEnv('RANK1_WASM_RELAXED_SIMD')?.trim();
  if (raw === undefined || raw === '') return relaxedSimdSupported();
  if (raw === '0') return false;
  if (raw !== '1') throw new Error(`RANK1_WASM_RELAXED_SIMD must be 0 (mul+add) or 1 (relaxed-SIMD fma), got "${raw}"`);
  if (!relaxedSimdSupported()) {
    const node = (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node;
    throw new Error(`RANK1_WASM_RELAXED_SIMD=1, but ${node ? `Node ${node}` : 'this runtime'} has no WebAssembly relaxed SIMD (Node 22 and later have it); unset it or set it to 0`);
  }
  return true;
}

/**
 * The micro-tile: env RANK1_MATMUL_TILE=4x8 or 6x8 forces one (both kernels run either); unset, the one
 * this runtime compiles best (preferredTileRows). Results are the same bits either way: each element of C is
 * accumulated over K in the same order.
 */
function configuredTileRows(fusedMultiplyAdd: boolean): TileRows {
  const raw = hostEnv('RANK1_MATMUL_TILE')?.trim();
  if (raw === undefined || raw === '') return preferredTileRows(fusedMultiplyAdd);
  if (raw === '4x8') return 4;
  if (raw === '6x8') return 6;
  throw new Error(`RANK1_MATMUL_TILE must be 4x8 or 6x8 (rows x columns of the micro-tile), got "${raw}"`);
}

function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}

function createEngine(): Engine {
  // Shared memory (and so worker threads) needs SharedArrayBuffer, which a page only has when cross-origin isolated.
  const shared = typeof SharedArrayBuffer === 'function';
  const threads = shared ? configuredThreads() : 1;
  const dataBudget = configuredDataBudget();
  const fusedMultiplyAdd = configuredFusedMultiplyAdd();
  const tileRows = configuredTileRows(fusedMultiplyAdd);
  const spinMicroseconds = configuredSpinMicroseconds();
  const workerJoinDelayMs = configuredWorkerJoinDelay();
  const dataBase = alignUp(LAYOUT.scratch + threads * SCRATCH_BYTES, PAGE_BYTES);
  // The data region, a page of slack, then the resident operands: as much of the budget as stays below 2 GiB.
  const residentBase = alignUp(dataBase + dataBudget, PAGE_BYTES) + PAGE_BYTES;
  const residentCapacity = Math.max(0, Math.floor(
    Math.min(configuredResidentBudget(), ADDRESS_LIMIT - PAGE_BYTES - residentBase) / PAGE_BYTES) * PAGE_BYTES);
  const maximumPages = (residentBase + residentCapacity) / PAGE_BYTES + 1;
  const memory = new WebAssembly.Memory({ initial: dataBase / PAGE_BYTES + 16, maximum: maximumPages, shared });
  const bytes = buildMatmulModule({ fusedMultiplyAdd, tileRows, initialPages: 1, maximumPages, shared });
  const module = new WebAssembly.Module(bytes);
  const exports = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as MatmulModuleExports;
  let pool: MatmulWorkerPool | null = null;
  let started = threads;
  if (threads > 1) {
    try {
      pool = new MatmulWorkerPool(module, memory, threads - 1, workerJoinDelayMs);
    } catch (error) {
      console.warn(`rank1 matmul: running single-threaded: ${(error as Error).message}`);
      started = 1;
    }
  }
  const created: Engine = {
    memory, runTasks: exports.runTasks, pool, threads: started, spinMicroseconds, fusedMultiplyAdd, tileRows, dataBase, dataBudget,
    resident: {
      base: residentBase, capacity: residentCapacity, entries: [], byArray: new WeakMap(), clock: 0,
      hits: 0, misses: 0, evictions: 0,
    },
    f16TableLoaded: false,
    f32: new Float32Array(0), u16: new Uint16Array(0), i32: new Int32Array(0),
  };
  refreshViews(created);
  return created;
}

function refreshViews(e: Engine): void {
  const buffer = e.memory.buffer;
  if (e.f32.buffer === buffer && e.f32.length * 4 === buffer.byteLength) return;
  e.f32 = new Float32Array(buffer);
  e.u16 = new Uint16Array(buffer);
  e.i32 = new Int32Array(buffer);
}

/** Grows the memory to at least `end` bytes. */
function growTo(e: Engine, end: number): void {
  const have = e.memory.buffer.byteLength;
  if (end > have) e.memory.grow(Math.ceil((end - have) / PAGE_BYTES));
  refreshViews(e);
}

/** Grows the memory so the data region holds `bytes`. */
function reserveData(e: Engine, bytes: number): void {
  const needed = e.dataBase + bytes;
  if (needed > e.resident.base) {
    throw new Error(`rank1 matmul: ${bytes} bytes do not fit the ${e.dataBudget}-byte budget (RANK1_MATMUL_MEMORY_MB)`);
  }
  growTo(e, needed);
}

/**
 * The byte address of `length` elements of the half-precision array `b` from `offset`, resident in the
 * memory: found, or copied there (evicting the least recently used operands until a gap fits).
 * Null when they would not fit the resident capacity at all.
 */
function residentOperand(e: Engine, b: Uint16Array, dtype: BDtype, offset: number, length: number): number | null {
  const r = e.resident;
  const size = alignUp(length * 2 + RESIDENT_PADDING, 64);
  if (size > r.capacity) return null;
  const key = `${dtype}:${offset}:${length}`;
  let owner = r.byArray.get(b);
  const found = owner?.get(key);
  if (found) {
    found.lastUse = ++r.clock;
    r.hits++;
    return found.address;
  }
  r.misses++;
  for (;;) {
    // First fit among the gaps between resident operands (sorted by address).
    let cursor = r.base;
    let at = -1;
    for (let i = 0; i <= r.entries.length; i++) {
      const next = i < r.entries.length ? r.entries[i]!.address : r.base + r.capacity;
      if (next - cursor >= size) {
        at = i;
        break;
      }
      if (i < r.entries.length) cursor = r.entries[i]!.address + r.entries[i]!.size;
    }
    if (at >= 0) {
      try {
        growTo(e, cursor + size);
      } catch {
        return null; // the system would not give the memory: copy b per call, as without a resident region
      }
      e.u16.set(b.subarray(offset, offset + length), cursor / 2);
      if (!owner) {
        owner = new Map();
        r.byArray.set(b, owner);
      }
      const entry: ResidentEntry = { address: cursor, size, lastUse: ++r.clock, owner, key };
      owner.set(key, entry);
      r.entries.splice(at, 0, entry);
      return cursor;
    }
    // No gap: evict the least recently used operand (the loop ends: size <= capacity).
    let oldest = 0;
    for (let i = 1; i < r.entries.length; i++) if (r.entries[i]!.lastUse < r.entries[oldest]!.lastUse) oldest = i;
    const [evicted] = r.entries.splice(oldest, 1);
    evicted!.owner.delete(evicted!.key);
    r.evictions++;
  }
}

function loadF16Table(e: Engine): void {
  if (e.f16TableLoaded) return;
  e.f32.set(f16ValueTable(), LAYOUT.f16Table / 4);
  e.f16TableLoaded = true;
}

/** One job: `batches` matmuls laid out in the memory (byte addresses and strides; ld* in elements). */
interface Job {
  batches: number;
  m: number;
  n: number;
  k: number;
  a: number;
  aBatchBytes: number;
  lda: number;
  transA: boolean;
  b: number;
  bBatchBytes: number;
  ldb: number;
  transB: boolean;
  bDtype: BDtype;
  c: number;
  cBatchBytes: number;
  ldc: number;
}

/**
 * The rows x columns grid that splits one matrix into about `splits` tasks while packing least: every row
 * split packs all of B again (k * n) and every column split all of A (m * k).
 */
function taskGrid(splits: number, m: number, n: number, tileRows: number): [number, number] {
  const mTiles = Math.ceil(m / tileRows);
  const nTiles = Math.ceil(n / NR);
  let best: [number, number] = [1, 1];
  let bestTasks = 1;
  let bestCost = m + n;
  for (let rows = 1; rows <= Math.min(splits, mTiles); rows++) {
    const cols = Math.min(nTiles, Math.floor(splits / rows));
    const tasks = rows * cols;
    const cost = rows * n + cols * m;
    if (tasks > bestTasks || (tasks === bestTasks && cost < bestCost)) {
      best = [rows, cols];
      bestTasks = tasks;
      bestCost = cost;
    }
  }
  return best;
}

/**
 * Splits the job into independent tasks and runs it. Whole matrices when the batch gives every thread
 * several; otherwise each matrix is cut into a grid so there are about TASKS_PER_THREAD tasks per thread
 * (a multiple of the thread count), or, for a GEMV, one block of rows per thread. Threads pull tasks from a
 * counter, so a thread the OS delays simply takes fewer; nothing ever waits on another thread until the end.
 */
function runJob(e: Engine, job: Job): void {
  const { batches, m, n, k } = job;
  // For bf16 b the GEMV splits x [k] (f32) into evens and odds in the thread's scratch, which bounds k (about 885K).
  const gemv = m === 1 && job.transB && (job.bDtype === 'f32' || (job.bDtype === 'bf16' && k * 4 <= SCRATCH_BYTES));
  const macs = batches * m * n * k;
  let threads = Math.max(1, Math.min(e.threads, Math.floor(macs / (gemv ? GEMV_MIN_MACS_PER_THREAD : MIN_MACS_PER_THREAD))));
  let rowSplits = 1;
  let colSplits = 1;
  const tasks = gemv ? threads : Math.max(threads, Math.min(TASKS_PER_THREAD * threads, Math.floor(macs / MIN_MACS_PER_TASK)));
  if (threads > 1 && batches < tasks) {
    let splits = Math.ceil(tasks / batches);
    while ((batches * splits) % threads !== 0) splits++;
    [rowSplits, colSplits] = taskGrid(splits, m, n, e.tileRows);
  }
  const taskRows = Math.ceil(Math.ceil(m / e.tileRows) / rowSplits) * e.tileRows;
  const taskCols = Math.ceil(Math.ceil(n / NR) / colSplits) * NR;
  const mSplits = Math.ceil(m / taskRows);
  const nSplits = Math.ceil(n / taskCols);
  const numTasks = batches * mSplits * nSplits;
  threads = Math.min(threads, numTasks);

  const words = e.i32;
  const at = LAYOUT.job / 4;
  words[at + JOB.nextTask] = 0;
  words[at + JOB.numTasks] = numTasks;
  words[at + JOB.tasksPerBatch] = mSplits * nSplits;
  words[at + JOB.nSplits] = nSplits;
  words[at + JOB.taskRows] = taskRows;
  words[at + JOB.taskCols] = taskCols;
  words[at + JOB.m] = m;
  words[at + JOB.n] = n;
  words[at + JOB.k] = k;
  words[at + JOB.a] = job.a;
  words[at + JOB.aBatchBytes] = job.aBatchBytes;
  words[at + JOB.lda] = job.lda;
  words[at + JOB.transA] = job.transA ? 1 : 0;
  words[at + JOB.b] = job.b;
  words[at + JOB.bBatchBytes] = job.bBatchBytes;
  words[at + JOB.ldb] = job.ldb;
  words[at + JOB.transB] = job.transB ? 1 : 0;
  words[at + JOB.bDtype] = B_DTYPE_CODE[job.bDtype];
  words[at + JOB.c] = job.c;
  words[at + JOB.cBatchBytes] = job.cBatchBytes;
  words[at + JOB.ldc] = job.ldc;
  words[at + JOB.gemv] = gemv ? 1 : 0;
  if (e.pool && threads > 1) e.pool.run(threads, () => e.runTasks(0), gemv ? e.spinMicroseconds : 0);
  else e.runTasks(0);
}

/** Copies `length` source elements from `from` to element `to` of the memory (in the source's element type). */
type Copy = (from: number, length: number, to: number) => void;

/** Copies `count` matrices of `size` elements, `stride` apart in the source, back to back to `to`. */
function copyBatches(copy: Copy, to: number, offset: number, stride: number, size: number, count: number): void {
  if (stride === size || count === 1) {
    copy(offset, (count - 1) * stride + size, to);
    return;
  }
  for (let i = 0; i < count; i++) copy(offset + i * stride, size, to + i * size);
}

function runWasm(
  e: Engine, a: Float32Array, aOffset: number, b: Float32Array | Uint16Array, bDtype: BDtype, bOffset: number,
  out: Float32Array, p: MatmulParams,
): void {
  const { batch, m, n, k, transA, transB, aBatchStride, bBatchStride } = p;
  const eb = bDtype === 'f32' ? 4 : 2;
  if (bDtype === 'f16') loadF16Table(e);
  // Views are read at call time: reserveData may replace them.
  const copyA: Copy = (from, length, to) => e.f32.set(a.subarray(from, from + length), to);
  const copyB: Copy = b instanceof Float32Array
    ? (from, length, to) => e.f32.set(b.subarray(from, from + length), to)
    : (from, length, to) => e.u16.set(b.subarray(from, from + length), to);
  const aSize = m * k;
  const bSize = k * n;
  const cSize = m * n;
  const aShared = aBatchStride === 0 || batch === 1;
  const bShared = bBatchStride === 0 || batch === 1;
  const slack = 3 * 64;
  const aBytes = (aShared ? aSize * 4 : 0);
  // A shared half-precision b (a frozen weight) may stay resident; then only a and C use the data region.
  const residentB = bShared && bDtype !== 'f32' && b instanceof Uint16Array
    && aBytes + (aShared ? 0 : aSize * 4) + cSize * 4 + slack <= e.dataBudget
    ? residentOperand(e, b, bDtype, bOffset, bSize) : null;
  const fixedBytes = aBytes + (bShared && residentB === null ? bSize * eb : 0);
  const perBatchBytes = (aShared ? 0 : aSize * 4) + (bShared ? 0 : bSize * eb) + cSize * 4;

  if (fixedBytes + perBatchBytes + slack <= e.dataBudget) {
    // Whole matrices, as many batches per job as fit.
    const chunk = Math.min(batch, Math.floor((e.dataBudget - slack - fixedBytes) / perBatchBytes));
    const aRegion = e.dataBase;
    const bCopyRegion = alignUp(aRegion + (aShared ? 1 : chunk) * aSize * 4, 64);
    const bRegion = residentB ?? bCopyRegion;
    const cRegion = residentB === null ? alignUp(bCopyRegion + (bShared ? 1 : chunk) * bSize * eb, 64) : bCopyRegion;
    reserveData(e, cRegion + chunk * cSize * 4 - e.dataBase);
    if (aShared) copyA(aOffset, aSize, aRegion / 4);
    if (bShared && residentB === null) copyB(bOffset, bSize, bRegion / eb);
    for (let b0 = 0; b0 < batch; b0 += chunk) {
      const count = Math.min(chunk, batch - b0);
      if (!aShared) copyBatches(copyA, aRegion / 4, aOffset + b0 * aBatchStride, aBatchStride, aSize, count);
      if (!bShared) copyBatches(copyB, bRegion / eb, bOffset + b0 * bBatchStride, bBatchStride, bSize, count);
      runJob(e, {
        batches: count, m, n, k,
        a: aRegion, aBatchBytes: aShared ? 0 : aSize * 4, lda: transA ? m : k, transA,
        b: bRegion, bBatchBytes: bShared ? 0 : bSize * eb, ldb: transB ? k : n, transB, bDtype,
        c: cRegion, cBatchBytes: cSize * 4, ldc: n,
      });
      out.set(e.f32.subarray(cRegion / 4, cRegion / 4 + count * cSize), b0 * cSize);
    }
    return;
  }

  // One matrix does not fit: tile it into blocks of rows of op(a) and columns of op(b), a third each.
  const third = Math.floor((e.dataBudget - slack) / 3);
  const mr = e.tileRows;
  const mChunk = aSize * 4 <= third ? m : Math.max(mr, Math.floor(third / (k * 4 * mr)) * mr);
  const nChunk = Math.min(n, Math.max(NR, Math.floor(Math.min(third / (k * eb), third / (mChunk * 4)) / NR) * NR));
  const aRegion = e.dataBase;
  const bRegion = alignUp(aRegion + mChunk * k * 4, 64);
  const cRegion = alignUp(bRegion + nChunk * k * eb, 64);
  reserveData(e, cRegion + mChunk * nChunk * 4 - e.dataBase);
  for (let bi = 0; bi < batch; bi++) {
    const aBase = aOffset + bi * aBatchStride;
    const bBase = bOffset + bi * bBatchStride;
    for (let i0 = 0; i0 < m; i0 += mChunk) {
      const rows = Math.min(mChunk, m - i0);
      // Rows i0.. of op(a): contiguous in [m, k]; a column block (k pieces) of [k, m] when transposed.
      if (transA) for (let q = 0; q < k; q++) copyA(aBase + q * m + i0, rows, aRegion / 4 + q * rows);
      else copyA(aBase + i0 * k, rows * k, aRegion / 4);
      for (let j0 = 0; j0 < n; j0 += nChunk) {
        const cols = Math.min(nChunk, n - j0);
        if (transB) copyB(bBase + j0 * k, cols * k, bRegion / eb);
        else for (let q = 0; q < k; q++) copyB(bBase + q * n + j0, cols, bRegion / eb + q * cols);
        runJob(e, {
          batches: 1, m: rows, n: cols, k,
          a: aRegion, aBatchBytes: 0, lda: transA ? rows : k, transA,
          b: bRegion, bBatchBytes: 0, ldb: transB ? k : cols, transB, bDtype,
          c: cRegion, cBatchBytes: 0, ldc: cols,
        });
        for (let i = 0; i < rows; i++) {
          const from = cRegion / 4 + i * cols;
          out.set(e.f32.subarray(from, from + cols), bi * cSize + (i0 + i) * n + j0);
        }
      }
    }
  }
}

function checkArguments(
  a: Float32Array, aOffset: number, b: Float32Array | Uint16Array, bDtype: BDtype, bOffset: number,
  out: Float32Array, p: MatmulParams,
): void {
  const { batch, m, n, k, aBatchStride, bBatchStride } = p;
  const counts = [batch, m, n, k, aBatchStride, bBatchStride, aOffset, bOffset];
  if (!counts.every((value) => Number.isSafeInteger(value) && value >= 0)) {
    throw new RangeError(`matmul: sizes, strides and offsets must be non-negative integers, got ${JSON.stringify({ ...p, aOffset, bOffset })}`);
  }
  if ((bDtype === 'f32') !== b instanceof Float32Array) {
    throw new TypeError(`matmul: b of dtype ${bDtype} must be a ${bDtype === 'f32' ? 'Float32Array' : 'Uint16Array'}`);
  }
  if (batch === 0 || m === 0 || n === 0) return;
  if (k > 0 && aOffset + (batch - 1) * aBatchStride + m * k > a.length) throw new RangeError('matmul: a is too short');
  if (k > 0 && bOffset + (batch - 1) * bBatchStride + k * n > b.length) throw new RangeError('matmul: b is too short');
  if (batch * m * n > out.length) throw new RangeError('matmul: out is too short');
}

/** out[batch, m, n] = op(a)[batch] @ op(b)[batch]; a f32 at aOffset; b f32 or raw f16/bf16 bits (Uint16Array) at bOffset. */
export function matmulInto(
  a: Float32Array, aOffset: number,
  b: Float32Array | Uint16Array, bDtype: 'f32' | 'f16' | 'bf16', bOffset: number,
  out: Float32Array, p: MatmulParams,
): void {
  checkArguments(a, aOffset, b, bDtype, bOffset, out, p);
  const { batch, m, n, k } = p;
  if (batch === 0 || m === 0 || n === 0) return;
  if (k === 0) {
    out.fill(0, 0, batch * m * n);
    return;
  }
  if (batch * m * n * k <= SCALAR_MAX_MACS || !simdAvailable()) {
    matmulScalarInto(a, aOffset, b, bDtype, bOffset, out, p);
    return;
  }
  engine ??= createEngine();
  runWasm(engine, a, aOffset, b, bDtype, bOffset, out, p);
}

/**
 * Drops every resident copy of `b` (call it before rewriting a half-precision b in place that was already
 * multiplied; f32 operands are never kept).
 */
export function forgetResidentOperand(b: Float32Array | Uint16Array): void {
  if (!engine || !(b instanceof Uint16Array)) return;
  const r = engine.resident;
  const owner = r.byArray.get(b);
  if (!owner) return;
  r.byArray.delete(b);
  const dropped = new Set(owner.values());
  r.entries = r.entries.filter((entry) => !dropped.has(entry));
}

/** Resident operand counters (for tests and logs): operands and bytes held, capacity, hits, misses, evictions. */
export function residentStats(): { operands: number; bytes: number; capacity: number; hits: number; misses: number; evictions: number } {
  if (!engine) return { operands: 0, bytes: 0, capacity: 0, hits: 0, misses: 0, evictions: 0 };
  const r = engine.resident;
  return {
    operands: r.entries.length, bytes: r.entries.reduce((sum, entry) => sum + entry.size, 0), capacity: r.capacity,
    hits: r.hits, misses: r.misses, evictions: r.evictions,
  };
}

/** Jobs the worker pool ran, and those the main thread finished alone because no worker joined in time. */
export function matmulPoolStats(): { jobs: number; finishedAlone: number } {
  return { ...(engine?.pool?.stats ?? { jobs: 0, finishedAlone: 0 }) };
}

/** Threads in use, SIMD on/off: for logs and bench labels. */
export function matmulDescription(): string {
  if (!simdAvailable()) return 'scalar TypeScript matmul (no WebAssembly SIMD), 1 thread';
  const threads = engine?.threads ?? configuredThreads();
  const fused = engine?.fusedMultiplyAdd ?? configuredFusedMultiplyAdd();
  const rows = engine?.tileRows ?? configuredTileRows(fused);
  return `wasm simd ${rows}x${NR} matmul (${fused ? 'relaxed fma' : 'mul+add'}), ${threads} thread${threads === 1 ? '' : 's'}`;
}

/** Stop worker threads so the process can exit (also unref them so they never keep it alive). */
export function shutdownMatmulWorkers(): void {
  engine?.pool?.shutdown();
  engine = null;
}
