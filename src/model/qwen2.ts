// The Qwen2 / Qwen2.5 decoder, with Hugging Face's semantics exactly (modeling_qwen2.py):
//   h = embed(ids)
//   per layer:  x = rmsNorm(h);  q, k, v = x Wqᵀ + bq, …;  rope(q, k);  a = attention(q, k, v) (causal, GQA)
//               h = h + a Woᵀ;   x = rmsNorm(h);  h = h + down(silu(gate(x)) · up(x))
//   logits = rmsNorm(h) lm_headᵀ   (lm_head = embed_tokens when tied)
// Every projection may carry a rank-1 adapter, whose activation A·x passes through a hook point; so do the
// residual stream, each projection's output, q/k/v, the attention pattern, the MLP activation and the logits
// (names and shapes: hooks.ts). A hook point costs nothing while no hook is installed.
//
// Legend: B batch, T tokens in this call, S tokens in the KV cache after this call, H hidden,
// I intermediate, V vocab, nh query heads, kv key/value heads, hd head dim, L layers.
import type { Backend } from '../kernels/backend.ts';
import { Tensor, keep, tidy } from '../tensor/tensor.ts';
import {
  add, addOuter, attention, attentionPattern, cast, cat, detach, rowDot, embedding, linear, mul, reshape, rmsNorm, rope, slice, swiglu, tensor,
} from '../tensor/ops.ts';
import { CheckpointOffload, checkpoint, checkpointTokenChunks } from '../tensor/checkpoint.ts';
import { isGradEnabled, noGrad } from '../tensor/autograd.ts';
import { hookName, type Projection } from './hooks.ts';
import { HookRegistry } from './hook-registry.ts';
import type { LoraAdapters } from './lora.ts';

export interface Qwen2Dims {
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
  ropeTheta: number;
  rmsNormEps: number;
  tieWordEmbeddings: boolean;
}

export interface LinearWeights {
  /** [out, in], any float storage dtype (kept packed). */
  weight: Tensor;
  /** [out] or absent (o_proj and the MLP have none). */
  bias?: Tensor;
}

export interface Qwen2LayerWeights {
  inputLayernorm: Tensor; // [H]
  qProj: LinearWeights; // [nh·hd, H] + bias
  kProj: LinearWeights; // [kv·hd, H] + bias
  vProj: LinearWeights; // [kv·hd, H] + bias
  oProj: LinearWeights; // [H, nh·hd]
  postAttentionLayernorm: Tensor; // [H]
  gateProj: LinearWeights; // [I, H]
  upProj: LinearWeights; // [I, H]
  downProj: LinearWeights; // [H, I]
}

export interface Qwen2Weights {
  embedTokens: Tensor; // [V, H]
  layers: Qwen2LayerWeights[];
  norm: Tensor; // [H]
  /** [V, H]; absent when tied to embedTokens. */
  lmHead?: Tensor;
}

/**
 * Keys and values of the tokens seen so far, per layer, in preallocated buffers [B, capacity, kv, hd]
 * that grow by doubling: appending a token writes in place instead of copying the cache.
 */
export class KVCache {
  length = 0;
  private keys: Tensor[] = [];
  private values: Tensor[] = [];
  private capacity = 0;

  constructor(readonly dims: Qwen2Dims, readonly batch: number, readonly backend: Backend, initialCapacity = 256) {
    this.capacity = 0;
    this.grow(initialCapacity);
  }

  private grow(capacity: number): void {
    const { layers, kvHeads, headDim } = this.dims;
    const shape = [this.batch, capacity, kvHeads, headDim];
    for (let l = 0; l < layers; l++) {
      for (const store of [this.keys, this.values]) {
        const fresh = keep(tensor(new Float32Array(this.batch * capacity * kvHeads * headDim), shape, { backend: this.backend }));
        const old = store[l];
        if (old && this.length > 0) {
          const window = fresh.view([this.batch, this.length, kvHeads, headDim], fresh.strides, 0);
          this.backend.assign(window, old.view([this.batch, this.length, kvHeads, headDim], old.strides, 0));
          window.dispose();
        }
        old?.dispose();
        store[l] = fresh;
      }
    }
    this.capacity = capacity;
  }

