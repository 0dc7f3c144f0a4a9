// Gradient checkpointing (activation recomputation): run a block without keeping its intermediates, and
// recompute them during backward. Memory for a transformer drops from every layer's activations to one
// [B, T, H] input per layer plus one layer's intermediates at a time. The kept input may be stored in bf16
// (half the bytes): the forward runs on the f32 input as always, so outputs and the loss are unchanged, and
// the backward recomputes from the input rounded to bf16 (8 significant bits), a relative change of at most
// 2^-9 per element in the point where the gradient is taken. The graph holds x's node (its gradient's route),
// not x's storage: a caller that frees x after the call (Qwen2Model.forward does) keeps only the saved copy.
import type { FloatDType } from '../kernels/backend.ts';
import { Tensor, formatShape, tidy } from './tensor.ts';
import { backward, enableGrad, isGradEnabled, noGrad, record, requireGrad } from './autograd.ts';
import { cast, detach } from './ops.ts';

/**
 * y = fn(x, constants), with fn's graph dropped after the forward and rebuilt in backward. fn must be
 * deterministic and read its parameters (leaves with requiresGrad, which outlive the step) from its
 * closure: their gradients are accumulated into .grad directly during the recomputation, and only x's
 * gradient flows on through the graph. Short-lived tensors fn reads (e.g. RoPE tables) must be passed as
 * `constants`, which are kept alive until backward. `hasParameters` tells whether fn holds trainable
 * leaves (so y needs a graph node even when x has none). `savedDtype` is the dtype x is kept in until
 * backward (default: x's own; 'bf16' halves it).
 */
export function checkpoint(
  fn: (x: Tensor, constants: readonly Tensor[]) => Tensor, x: Tensor, constants: readonly Tensor[], hasParameters: boolean,
  savedDtype?: FloatDType,
): Tensor {
  if (!isGradEnabled() || (!x.requiresGrad && !hasParameters)) return fn(x, constants);
  // A fresh handle even when fn returns a tensor it did not make (x, or a hook's replacement): the caller owns
  // the output and may dispose it once the next block has read it (the graph keeps x's node, not its storage).
  const output = noGrad(() => tidy(() => ownHandle(fn(x, constants))));
  const inputDtype = x.dtype;
  const kept = savedDtype && savedDtype !== inputDtype ? noGrad(() => cast(x, savedDtype)) : x;
  const result = record('checkpoint', output, [x], [kept, ...constants], (grad, [savedInput, ...savedConstants], needsGrad) => {
    const input = savedInput!.dtype === inputDtype ? detach(savedInput!) : cast(savedInput!, inputDtype);
    if (needsGrad[0]) requireGrad(input);
    const recomputed = enableGrad(() => fn(input, savedConstants as Tensor[]));
    if (recomputed.shape.join() !== grad.shape.join()) {
      throw new Error(`checkpoint: recomputation gave ${formatShape(recomputed.shape)}, forward gave ${formatShape(grad.shape)}`);
    }
    if (recomputed.requiresGrad) backward(recomputed, { grad });
    recomputed.dispose();
    const inputGrad = input.grad;
    input.grad = null;
    input.dispose();
    return [needsGrad[0] ? inputGrad : null];
  }, hasParameters);
  if (kept !== x) kept.dispose();
  return result;
}

/** A new view on t's storage, made in the current scope (t itself is left to whoever made it). */
function ownHandle(t: Tensor): Tensor {
  return t.view(t.shape, t.strides, t.offset);
}
