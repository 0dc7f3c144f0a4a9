// The WebGPU runtime under every kernel: storages and their buffer pool, the batched command encoder,
// the pipeline cache, per-dispatch uniforms, binding windows for storages larger than one binding, and
// the device's error/loss state.
//
// Segments: a storage larger than the device's maxBufferSize (or RuntimeOptions.maxBufferBytes) is held in
// several buffers, `segments`, each covering `maxBufferBytes` of its bytes in order (the last one less).
// Kernels never see this: every binding goes through `bindRange`, which binds a window inside one segment.
// The planners keep windows inside segments (`fitsBinding` is false across a boundary, `rowChunks` ends its
// chunks there); a window that still straddles two (a single row across a boundary) is bound as a bounce
// buffer that `dispatch` fills from the segments just before the dispatch and, for a written binding,
// copies back just after. Uploads, reads and buffer copies go segment by segment (`spans`).
//
// Batching: kernels record dispatches into one open compute pass; the batch is submitted at `read`/`sync`
// or every `dispatchesPerSubmit` dispatches, so no kernel waits on the GPU. The uniforms of a batch are
// packed into one CPU slab and written with a single writeBuffer just before its submit (queue order
// guarantees the previous batch has consumed the previous contents).
//
// Buffer reuse: a storage freed while the open batch may still use its buffer goes to `batchFrees`. Later
// kernels of the same batch may take it as an output (dispatches in a pass are ordered and Dawn inserts
// the barriers), but `upload` (queue.writeBuffer, which runs before the pending batch) only takes buffers
// from `pool`, into which `batchFrees` moves at submit.

import { softwareRasterizerName } from './adapter-kind.ts';
import { BYTES_PER_ELEMENT, type DType, type MemoryStats, type Storage } from '../backend.ts';
import type { AcquiredDevice } from './device.ts';
import { rowsPerChunk } from './views.ts';

export interface WebGpuStorage extends Storage {
  readonly backend: 'webgpu';
  /**
   * The buffers holding the bytes: segment i holds bytes [i * maxBufferBytes, (i + 1) * maxBufferBytes).
   * One buffer unless the storage is larger than the buffer limit; the last may be a larger pool bucket.
   */
  readonly segments: readonly GPUBuffer[];
  /** Bytes the elements occupy, rounded up to 4. */
  readonly byteSize: number;
  freed: boolean;
}

