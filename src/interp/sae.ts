// A BatchTopK sparse autoencoder over the whole adapter state (the paper's SAE: 7·L inputs, 8× latents, k 16),
// trained on rank1's tensor engine. Legend: B batch, d inputs, F latents.
//
//   standard (dictionary_learning's BatchTopK, the default):
//     pre  = (x − b_dec) W_enc + b_enc                                      [B, F]
//     keep the k·B largest pre · ‖W_dec[f]‖ over the whole batch, then ReLU  f [B, F]
//     x̂    = f W_dec + b_dec                                                [B, d]
//     loss = mean_b ‖x − x̂‖² + 1/32 · L_aux
//     L_aux: the residual e = x − x̂ (no gradient) reconstructed from the top d/2 dead latents of each row
//            (dead: no fire in the last `deadAfterTokens` tokens), ‖e − ê‖² over ‖e − ē‖², batch means.
//     W_dec starts as random unit rows and W_enc as its transpose; b_dec at the geometric median of the
//     first batch; after every Adam step W_dec's rows are renormalised (the gradient's component along each
//     row removed first). Inference: a per-token threshold, the running mean (β 0.999) of the smallest
//     selected activation, or batch top-k.
//   paper (the paper's code, `--variant paper`): no ReLU, no b_dec subtracted before the encoder, the
//     decoder never renormalised, selection by pre · ‖W_dec[f]‖, and batch top-k at inference too.
// The two differ only in SAE_VARIANTS' rules; the steps below read the rules, never the variant's name.
import type { Backend } from '../kernels/backend.ts';
import { Random, randomUniformArray } from '../tensor/random.ts';
import {
  add, cat, detach, div, greater, matmul, maskedMatmul, max, maximum, mean, mul, neg, relu, reshape, sqrt, square, sub, sum, tensor, topkMask,
} from '../tensor/ops.ts';
import { keep, tidy, type Tensor } from '../tensor/tensor.ts';
import { backward, noGrad, requireGrad, zeroGrad } from '../tensor/autograd.ts';
import { AdamW } from '../train/adamw.ts';
import { clipGradNorm } from '../train/clip.ts';

export type SaeVariant = 'standard' | 'paper';
export type SaeInference = 'threshold' | 'batch';

/** What a variant decides: everything else (selection, losses, bookkeeping) is shared. */
export interface SaeVariantRules {
  /** Subtract b_dec from x before the encoder. */
  subtractDecoderBias: boolean;
  /** What a selected latent holds: ReLU(pre) (true), or pre itself (negative latents survive). */
  relu: boolean;
  /** b_dec starts at the geometric median of the first batch (else at 0). */
  decoderBiasFromData: boolean;
  /** W_dec's rows kept at unit norm: each row's gradient component along it removed before the step, rows rescaled after. */
  unitNormDecoder: boolean;
  /** Global gradient-norm clip before the Adam step (clip_grad_norm_), or null for none. */
  maxGradNorm: number | null;
  /** Inference when none is named: the per-token threshold, or batch top-k. */
  inference: SaeInference;
}

/**
 * Gradient clipping: neither variant clips. dictionary_learning's BatchTopKTrainer.update calls
 * clip_grad_norm_(parameters, 1.0) after removing the decoder's parallel gradient; rank1's standard variant
 * never has, so in this one respect it is not dictionary_learning's trainer. Why it stays off: Adam divides
 * each coordinate by its running RMS, so clipping only changes steps whose global norm exceeds 1, and on
 * synthetic sparse data like the tests' those are only the first 7–29 steps, while the SAE first fits the
 * data's scale (measured for issue 16); after that the norm stays below 1 (median 0.26–0.45). Switching it on
 * would change those steps, through Adam's moments every later weight, and so every seeded run trained so far.
 * `maxGradNorm: 1` matches dictionary_learning (applied where it applies it: after the parallel component is
 * removed, before the Adam step).
 */
export const SAE_VARIANTS: Record<SaeVariant, SaeVariantRules> = {
  standard: { subtractDecoderBias: true, relu: true, decoderBiasFromData: true, unitNormDecoder: true, maxGradNorm: null, inference: 'threshold' },
  paper: { subtractDecoderBias: false, relu: false, decoderBiasFromData: false, unitNormDecoder: false, maxGradNorm: null, inference: 'batch' },
};

