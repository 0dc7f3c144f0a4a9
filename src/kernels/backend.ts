// The one interface every device implements (candle's BackendStorage, tfjs's kernel registry).
//
// Conventions shared by every kernel on every backend:
//  - Element units everywhere: shapes, strides and offsets count elements, never bytes.
//  - Every kernel returns a fresh, contiguous storage; only `assign` and `adamwStep` write in place.
//  - Compute is f32. Storage may be f32, f16 or bf16 (frozen weights, read packed and widened inside the
//    kernel) or i32 (token ids, targets). Which inputs may be half precision is said per kernel; every other
//    float input is contiguous f32, which the ops layer (src/tensor/ops.ts) guarantees before it calls.
//  - Kernels are synchronous to enqueue. Only `read` waits, so a GPU backend never syncs per op.
//
// Legend for shape comments: R rows, C columns, B batch, T query tokens, S key tokens, H hidden,
// V vocab, nh query heads, kv key/value heads, hd head dim, M/N/K matmul sizes.

export type DType = 'f32' | 'f16' | 'bf16' | 'i32';
export type FloatDType = 'f32' | 'f16' | 'bf16';
export type BackendName = 'cpu' | 'webgpu';

export const BYTES_PER_ELEMENT: Record<DType, number> = { f32: 4, f16: 2, bf16: 2, i32: 4 };

/** A backend's handle on one allocation. Backends add their own fields (a typed array, a GPUBuffer). */
export interface Storage {
  readonly backend: BackendName;
  readonly dtype: DType;
  readonly numel: number;
}

/** A strided window on a storage: what a Tensor is, minus autograd. */
export interface View {
  readonly storage: Storage;
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  readonly offset: number;
}

export type UnaryOp =
  | 'neg' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'silu' | 'sigmoid' | 'abs' | 'square'
  | 'pow' // x ^ param
  | 'mulScalar' // x * param
  | 'addScalar'; // x + param

export type BinaryOp =
  | 'add' | 'sub' | 'mul' | 'div' | 'maximum'
  | 'eq' // 1 where a == b else 0
  | 'gt' // 1 where a > b else 0 (0 when either is NaN)
  | 'siluGrad'; // a = x, b = dy: dy * d/dx silu(x)

export type ReduceOp = 'sum' | 'max';

export interface MatmulParams {
  /** Number of matrices in the output. */
  batch: number;
  m: number;
  n: number;
  k: number;
  /** a holds [m, k] per batch, or [k, m] when transA. */
  transA: boolean;
  /** b holds [k, n] per batch, or [n, k] when transB (the Linear-weight layout). */
  transB: boolean;
  /** Elements between consecutive batch matrices; 0 broadcasts one matrix over the batch. */
  aBatchStride: number;
  bBatchStride: number;
}

export interface AttentionParams {
  batch: number;
  /** Query tokens. */
  tq: number;
  /** Key/value tokens. */
  tk: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** Usually headDim ** -0.5. */
  scale: number;
  /** Query t may attend to key s iff s <= t + causalOffset. tk - tq for a KV cache; Infinity: no mask. */
  causalOffset: number;
}

export interface AdamWParams {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step number, for bias correction. */
  step: number;
}

export interface MemoryStats {
  /** Bytes held by live storages. */
  liveBytes: number;
  /** Highest liveBytes seen since the backend was created or since resetPeak. */
  peakBytes: number;
  /** Bytes held in the backend's reuse pool (WebGPU), not counted in liveBytes. */
  pooledBytes: number;
  liveStorages: number;
}

export interface Backend {
  readonly name: BackendName;
  /** What the device is, for logs: "cpu (2 worker threads, wasm simd)", "webgpu (llvmpipe, vulkan)". */
  readonly description: string;