  /** Makes room for `tokens` more tokens. Call once per forward, before append. */
  reserve(tokens: number): void {
    if (this.length + tokens <= this.capacity) return;
    let capacity = Math.max(this.capacity, 1);
    while (capacity < this.length + tokens) capacity *= 2;
    this.grow(capacity);
  }

  /** Writes k/v [B, T, kv, hd] at positions [length, length + T) of layer l; returns views of all S tokens. */
  append(layer: number, k: Tensor, v: Tensor): { keys: Tensor; values: Tensor } {
    const tokens = k.shape[1]!;
    const out: Tensor[] = [];
    for (const [store, fresh] of [[this.keys, k], [this.values, v]] as const) {
      const buffer = store[layer]!;
      const window = buffer.view([this.batch, tokens, this.dims.kvHeads, this.dims.headDim], buffer.strides, this.length * buffer.strides[1]!);
      this.backend.assign(window, fresh);
      window.dispose();
      out.push(slice(buffer, 1, 0, this.length + tokens));
    }
    return { keys: out[0]!, values: out[1]! };
  }

  /** Called after every layer has appended: the new tokens become part of the cache. */
  advance(tokens: number): void {
    this.length += tokens;
  }

  dispose(): void {
    for (const t of [...this.keys, ...this.values]) t.dispose();
    this.keys = [];
    this.values = [];
  }
}

export interface ForwardOptions {
  /** Continue from (and extend) this cache; positions start at cache.length. */
  cache?: KVCache;
  /**
   * Batched decoding of independent sequences: one batch-1 cache per row of ids, each at its own length
   * (so its own positions). The projections run batched; RoPE and attention run per sequence.
   */
  caches?: readonly KVCache[];
  /** Return logits only for the last position ([B, 1, V]): what generation needs. */
  lastPositionOnly?: boolean;
  /**
   * Start at this layer from `residual`, the residual stream entering it ([B, T, H], e.g. a recorded
   * resid_pre), instead of embedding ids: the layers below are skipped, their result being given. ids still
   * give the batch and token counts. Not with a KV cache. Ablation sweeps share the unablated prefix this way.
   */
  startLayer?: number;
  residual?: Tensor;
  /**
   * Return the final hidden states rmsNorm(h) [B, T, H] (after the final_norm hook) instead of the logits: the
   * chunked losses (tensor/linear-cross-entropy.ts) take them with `lmHeadWeight` and never build [B, T, V].
   */
  hiddenOnly?: boolean;
  /**
   * Per-row adapters (multi-LoRA serving, vLLM's punica idea at rank 1): row b of ids runs with
   * adapterRows[b] (null: the base model), in place of `model.adapters`, so sequences of different adapters
   * share one batched forward. Each adapter's A·x is masked to its own rows; the other rows add exactly 0.
   */
  adapterRows?: readonly (LoraAdapters | null)[];
}

/** The adapters one forward applies: each set with its row mask [B, 1] (null: every row). */
interface AdapterGroup {
  adapters: LoraAdapters;
  mask: Tensor | null;
}

/**
 * RoPE tables for positions [start, start + T), computed in f32 as Hugging Face does:
 * inv_freq = 1 / θ^(2i/hd), angle = position · inv_freq, cos/sin [T, hd/2].
 */