/** A run of bytes inside one buffer. */
export interface ByteSpan {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

/** A binding window that straddles two segments: `dispatch` binds a bounce buffer holding these bytes. */
interface Straddle {
  storage: WebGpuStorage;
  byteStart: number;
  byteEnd: number;
}

export interface RuntimeOptions {
  /**
   * Largest storage-buffer binding a kernel may use, in bytes (default and maximum: the device's
   * maxStorageBufferBindingSize). Tests lower it to exercise the split paths without huge buffers.
   */
  maxBindingBytes?: number;
  /**
   * Largest buffer the runtime creates, in bytes (default and maximum: the device's maxBufferSize); larger
   * storages are held in segments of this size. Tests lower it to exercise segmented storages.
   */
  maxBufferBytes?: number;
  /** Dispatches recorded before a batch is submitted without being asked (default 64). */
  dispatchesPerSubmit?: number;
  /** Bytes of freed buffers kept for reuse before the largest are destroyed (default 1 GiB). */
  poolLimitBytes?: number;
  /** Treat the adapter as a CPU rasterizer (or not) when picking kernel shapes; default: from the adapter info. */
  cpuAdapter?: boolean;
}

/** How a kernel binds one storage buffer: read-only or written. */
export type BindingAccess = 'read' | 'write';

export interface KernelSource {
  code: string;
  /** Storage bindings after the uniform at binding 0, in binding order (1, 2, ...). */
  bindings: readonly BindingAccess[];
}

export interface Kernel {
  readonly key: string;
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
  readonly storageBindings: number;
  /** Per storage binding: whether the kernel writes it (a bounced written binding is copied back). */
  readonly access: readonly BindingAccess[];
}

/** A storage's elements [start, end) bound as one binding; `base` is the element index it starts at. */
export interface BoundRange {
  binding: GPUBufferBinding;
  base: number;
}

export interface RowChunkOperand {
  storage: WebGpuStorage;
  /** Elements between consecutive rows (0 for an operand every row shares, e.g. a weight). */
  rowStride: number;
  /** Elements of one row (default rowStride). */
  rowLength?: number;
}

export interface RowChunk {
  row0: number;
  rows: number;
  bindings: GPUBufferBinding[];
  /** Per operand: element offset of row `row0` inside its binding. */
  offsets: number[];
}

const UNIFORM_SLAB_BYTES = 1 << 18;
const MIN_BUFFER_BYTES = 256;
/** Kernels address elements (and iterate over them) with u32. */
const MAX_ELEMENTS = 2 ** 32 - 1;
/** Allocations at least this large are wrapped in an out-of-memory error scope. */
const OOM_SCOPE_BYTES = 16 << 20;

/** Pool bucket for a byte size: powers of two split in eighths, so at most 12.5% is wasted. */
export function bucketBytes(bytes: number): number {
  if (bytes <= MIN_BUFFER_BYTES) return MIN_BUFFER_BYTES;
  const power = 2 ** Math.floor(Math.log2(bytes));
  const step = Math.max(MIN_BUFFER_BYTES, power / 8);
  return Math.ceil(bytes / step) * step;
}

export class WebGpuRuntime {
  /** Holds the Dawn instance (acquired.gpu) alive for as long as the runtime lives. */
  readonly acquired: AcquiredDevice;
  readonly device: GPUDevice;
  readonly queue: GPUQueue;
  /** Largest binding a kernel makes, a multiple of the offset alignment. */
  readonly maxBindingBytes: number;
  readonly offsetAlignment: number;
  readonly uniformAlignment: number;
  readonly maxWorkgroupsPerDimension: number;
  readonly maxWorkgroupStorageBytes: number;
  readonly maxStorageBuffersPerStage: number;
  /** Largest buffer the runtime creates and the size of a segmented storage's segments (a multiple of 256). */
  readonly maxBufferBytes: number;
  /** The adapter is a CPU rasterizer (llvmpipe/lavapipe, SwiftShader): kernels may pick CPU-friendly shapes. */
  readonly cpuAdapter: boolean;

  private readonly dispatchesPerSubmit: number;
  private readonly poolLimitBytes: number;

  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private dispatchesInBatch = 0;
  private readonly uniformSlab = new ArrayBuffer(UNIFORM_SLAB_BYTES);
  private readonly uniformBytes = new Uint8Array(this.uniformSlab);
  private uniformUsed = 0;
  private readonly uniformBuffer: GPUBuffer;

  private readonly kernels = new Map<string, Kernel>();

  /** Reusable buffers by bucket size, safe for any use. */
  private readonly pool = new Map<number, GPUBuffer[]>();
  /** Freed during the open batch: reusable by later kernels of the batch, pooled at submit. */
  private batchFrees = new Map<number, GPUBuffer[]>();
  private pooledBytes = 0;
  private batchFreeBytes = 0;
  private liveBytes = 0;
  private peakBytes = 0;
  private liveStorages = 0;

  /** Bindings made through a bounce buffer so far (for tests and benchmarks). */
  bouncedBindings = 0;
  /** Placeholder bindings of windows that straddle two segments (see bindRange). */
  private readonly straddles = new WeakMap<GPUBufferBinding, Straddle>();

  private lostReason: string | null = null;
  private pendingError: string | null = null;
  private readonly lost: Promise<never>;