export interface SaeConfig {
  /** Inputs per token (7·L adapter activations). */
  d: number;
  /** Latents F = expansion · d. */
  latents: number;
  /** Active latents per token on average (k·B per batch). */
  k: number;
  variant: SaeVariant;
  /** Coefficient of the auxiliary dead-latent loss (1/32). */
  auxCoefficient: number;
  /** Latents reconstructing the residual per row in the auxiliary loss (d/2, dictionary_learning's). */
  auxK: number;
  /** A latent is dead after this many tokens without firing (1e6). */
  deadAfterTokens: number;
  /** Running-mean factor of the inference threshold (0.999). */
  thresholdBeta: number;
  /** Step from which the threshold is tracked (early steps are noisy). */
  thresholdStartStep: number;
}

export function defaultSaeConfig(d: number, options: Partial<SaeConfig> & { expansion?: number } = {}): SaeConfig {
  const { expansion = 8, ...rest } = options;
  return {
    d, latents: expansion * d, k: 16, variant: 'standard', auxCoefficient: 1 / 32, auxK: Math.max(1, Math.floor(d / 2)),
    deadAfterTokens: 1_000_000, thresholdBeta: 0.999, thresholdStartStep: 1000, ...rest,
  };
}

export interface SaeStepStats {
  loss: number;
  mse: number;
  aux: number;
  /** Latents with no fire in the last deadAfterTokens tokens, after this step. */
  dead: number;
  /** Mean non-zero latents per token in this batch. */
  l0: number;
}

/** The trainable state and bookkeeping of a BatchTopK SAE. */
export class BatchTopKSae {
  /** [d, F] */
  readonly wEnc: Tensor;
  /** [F] */
  readonly bEnc: Tensor;
  /** [F, d] */
  readonly wDec: Tensor;
  /** [d] */
  readonly bDec: Tensor;
  /** Per latent: tokens seen since it last fired. */
  readonly tokensSinceFired: Float64Array;
  /** Inference threshold; −1 until tracked. */
  threshold = -1;
  steps = 0;
  /** Whether b_dec has been set (at the geometric median of the first batch, or from saved weights). */
  biasInitialized = false;
  /** The variant's rules (SAE_VARIANTS[config.variant]). */
  readonly variant: SaeVariantRules;

  constructor(readonly config: SaeConfig, readonly backend: Backend, seed: number, weights?: { wEnc: Float32Array; bEnc: Float32Array; wDec: Float32Array; bDec: Float32Array }) {
    const { d, latents: F } = config;
    if (!Number.isInteger(d) || d < 1 || !Number.isInteger(F) || F < 1) throw new RangeError(`SAE: d and latents must be positive integers, got ${d}, ${F}`);
    if (!Number.isInteger(config.k) || config.k < 1 || config.k > F) throw new RangeError(`SAE: k must be an integer in [1, ${F}], got ${config.k}`);
    const variant = SAE_VARIANTS[config.variant];
    if (!variant) throw new RangeError(`SAE: variant must be ${Object.keys(SAE_VARIANTS).join(' or ')}, got ${JSON.stringify(config.variant)}`);
    this.variant = variant;
    let wDec: Float32Array;
    let wEnc: Float32Array;
    if (weights) {
      wDec = weights.wDec;
      wEnc = weights.wEnc;
      this.biasInitialized = true;
    } else {
      // nn.Linear's default init for the decoder (U(±1/sqrt(F))), rows scaled to unit norm; W_enc = W_decᵀ.
      wDec = randomUniformArray(F * d, new Random(seed), -1 / Math.sqrt(F), 1 / Math.sqrt(F));
      for (let f = 0; f < F; f++) {
        let norm = 0;
        for (let j = 0; j < d; j++) norm += wDec[f * d + j]! ** 2;
        const scale = 1 / Math.max(Math.sqrt(norm), 1e-12);
        for (let j = 0; j < d; j++) wDec[f * d + j]! *= scale;
      }
      wEnc = new Float32Array(d * F);
      for (let f = 0; f < F; f++) for (let j = 0; j < d; j++) wEnc[j * F + f] = wDec[f * d + j]!;
    }
    const param = (data: Float32Array, shape: number[], name: string) => {
      const t = requireGrad(keep(tensor(data, shape, { backend })));
      t.name = name;
      return t;
    };
    this.wEnc = param(wEnc, [d, F], 'W_enc');
    this.bEnc = param(weights?.bEnc ?? new Float32Array(F), [F], 'b_enc');
    this.wDec = param(wDec, [F, d], 'W_dec');
    this.bDec = param(weights?.bDec ?? new Float32Array(d), [d], 'b_dec');
    this.tokensSinceFired = new Float64Array(F);
  }

