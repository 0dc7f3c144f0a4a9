// Gradient checkpointing (activation recomputation): run a block without keeping its intermediates, and
// recompute them during backward. Memory for a transformer drops from every layer's activations to one
// [B, T, H] input per layer plus one layer's intermediates at a time. The kept input may be stored in bf16
// (half the bytes): the forward runs on the f32 input as always, so outputs and the loss are unchanged, and
// the backward recomputes from the input rounded to bf16 (8 significant bits), a relative change of at most
// 2^-9 per element in the point where the gradient is taken. The graph holds x's node (its gradient's route),
// not x's storage: a caller that frees x after the call (Qwen2Model.forward does) keeps only the saved copy.
// A block may end in a token-wise tail (a transformer layer's MLP sub-block): the tail then runs over chunks
// of `chunk` tokens in the forward and in backward, where only the head is recomputed as a whole and each
// chunk of the tail is recomputed and differentiated on its own, so the tail's intermediates ([T, I] for an
// MLP) never span all T tokens, and the tail is computed twice, as without chunks. A whole block may run in
// token chunks (checkpointTokenChunks, a transformer layer with its attention): each chunk reads a causal prefix
// of a token-wise context of the input (keys and values), the one thing that spans all T tokens.
// Offloaded (a CheckpointOffload given): the kept input goes to host memory instead. Its download is started
// when the block runs and the device copy freed at once (readRaw takes its copy when called); the caller
// awaits CheckpointOffload.settle between the forward and the backward, which then uploads each block's input
// for its recompute and lets it go, so the device holds no checkpoints, only the layer being differentiated.
import type { Backend, DType, FloatDType } from '../kernels/backend.ts';
import { Tensor, formatShape, tidy } from './tensor.ts';
import { backward, enableGrad, isGradEnabled, noGrad, record, requireGrad } from './autograd.ts';
import { add, cast, detach, slice } from './ops.ts';

/**
 * The token-wise last stage of a checkpointed block: y = fn(h), [B, t, ...] -> the same shape, where every
 * token is computed on its own (no mixing across axis 1); fn is given the offset of the chunk's first token.
 */
export interface TokenwiseTail {
  fn: (h: Tensor, tokenOffset: number) => Tensor;
  /** Tokens per chunk (a positive integer; chunk ≥ T is one chunk). */
  chunk: number;
}

/**
 * y = fn(x, constants), with fn's graph dropped after the forward and rebuilt in backward. fn must be
 * deterministic and read its parameters (leaves with requiresGrad, which outlive the step) from its
 * closure: their gradients are accumulated into .grad directly during the recomputation, and only x's
 * gradient flows on through the graph. Short-lived tensors fn reads (e.g. RoPE tables) must be passed as
 * `constants`, which are kept alive until backward. `hasParameters` tells whether fn holds trainable
 * leaves (so y needs a graph node even when x has none). `savedDtype` is the dtype x is kept in until
 * backward (default: x's own; 'bf16' halves it). With `tail`, y = tail(fn(x)), the tail run over token chunks.
 * With `offload`, x is kept in host memory (in savedDtype) rather than on the device; see CheckpointOffload.
 */
export function checkpoint(
  fn: (x: Tensor, constants: readonly Tensor[]) => Tensor, x: Tensor, constants: readonly Tensor[], hasParameters: boolean,
  savedDtype?: FloatDType, tail?: TokenwiseTail, offload?: CheckpointOffload,
): Tensor {
  if (tail && !(Number.isInteger(tail.chunk) && tail.chunk > 0)) throw new Error(`checkpoint: tail chunk must be a positive integer, got ${tail.chunk}`);
  const whole = (input: Tensor, saved: readonly Tensor[]) => (tail ? tailOverChunks(fn(input, saved), tail) : fn(input, saved));
  const recomputeBackward = (input: Tensor, saved: readonly Tensor[], grad: Tensor, needsInputGrad: boolean): Tensor | null => {
    if (needsInputGrad) requireGrad(input);
    const recomputed = enableGrad(() => fn(input, saved));
    if (recomputed.shape.join() !== grad.shape.join()) {
      throw new Error(`checkpoint: recomputation gave ${formatShape(recomputed.shape)}, forward gave ${formatShape(grad.shape)}`);
    }
    // With a tail, `recomputed` is the head's output (the tail keeps the shape), its gradient from the tail's chunks.
    const recomputedGrad = tail ? tailBackwardOverChunks(recomputed, grad, tail) : grad;
    if (recomputed.requiresGrad) backward(recomputed, { grad: recomputedGrad });
    if (recomputedGrad !== grad) recomputedGrad.dispose();
    recomputed.dispose();
    const inputGrad = input.grad;
    input.grad = null;
    return inputGrad;
  };
  return checkpointed(whole, recomputeBackward, x, constants, hasParameters, savedDtype, offload);
}