  constructor(acquired: AcquiredDevice, options: RuntimeOptions = {}) {
    const { device } = acquired;
    this.acquired = acquired;
    this.device = device;
    this.queue = device.queue;
    const limits = device.limits;
    this.offsetAlignment = limits.minStorageBufferOffsetAlignment;
    this.uniformAlignment = Math.max(16, limits.minUniformBufferOffsetAlignment);
    // Segment boundaries fall on binding-offset and vec4 granules, so a window inside a segment is bindable.
    const granule = Math.max(256, this.offsetAlignment);
    const bufferLimit = Math.min(options.maxBufferBytes ?? Infinity, limits.maxBufferSize);
    this.maxBufferBytes = Math.floor(bufferLimit / granule) * granule;
    if (this.maxBufferBytes < 4 * granule) {
      throw new Error(`maxBufferBytes ${bufferLimit} is too small (need at least ${4 * granule})`);
    }
    const bindingLimit = Math.min(options.maxBindingBytes ?? Infinity, limits.maxStorageBufferBindingSize, this.maxBufferBytes);
    const bindingGranule = Math.max(16, this.offsetAlignment);
    this.maxBindingBytes = Math.floor(bindingLimit / bindingGranule) * bindingGranule;
    if (this.maxBindingBytes < 4 * this.offsetAlignment) {
      throw new Error(`maxBindingBytes ${bindingLimit} is too small (need at least ${4 * this.offsetAlignment})`);
    }
    this.maxWorkgroupsPerDimension = limits.maxComputeWorkgroupsPerDimension;
    this.maxWorkgroupStorageBytes = limits.maxComputeWorkgroupStorageSize;
    this.maxStorageBuffersPerStage = limits.maxStorageBuffersPerShaderStage;
    const info = acquired.adapterInfo;
    this.cpuAdapter = options.cpuAdapter ?? softwareRasterizerName(info) !== null;
    this.dispatchesPerSubmit = options.dispatchesPerSubmit ?? 64;
    this.poolLimitBytes = options.poolLimitBytes ?? 2 ** 30;
    this.uniformBuffer = device.createBuffer({
      label: 'rank1 uniforms',
      size: UNIFORM_SLAB_BYTES,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });

    this.lost = device.lost.then((info) => {
      this.lostReason ??= info.message || info.reason || 'unknown reason';
      throw new Error(`WebGPU device lost: ${this.lostReason}`);
    });
    this.lost.catch(() => {}); // observed by awaiters through waitOrLost; never an unhandled rejection
    device.addEventListener('uncapturederror', (event) => {
      const message = (event as GPUUncapturedErrorEvent).error.message;
      this.pendingError ??= message;
    });
  }

  // ---- errors -------------------------------------------------------------------------------

  /** Throws if the device is lost, or reports the first uncaptured GPU error since the last check. */
  check(): void {
    if (this.lostReason !== null) throw new Error(`WebGPU device lost: ${this.lostReason}`);
    if (this.pendingError !== null) {
      const message = this.pendingError;
      this.pendingError = null;
      throw new Error(`WebGPU error: ${message}`);
    }
  }

  /** Awaits `promise`, but rejects with the loss reason instead of hanging if the device is lost. */
  async waitOrLost<T>(promise: Promise<T>): Promise<T> {
    const result = await Promise.race([promise, this.lost]);
    this.check();
    return result;
  }

  destroy(): void {
    this.lostReason ??= 'the backend was destroyed';
    this.device.destroy();
  }

  // ---- storages and the pool ----------------------------------------------------------------

  /** A fresh storage for `numel` elements of `dtype`. `forKernelOutput`: may reuse a buffer of the open batch. */
  allocate(dtype: DType, numel: number, forKernelOutput = true): WebGpuStorage {
    this.check();
    const byteSize = storageBytes(dtype, numel);
    if (numel > MAX_ELEMENTS) {
      throw new Error(
        `WebGPU cannot allocate ${byteSize} bytes (${numel} ${dtype}): kernels index a storage's elements with u32, `
          + `at most ${MAX_ELEMENTS} elements`,
      );
    }
    // Bindings end on whole vec4s (kernels may read array<vec4<f32>>): the buffers cover that much.
    const covered = roundUp(byteSize, 16);
    const count = Math.ceil(covered / this.maxBufferBytes);
    const segments = Array.from({ length: count }, (_, i) =>
      this.takeBuffer(Math.min(this.maxBufferBytes, covered - i * this.maxBufferBytes), forKernelOutput));
    this.liveBytes += byteSize;
    this.liveStorages++;
    this.peakBytes = Math.max(this.peakBytes, this.liveBytes);
    return { backend: 'webgpu', dtype, numel, segments, byteSize, freed: false };
  }

