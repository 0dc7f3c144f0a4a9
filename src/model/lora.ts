// Rank-1 LoRA adapters on all seven projections of every layer:
//   y = W x + b + scale · B (A·x),   A ∈ R^in (PEFT lora_A [1, in]),  B ∈ R^out (PEFT lora_B [out, 1]),
//   scale = lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA (r = 1: both are lora_alpha).
// The adapter activation A·x is the scalar per token that the paper studies; it passes through a hook point.
import type { Backend } from '../kernels/backend.ts';
import { Tensor, keep } from '../tensor/tensor.ts';
import { tensor, zeros } from '../tensor/ops.ts';
import { requireGrad } from '../tensor/autograd.ts';
import { Random, randomUniformArray } from '../tensor/random.ts';
import { PROJECTIONS, adapterHookName, type Projection } from './hooks.ts';

export interface ProjectionDims {
  inFeatures: number;
  outFeatures: number;
}

/** Sizes of the seven projections of one Qwen2 layer. */
export function projectionDims(hidden: number, intermediate: number, heads: number, kvHeads: number, headDim: number): Record<Projection, ProjectionDims> {
  return {
    gate_proj: { inFeatures: hidden, outFeatures: intermediate },
    up_proj: { inFeatures: hidden, outFeatures: intermediate },
    down_proj: { inFeatures: intermediate, outFeatures: hidden },
    q_proj: { inFeatures: hidden, outFeatures: heads * headDim },
    k_proj: { inFeatures: hidden, outFeatures: kvHeads * headDim },
    v_proj: { inFeatures: hidden, outFeatures: kvHeads * headDim },
    o_proj: { inFeatures: heads * headDim, outFeatures: hidden },
  };
}

export interface RankOneAdapter {
  /** [in]: the read-out direction. */
  a: Tensor;
  /** [out]: the write direction. */
  b: Tensor;
}

export interface LoraSettings {
  r: 1;
  loraAlpha: number;
  useRslora: boolean;
  loraDropout: number;
  targetModules: Projection[];
  /**
   * adapter_config.json's target_modules when it names single modules (`model.layers.3.self_attn.q_proj`, as
   * `rank1 adapter select` writes for a per-layer choice); absent when every entry is a projection (all layers).
   */
  peftTargetModules?: string[];
  baseModelNameOrPath: string;
}

/** The paper's settings: rsLoRA, alpha 16, r 1, dropout 0, all seven projections. */
export const PAPER_LORA: LoraSettings = {
  r: 1,
  loraAlpha: 16,
  useRslora: true,
  loraDropout: 0,
  targetModules: [...PROJECTIONS],
  baseModelNameOrPath: '',
};

export class LoraAdapters {
  constructor(
    readonly settings: LoraSettings,
    /** Keyed by module path, e.g. `model.layers.3.self_attn.q_proj`. */
    readonly adapters: Map<string, RankOneAdapter>,
  ) {}

  /** lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA; with r = 1 both equal lora_alpha. */
  get scale(): number {
    const r = this.settings.r;
    return this.settings.useRslora ? this.settings.loraAlpha / Math.sqrt(r) : this.settings.loraAlpha / r;
  }

  get(layer: number, projection: Projection): RankOneAdapter | undefined {
    return this.adapters.get(adapterHookName(layer, projection));
  }

  /** Every A and B, in the paper's order (a then b per adapter). */
  parameters(): Tensor[] {
    return [...this.adapters.values()].flatMap(({ a, b }) => [a, b]);
  }

  get parameterCount(): number {
    return this.parameters().reduce((s, t) => s + t.size, 0);
  }

  /**
   * PEFT's initialisation: A ~ kaiming_uniform(a = sqrt 5) on the [1, in] weight, i.e. U(±1/sqrt(in));
   * B = 0, so the adapted model starts equal to the base.
   */
  static initialize(
    layers: number,
    dims: Record<Projection, ProjectionDims>,
    rng: Random,
    backend: Backend,
    settings: LoraSettings = PAPER_LORA,
  ): LoraAdapters {
    const adapters = new Map<string, RankOneAdapter>();
    for (let layer = 0; layer < layers; layer++) {
      for (const projection of PROJECTIONS) {
        if (!settings.targetModules.includes(projection)) continue;
        const { inFeatures, outFeatures } = dims[projection];
        const bound = 1 / Math.sqrt(inFeatures);
        const a = requireGrad(keep(tensor(randomUniformArray(inFeatures, rng, -bound, bound), [inFeatures], { backend })));
        const b = requireGrad(keep(zeros([outFeatures], { backend })));
        a.name = `${adapterHookName(layer, projection)}.lora_A`;
        b.name = `${adapterHookName(layer, projection)}.lora_B`;
        adapters.set(adapterHookName(layer, projection), { a, b });
      }
    }
    return new LoraAdapters(settings, adapters);
  }

  dispose(): void {
    for (const t of this.parameters()) t.dispose();
  }
}