  // ---- memory -------------------------------------------------------------------------------
  /** A contiguous storage of `data`. f16/bf16 take their raw bit patterns as Uint16Array. */
  upload(data: Float32Array | Uint16Array | Int32Array, dtype: DType): Storage;
  /**
   * Like upload, but the backend may keep `data` itself instead of copying it (the CPU backend does): the
   * caller must not touch `data` afterwards. Loading a checkpoint this way holds each tensor once.
   */
  adopt(data: Float32Array | Uint16Array | Int32Array, dtype: DType): Storage;
  /** A contiguous storage filled with `value`. */
  full(numel: number, value: number, dtype: DType): Storage;
  /**
   * The elements of `view` in row-major order; floats widened to f32, i32 as Int32Array. Like readRaw, it
   * takes its copy when called (a GPU records and submits it then): the storage may be freed right after.
   */
  read(view: View): Promise<Float32Array | Int32Array>;
  /**
   * Raw storage bits (f16/bf16 as Uint16Array), e.g. for writing checkpoints without widening. The copy is
   * taken when called, only the wait is deferred: the caller may free the storage at once (offloaded
   * gradient checkpoints, src/tensor/checkpoint.ts, rely on it).
   */
  readRaw(storage: Storage): Promise<Float32Array | Uint16Array | Int32Array>;
  free(storage: Storage): void;
  /** Wait until every enqueued kernel has finished. */
  sync(): Promise<void>;
  memory(): MemoryStats;
  resetPeak(): void;

  // ---- layout -------------------------------------------------------------------------------
  /** Gather any strided view into a contiguous storage of `dtype` (casting as needed). */
  copy(x: View, dtype: DType): Storage;
  /** In place: dst[i] = src[i] elementwise over equal shapes; dst f32 or i32. */
  assign(dst: View, src: View): void;

  // ---- elementwise (inputs: any strided f32 view; the ops layer widens half inputs first) --
  unary(op: UnaryOp, x: View, param: number): Storage;
  /** a and b are already broadcast to outShape by their strides (stride 0 on broadcast axes). */
  binary(op: BinaryOp, a: View, b: View, outShape: readonly number[]): Storage;

  // ---- reductions ---------------------------------------------------------------------------
  /** x: contiguous f32 [outer, size, inner] -> [outer, inner]. */
  reduce(op: ReduceOp, x: Storage, outer: number, size: number, inner: number): Storage;

  // ---- linear algebra -----------------------------------------------------------------------
  /** a: contiguous f32 at aOffset; b: contiguous f32/f16/bf16 at bOffset -> [batch, m, n] f32. */
  matmul(a: Storage, aOffset: number, b: Storage, bOffset: number, p: MatmulParams): Storage;

  // ---- fused neural-network kernels (all inputs contiguous) ---------------------------------
  /** x [R, C] -> softmax or log-softmax over C. */
  softmax(x: Storage, rows: number, cols: number, log: boolean): Storage;
  /** y = forward output; dy [R, C] -> dx [R, C]. */
  softmaxBackward(y: Storage, dy: Storage, rows: number, cols: number, log: boolean): Storage;

  /** table [V, H] f32/f16/bf16, ids i32 [N] -> [N, H] f32. Ids out of range throw (CPU) or read zeros. */
  embedding(table: Storage, ids: Storage, vocab: number, hidden: number): Storage;
  /** dy [N, H], ids [N] -> dtable [V, H] (scatter-add). */
  embeddingBackward(dy: Storage, ids: Storage, vocab: number, hidden: number): Storage;

  /** x [R, H] f32, weight [H] any float -> y = w * x * rsqrt(mean(x^2) + eps), and rstd [R]. */
  rmsNorm(x: Storage, weight: Storage, rows: number, hidden: number, eps: number): { y: Storage; rstd: Storage };
  /** -> dx [R, H], dweight [H] (f32). */
  rmsNormBackward(
    dy: Storage, x: Storage, weight: Storage, rstd: Storage, rows: number, hidden: number,
  ): { dx: Storage; dweight: Storage };

  /**
   * Rotary embedding, Qwen/HF rotate-half convention, on x [B, T, nh, hd] with cos/sin [T, hd/2]:
   * y[..i] = x[i] cos - x[i + hd/2] sin, y[..i + hd/2] = x[i + hd/2] cos + x[i] sin.
   * inverse = true rotates by -angle (the backward).
   */
  rope(x: Storage, cos: Storage, sin: Storage, batch: number, tokens: number, heads: number, headDim: number,
    inverse: boolean): Storage;