export function ropeTables(dims: Qwen2Dims, start: number, tokens: number, backend: Backend): { cos: Tensor; sin: Tensor } {
  const half = dims.headDim / 2;
  const f = Math.fround;
  const invFreq = Array.from({ length: half }, (_, i) => f(1 / f(Math.pow(dims.ropeTheta, f(f(2 * i) / dims.headDim)))));
  const cos = new Float32Array(tokens * half);
  const sin = new Float32Array(tokens * half);
  for (let t = 0; t < tokens; t++) {
    for (let i = 0; i < half; i++) {
      const angle = f(f(start + t) * invFreq[i]!);
      cos[t * half + i] = Math.cos(angle);
      sin[t * half + i] = Math.sin(angle);
    }
  }
  return { cos: tensor(cos, [tokens, half], { backend }), sin: tensor(sin, [tokens, half], { backend }) };
}

interface LayerContext {
  batch: number;
  tokens: number;
  start: number;
  cos: Tensor;
  sin: Tensor;
  cache: KVCache | undefined;
  /** With ForwardOptions.caches: each sequence's cache and RoPE tables. */
  sequences: { cache: KVCache; cos: Tensor; sin: Tensor }[] | undefined;
  /** The adapters applied (model.adapters, or ForwardOptions.adapterRows' sets with their row masks). */
  adapterGroups: readonly AdapterGroup[];
}

export class Qwen2Model {
  readonly hooks = new HookRegistry();
  adapters: LoraAdapters | null = null;
  /** Recompute each layer's activations in backward instead of keeping them (training memory). */
  gradientCheckpointing = false;
  /**
   * The dtype each checkpointed layer's input is kept in until backward: 'bf16' (the default) takes half the
   * bytes and recomputes from the rounded input; 'f32' recomputes exactly.
   */
  checkpointDtype: 'f32' | 'bf16' = 'bf16';
  /**
   * Tokens per chunk of a checkpointed layer in the forward and in the recompute + backward: the keys and values
   * of all T tokens are computed chunk by chunk, then each chunk of queries runs the input norm, q, attention
   * against the keys up to its end, o_proj and the MLP sub-block, so no [T, H] or [T, I] intermediate spans all
   * T tokens (only the keys and values, [T, kv·hd]); null or 0: whole layers. A hook on a layer's attention
   * values runs that sub-block whole (the MLP still in chunks); a hook on its MLP values runs the layer whole.
   */
  layerTokenChunk: number | null = null;
  /**
   * Keep each checkpointed layer's input in host memory between the forward and the backward instead of on the
   * device (--offload-checkpoints; for a GPU backend): the device then holds the weights and one layer. A step
   * must await settleOffloadedCheckpoints() between its forward and its backward.
   */
  offloadCheckpoints = false;
  private readonly checkpointOffload = new CheckpointOffload();
  /** True when base weights are trainable (full finetune): layers then hold parameters even without adapters. */
  trainsBase = false;
  /**
   * Half-precision vectors that are used elementwise — the q/k/v biases and the RMSNorm weights of a bf16
   * checkpoint — widened to f32 once, by the weight they stand for: linear would otherwise widen a bias (a copy
   * and its tensor, about 4 µs) on every call, 72 times a decode step, and rmsNorm its weight (1.3 µs), 49
   * times. Safe to keep: a half tensor is never trained or written in place (requireGrad and assign refuse
   * halves), and a replaced weight (full finetune's f32 leaves) is simply not found. The weights keep their own
   * dtype, so a written checkpoint does too.
   */
  private readonly widened = new Map<Tensor, Tensor>();

  constructor(
    readonly dims: Qwen2Dims,
    readonly weights: Qwen2Weights,
    readonly backend: Backend,
  ) {
    if (!dims.tieWordEmbeddings && !weights.lmHead) throw new Error('Qwen2Model: lm_head.weight is missing and tie_word_embeddings is false');
  }

