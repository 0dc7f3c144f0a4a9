// The playground's generation loop: greedy or sampled decoding with a KV cache (the engine's own prefill and
// decode steps), every adapter's raw A·x captured at each consumed token, with zero-ablations and steering
// applied through the same hooks the CLI uses. Runs wherever the engine runs (a browser worker, Node tests).
import { Random } from '../tensor/random.ts';
import { cat, reshape, slice } from '../tensor/ops.ts';
import { keep, tidy, type Tensor } from '../tensor/tensor.ts';
import { decodeStepLogits, prefillLogits, sampleToken } from '../model/generate.ts';
import { KVCache, type Qwen2Model } from '../model/qwen2.ts';
import { renderChat } from '../model/chat-template.ts';
import { adapterHookNames } from '../model/hooks.ts';
import { steer, withHooks, zeroAblate, type HookSpec } from '../model/hook-registry.ts';
import type { Tokenizer } from '../model/tokenizer.ts';

export interface PlaygroundRequest {
  question: string;
  maxTokens: number;
  /** 0: greedy. */
  temperature?: number;
  seed?: number;
  /** Adapter hook names whose contribution is zeroed. */
  ablate?: readonly string[];
  /** Adapter hook name → value added to its A·x at every token. */
  steer?: Readonly<Record<string, number>>;
  /** Open the assistant turn with s1's think delimiter (`<|im_start|>think\n`), as the paper's evaluation does. */
  think?: boolean;
}

export interface PlaygroundToken {
  id: number;
  /** The token's text (special tokens as written). */
  text: string;
  /** A·x of every adapter (paper order, 7·layer + j) at the position of the token before this one, after ablation and steering. */
  acts: Float32Array;
}

export class PlaygroundSession {
  /** Adapter hook names in paper order (the rows of the activation strip). */
  readonly hooks: string[];

  constructor(readonly model: Qwen2Model, readonly tokenizer: Tokenizer, readonly chatTemplate: string) {
    const adapters = model.adapters?.adapters;
    this.hooks = adapters ? adapterHookNames(model.dims.layers).filter((name) => adapters.has(name)) : [];
  }

  promptIds(request: PlaygroundRequest): number[] {
    const text = renderChat(this.chatTemplate, [{ role: 'user', content: request.question }], { addGenerationPrompt: true });
    return this.tokenizer.encode(request.think ?? true ? `${text}<|im_start|>think\n` : text, { addSpecialTokens: false });
  }

  /** Generates token by token; each yielded token carries the adapter activations that produced it. */
  async *generate(request: PlaygroundRequest): AsyncGenerator<PlaygroundToken> {
    const { model, tokenizer } = this;
    for (const name of [...request.ablate ?? [], ...Object.keys(request.steer ?? {})]) {
      if (!this.hooks.includes(name)) throw new Error(`playground: "${name}" is not an adapter of this model`);
    }
    // One slot per adapter in paper order (hooks fire in execution order: attention before the MLP).
    let captured: (Tensor | null)[] = this.hooks.map(() => null);
    const capture = (index: number) => (value: Tensor) => {
      // value [1, T]: keep the last position's (the token being consumed).
      const flat = reshape(value, [-1]);
      captured[index]?.dispose();
      captured[index] = keep(tidy(() => slice(flat, 0, flat.size - 1)));
    };
    // Interventions first, then the capture, so the strip shows what the model actually used. Installed for
    // each forward only (withHooks), so nothing stays on the model while the generator waits between tokens.
    const hooks: HookSpec = [
      ...(request.ablate ?? []).map((name) => [name, zeroAblate] as const),
      ...Object.entries(request.steer ?? {}).map(([name, value]) => [name, steer(value)] as const),
      ...this.hooks.map((name, index) => [name, capture(index)] as const),
    ];
    const rng = new Random(request.seed ?? 0);
    const stopIds = new Set(tokenizer.eosTokenIds);
    const prompt = this.promptIds(request);
    const cache = new KVCache(model.dims, 1, model.backend, prompt.length + request.maxTokens + 1);
    const readCaptured = async (): Promise<Float32Array> => {
      if (captured.length === 0) return new Float32Array(0);
      if (captured.some((t) => t === null)) throw new Error('playground: an adapter hook did not run');
      const all = tidy(() => cat(captured as Tensor[], 0));
      for (const t of captured) t!.dispose();
      captured = this.hooks.map(() => null);
      try {
        return await all.toFloat32Array();
      } finally {
        all.dispose();
      }
    };
    try {
      let logits = await withHooks(model, hooks, () => prefillLogits(model, prompt, cache));
      for (let step = 0; step < request.maxTokens; step++) {
        const acts = await readCaptured();
        const id = sampleToken(logits, { temperature: request.temperature ?? 0 }, rng);
        yield { id, text: tokenizer.decode([id]), acts };
        if (stopIds.has(id)) break;
        if (step + 1 < request.maxTokens) logits = await withHooks(model, hooks, () => decodeStepLogits(model, [id], [cache]));
      }
    } finally {
      for (const t of captured) t?.dispose();
      cache.dispose();
    }
  }
}