  parameters(): Tensor[] {
    return [this.wEnc, this.bEnc, this.wDec, this.bDec];
  }

  /** ‖W_dec[f]‖ [F]. */
  decoderNorms(): Tensor {
    return sqrt(sum(square(this.wDec), -1));
  }

  /** Pre-activations (x − b_dec) W_enc + b_enc, or x W_enc + b_enc for the paper's variant: x [B, d] -> [B, F]. */
  preActivations(x: Tensor): Tensor {
    if (!this.variant.subtractDecoderBias) return add(matmul(x, this.wEnc), this.bEnc);
    // (x − b_dec) W_enc + b_enc as x W_enc + (b_enc − b_dec W_enc): b_dec's gradient is then a [1, F] × [F, d]
    // product instead of a [B, F] × [F, d] one (x itself needs no gradient).
    return add(matmul(x, this.wEnc), sub(this.bEnc, matmul(reshape(this.bDec, [1, this.config.d]), this.wEnc)));
  }

  /** What a latent holds: ReLU(pre), or pre itself in the paper's variant. pre [B, F]. */
  private activation(pre: Tensor): Tensor {
    return this.variant.relu ? relu(pre) : pre;
  }

  /** Latents [B, F] with batch top-k selection (training, and the paper's inference). */
  encodeBatchTopK(x: Tensor): { latents: Tensor; pre: Tensor; mask: Tensor } {
    const { pre, mask } = this.selectBatchTopK(x);
    return { latents: mul(this.activation(pre), mask), pre, mask };
  }

  /**
   * BatchTopK's parts without the [B, F] product: pre-activations, the selection scores pre · ‖W_dec‖ and the
   * 0/1 mask of the k·B largest: latents = activation(pre) ⊙ mask.
   */
  private selectBatchTopK(x: Tensor): { pre: Tensor; scores: Tensor; mask: Tensor } {
    const batch = x.shape[0]!;
    const pre = this.preActivations(x);
    const scores = noGrad(() => mul(pre, this.decoderNorms()));
    const mask = noGrad(() => topkMask(scores, this.config.k * batch, 'all'));
    return { pre, scores, mask };
  }

  /** Latents [B, F] for per-token use: ReLU(pre) where pre · ‖W_dec‖ exceeds the learned threshold. */
  encodeThreshold(x: Tensor): Tensor {
    if (this.threshold < 0) throw new Error('SAE: no inference threshold has been learned yet (train longer, or use batch inference)');
    const pre = this.preActivations(x);
    const gate = noGrad(() => stepAbove(mul(pre, this.decoderNorms()), this.threshold));
    return mul(this.activation(pre), gate);
  }

  encode(x: Tensor, inference: SaeInference = this.variant.inference): Tensor {
    return inference === 'batch' ? this.encodeBatchTopK(x).latents : this.encodeThreshold(x);
  }

  /** x̂ = f W_dec + b_dec: latents [B, F] -> [B, d]. */
  decode(latents: Tensor): Tensor {
    return add(matmul(latents, this.wDec), this.bDec);
  }

  /** b_dec at the geometric median of the first batch (Weiszfeld iterations), as dictionary_learning starts it. */
  private async initializeDecoderBias(x: Float32Array, rows: number): Promise<void> {
    const d = this.config.d;
    const median = new Float64Array(d);
    for (let r = 0; r < rows; r++) for (let j = 0; j < d; j++) median[j]! += x[r * d + j]! / rows;
    for (let iteration = 0; iteration < 100; iteration++) {
      const next = new Float64Array(d);
      let weights = 0;
      for (let r = 0; r < rows; r++) {
        let dist = 0;
        for (let j = 0; j < d; j++) dist += (x[r * d + j]! - median[j]!) ** 2;
        const w = 1 / Math.max(Math.sqrt(dist), 1e-8);
        weights += w;
        for (let j = 0; j < d; j++) next[j]! += w * x[r * d + j]!;
      }
      let moved = 0;
      for (let j = 0; j < d; j++) {
        next[j]! /= weights;
        moved += (next[j]! - median[j]!) ** 2;
        median[j] = next[j]!;
      }
      if (Math.sqrt(moved) < 1e-6) break;
    }
    this.backend.assign(this.bDec, tensor(Float32Array.from(median), [d], { backend: this.backend }));
  }