  free(storage: Storage): void {
    const s = asWebGpuStorage(storage);
    if (s.freed) throw new Error(`WebGPU double free of a ${s.dtype}[${s.numel}] storage`);
    s.freed = true;
    this.liveBytes -= s.byteSize;
    this.liveStorages--;
    if (this.lostReason !== null) return;
    for (const buffer of s.segments) this.releaseBuffer(buffer);
  }

  /** A buffer of at least `bytes` (a pool bucket, at most maxBufferBytes), reused where one is free. */
  private takeBuffer(bytes: number, forKernelOutput: boolean): GPUBuffer {
    const bucket = bucketBytes(bytes);
    const size = bucket <= this.maxBufferBytes ? bucket : bytes;
    return (forKernelOutput ? this.takeFrom(this.batchFrees, size, true) : null)
      ?? this.takeFrom(this.pool, size, false)
      ?? this.createBuffer(size);
  }

  /** Gives a buffer back: to the open batch's frees while a batch may still use it, else to the pool. */
  private releaseBuffer(buffer: GPUBuffer): void {
    if (this.encoder !== null) {
      pushBucket(this.batchFrees, buffer);
      this.batchFreeBytes += buffer.size;
    } else {
      this.returnToPool(buffer);
    }
  }

  memory(): MemoryStats {
    return {
      liveBytes: this.liveBytes,
      peakBytes: this.peakBytes,
      pooledBytes: this.pooledBytes + this.batchFreeBytes,
      liveStorages: this.liveStorages,
    };
  }

  resetPeak(): void {
    this.peakBytes = this.liveBytes;
  }

  private takeFrom(buckets: Map<number, GPUBuffer[]>, size: number, batch: boolean): GPUBuffer | null {
    const buffer = buckets.get(size)?.pop();
    if (buffer === undefined) return null;
    if (batch) this.batchFreeBytes -= size;
    else this.pooledBytes -= size;
    return buffer;
  }

  private returnToPool(buffer: GPUBuffer): void {
    pushBucket(this.pool, buffer);
    this.pooledBytes += buffer.size;
    if (this.pooledBytes > this.poolLimitBytes) this.trimPool(this.poolLimitBytes);
  }

  /** Destroys pooled buffers, largest first, until at most `keepBytes` stay pooled. */
  trimPool(keepBytes: number): void {
    const sizes = [...this.pool.keys()].sort((a, b) => b - a);
    for (const size of sizes) {
      const buffers = this.pool.get(size)!;
      while (buffers.length > 0 && this.pooledBytes > keepBytes) {
        buffers.pop()!.destroy();
        this.pooledBytes -= size;
      }
      if (buffers.length === 0) this.pool.delete(size);
    }
  }

  private createBuffer(size: number): GPUBuffer {
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    if (size < OOM_SCOPE_BYTES) return this.device.createBuffer({ size, usage });
    // Make room first: pooled buffers are the cheapest bytes to give back.
    if (this.pooledBytes + size > this.poolLimitBytes) this.trimPool(Math.max(0, this.poolLimitBytes - size));
    this.device.pushErrorScope('out-of-memory');
    const buffer = this.device.createBuffer({ size, usage });
    void this.device.popErrorScope().then((error) => {
      if (error !== null) {
        // Overrides whatever validation errors the invalid buffer caused meanwhile: this is the cause.
        this.pendingError = `out of memory allocating ${size} bytes `
          + `(live ${this.liveBytes} bytes in ${this.liveStorages} storages): ${error.message}`;
      }
    });
    return buffer;
  }

  // ---- pipelines ----------------------------------------------------------------------------

