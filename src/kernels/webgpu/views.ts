// View geometry on the host: merging dimensions, the element span a range of a view touches, and the
// plans that split work so every binding stays under the binding limit.
//
// The binding-limit split: a kernel never binds more than WebGpuRuntime.maxBindingBytes of one storage.
// Elementwise kernels cut their iteration space into linear pieces [lo, hi) whose touched element span
// fits in every operand and stays inside one of its segments (`planLinearPieces`); row kernels cut their
// rows into chunks (`rowsPerChunk`, then WebGpuRuntime.rowChunks ends them at segment boundaries); each
// piece binds only its window (offset aligned down) and gets its operands' offsets relative to it.

export interface StridedLayout {
  shape: number[];
  /** One strides array per view, each as long as `shape`. */
  strides: number[][];
}

export function product(values: readonly number[]): number {
  let p = 1;
  for (const v of values) p *= v;
  return p;
}

export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let stride = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = stride;
    stride *= shape[i]!;
  }
  return strides;
}

/** Whether a view with this shape and strides is row-major contiguous (size-1 axes ignored). */
export function isContiguous(shape: readonly number[], strides: readonly number[]): boolean {
  let expected = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] === 1) continue;
    if (strides[i] !== expected) return false;
    expected *= shape[i]!;
  }
  return true;
}

/**
 * Drops size-1 axes and merges neighbours that every view walks as one (stride[i] = stride[i+1] * shape[i+1]),
 * so a contiguous or simply broadcast op runs as rank 1 or 2. Rank 0 becomes [1].
 */
export function collapseDims(shape: readonly number[], stridesPerView: readonly (readonly number[])[]): StridedLayout {
  const keep = shape.map((_, i) => i).filter((i) => shape[i] !== 1);
  const outShape: number[] = [];
  const outStrides: number[][] = stridesPerView.map(() => []);
  for (const axis of keep) {
    const size = shape[axis]!;
    const last = outShape.length - 1;
    const mergeable = last >= 0 && stridesPerView.every((strides, v) => outStrides[v]![last] === strides[axis]! * size);
    if (mergeable) {
      outShape[last]! *= size;
      stridesPerView.forEach((strides, v) => { outStrides[v]![last] = strides[axis]!; });
    } else {
      outShape.push(size);
      stridesPerView.forEach((strides, v) => outStrides[v]!.push(strides[axis]!));
    }
  }
  if (outShape.length === 0) return { shape: [1], strides: stridesPerView.map(() => [0]) };
  return { shape: outShape, strides: outStrides };
}

/** Smallest and largest element offset (inclusive) that linear indices [lo, hi) of a strided view touch. */
export function linearSpan(
  shape: readonly number[], strides: readonly number[], offset: number, lo: number, hi: number,
): [number, number] {
  const rank = shape.length;
  const inner = new Array<number>(rank + 1);
  const fullMin = new Array<number>(rank + 1);
  const fullMax = new Array<number>(rank + 1);
  inner[rank] = 1;
  fullMin[rank] = 0;
  fullMax[rank] = 0;
  for (let d = rank - 1; d >= 0; d--) {
    inner[d] = inner[d + 1]! * shape[d]!;
    const extent = (shape[d]! - 1) * strides[d]!;
    fullMin[d] = fullMin[d + 1]! + Math.min(0, extent);
    fullMax[d] = fullMax[d + 1]! + Math.max(0, extent);
  }
  const span = (d: number, a: number, b: number, base: number): [number, number] => {
    if (d === rank) return [base, base];
    if (a === 0 && b === inner[d]) return [base + fullMin[d]!, base + fullMax[d]!];
    const size = inner[d + 1]!;
    const stride = strides[d]!;
    const i0 = Math.floor(a / size);
    const i1 = Math.floor((b - 1) / size);
    if (i0 === i1) return span(d + 1, a - i0 * size, b - i0 * size, base + i0 * stride);
    const head = span(d + 1, a - i0 * size, size, base + i0 * stride);
    const tail = span(d + 1, 0, b - i1 * size, base + i1 * stride);
    let min = Math.min(head[0], tail[0]);
    let max = Math.max(head[1], tail[1]);
    if (i1 - i0 > 1) {
      const first = base + (i0 + 1) * stride;
      const last = base + (i1 - 1) * stride;
      min = Math.min(min, Math.min(first, last) + fullMin[d + 1]!);
      max = Math.max(max, Math.max(first, last) + fullMax[d + 1]!);
    }
    return [min, max];
  };
  return span(0, lo, hi, offset);
}

/**
 * Cuts [0, total) into the fewest pieces [lo, hi) for which `fits` holds: from each lo, the longest piece that
 * fits, found by bisection (`fits` is monotone: a shorter piece touches a sub-span of a longer one's, so it
 * fits the binding limit and stays inside a segment whenever the longer one does). `granule` keeps cut points
 * on multiples of it (2 when each thread writes a word holding two halves).
 */
export function planLinearPieces(
  total: number, granule: number, fits: (lo: number, hi: number) => boolean,
): Array<[number, number]> {
  const pieces: Array<[number, number]> = [];
  for (let lo = 0; lo < total;) {
    let hi = total;
    if (!fits(lo, total)) {
      let good = 0; // granules from lo known to fit
      let bad = Math.ceil((total - lo) / granule); // granules known not to
      while (bad - good > 1) {
        const mid = good + Math.floor((bad - good) / 2);
        if (fits(lo, lo + mid * granule)) good = mid;
        else bad = mid;
      }
      if (good === 0) {
        throw new Error(`WebGPU: elements [${lo}, ${Math.min(total, lo + granule)}) cannot be split to fit the binding limit`);
      }
      hi = lo + good * granule;
    }
    pieces.push([lo, hi]);
    lo = hi;
  }
  return pieces;
}

/** One operand of a row kernel: row r occupies elements [start + r*rowStride, start + r*rowStride + rowLength). */
export interface RowOperand {
  bytesPerElement: number;
  /** Bytes of the whole storage; operands that fit whole are bound whole and never limit the chunk. */
  storageBytes: number;
  rowStride: number;
  rowLength?: number;
}

/**
 * Rows per dispatch so each operand's window (rows * rowStride elements plus alignment slack) fits in
 * `maxBindingBytes`. Returns `rows` when everything fits.
 */
export function rowsPerChunk(rows: number, operands: readonly RowOperand[], maxBindingBytes: number, slack: number): number {
  let chunk = rows;
  for (const op of operands) {
    if (op.storageBytes <= maxBindingBytes) continue;
    const rowBytes = op.rowStride * op.bytesPerElement;
    const lastRowBytes = (op.rowLength ?? op.rowStride) * op.bytesPerElement;
    const fit = Math.floor((maxBindingBytes - slack - lastRowBytes) / Math.max(1, rowBytes)) + 1;
    if (fit < 1) throw new Error(`WebGPU: one row of ${lastRowBytes} bytes exceeds the ${maxBindingBytes}-byte binding limit`);
    chunk = Math.min(chunk, fit);
  }
  return Math.max(1, chunk);
}
