// Reuse of freed f32 output arrays on the CPU backend. A fresh large typed array costs its page faults on
// first touch (~1 µs per 4 KiB page here: 2 ms for a [512, 3584] f32 output, as much as the add that fills
// it), and a training step allocates and frees the same sizes every step. Kernels take their outputs from
// here; the backend's free() hands an array back only if this pool gave it out (never an adopted or sliced
// one, so nothing the caller still holds is reused), and only f32 (the matmul keeps f16/bf16 arrays resident
// by identity). Arrays below POOL_MIN_ELEMENTS are left to the allocator: they are cheap.

/** Smallest array worth keeping (256 KiB). */
const POOL_MIN_ELEMENTS = 1 << 16;
/** Most bytes kept for reuse; beyond it the arrays of the lengths longest unused go to the garbage collector. */
const POOL_MAX_BYTES = 256 * 1024 * 1024;

/** Freed arrays by length. */
const free = new Map<number, Float32Array[]>();
/** Arrays this pool handed out and has not taken back: the only ones release() keeps. */
const handedOut = new WeakSet<Float32Array>();
let keptBytes = 0;

/**
 * Marks length `numel` as just used: the map keeps lengths in order of last use (a take or a release), so its
 * first lengths are the ones longest unused, which eviction drops first. An emptied length leaves the map.
 */
function touch(numel: number, list: Float32Array[]): void {
  free.delete(numel);
  if (list.length > 0) free.set(numel, list);
}

function take(numel: number): Float32Array | undefined {
  const list = free.get(numel);
  const array = list?.pop();
  if (!array) return undefined;
  touch(numel, list!);
  keptBytes -= array.byteLength;
  return array;
}

/** Drops kept arrays of the lengths longest unused until `bytes` more fit under POOL_MAX_BYTES. */
function makeRoom(bytes: number): void {
  for (const [numel, list] of free) {
    if (keptBytes + bytes <= POOL_MAX_BYTES) return;
    while (list.length > 0 && keptBytes + bytes > POOL_MAX_BYTES) keptBytes -= list.pop()!.byteLength;
    if (list.length === 0) free.delete(numel);
  }
}

/**
 * An f32 array of `numel` elements whose previous contents are arbitrary: only for a caller that writes every
 * element before anything reads it.
 */
export function allocateF32Overwritten(numel: number): Float32Array {
  if (numel < POOL_MIN_ELEMENTS) return new Float32Array(numel);
  const array = take(numel) ?? new Float32Array(numel);
  handedOut.add(array);
  return array;
}

/** An f32 array of `numel` zeros (as new Float32Array(numel)), reused when one of that length was freed. */
export function allocateF32(numel: number): Float32Array {
  if (numel < POOL_MIN_ELEMENTS) return new Float32Array(numel);
  const reused = take(numel);
  const array = reused ? reused.fill(0) : new Float32Array(numel);
  handedOut.add(array);
  return array;
}

/** Takes back an array whose storage was freed; arrays the pool did not hand out are ignored. */
export function releaseF32(array: Float32Array): void {
  if (!handedOut.has(array)) return;
  handedOut.delete(array);
  if (array.byteLength > POOL_MAX_BYTES) return;
  makeRoom(array.byteLength);
  const list = free.get(array.length) ?? [];
  list.push(array);
  touch(array.length, list);
  keptBytes += array.byteLength;
}

/** Bytes held for reuse (the backend's memory().pooledBytes). */
export function pooledF32Bytes(): number {
  return keptBytes;
}