  /** One projection with its optional rank-1 adapter: y = x Wᵀ + b + scale · (A·x) Bᵀ. x [..., in]. */
  private project(x: Tensor, weights: LinearWeights, layer: number, projection: Projection, positionOffset: number, adapterGroups: readonly AdapterGroup[]): Tensor {
    const base = linear(x, weights.weight, weights.bias && this.inF32(weights.bias));
    let output = base;
    for (const { adapters, mask } of adapterGroups) {
      const adapter = adapters.get(layer, projection);
      if (!adapter) continue;
      // A·x per token: [B, T], one fused pass over x.
      const activation = rowDot(x, adapter.a);
      const hooked = this.hooks.run(hookName.adapter(layer, projection), activation, positionOffset);
      // Per-row adapters: rows of other adapters get A·x · 0, so they add exactly 0 (their own bits unchanged).
      const selected = mask ? mul(hooked, mask) : hooked;
      // base + (A·x) ⊗ scale·B in one fused pass (no [N, out] product in between); the scale goes on B ([out]),
      // which is exact for the paper's scale of 16, a power of two.
      output = addOuter(output, reshape(selected, base.shape.slice(0, -1)), mul(adapter.b, adapters.scale));
    }
    return this.hooks.run(hookName.projectionOutput(layer, projection), output, positionOffset);
  }

  /** A bias or norm weight as the kernels read it: itself when f32, else its f32 widening, made on first use (see widened). */
  private inF32(weight: Tensor): Tensor {
    if (weight.dtype === 'f32') return weight;
    const known = this.widened.get(weight);
    if (known) return known;
    // Widenings of weights since disposed (replaced) go first.
    for (const [original, copy] of this.widened) {
      if (original.isDisposed) {
        copy.dispose();
        this.widened.delete(original);
      }
    }
    const copy = keep(noGrad(() => cast(weight, 'f32')));
    this.widened.set(weight, copy);
    return copy;
  }

  /** The adapters a forward applies: model.adapters on every row, or `rows`' distinct sets, each masked to its rows. */
  private adapterGroupsFor(rows: readonly (LoraAdapters | null)[] | undefined, batch: number): AdapterGroup[] {
    if (rows === undefined) return this.adapters ? [{ adapters: this.adapters, mask: null }] : [];
    if (rows.length !== batch) throw new Error(`Qwen2Model.forward: adapterRows has ${rows.length} entries for a batch of ${batch}`);
    const sets = [...new Set(rows.filter((a): a is LoraAdapters => a !== null))];
    // One set on every row: no mask, the very computation of a model with that adapter installed.
    if (sets.length === 1 && rows.every((a) => a === sets[0])) return [{ adapters: sets[0]!, mask: null }];
    return sets.map((adapters) => ({
      adapters,
      mask: tensor(Float32Array.from(rows, (a) => (a === adapters ? 1 : 0)), [batch, 1], { backend: this.backend }),
    }));
  }

  /**
   * Batched decoding keeps one row per sequence; a hook sees them as one batch [B, ...] and its result is
   * cut back into rows. Nothing is concatenated when no hook is there.
   */
  private runOnRows(name: string, rows: Tensor[], positionOffset: number): Tensor[] {
    if (!this.hooks.has(name)) return rows;
    const hooked = this.hooks.run(name, cat(rows, 0), positionOffset);
    return rows.map((_, b) => slice(hooked, 0, b, b + 1));
  }

  /** Shows the attention probabilities [B, nh, T, S] to the hooks at the pattern (only computed when hooked). */
  private showPattern(layer: number, q: Tensor, keys: Tensor, positionOffset: number): void {
    const name = hookName.pattern(layer);
    if (!this.hooks.has(name)) return;
    const pattern = attentionPattern(q, keys, { causal: true });
    if (this.hooks.run(name, pattern, positionOffset) !== pattern) {
      throw new Error(`hook at ${name} returned a tensor: pattern hooks are read-only (attention is fused and never reads the pattern); hook self_attn.q, .k or .v instead`);
    }
  }

  /** One decoder layer: h [B, T, H] -> h [B, T, H]. */
  private layerForward(l: number, input: Tensor, context: LayerContext): Tensor {
    return this.mlpBlock(l, this.attentionBlock(l, input, context), context.start, context.adapterGroups);
  }