  /** The compiled kernel for `key`, built from `source()` on first use. */
  kernel(key: string, source: () => KernelSource): Kernel {
    const cached = this.kernels.get(key);
    if (cached !== undefined) return cached;
    const { code, bindings } = source();
    const invocations = Number(/@workgroup_size\((\d+)\)/.exec(code)?.[1] ?? 1);
    if (invocations > this.device.limits.maxComputeInvocationsPerWorkgroup) {
      throw new Error(
        `WebGPU kernel ${key} needs ${invocations} invocations per workgroup; this adapter allows `
          + `${this.device.limits.maxComputeInvocationsPerWorkgroup}`,
      );
    }
    if (bindings.length > this.maxStorageBuffersPerStage) {
      throw new Error(
        `WebGPU kernel ${key} needs ${bindings.length} storage buffers; this adapter allows ${this.maxStorageBuffersPerStage} per stage`,
      );
    }
    const layout = this.device.createBindGroupLayout({
      label: key,
      entries: [
        { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } },
        ...bindings.map((access, i): GPUBindGroupLayoutEntry => ({
          binding: i + 1,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: access === 'read' ? 'read-only-storage' : 'storage' },
        })),
      ],
    });
    const module = this.device.createShaderModule({ label: key, code });
    const pipeline = this.device.createComputePipeline({
      label: key,
      layout: this.device.createPipelineLayout({ label: key, bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: 'main' },
    });
    const kernel: Kernel = { key, pipeline, layout, storageBindings: bindings.length, access: bindings };
    this.kernels.set(key, kernel);
    return kernel;
  }

  // ---- binding ------------------------------------------------------------------------------

  /**
   * Whether elements [start, end) of `storage` fit in one binding inside one segment. Planners split their
   * work until every window does: a window across a segment boundary would work (bindRange bounces it) but
   * costs a copy of the window, up to maxBindingBytes, each time.
   */
  fitsBinding(storage: Pick<WebGpuStorage, 'dtype' | 'byteSize'>, start: number, end: number): boolean {
    if (storage.byteSize <= this.maxBindingBytes) return true;
    if (this.rangeBytes(storage, start, end) > this.maxBindingBytes) return false;
    const covered = roundUp(storage.byteSize, 16);
    if (covered <= this.maxBufferBytes) return true;
    const bpe = BYTES_PER_ELEMENT[storage.dtype];
    const byteStart = Math.floor((start * bpe) / this.offsetAlignment) * this.offsetAlignment;
    const byteEnd = Math.max(byteStart + 16, Math.min(covered, roundUp(end * bpe, 16)));
    return Math.floor(byteStart / this.maxBufferBytes) === Math.floor((byteEnd - 1) / this.maxBufferBytes);
  }

  /** Bytes the binding of elements [start, end) takes once its offset is aligned down. */
  rangeBytes(storage: Pick<WebGpuStorage, 'dtype' | 'byteSize'>, start: number, end: number): number {
    const bpe = BYTES_PER_ELEMENT[storage.dtype];
    const byteStart = Math.floor((start * bpe) / this.offsetAlignment) * this.offsetAlignment;
    const byteEnd = Math.min(roundUp(storage.byteSize, 16), roundUp(end * bpe, 16));
    return Math.max(16, byteEnd - byteStart);
  }

  /**
   * Elements [start, end) of `storage` as one binding (the whole storage when it fits). A window that
   * straddles two segments comes back as a placeholder that `dispatch` replaces with a bounce buffer.
   */
  bindRange(storage: WebGpuStorage, start: number, end: number): BoundRange {
    if (storage.freed) throw new Error(`WebGPU use of a freed ${storage.dtype}[${storage.numel}] storage`);
    // Binding sizes are whole vec4s (kernels may read array<vec4<f32>>); the segments leave room for that.
    const covered = roundUp(storage.byteSize, 16);
    if (storage.byteSize <= this.maxBindingBytes) {
      return { binding: { buffer: storage.segments[0]!, offset: 0, size: covered }, base: 0 };
    }
    const bpe = BYTES_PER_ELEMENT[storage.dtype];
    const clampedStart = Math.max(0, Math.min(start, storage.numel - 1));
    const byteStart = Math.floor((clampedStart * bpe) / this.offsetAlignment) * this.offsetAlignment;
    const byteEnd = Math.max(byteStart + 16, Math.min(covered, roundUp(end * bpe, 16)));
    if (byteEnd - byteStart > this.maxBindingBytes) {
      throw new Error(
        `internal: binding of ${byteEnd - byteStart} bytes exceeds the ${this.maxBindingBytes}-byte binding limit`,
      );
    }
    const base = byteStart / bpe;
    const segment = Math.floor(byteStart / this.maxBufferBytes);
    const segmentStart = segment * this.maxBufferBytes;
    if (byteEnd <= segmentStart + this.maxBufferBytes) {
      return { binding: { buffer: storage.segments[segment]!, offset: byteStart - segmentStart, size: byteEnd - byteStart }, base };
    }
    const placeholder: GPUBufferBinding = { buffer: storage.segments[segment]!, offset: 0, size: 16 };
    this.straddles.set(placeholder, { storage, byteStart, byteEnd });
    return { binding: placeholder, base };
  }