/**
 * A block computed in chunks of tokens, each reading a causal prefix of a token-wise context of the whole input
 * (a transformer layer: the context is every token's keys and values; each chunk of queries attends to the keys
 * of the tokens up to its own end, then runs the token-wise rest of the layer):
 * y[:, s:e] = fn(x[:, s:e], context(x)[:, 0:e], s).
 */
export interface TokenChunkedBlock {
  /** The context of x [B, t, ...], the tokens from tokenOffset on: [B, t, ...], every token on its own. */
  context: (x: Tensor, tokenOffset: number, constants: readonly Tensor[]) => Tensor;
  /** y [B, t, ...] (x's shape) of x [B, t, ...] at tokenOffset, given the context of tokens [0, tokenOffset + t). */
  fn: (x: Tensor, context: Tensor, tokenOffset: number, constants: readonly Tensor[]) => Tensor;
  /** Tokens per chunk (a positive integer). */
  chunk: number;
}

/**
 * checkpoint for a TokenChunkedBlock: the forward, and the recompute + backward, run one chunk of tokens at a
 * time, so no intermediate of x's width spans all T tokens; only the context ([B, T, ...], keys and values) and
 * its gradient do. In backward the context is recomputed without a graph and made a leaf; each chunk is then
 * recomputed and differentiated (its tokens' gradient, the context's accumulating over the chunks), and last
 * the context's own graph, chunk by chunk, with its summed gradient. Parameters take their gradients as in
 * checkpoint; savedDtype and offload as there.
 */
export function checkpointTokenChunks(
  block: TokenChunkedBlock, x: Tensor, constants: readonly Tensor[], hasParameters: boolean,
  savedDtype?: FloatDType, offload?: CheckpointOffload,
): Tensor {
  if (!(Number.isInteger(block.chunk) && block.chunk > 0)) throw new Error(`checkpointTokenChunks: chunk must be a positive integer, got ${block.chunk}`);
  const whole = (input: Tensor, saved: readonly Tensor[]) => noGrad(() => chunkedForward(input, block, saved));
  const recomputeBackward = (input: Tensor, saved: readonly Tensor[], grad: Tensor, needsInputGrad: boolean) => chunkedBackward(input, saved, grad, needsInputGrad, block);
  return checkpointed(whole, recomputeBackward, x, constants, hasParameters, savedDtype, offload);
}

/**
 * The checkpoint mechanics: y = run(x) without a graph, x kept (in savedDtype, or offloaded), and in backward
 * x restored and handed to recomputeBackward, which gives d loss / d x (null when not needed).
 */