  /** A decoder layer's attention sub-block: h [B, T, H] -> h + o_proj(attention(rmsNorm(h))). */
  private attentionBlock(l: number, input: Tensor, { batch, tokens, start, cos, sin, cache, sequences, adapterGroups }: LayerContext): Tensor {
    const { heads, kvHeads, headDim, rmsNormEps: eps } = this.dims;
    const w = this.weights.layers[l]!;
    let h = this.hooks.run(hookName.residPre(l), input, start);
    const x = rmsNorm(h, this.inF32(w.inputLayernorm), eps);
    const qAll = reshape(this.project(x, w.qProj, l, 'q_proj', start, adapterGroups), [batch, tokens, heads, headDim]);
    const kAll = reshape(this.project(x, w.kProj, l, 'k_proj', start, adapterGroups), [batch, tokens, kvHeads, headDim]);
    const vAll = reshape(this.project(x, w.vProj, l, 'v_proj', start, adapterGroups), [batch, tokens, kvHeads, headDim]);
    let attended: Tensor; // [B, T, nh, hd]
    if (sequences) {
      // Each sequence at its own position: rotate and attend against its own cache.
      if (this.hooks.has(hookName.pattern(l))) {
        throw new Error(`hook at ${hookName.pattern(l)}: the attention pattern is not available in batched decoding (ForwardOptions.caches), whose sequences have different lengths; run them one at a time with ForwardOptions.cache`);
      }
      const row = (t: Tensor, b: number) => slice(t, 0, b, b + 1);
      const qs = this.runOnRows(hookName.q(l), sequences.map((s, b) => rope(row(qAll, b), s.cos, s.sin)), start);
      const ks = this.runOnRows(hookName.k(l), sequences.map((s, b) => rope(row(kAll, b), s.cos, s.sin)), start);
      const vs = this.runOnRows(hookName.v(l), sequences.map((_, b) => row(vAll, b)), start);
      attended = cat(sequences.map((sequence, b) => {
        const kv = sequence.cache.append(l, ks[b]!, vs[b]!);
        return attention(qs[b]!, kv.keys, kv.values, { causal: true });
      }), 0);
    } else {
      const q = this.hooks.run(hookName.q(l), rope(qAll, cos, sin), start);
      const k = this.hooks.run(hookName.k(l), rope(kAll, cos, sin), start);
      const v = this.hooks.run(hookName.v(l), vAll, start);
      const kv = cache ? cache.append(l, k, v) : { keys: k, values: v };
      this.showPattern(l, q, kv.keys, start);
      attended = attention(q, kv.keys, kv.values, { causal: true });
    }
    const z = this.hooks.run(hookName.z(l), reshape(attended, [batch, tokens, heads * headDim]), start);
    h = add(h, this.project(z, w.oProj, l, 'o_proj', start, adapterGroups));
    return this.hooks.run(hookName.residMid(l), h, start);
  }

  /**
   * Layer l's keys (after RoPE) and values of the tokens of h [B, t, H] from `offset` on (cos, sin: the forward's
   * tables from token 0), packed as [B, t, kv, 2·hd]: k in [..., 0, hd), v in [..., hd, 2·hd). Token-wise: the
   * context of a token-chunked layer (checkpointTokenChunks), computed one chunk of tokens at a time. No hooks.
   */
  private keysValues(l: number, h: Tensor, offset: number, { batch, start, cos, sin, adapterGroups }: LayerContext): Tensor {
    const { kvHeads, headDim, rmsNormEps: eps } = this.dims;
    const w = this.weights.layers[l]!;
    const tokens = h.shape[1]!;
    const x = rmsNorm(h, this.inF32(w.inputLayernorm), eps);
    const k = reshape(this.project(x, w.kProj, l, 'k_proj', start + offset, adapterGroups), [batch, tokens, kvHeads, headDim]);
    const v = reshape(this.project(x, w.vProj, l, 'v_proj', start + offset, adapterGroups), [batch, tokens, kvHeads, headDim]);
    return cat([rope(k, slice(cos, 0, offset, offset + tokens), slice(sin, 0, offset, offset + tokens)), v], 3);
  }

