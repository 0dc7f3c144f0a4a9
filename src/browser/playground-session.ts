// The playground's generation: greedy or sampled decoding with a KV cache (generate.ts's decodeTokens, the
// loop rank1 generate runs), every adapter's raw A·x captured at each consumed token, with zero-ablations
// and steering applied through the same hooks the CLI uses. Runs wherever the engine runs (a browser worker,
// Node tests).
import { cat, reshape, slice } from '../tensor/ops.ts';
import { keep, tidy, type Tensor } from '../tensor/tensor.ts';
import { decodeTokens } from '../model/generate.ts';
import type { Qwen2Model } from '../model/qwen2.ts';
import { encodeChat } from '../model/chat-template.ts';
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
    // The question is text; only the template and the thinking marker add control tokens.
    return encodeChat(this.tokenizer, this.chatTemplate, [{ role: 'user', content: request.question }], { addGenerationPrompt: true, suffix: request.think ?? true ? '<|im_start|>think\n' : '' });
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
    // Each token's forward ran just before it is yielded: what the hooks captured belongs to it.
    const tokens = decodeTokens(model, this.promptIds(request), {
      maxTokens: request.maxTokens, temperature: request.temperature ?? 0, seed: request.seed ?? 0, stopIds: tokenizer.stopIds(),
      eachForward: (forward) => withHooks(model, hooks, forward),
    });
    try {
      for await (const id of tokens) yield { id, text: tokenizer.decode([id]), acts: await readCaptured() };
    } finally {
      for (const t of captured) t?.dispose();
    }
  }
}