  /** Bytes [start, start + length) of `storage` as runs inside its segments, in order. */
  spans(storage: WebGpuStorage, start: number, length: number): ByteSpan[] {
    const out: ByteSpan[] = [];
    for (let at = start; at < start + length;) {
      const segment = Math.floor(at / this.maxBufferBytes);
      const segmentStart = segment * this.maxBufferBytes;
      const size = Math.min(start + length, segmentStart + this.maxBufferBytes) - at;
      out.push({ buffer: storage.segments[segment]!, offset: at - segmentStart, size });
      at += size;
    }
    return out;
  }

  /** Records copies of the bytes of `from` into `to` (the same total length) on the open encoder. */
  copySpans(from: readonly ByteSpan[], to: readonly ByteSpan[]): void {
    const encoder = this.commandEncoder();
    let i = 0;
    let j = 0;
    let doneFrom = 0; // bytes of from[i] already copied
    let doneTo = 0;
    while (i < from.length && j < to.length) {
      const a = from[i]!;
      const b = to[j]!;
      const size = Math.min(a.size - doneFrom, b.size - doneTo);
      if (size > 0) encoder.copyBufferToBuffer(a.buffer, a.offset + doneFrom, b.buffer, b.offset + doneTo, size);
      doneFrom += size;
      doneTo += size;
      if (doneFrom === a.size) { i++; doneFrom = 0; }
      if (doneTo === b.size) { j++; doneTo = 0; }
    }
  }

  /** Copies `length` bytes (a multiple of 4) from byte `fromStart` of one storage to byte `toStart` of another. */
  copyBytes(from: WebGpuStorage, fromStart: number, to: WebGpuStorage, toStart: number, length: number): void {
    if (from.freed || to.freed) throw new Error('WebGPU copy of a freed storage');
    this.copySpans(this.spans(from, fromStart, length), this.spans(to, toStart, length));
  }

  /** The whole storage as one binding; throws a clear error when it is above the binding limit. */
  bindWhole(storage: WebGpuStorage, what: string): GPUBufferBinding {
    if (storage.byteSize > this.maxBindingBytes) {
      throw new Error(
        `WebGPU ${what}: a ${storage.dtype}[${storage.numel}] storage of ${storage.byteSize} bytes exceeds the `
          + `${this.maxBindingBytes}-byte binding limit`,
      );
    }
    return this.bindRange(storage, 0, storage.numel).binding;
  }

  /**
   * Splits `rows` into chunks whose windows fit the binding limit in every row-shaped operand (row r at
   * elements [r*rowStride, r*rowStride + rowLength)). Each chunk has its operands' bindings and, per
   * operand, the element offset of the chunk's first row inside its binding.
   */
  rowChunks(rows: number, operands: readonly RowChunkOperand[]): RowChunk[] {
    const slack = this.offsetAlignment + 4;
    const perChunk = rowsPerChunk(rows, operands.map((op) => ({
      bytesPerElement: BYTES_PER_ELEMENT[op.storage.dtype],
      storageBytes: op.storage.byteSize,
      rowStride: op.rowStride,
      rowLength: op.rowLength,
    })), this.maxBindingBytes, slack);
    const chunks: RowChunk[] = [];
    for (let row0 = 0, count = 0; row0 < Math.max(rows, 1); row0 += Math.max(count, 1)) {
      count = Math.min(perChunk, rows - row0);
      for (const op of operands) count = this.rowsInSegment(op, row0, count);
      const bindings: GPUBufferBinding[] = [];
      const offsets: number[] = [];
      for (const op of operands) {
        const start = row0 * op.rowStride;
        const end = count > 0 ? (row0 + count - 1) * op.rowStride + (op.rowLength ?? op.rowStride) : start + 1;
        const bound = this.bindRange(op.storage, start, end);
        bindings.push(bound.binding);
        offsets.push(start - bound.base);
      }
      chunks.push({ row0, rows: count, bindings, offsets });
    }
    return chunks;
  }