function checkpointed(
  run: (x: Tensor, constants: readonly Tensor[]) => Tensor,
  recomputeBackward: (input: Tensor, constants: readonly Tensor[], grad: Tensor, needsInputGrad: boolean) => Tensor | null,
  x: Tensor, constants: readonly Tensor[], hasParameters: boolean, savedDtype?: FloatDType, offload?: CheckpointOffload,
): Tensor {
  if (!isGradEnabled() || (!x.requiresGrad && !hasParameters)) return run(x, constants);
  const inputDtype = x.dtype;
  // Offloaded, the download starts (and its device copy is freed) before the block runs, so its bytes are not
  // live beside the block's intermediates.
  const host = offload?.download(x, savedDtype ?? inputDtype);
  // A fresh handle even when fn returns a tensor it did not make (x, or a hook's replacement): the caller owns
  // the output and may dispose it once the next block has read it (the graph keeps x's node, not its storage).
  const output = noGrad(() => tidy(() => ownHandle(run(x, constants))));
  const kept = host ? null : savedDtype && savedDtype !== inputDtype ? noGrad(() => cast(x, savedDtype)) : x;
  const saved = kept ? [kept, ...constants] : constants;
  const result = record('checkpoint', output, [x], saved, (grad, savedTensors, needsGrad) => {
    const [savedInput, ...savedConstants] = host ? [null, ...savedTensors] : savedTensors;
    const input = host ? offload!.restore(host, inputDtype)
      : savedInput!.dtype === inputDtype ? detach(savedInput!) : cast(savedInput!, inputDtype);
    const inputGrad = recomputeBackward(input, savedConstants as Tensor[], grad, needsGrad[0]!);
    input.dispose();
    if (needsGrad[0]) return [inputGrad];
    inputGrad?.dispose();
    return [null];
  }, hasParameters);
  if (kept && kept !== x) kept.dispose();
  return result;
}

/** One block's input in host memory: its download under way, then its bytes until the backward takes them. */
export interface HostCheckpoint {
  readonly backend: Backend;
  readonly shape: readonly number[];
  readonly dtype: FloatDType;
  /** The bytes, once downloaded (null before, and after the backward has taken them). */
  data: Float32Array | Uint16Array | null;
  /** Why the download failed, if it did. */
  error: unknown;
  /** True once the backward has uploaded it again. */
  taken: boolean;
}

/**
 * The host memory of offloaded gradient checkpoints (Qwen2Model.offloadCheckpoints, --offload-checkpoints): a
 * forward's checkpointed blocks `download` their inputs through it; `settle`, awaited between the forward and
 * the backward, waits until every download has arrived; each block's backward then `restore`s its input to the
 * device and drops the host copy. The forward and the backward are synchronous and a download is not, hence
 * the await in between; a backward run before it throws rather than waiting or reading stale bytes. Meant for
 * a GPU backend; on the CPU backend it works, but host memory is the device's memory already.
 */
export class CheckpointOffload {
  /**
   * Downloads not yet arrived, and failed ones (until settle reports them). An arrived one leaves the set: its
   * bytes are then held only by its graph node, so a forward whose graph is dropped unsettled leaves nothing here.
   */
  private readonly pending = new Set<{ checkpoint: HostCheckpoint; arrived: Promise<void> }>();

  /** Downloads still on their way (or failed and not yet reported by settle). */
  get pendingCount(): number {
    return this.pending.size;
  }

  /** Starts copying x (as `dtype`) to host memory; no device bytes of it stay behind once this returns. */
  download(x: Tensor, dtype: DType): HostCheckpoint {
    if (dtype === 'i32') throw new Error(`checkpoint: only float inputs can be offloaded, got an i32 ${formatShape(x.shape)}`);
    const backend = x.backend;
    const checkpoint: HostCheckpoint = { backend, shape: [...x.shape], dtype, data: null, error: null, taken: false };
    const whole = x.dtype === dtype && x.isContiguous && x.offset === 0 && x.size === x.storage.numel;
    const storage = whole ? x.storage : backend.copy(x, dtype); // x [B, T, H] as `dtype`, contiguous
    let download: Promise<Float32Array | Uint16Array | Int32Array>;
    try {
      download = backend.readRaw(storage);
    } finally {
      if (!whole) backend.free(storage);
    }
    // The error is kept, not thrown here: settle reports it (an unawaited rejection would end the process).
    const entry = {
      checkpoint,
      arrived: download.then(
        (data) => {
          checkpoint.data = data as Float32Array | Uint16Array;
          this.pending.delete(entry);
        },
        (error: unknown) => { checkpoint.error = error; },
      ),
    };
    this.pending.add(entry);
    return checkpoint;
  }