  /** Dead latents now: those that have not fired for deadAfterTokens tokens. */
  get deadCount(): number {
    let dead = 0;
    for (const t of this.tokensSinceFired) if (t >= this.config.deadAfterTokens) dead++;
    return dead;
  }

  /** The dead latents as a 0/1 row [F] (for the auxiliary loss) and their count. */
  private deadLatents(): { mask: Float32Array; count: number } {
    const mask = new Float32Array(this.config.latents);
    let count = 0;
    for (let f = 0; f < mask.length; f++) if (this.tokensSinceFired[f]! >= this.config.deadAfterTokens) { mask[f] = 1; count++; }
    return { mask, count };
  }

  /**
   * L_aux (dictionary_learning's get_auxiliary_loss): the residual e = x − x̂ (no gradient) reconstructed from
   * the auxK largest dead latents of each row, without b_dec: ‖e − ê‖² over ‖e − ē‖², batch means. null when no
   * latent is dead. pre [B, F]; error [B, d]; dead [F] 0/1.
   */
  private auxiliaryLoss(pre: Tensor, error: Tensor, dead: { mask: Float32Array; count: number }): Tensor | null {
    if (dead.count === 0) return null;
    const F = this.config.latents;
    const kAux = Math.min(this.config.auxK, dead.count);
    const deadRow = tensor(dead.mask, [1, F], { backend: this.backend });
    // Only dead latents compete: the live ones are pushed 1e30 below (dead ones keep pre exactly, + 0).
    const deadScores = noGrad(() => add(pre, mul(sub(deadRow, 1), 1e30)));
    // The selected dead latents, with ReLU folded in as for the main decoder (see loss): those with pre > 0
    // (deadScores > 0 holds exactly there, as live scores are ≈ −1e30); without ReLU, the dead ones.
    const auxMask = noGrad(() => mul(topkMask(deadScores, kAux, 'row'), this.variant.relu ? greater(deadScores, 0) : deadRow));
    const residual = detach(error);
    const residualHat = maskedMatmul(pre, auxMask, this.wDec);
    const centered = sub(residual, mean(residual, 0, true));
    const variance = noGrad(() => maximum(mean(sum(square(centered), -1)), 1e-12));
    return div(mean(sum(square(sub(residual, residualHat)), -1)), variance);
  }

  /**
   * The loss on x [B, d] — mean ‖x − x̂‖² + auxCoefficient · L_aux — and, in one tensor so the step reads back
   * once, what the host needs: [mse, aux, fired per latent (F), smallest firing score, loss].
   */
  private loss(input: Tensor, dead: { mask: Float32Array; count: number }): { loss: Tensor; stats: Tensor } {
    const { pre, scores, mask } = this.selectBatchTopK(input);
    // A latent fires where it is selected with a positive score (= a positive latent, as ‖W_dec[f]‖ > 0).
    const selectedScores = noGrad(() => mul(scores, mask)); // [B, F], 0 where not selected
    const firing = noGrad(() => greater(selectedScores, 0));
    // x̂ = (activation(pre) ⊙ mask) W_dec + b_dec, visiting only the k·B selected latents (not a dense [B, F]
    // product). With ReLU, ReLU(pre) ⊙ mask = pre ⊙ firing: the ReLU folds into the mask, so no dense ReLU is
    // made forward or backward, and the gradient reaches pre only where it fires, as through the ReLU. (A row of
    // W_dec that is exactly 0, whose latents never fire, would get no gradient here; the rows are unit norm.)
    const reconstruction = add(maskedMatmul(pre, this.variant.relu ? firing : mask, this.wDec), this.bDec);
    const error = sub(input, reconstruction);
    const mse = mean(sum(square(error), -1));
    const aux = this.config.auxCoefficient > 0 ? this.auxiliaryLoss(pre, error, dead) : null;
    const total = aux ? add(mse, mul(aux, this.config.auxCoefficient)) : mse;
    const positive = noGrad(() => sum(firing, 0)); // [F]: times it fired
    // The smallest firing score, for the inference threshold (NONE_FIRED when none): min = −max(p − s), with
    // p = NONE_FIRED·firing − NONE_FIRED (0 where firing, −NONE_FIRED elsewhere, both exact): p − s is −s where
    // firing and −NONE_FIRED elsewhere (a score is far below NONE_FIRED's last bit).
    const minSelected = noGrad(() => neg(max(sub(add(mul(firing, NONE_FIRED), -NONE_FIRED), selectedScores))));
    const stats = noGrad(() => cat([reshape(mse, [1]), reshape(aux ?? mul(mse, 0), [1]), positive, reshape(minSelected, [1]), reshape(total, [1])], 0));
    return { loss: keep(total), stats: keep(stats) };
  }