  /**
   * At most `count` rows from `row0` of a segmented operand such that the window stays inside the segment
   * where it starts; a row that straddles a boundary goes alone (its small window is bounced).
   */
  private rowsInSegment(op: RowChunkOperand, row0: number, count: number): number {
    if (op.storage.segments.length === 1 || op.rowStride === 0 || count <= 1) return count;
    const bpe = BYTES_PER_ELEMENT[op.storage.dtype];
    const byteStart = Math.floor((row0 * op.rowStride * bpe) / this.offsetAlignment) * this.offsetAlignment;
    const boundary = (Math.floor(byteStart / this.maxBufferBytes) + 1) * this.maxBufferBytes;
    // Rows r < fit end at or before the boundary: (row0 + r) * rowStride + rowLength <= boundary / bpe.
    const fit = Math.floor((boundary / bpe - (op.rowLength ?? op.rowStride)) / op.rowStride) - row0 + 1;
    return Math.max(1, Math.min(count, fit));
  }

  // ---- recording and submitting -------------------------------------------------------------

  /** Records one dispatch of `kernel` with `params` (packed uniforms) and storage `bindings`. */
  dispatch(kernel: Kernel, params: ArrayBuffer, bindings: readonly GPUBufferBinding[], workgroups: number): void {
    this.check();
    if (bindings.length !== kernel.storageBindings) {
      throw new Error(`internal: kernel ${kernel.key} takes ${kernel.storageBindings} bindings, got ${bindings.length}`);
    }
    if (workgroups <= 0) return;
    const paramBytes = Math.max(16, Math.ceil(params.byteLength / 16) * 16);
    let offset = Math.ceil(this.uniformUsed / this.uniformAlignment) * this.uniformAlignment;
    if (offset + paramBytes > UNIFORM_SLAB_BYTES) {
      this.submit();
      offset = 0;
    }
    this.uniformBytes.set(new Uint8Array(params), offset);
    this.uniformUsed = offset + paramBytes;

    // Windows that straddle two segments: bounce buffers filled now, written ones copied back after.
    const bounces: Array<{ straddle: Straddle; bounce: GPUBuffer; written: boolean }> = [];
    const resolved = bindings.map((binding, i) => {
      const straddle = this.straddles.get(binding);
      if (straddle === undefined) return binding;
      const size = straddle.byteEnd - straddle.byteStart;
      const bounce = this.takeBuffer(size, true);
      this.copySpans(this.spans(straddle.storage, straddle.byteStart, size), [{ buffer: bounce, offset: 0, size }]);
      bounces.push({ straddle, bounce, written: kernel.access[i] === 'write' });
      this.bouncedBindings++;
      return { buffer: bounce, offset: 0, size };
    });

    const bindGroup = this.device.createBindGroup({
      label: kernel.key,
      layout: kernel.layout,
      entries: [
        { binding: 0, resource: { buffer: this.uniformBuffer, offset, size: paramBytes } },
        ...resolved.map((resource, i) => ({ binding: i + 1, resource })),
      ],
    });
    const pass = this.openPass();
    pass.setPipeline(kernel.pipeline);
    pass.setBindGroup(0, bindGroup);
    const [x, y] = this.grid(workgroups);
    pass.dispatchWorkgroups(x, y, 1);
    for (const { straddle, bounce, written } of bounces) {
      const size = straddle.byteEnd - straddle.byteStart;
      if (written) this.copySpans([{ buffer: bounce, offset: 0, size }], this.spans(straddle.storage, straddle.byteStart, size));
      this.releaseBuffer(bounce);
    }
    if (++this.dispatchesInBatch >= this.dispatchesPerSubmit) this.submit();
  }

  /** Workgroup grid for a linear count: x up to the per-dimension limit, y the rest. Kernels use `workgroupIndex`. */
  grid(workgroups: number): [number, number] {
    const x = Math.min(workgroups, this.maxWorkgroupsPerDimension);
    const y = Math.ceil(workgroups / x);
    if (y > this.maxWorkgroupsPerDimension) throw new Error(`WebGPU dispatch of ${workgroups} workgroups is too large`);
    return [x, y];
  }

