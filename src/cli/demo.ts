// `rank1 demo`: the engine end to end on a problem small enough to watch. A frozen two-layer network
// (bf16 weights, as a real checkpoint stores them) is taught a hidden rank-1 change by training only
// rank-1 LoRA adapters (A ∈ R^in, B ∈ R^out, rsLoRA scale alpha/sqrt(r) = 16, PEFT init), exactly the
// parametrisation rank1 trains on Qwen2. At the end the adapter's read-out direction A is compared with
// the hidden direction it had to find.
import type { Backend } from '../kernels/backend.ts';
import { AdamW } from '../train/adamw.ts';
import {
  Random, Tensor, add, backward, keep, linear, matmul, mean, mul, noGrad, randomNormalArray, randomUniformArray,
  requireGrad, reshape, silu, square, sub, tensor, tidy, zeroGrad, zeros,
} from '../tensor/index.ts';

export interface DemoOptions {
  backend: Backend;
  steps: number;
  seed: number;
  log: (line: string) => void;
}

interface RankOneAdapter {
  a: Tensor; // [in]   read-out direction: the adapter activation is A·x
  b: Tensor; // [out]  write direction
}

const LORA_SCALE = 16; // rsLoRA: alpha 16 / sqrt(r = 1)

/** y = W x + scale · B (A·x): the frozen projection plus its rank-1 adapter. */
function adaptedLinear(x: Tensor, weight: Tensor, adapter: RankOneAdapter): { y: Tensor; activation: Tensor } {
  const activation = matmul(x, reshape(adapter.a, [-1, 1])); // [N, 1] = A·x per row
  const update = matmul(activation, reshape(adapter.b, [1, -1])); // [N, out]
  return { y: add(linear(x, weight), mul(update, LORA_SCALE)), activation };
}

export async function runDemo({ backend, steps, seed, log }: DemoOptions): Promise<{ finalLoss: number; cosine: number }> {
  const rng = new Random(seed);
  const inputSize = 64;
  const hiddenSize = 128;
  const outputSize = 32;
  const batch = 256;
  const make = (data: Float32Array, shape: number[], dtype: 'f32' | 'bf16' = 'f32') => keep(tensor(data, shape, { backend, dtype }));

  // Frozen base, stored in bf16 and never widened as a whole.
  const w1 = make(randomNormalArray(hiddenSize * inputSize, rng, 1 / Math.sqrt(inputSize)), [hiddenSize, inputSize], 'bf16');
  const w2 = make(randomNormalArray(outputSize * hiddenSize, rng, 1 / Math.sqrt(hiddenSize)), [outputSize, hiddenSize], 'bf16');

  // The teacher adds a hidden rank-1 change to the first layer: W1 + u vᵀ.
  const hiddenRead = randomNormalArray(inputSize, rng);
  const norm = Math.hypot(...hiddenRead);
  hiddenRead.forEach((v, i) => (hiddenRead[i] = v / norm));
  const hiddenWrite = randomNormalArray(hiddenSize, rng, 0.5);
  const teacherDelta = make(Float32Array.from({ length: hiddenSize * inputSize }, (_, i) => hiddenWrite[Math.floor(i / inputSize)]! * hiddenRead[i % inputSize]!), [hiddenSize, inputSize]);

  const inputs = make(randomNormalArray(batch * inputSize, rng), [batch, inputSize]);
  const targets = keep(noGrad(() => tidy(() => linear(silu(add(linear(inputs, w1), linear(inputs, teacherDelta))), w2))));

  // PEFT init: A kaiming-uniform(a = sqrt 5) = U(-1/sqrt(in), 1/sqrt(in)); B zeros, so training starts at the base model.
  const adapters: RankOneAdapter[] = [
    { a: make(randomUniformArray(inputSize, rng, -1 / Math.sqrt(inputSize), 1 / Math.sqrt(inputSize)), [inputSize]), b: keep(zeros([hiddenSize], { backend })) },
    { a: make(randomUniformArray(hiddenSize, rng, -1 / Math.sqrt(hiddenSize), 1 / Math.sqrt(hiddenSize)), [hiddenSize]), b: keep(zeros([outputSize], { backend })) },
  ];
  const params = adapters.flatMap(({ a, b }) => [requireGrad(a), requireGrad(b)]);
  const frozen = w1.size + w2.size;
  const trainable = params.reduce((s, p) => s + p.size, 0);
  log(`frozen base: ${frozen} bf16 weights; trainable: ${trainable} adapter scalars (2 rank-1 adapters)`);

  const optimizer = new AdamW(params, { lr: 1e-2, weightDecay: 1e-4 });
  let finalLoss = NaN;
  const started = performance.now();
  for (let step = 1; step <= steps; step++) {
    const loss = tidy(() => {
      const first = adaptedLinear(inputs, w1, adapters[0]!);
      const second = adaptedLinear(silu(first.y), w2, adapters[1]!);
      return mean(square(sub(second.y, targets)));
    });
    backward(loss);
    if (step === 1 || step % Math.max(1, Math.floor(steps / 10)) === 0 || step === steps) {
      finalLoss = await loss.item();
      log(`step ${String(step).padStart(4)}  loss ${finalLoss.toExponential(3)}`);
    }
    loss.dispose();
    optimizer.step();
    zeroGrad(params);
  }
  const seconds = (performance.now() - started) / 1000;

  // The first adapter should read along the hidden direction (up to sign).
  const learned = await adapters[0]!.a.toFloat32Array();
  const learnedNorm = Math.hypot(...learned);
  const cosine = Math.abs(learned.reduce((s, v, i) => s + v * hiddenRead[i]!, 0)) / learnedNorm;
  log(`${steps} steps in ${seconds.toFixed(2)} s; |cos(A, hidden direction)| = ${cosine.toFixed(3)}`);
  const activations = await noGrad(() => tidy(() => adaptedLinear(inputs, w1, adapters[0]!).activation)).toFloat32Array();
  log(`adapter activation A·x on the first 5 inputs: ${Array.from(activations.slice(0, 5), (v) => v.toFixed(3)).join(', ')}`);

  for (const t of [w1, w2, teacherDelta, inputs, targets, ...params]) t.dispose();
  optimizer.dispose();
  return { finalLoss, cosine };
}