  /** Waits until every checkpoint downloaded so far is in host memory; throws if a download failed. */
  async settle(): Promise<void> {
    const entries = [...this.pending];
    this.pending.clear();
    await Promise.all(entries.map((entry) => entry.arrived));
    const failed = entries.find((entry) => entry.checkpoint.error !== null);
    if (failed) {
      const { shape, error } = failed.checkpoint;
      throw new Error(`checkpoint: downloading an offloaded checkpoint ${formatShape(shape)} to host memory failed: ${String(error)}`, { cause: error });
    }
  }

  /** The checkpoint back on the device as a fresh `dtype` tensor (cast from its stored dtype); the host copy is dropped. */
  restore(checkpoint: HostCheckpoint, dtype: DType): Tensor {
    const { backend, shape, data } = checkpoint;
    if (checkpoint.taken) throw new Error(`checkpoint: the offloaded checkpoint ${formatShape(shape)} was already used by a backward`);
    if (data === null) {
      throw new Error(
        `checkpoint: the offloaded checkpoint ${formatShape(shape)} has not reached host memory: await the offload's settle() `
          + '(Qwen2Model.settleOffloadedCheckpoints()) between the forward and the backward when offloading checkpoints',
      );
    }
    checkpoint.data = null;
    checkpoint.taken = true;
    const uploaded = Tensor.fromStorage(backend, backend.upload(data, checkpoint.dtype), shape);
    if (checkpoint.dtype === dtype) return uploaded;
    const widened = noGrad(() => cast(uploaded, dtype));
    uploaded.dispose();
    return widened;
  }
}

/** The token ranges [start, end) of axis 1 in chunks of `chunk`. */
function tokenChunks(tokens: number, chunk: number): [number, number][] {
  const ranges: [number, number][] = [];
  for (let start = 0; start < tokens; start += chunk) ranges.push([start, Math.min(tokens, start + chunk)]);
  return ranges;
}

/** y = tail(h) [B, T, ...], one chunk of tokens at a time; no graph (the forward and inference). */
function tailOverChunks(h: Tensor, tail: TokenwiseTail): Tensor {
  const tokens = h.shape[1]!;
  if (tail.chunk >= tokens) return tail.fn(h, 0);
  return noGrad(() => overTokenChunks(tokens, tail.chunk, (start, end) => {
    const input = slice(h, 1, start, end);
    const part = tail.fn(input, start);
    if (part.shape.join() !== input.shape.join()) {
      throw new Error(`checkpoint: the token-wise tail turned ${formatShape(input.shape)} into ${formatShape(part.shape)}; it must keep the shape`);
    }
    return part;
  }));
}

/**
 * d loss / d h from d loss / d tail(h): each chunk of h is cut from the graph, run through the tail with grad
 * (the tail's parameters take their gradients here) and differentiated with its slice of `grad`.
 */
function tailBackwardOverChunks(h: Tensor, grad: Tensor, tail: TokenwiseTail): Tensor {
  const tokens = h.shape[1]!;
  const { out, write } = tokenBuffer(h.backend, h.shape);
  backwardOverChunks(h, tokenChunks(tokens, tail.chunk), grad, true, (part, start) => tail.fn(part, start), write);
  return out;
}

/**
 * For each token range [start, end) of x: a chunk cut from x's graph (a leaf taking a gradient when
 * `needsGrad`), y = run(chunk) with a graph, differentiated with grad[:, start:end] (parameters and any leaf
 * run reads take their gradients), and the chunk's own gradient handed to `take` with its range.
 */
function backwardOverChunks(
  x: Tensor, ranges: readonly [number, number][], grad: Tensor, needsGrad: boolean,
  run: (part: Tensor, start: number, end: number) => Tensor, take: (start: number, partGrad: Tensor, end: number) => void,
): void {
  for (const [start, end] of ranges) {
    tidy(() => {
      const part = needsGrad ? requireGrad(detach(slice(x, 1, start, end))) : detach(slice(x, 1, start, end));
      const y = enableGrad(() => run(part, start, end));
      if (y.requiresGrad) backward(y, { grad: slice(grad, 1, start, end) });
      const partGrad = part.grad;
      part.grad = null;
      if (partGrad) {
        take(start, partGrad, end);
        partGrad.dispose();
      }
    });
  }
}