  /**
   * Layer l over the tokens of h [B, t, H] from `offset` on, given keysValues of tokens [0, offset + t): the
   * chunk's queries attend causally to those keys (the attention op's query offset, as in KV-cache decoding),
   * then o_proj, the residual and the MLP sub-block, all on the chunk's tokens only. No hooks on the attention.
   */
  private layerOverTokens(l: number, h: Tensor, keysValues: Tensor, offset: number, context: LayerContext): Tensor {
    const { heads, headDim, rmsNormEps: eps } = this.dims;
    const { batch, start, cos, sin, adapterGroups } = context;
    const w = this.weights.layers[l]!;
    const tokens = h.shape[1]!;
    const x = rmsNorm(h, this.inF32(w.inputLayernorm), eps);
    const qAll = reshape(this.project(x, w.qProj, l, 'q_proj', start + offset, adapterGroups), [batch, tokens, heads, headDim]);
    const q = rope(qAll, slice(cos, 0, offset, offset + tokens), slice(sin, 0, offset, offset + tokens)); // q [B, t, nh, hd]
    const attended = attention(q, slice(keysValues, 3, 0, headDim), slice(keysValues, 3, headDim), { causal: true });
    const z = reshape(attended, [batch, tokens, heads * headDim]);
    return this.mlpBlock(l, add(h, this.project(z, w.oProj, l, 'o_proj', start + offset, adapterGroups)), start + offset, adapterGroups);
  }