  /** The optimizer step with the variant's gradient rules around it. */
  private update(optimizer: AdamW, lr: number): void {
    if (this.variant.unitNormDecoder) this.removeParallelDecoderGradient();
    if (this.variant.maxGradNorm !== null) clipGradNorm(this.parameters(), this.variant.maxGradNorm)?.dispose();
    optimizer.step(lr);
    if (this.variant.unitNormDecoder) this.normalizeDecoder();
  }

  /** Tokens since each latent last fired, after a batch of `rows` tokens in which latent f fired fired[f] times. */
  private recordFiring(fired: Float32Array, rows: number): void {
    for (let f = 0; f < fired.length; f++) {
      if (fired[f]! > 0) this.tokensSinceFired[f] = 0;
      else this.tokensSinceFired[f]! += rows;
    }
  }

  /** The inference threshold: a running mean (β) of the smallest firing score, from thresholdStartStep on. */
  private trackThreshold(smallest: number): void {
    if (this.steps >= this.config.thresholdStartStep && smallest < NONE_FIRED / 2) {
      const beta = this.config.thresholdBeta;
      this.threshold = this.threshold < 0 ? smallest : beta * this.threshold + (1 - beta) * smallest;
    }
  }

  /**
   * One training step on x [B, d] (host rows): forward, loss, backward, Adam step at `lr` (with the variant's
   * decoder rules), dead-latent and threshold bookkeeping.
   */
  async trainStep(x: Float32Array, rows: number, optimizer: AdamW, lr: number): Promise<SaeStepStats> {
    const { d, latents: F } = this.config;
    if (x.length !== rows * d) throw new Error(`SAE: batch holds ${x.length} values, expected [${rows}, ${d}]`);
    if (!this.biasInitialized && this.variant.decoderBiasFromData) await this.initializeDecoderBias(x, rows);
    this.biasInitialized = true;
    const input = keep(tensor(x, [rows, d], { backend: this.backend }));
    const dead = this.deadLatents();
    zeroGrad(this.parameters());
    const { loss, stats } = tidy(() => this.loss(input, dead));
    backward(loss);
    this.update(optimizer, lr);
    const host = await stats.toFloat32Array();
    loss.dispose();
    stats.dispose();
    input.dispose();
    const fired = host.subarray(2, 2 + F);
    this.recordFiring(fired, rows);
    this.steps++;
    this.trackThreshold(host[2 + F]!);
    let nonZero = 0;
    for (const times of fired) nonZero += times;
    return { loss: host[3 + F]!, mse: host[0]!, aux: host[1]!, dead: this.deadCount, l0: nonZero / rows };
  }

  /** W_dec's gradient without its component along each (unit) row: the step then keeps rows near unit norm. */
  private removeParallelDecoderGradient(): void {
    const grad = this.wDec.grad;
    if (!grad) return;
    // The new gradient replaces the old one (no copy back into it).
    this.wDec.grad = noGrad(() => tidy(() => {
      const along = sum(mul(grad, this.wDec), -1, true); // [F, 1]
      return keep(sub(grad, mul(along, this.wDec)));
    }));
    grad.dispose();
  }

  /** Rows of W_dec scaled back to unit norm. */
  normalizeDecoder(): void {
    noGrad(() => {
      const normalized = tidy(() => keep(div(this.wDec, reshape(maximum(this.decoderNorms(), 1e-12), [this.config.latents, 1]))));
      this.backend.assign(this.wDec, normalized);
      normalized.dispose();
    });
  }

  dispose(): void {
    for (const t of this.parameters()) t.dispose();
  }
}

/** The minimum's placeholder when no latent fired: 2^100, exact in f32, so NONE_FIRED − NONE_FIRED is exactly 0. */
const NONE_FIRED = 2 ** 100;

/** 1 where x > t, else 0. A constant. */
function stepAbove(x: Tensor, t: number): Tensor {
  return noGrad(() => greater(x, t));
}