/** A zero f32 [B, T, ...rest] tensor and a writer of [B, t, ...rest] chunks into it at a token offset. */
function tokenBuffer(backend: Backend, shape: readonly number[]): { out: Tensor; write: (start: number, part: Tensor) => void } {
  const out = Tensor.fromStorage(backend, backend.full(shape.reduce((a, b) => a * b, 1), 0, 'f32'), shape);
  const write = (start: number, part: Tensor) => {
    const window = out.view(part.shape, out.strides, start * out.strides[1]!);
    out.backend.assign(window, part);
    window.dispose();
  };
  return { out, write };
}

/** [B, T, ...] from part(start, end) [B, end - start, ...] for each chunk (no graph), the buffer shaped by the first. */
function overTokenChunks(tokens: number, chunk: number, part: (start: number, end: number) => Tensor): Tensor {
  let buffer: ReturnType<typeof tokenBuffer> | null = null;
  for (const [start, end] of tokenChunks(tokens, chunk)) {
    const y = tidy(() => part(start, end));
    buffer ??= tokenBuffer(y.backend, [y.shape[0]!, tokens, ...y.shape.slice(2)]);
    buffer.write(start, y);
    y.dispose();
  }
  return buffer!.out;
}

/** The context of every token, then y one chunk at a time (no graph). x [B, T, ...] -> y [B, T, ...]. */
function chunkedForward(x: Tensor, block: TokenChunkedBlock, constants: readonly Tensor[]): Tensor {
  const tokens = x.shape[1]!;
  const context = overTokenChunks(tokens, block.chunk, (start, end) => block.context(slice(x, 1, start, end), start, constants));
  const y = overTokenChunks(tokens, block.chunk, (start, end) => {
    const part = block.fn(slice(x, 1, start, end), slice(context, 1, 0, end), start, constants);
    if (part.shape.join() !== [x.shape[0], end - start, ...x.shape.slice(2)].join()) {
      throw new Error(`checkpointTokenChunks: the block turned ${formatShape(slice(x, 1, start, end).shape)} into ${formatShape(part.shape)}; it must keep the shape`);
    }
    return part;
  });
  context.dispose();
  return y;
}

/** d loss / d x of a TokenChunkedBlock from d loss / d y, recomputing it chunk by chunk (see checkpointTokenChunks). */
function chunkedBackward(input: Tensor, constants: readonly Tensor[], grad: Tensor, needsInputGrad: boolean, block: TokenChunkedBlock): Tensor | null {
  const tokens = input.shape[1]!;
  const ranges = tokenChunks(tokens, block.chunk);
  const context = requireGrad(noGrad(() => overTokenChunks(tokens, block.chunk, (start, end) => block.context(slice(input, 1, start, end), start, constants))));
  const { out: inputGrad, write } = tokenBuffer(input.backend, input.shape);
  backwardOverChunks(input, ranges, grad, needsInputGrad, (part, start, end) => block.fn(part, slice(context, 1, 0, end), start, constants), write);
  const contextGrad = context.grad;
  context.grad = null;
  context.dispose();
  if (contextGrad) {
    // The context's own graph, chunk by chunk, with the gradient its readers summed; x's share adds to what the chunks gave.
    backwardOverChunks(input, ranges, contextGrad, needsInputGrad, (part, start) => block.context(part, start, constants), (start, partGrad, end) => {
      write(start, noGrad(() => add(slice(inputGrad, 1, start, end), partGrad)));
    });
    contextGrad.dispose();
  }
  if (needsInputGrad) return inputGrad;
  inputGrad.dispose();
  return null;
}

/** A new view on t's storage, made in the current scope (t itself is left to whoever made it). */
function ownHandle(t: Tensor): Tensor {
  return t.view(t.shape, t.strides, t.offset);
}