  /** Whether layer l's attention sub-block may run over token chunks: no hook may see its values (see mlpIsChunkable). */
  private attentionIsChunkable(l: number): boolean {
    const projections: Projection[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj'];
    const names = [
      hookName.residPre(l), hookName.q(l), hookName.k(l), hookName.v(l), hookName.pattern(l), hookName.z(l), hookName.residMid(l),
      ...projections.flatMap((p) => [hookName.adapter(l, p), hookName.projectionOutput(l, p)]),
    ];
    return !names.some((name) => this.hooks.has(name));
  }

  /**
   * A decoder layer's MLP sub-block, h [B, t, H] -> h + down(silu(gate(x)) · up(x)) with x = rmsNorm(h):
   * token-wise, so it may run on any run of tokens, the first at position `start`.
   */
  private mlpBlock(l: number, h: Tensor, start: number, adapterGroups: readonly AdapterGroup[]): Tensor {
    const w = this.weights.layers[l]!;
    const x = rmsNorm(h, this.inF32(w.postAttentionLayernorm), this.dims.rmsNormEps);
    const gate = this.project(x, w.gateProj, l, 'gate_proj', start, adapterGroups);
    const up = this.project(x, w.upProj, l, 'up_proj', start, adapterGroups);
    const act = this.hooks.run(hookName.mlpAct(l), swiglu(gate, up), start);
    h = add(h, this.project(act, w.downProj, l, 'down_proj', start, adapterGroups));
    return this.hooks.run(hookName.residPost(l), h, start);
  }

  /**
   * Whether layer l's MLP sub-block may run over token chunks: no hook may see its values (a hook may need all
   * of a tensor's tokens at once, e.g. a [B, T] mask, or expect one call per forward).
   */
  private mlpIsChunkable(l: number): boolean {
    const projections: Projection[] = ['gate_proj', 'up_proj', 'down_proj'];
    const names = [hookName.mlpAct(l), hookName.residPost(l), ...projections.flatMap((p) => [hookName.adapter(l, p), hookName.projectionOutput(l, p)])];
    return !names.some((name) => this.hooks.has(name));
  }

  /** ids [B, T] i32 -> logits [B, T, V] (or [B, 1, V] with lastPositionOnly; [B, T, H] with hiddenOnly). */
  forward(ids: Tensor, options: ForwardOptions = {}): Tensor {
    if (ids.rank !== 2 || ids.dtype !== 'i32') {
      throw new Error(`Qwen2Model.forward: ids must be an i32 tensor [batch, tokens], got ${ids.dtype} [${ids.shape.join(', ')}]`);
    }
    const [batch, tokens] = ids.shape as [number, number];
    const cache = options.cache;
    const caches = options.caches;
    if (cache && cache.batch !== batch) throw new Error(`Qwen2Model.forward: cache batch ${cache.batch} differs from ids batch ${batch}`);
    if (cache && caches) throw new Error('Qwen2Model.forward: pass cache or caches, not both');
    if (caches && (caches.length !== batch || caches.some((c) => c.batch !== 1))) {
      throw new Error(`Qwen2Model.forward: caches must be ${batch} batch-1 caches, one per row of ids`);
    }
    const startLayer = options.startLayer ?? 0;
    if ((options.residual === undefined) !== (options.startLayer === undefined)) {
      throw new Error('Qwen2Model.forward: startLayer and residual go together');
    }
    if (options.residual) {
      if (cache || caches) throw new Error('Qwen2Model.forward: startLayer/residual cannot be used with a KV cache');
      if (!Number.isInteger(startLayer) || startLayer < 0 || startLayer >= this.dims.layers) {
        throw new Error(`Qwen2Model.forward: startLayer ${startLayer} is outside [0, ${this.dims.layers})`);
      }
      const want = [batch, tokens, this.dims.hidden];
      if (options.residual.shape.join() !== want.join()) {
        throw new Error(`Qwen2Model.forward: residual is [${options.residual.shape.join(', ')}], expected [${want.join(', ')}]`);
      }
    }
    const start = cache?.length ?? caches?.[0]?.length ?? 0;
    cache?.reserve(tokens);
    caches?.forEach((c) => c.reserve(tokens));
    const { dims, weights } = this;
    const eps = dims.rmsNormEps;
    return tidy(() => {
      const { cos, sin } = ropeTables(dims, start, tokens, this.backend);
      let h = options.residual ?? this.hooks.run(hookName.embed(), embedding(weights.embedTokens, ids), start); // [B, T, H]
      const sequences = caches?.map((c) => ({ cache: c, ...ropeTables(dims, c.length, tokens, this.backend) }));
      const adapterGroups = this.adapterGroupsFor(options.adapterRows, batch);
      const context: LayerContext = { batch, tokens, start, cos, sin, cache, sequences, adapterGroups };
      const hasParameters = adapterGroups.length > 0 || this.trainsBase;
      const checkpointing = this.gradientCheckpointing && !cache && !caches;
      const chunkSetting = this.layerTokenChunk;
      if (chunkSetting !== null && !(Number.isInteger(chunkSetting) && chunkSetting >= 0)) {
        throw new Error(`Qwen2Model.layerTokenChunk must be a whole number of tokens (0 or null: off), got ${chunkSetting}`);
      }
      const inference = !isGradEnabled();
      const offload = this.offloadCheckpoints ? this.checkpointOffload : undefined;
      // The embedding is this forward's own tensor unless a hook replaced it; a given residual is the caller's.
      let ownsInput = !options.residual && !this.hooks.has(hookName.embed());
      for (let l = startLayer; l < dims.layers; l++) {
        const layer = (x: Tensor, [c, s]: readonly Tensor[]) => this.layerForward(l, x, { ...context, cos: c!, sin: s! });
        // Recompute each layer in backward rather than keeping its activations (no cache while training).
        // Each layer in its own scope: its temporaries are freed as soon as it returns (what backward needs
        // is held by the graph).
        const input = h;
        const run = (): Tensor => {
          if (!checkpointing) return layer(input, [cos, sin]);
          const chunk = chunkSetting;
          if (!chunk || chunk >= tokens || !this.mlpIsChunkable(l)) return checkpoint(layer, input, [cos, sin], hasParameters, this.checkpointDtype, undefined, offload);
          if (this.attentionIsChunkable(l)) {
            // The whole layer over chunks of tokens (forward and backward); only keys and values span all T.
            const withTables = ([c, s]: readonly Tensor[]): LayerContext => ({ ...context, cos: c!, sin: s! });
            const block = {
              context: (x: Tensor, offset: number, tables: readonly Tensor[]) => this.keysValues(l, x, offset, withTables(tables)),
              fn: (x: Tensor, kv: Tensor, offset: number, tables: readonly Tensor[]) => this.layerOverTokens(l, x, kv, offset, withTables(tables)),
              chunk,
            };
            return checkpointTokenChunks(block, input, [cos, sin], hasParameters, this.checkpointDtype, offload);
          }
          // A hook on the attention: that sub-block as a whole, the MLP sub-block over chunks of tokens.
          const attentionBlock = (x: Tensor, [c, s]: readonly Tensor[]) => this.attentionBlock(l, x, { ...context, cos: c!, sin: s! });
          const mlp = { fn: (x: Tensor, offset: number) => this.mlpBlock(l, x, start + offset, adapterGroups), chunk };
          return checkpoint(attentionBlock, input, [cos, sin], hasParameters, this.checkpointDtype, mlp, offload);
        };
        h = tidy(() => (inference ? detach(run()) : run()));
        // Each layer's input is freed once the next layer has read it, not when the forward returns, so the
        // forward holds one layer (plus, training, the checkpoints): without a graph nothing else reads it, and a
        // checkpointed layer's graph keeps its own copy (bf16 or f32) and only the node of the tensor it came
        // from. Only handles of the forward's own are freed: a recorded checkpoint's output, or a fresh view
        // without a graph (a hook may have returned a tensor of its caller's).
        const owned = inference || h.gradNode?.op === 'checkpoint';
        if (ownsInput && owned) input.dispose();
        ownsInput = owned;
      }
      cache?.advance(tokens);
      caches?.forEach((c) => c.advance(tokens));
      const last = options.lastPositionOnly ? slice(h, 1, tokens - 1, tokens) : h;
      const normed = this.hooks.run(hookName.finalNorm(), rmsNorm(last, this.inF32(weights.norm), eps), start);
      if (options.hiddenOnly) return normed;
      return this.hooks.run(hookName.logits(), linear(normed, this.lmHeadWeight), start);
    });
  }

  /** The output head [V, H]: lm_head, or the embedding table when tied. */
  get lmHeadWeight(): Tensor {
    return this.weights.lmHead ?? this.weights.embedTokens;
  }

  /**
   * Waits until the checkpoints offloaded by the forwards run so far are in host memory: the await between a
   * training forward and its backward when offloadCheckpoints is on (a no-op otherwise).
   */
  settleOffloadedCheckpoints(): Promise<void> {
    return this.checkpointOffload.settle();
  }

  /** Frozen base parameters (not counting adapters). */
  get parameterCount(): number {
    const { weights } = this;
    let n = weights.embedTokens.size + weights.norm.size + (weights.lmHead?.size ?? 0);
    for (const layer of weights.layers) {
      n += layer.inputLayernorm.size + layer.postAttentionLayernorm.size;
      for (const lin of [layer.qProj, layer.kProj, layer.vProj, layer.oProj, layer.gateProj, layer.upProj, layer.downProj]) {
        n += lin.weight.size + (lin.bias?.size ?? 0);
      }
    }
    return n;
  }

  dispose(): void {
    const { weights } = this;
    const all = [weights.embedTokens, weights.norm, weights.lmHead, ...weights.layers.flatMap((layer) => [
      layer.inputLayernorm, layer.postAttentionLayernorm,
      ...[layer.qProj, layer.kProj, layer.vProj, layer.oProj, layer.gateProj, layer.upProj, layer.downProj].flatMap((lin) => [lin.weight, lin.bias]),
    ])];
    for (const t of all) t?.dispose();
    for (const copy of this.widened.values()) copy.dispose();
    this.widened.clear();
    this.adapters?.dispose();
  }
}