  /** The open encoder, outside any compute pass (for buffer copies). */
  commandEncoder(): GPUCommandEncoder {
    this.check();
    if (this.pass !== null) {
      this.pass.end();
      this.pass = null;
    }
    this.encoder ??= this.device.createCommandEncoder({ label: 'rank1 batch' });
    return this.encoder;
  }

  private openPass(): GPUComputePassEncoder {
    if (this.pass === null) {
      this.encoder ??= this.device.createCommandEncoder({ label: 'rank1 batch' });
      this.pass = this.encoder.beginComputePass();
    }
    return this.pass;
  }

  /** Submits the open batch (if any) and releases the buffers freed during it to the pool. */
  submit(): void {
    if (this.encoder === null) return;
    if (this.pass !== null) {
      this.pass.end();
      this.pass = null;
    }
    if (this.uniformUsed > 0) this.queue.writeBuffer(this.uniformBuffer, 0, this.uniformSlab, 0, this.uniformUsed);
    this.queue.submit([this.encoder.finish()]);
    this.encoder = null;
    this.dispatchesInBatch = 0;
    this.uniformUsed = 0;
    const freed = this.batchFrees;
    this.batchFrees = new Map();
    this.batchFreeBytes = 0;
    for (const buffers of freed.values()) for (const buffer of buffers) this.returnToPool(buffer);
  }

  async sync(): Promise<void> {
    this.check();
    this.submit();
    await this.waitOrLost(this.queue.onSubmittedWorkDone());
  }

  /**
   * Copies `byteLength` bytes at `byteOffset` (a multiple of 4) of `storage` back to the CPU, segment by segment.
   * Every segment's copy into its staging buffer is recorded and submitted before this returns: the caller may
   * free `storage` (or let a later kernel overwrite it) right after the call, since queue order puts any later
   * write behind the copy. Only the mapping is waited for.
   */
  readBytes(storage: WebGpuStorage, byteOffset: number, byteLength: number): Promise<ArrayBuffer> {
    const words = Math.max(4, roundUp(byteLength, 4));
    const staged: Array<{ span: ByteSpan; staging: GPUBuffer }> = [];
    try {
      for (const span of this.spans(storage, byteOffset, words)) {
        const staging = this.device.createBuffer({ size: span.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
        staged.push({ span, staging });
        this.copySpans([span], [{ buffer: staging, offset: 0, size: span.size }]);
      }
      this.submit();
    } catch (error) {
      for (const { staging } of staged) staging.destroy();
      return Promise.reject(error as Error);
    }
    return this.mapStaged(staged.map(({ staging }) => staging), byteLength);
  }

  /** The first `byteLength` bytes of the staging buffers, in order, once each is mapped; destroys them. */
  private async mapStaged(stagings: readonly GPUBuffer[], byteLength: number): Promise<ArrayBuffer> {
    const out = new Uint8Array(byteLength);
    try {
      let at = 0;
      for (const staging of stagings) {
        await this.waitOrLost(staging.mapAsync(GPUMapMode.READ));
        const part = new Uint8Array(staging.getMappedRange(), 0, Math.min(staging.size, byteLength - at));
        out.set(part, at);
        staging.unmap();
        at += staging.size;
      }
      return out.buffer;
    } finally {
      for (const staging of stagings) staging.destroy();
    }
  }
}

function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}

/** Bytes a storage of `numel` elements occupies: rounded up to whole 4-byte words, at least one. */
export function storageBytes(dtype: DType, numel: number): number {
  return Math.max(4, Math.ceil((numel * BYTES_PER_ELEMENT[dtype]) / 4) * 4);
}

function pushBucket(buckets: Map<number, GPUBuffer[]>, buffer: GPUBuffer): void {
  const list = buckets.get(buffer.size);
  if (list === undefined) buckets.set(buffer.size, [buffer]);
  else list.push(buffer);
}

export function asWebGpuStorage(storage: Storage): WebGpuStorage {
  if (storage.backend !== 'webgpu') throw new Error(`expected a webgpu storage, got a ${storage.backend} one`);
  return storage as WebGpuStorage;
}