  /** q [B, T, nh, hd], k/v [B, S, kv, hd] -> out [B, T, nh, hd], lse [B, nh, T] (log-sum-exp of scores). */
  attention(q: Storage, k: Storage, v: Storage, p: AttentionParams): { out: Storage; lse: Storage };
  attentionBackward(
    q: Storage, k: Storage, v: Storage, out: Storage, lse: Storage, dout: Storage, p: AttentionParams,
  ): { dq: Storage; dk: Storage; dv: Storage };

  /** x [R, C], a [C] -> [R] = x a: a LoRA adapter's read-out A·x per row, without a matmul's copies. */
  rowDot(x: Storage, a: Storage, rows: number, cols: number): Storage;
  /** x [R, C], a [C], du [R] -> dx [R, C] = du aᵀ, da [C] = xᵀ du. */
  rowDotBackward(x: Storage, a: Storage, du: Storage, rows: number, cols: number): { dx: Storage; da: Storage };
  /** base [R, C], u [R], v [C] -> base + u vᵀ: a rank-1 update (a LoRA adapter's (A·x) · scale·B, fused). */
  addOuter(base: Storage, u: Storage, v: Storage, rows: number, cols: number): Storage;
  /** dy [R, C], u [R], v [C] -> du [R] = dy v, dv [C] = dyᵀ u (the base's gradient is dy itself). */
  addOuterBackward(dy: Storage, u: Storage, v: Storage, rows: number, cols: number): { du: Storage; dv: Storage };

  /**
   * values [G, N] -> mask [G, N] (f32 0/1): 1 at the `count` largest values of each group of N, ties to the lower
   * index, so exactly min(count, N) ones per group (NaN ranks below every number). BatchTopK's selection.
   */
  topkMask(values: Storage, groups: number, size: number, count: number): Storage;
  /**
   * a [R, K], mask [R, K] (f32 0/1), w [K, N] -> (a ⊙ mask) w [R, N]: the product of a mostly masked-out left
   * operand (BatchTopK's selected latents times W_dec). A CPU visits only the mask's ones.
   */
  maskedMatmul(a: Storage, mask: Storage, w: Storage, rows: number, inner: number, cols: number): Storage;
  /** dy [R, N] -> da [R, K] = (dy wᵀ) ⊙ mask, dw [K, N] = (a ⊙ mask)ᵀ dy. */
  maskedMatmulBackward(
    a: Storage, mask: Storage, w: Storage, dy: Storage, rows: number, inner: number, cols: number,
  ): { da: Storage; dw: Storage };

  /** gate, up [n] -> silu(gate) * up. */
  swiglu(gate: Storage, up: Storage, n: number): Storage;
  swigluBackward(gate: Storage, up: Storage, dy: Storage, n: number): { dgate: Storage; dup: Storage };

  /**
   * logits [R, V], targets i32 [R], mask f32 [R] -> per-row loss [R] = mask * (logsumexp - logit[target]).
   */
  crossEntropy(logits: Storage, targets: Storage, mask: Storage, rows: number, vocab: number): Storage;
  /** dRow [R] (upstream grad of each row's loss, mask already applied) -> dlogits [R, V]. */
  crossEntropyBackward(logits: Storage, targets: Storage, dRow: Storage, rows: number, vocab: number): Storage;
  /**
   * Optional fusion of the two above where a caller needs both (the chunked loss): loss as crossEntropy and
   * dlogits as crossEntropyBackward with dRow = mask, from one max and one sum per row.
   */
  crossEntropyWithGrad?(logits: Storage, targets: Storage, mask: Storage, rows: number, vocab: number): { loss: Storage; dlogits: Storage };

  /** p, q logits [R, V] -> per-row KL(softmax(p) || softmax(q)) [R]. */
  klDiv(p: Storage, q: Storage, rows: number, vocab: number): Storage;
  klDivBackward(p: Storage, q: Storage, dRow: Storage, rows: number, vocab: number): { dp: Storage; dq: Storage };

  // ---- optimizer ----------------------------------------------------------------------------
  /** In place on param, m, v (all f32 [n]): one decoupled-weight-decay Adam step. */
  adamwStep(param: Storage, grad: Storage, m: Storage, v: Storage, n: number, p: AdamWParams): void;
}
