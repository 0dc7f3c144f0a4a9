// Continuous batching for `rank1 serve`: requests join a running decode loop as they arrive. Each request
// keeps its own KV cache (its own length and positions), its own sampling settings and random stream, and
// leaves the batch the step it stops; every step runs the live sequences' projections as one batched forward
// (the same batched decoding as generateBatch), so a step reads the weights once however many are live.
//
// The loop yields to the event loop between steps, so the HTTP server keeps accepting (and queueing)
// requests while it decodes, and sees clients go away: an aborted request leaves the batch (or the queue)
// before the next step and its KV cache is freed. A full queue refuses at once (the server answers 503),
// `drain` stops admission and resolves when every accepted request has finished, and `cancelAll` ends every
// request at the next step with an error (shutdown after its grace period).
import { Random } from '../tensor/random.ts';
import { KVCache, type Qwen2Model } from '../model/qwen2.ts';
import type { LoraAdapters } from '../model/lora.ts';
import { decodeStepLogits, prefillLogits, sampleToken, sampleTokenWhere } from '../model/generate.ts';

export interface DecodeRequest {
  promptIds: readonly number[];
  maxTokens: number;
  /** 0: greedy. */
  temperature: number;
  topP: number;
  seed: number;
  /** Ids that end the sequence (kept out of the text). */
  stopIds: readonly number[];
  /** Called with each new token id as soon as it is chosen. Return true to stop the sequence here. */
  onToken?: (id: number, generated: readonly number[]) => boolean | void;
  /** Structured outputs: only tokens this accepts may follow `generated` (a dead end stops the sequence). */
  allowToken?: (generated: readonly number[], candidate: number) => boolean;
  /** Aborting removes the sequence at the next step (a client that went away). */
  signal?: AbortSignal;
  /** Called when the sequence leaves the queue for the batch (its prefill starts). */
  onAdmit?: () => void;
  /**
   * The LoRA adapter this sequence runs with (`--lora-modules`); null or absent: the model as loaded. Sequences
   * of different adapters decode in the same step (per-row adapters, ForwardOptions.adapterRows).
   */
  adapter?: LoraAdapters | null;
  /** Called with the logits row [V] each token was chosen from, before onToken (logprobs). */
  onLogits?: (row: Float32Array, id: number) => void;
}

export type DecodeStopReason = 'stop_id' | 'stopped_by_caller' | 'max_tokens' | 'aborted';

export interface DecodeOutcome {
  ids: number[];
  stopReason: DecodeStopReason;
}

export class QueueFullError extends Error {
  constructor(readonly limit: number) {
    super(`the server is busy: ${limit} requests are already waiting; retry later`);
  }
}

export class ShuttingDownError extends Error {
  constructor(message = 'the server is shutting down and accepts no new requests') {
    super(message);
  }
}

/** Counters since start, for metrics and tests. */
export interface SchedulerStats {
  /** Decode steps run (prefills not counted). */
  steps: number;
  /** Sequences summed over steps: equal to `steps` while every step decoded one sequence alone. */
  sequenceSteps: number;
  /** Tokens chosen (prefill's first token included). */
  tokens: number;
  /** Prompt tokens prefilled. */
  promptTokens: number;
  largestBatch: number;
  /** Requests that left because their signal aborted (a client that went away). */
  aborted: number;
  /** The most decode steps any aborted request took part in after its abort (0 or 1: it left at the next step). */
  maxStepsAfterAbort: number;
}

export interface SchedulerOptions {
  /** Sequences decoded together per step (default 8). */
  maxBatch?: number;
  /** Requests waiting for a batch slot before new ones are refused (default 64). */
  maxQueue?: number;
}

interface Sequence {
  request: DecodeRequest;
  generated: number[];
  cache: KVCache | null;
  rng: Random;
  resolve: (outcome: DecodeOutcome) => void;
  reject: (error: Error) => void;
  /** `stats.steps` when its signal aborted (null: not aborted). */
  abortedAtStep: number | null;
  done: boolean;
  forgetAbort: () => void;
}

export class DecodeScheduler {
  readonly maxBatch: number;
  readonly maxQueue: number;
  private readonly waiting: Sequence[] = [];
  private live: Sequence[] = [];
  private running: Promise<void> | null = null;
  private closing = false;
  /** Requests accepted and not yet finished (waiting, in prefill, or decoding). */
  private unfinished = 0;
  /** Set by cancelAll: every request still unfinished at the next step fails with it. */
  private cancelError: Error | null = null;
  readonly stats: SchedulerStats = { steps: 0, sequenceSteps: 0, tokens: 0, promptTokens: 0, largestBatch: 0, aborted: 0, maxStepsAfterAbort: 0 };
  /** Bytes of keys and values one cached position holds (f32, every layer). */
  private readonly kvBytesPerPosition: number;

  constructor(readonly model: Qwen2Model, options: SchedulerOptions = {}) {
    this.maxBatch = options.maxBatch ?? 8;
    this.maxQueue = options.maxQueue ?? 64;
    if (!Number.isInteger(this.maxBatch) || this.maxBatch < 1) throw new RangeError(`maxBatch must be a positive integer, got ${this.maxBatch}`);
    if (!Number.isInteger(this.maxQueue) || this.maxQueue < 0) throw new RangeError(`maxQueue must be a non-negative integer, got ${this.maxQueue}`);
    const { layers, kvHeads, headDim } = model.dims;
    this.kvBytesPerPosition = 2 * layers * kvHeads * headDim * Float32Array.BYTES_PER_ELEMENT;
  }

  /** KV-cache bytes held by the positions of the sequences decoding now. */
  get kvCacheBytes(): number {
    return this.live.reduce((sum, s) => sum + (s.cache?.length ?? 0), 0) * this.kvBytesPerPosition;
  }

  get queued(): number {
    return this.waiting.length;
  }

  get active(): number {
    return this.live.length;
  }

  /** Queues a request; the promise settles when it stops. Throws QueueFullError / ShuttingDownError at once. */
  submit(request: DecodeRequest): Promise<DecodeOutcome> {
    if (this.closing) throw new ShuttingDownError();
    // Accepted and unfinished: at most maxBatch decoding plus maxQueue waiting.
    if (this.unfinished >= this.maxBatch + this.maxQueue) throw new QueueFullError(this.maxQueue);
    const { vocab } = this.model.dims;
    if (request.promptIds.length === 0) throw new RangeError('the prompt is empty');
    for (const id of request.promptIds) {
      if (!Number.isInteger(id) || id < 0 || id >= vocab) throw new RangeError(`prompt token ${id} is outside the vocabulary [0, ${vocab})`);
    }
    const promise = new Promise<DecodeOutcome>((resolve, reject) => {
      const sequence: Sequence = { request, generated: [], cache: null, rng: new Random(request.seed), resolve, reject, abortedAtStep: null, done: false, forgetAbort: () => undefined };
      const { signal } = request;
      if (signal) {
        const onAbort = () => (sequence.abortedAtStep = this.stats.steps);
        if (signal.aborted) onAbort();
        signal.addEventListener('abort', onAbort, { once: true });
        sequence.forgetAbort = () => signal.removeEventListener('abort', onAbort);
      }
      this.waiting.push(sequence);
    });
    this.unfinished++;
    this.running ??= this.loop().finally(() => {
      this.running = null;
    });
    return promise;
  }

  /** Refuses new requests and resolves once every accepted one has finished. */
  async drain(): Promise<void> {
    this.closing = true;
    while (this.running) await this.running;
  }

  /** Refuses new requests and fails every unfinished one with `error` at the next step (between steps: at once). */
  cancelAll(error: Error): void {
    this.closing = true;
    this.cancelError = error;
    if (!this.running) this.failAll(error);
  }

  private failAll(error: Error): void {
    for (const sequence of [...this.live, ...this.waiting]) this.finish(sequence, null, error);
    this.live = [];
    this.waiting.length = 0;
  }

  private async loop(): Promise<void> {
    try {
      while (this.waiting.length > 0 || this.live.length > 0) {
        if (this.cancelError) {
          this.failAll(this.cancelError);
          break;
        }
        this.dropAborted();
        // Admit: prefill each newcomer on its own (prompt lengths differ) and pick its first token.
        while (this.live.length < this.maxBatch && this.waiting.length > 0) {
          const sequence = this.waiting.shift()!;
          if (this.finishIfAborted(sequence)) continue;
          await this.prefill(sequence);
        }
        this.dropAborted();
        if (this.live.length > 0 && !this.cancelError) await this.step();
        // Let the server read new requests (and see disconnects) between steps.
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } catch (error) {
      // A failure inside the engine fails every request in flight rather than hanging them.
      this.failAll(error as Error);
    }
  }

  /** Takes aborted sequences out of the batch and the queue (their clients went away). */
  private dropAborted(): void {
    this.live = this.live.filter((s) => !this.finishIfAborted(s));
    const waiting = this.waiting.filter((s) => !this.finishIfAborted(s));
    this.waiting.splice(0, this.waiting.length, ...waiting);
  }

  private finishIfAborted(sequence: Sequence): boolean {
    if (sequence.abortedAtStep === null) return false;
    this.stats.aborted++;
    this.stats.maxStepsAfterAbort = Math.max(this.stats.maxStepsAfterAbort, this.stats.steps - sequence.abortedAtStep);
    this.finish(sequence, 'aborted');
    return true;
  }

  private finish(sequence: Sequence, reason: DecodeStopReason | null, error?: Error): void {
    if (sequence.done) return;
    sequence.done = true;
    sequence.forgetAbort();
    this.unfinished--;
    sequence.cache?.dispose();
    sequence.cache = null;
    if (error) sequence.reject(error);
    else sequence.resolve({ ids: sequence.generated, stopReason: reason! });
  }

  /** Records one chosen token; returns whether the sequence stopped. */
  private accept(sequence: Sequence, id: number): boolean {
    const { request, generated } = sequence;
    generated.push(id);
    this.stats.tokens++;
    const stopId = request.stopIds.includes(id);
    const callerStop = request.onToken?.(id, generated) === true;
    const reason: DecodeStopReason | null = stopId ? 'stop_id' : callerStop ? 'stopped_by_caller' : generated.length >= request.maxTokens ? 'max_tokens' : null;
    if (reason) this.finish(sequence, reason);
    return reason !== null;
  }

  /** The next token of `sequence` from its logits row, within its constraint if it has one (null: none allowed). */
  private choose(sequence: Sequence, row: Float32Array): number | null {
    const { temperature, topP, allowToken, onLogits } = sequence.request;
    const id = allowToken
      ? sampleTokenWhere(row, { temperature, topP }, sequence.rng, (candidate) => allowToken(sequence.generated, candidate))
      : sampleToken(row, { temperature, topP }, sequence.rng);
    if (id !== null) onLogits?.(row, id);
    return id;
  }

  /**
   * Each sequence's adapter when any sequence names one (then model.adapters applies to none: a sequence
   * without one runs the base, as vLLM serves the base model by its own name); undefined otherwise.
   */
  private adapterRows(sequences: readonly Sequence[]): (LoraAdapters | null)[] | undefined {
    if (!sequences.some((s) => s.request.adapter)) return undefined;
    return sequences.map((s) => s.request.adapter ?? null);
  }

  private async prefill(sequence: Sequence): Promise<void> {
    const { request } = sequence;
    request.onAdmit?.();
    if (request.maxTokens <= 0) {
      this.finish(sequence, 'max_tokens');
      return;
    }
    const { model } = this;
    const cache = new KVCache(model.dims, 1, model.backend, Math.max(16, request.promptIds.length + Math.min(request.maxTokens, 512)));
    sequence.cache = cache;
    this.stats.promptTokens += request.promptIds.length;
    try {
      const next = this.choose(sequence, await prefillLogits(model, request.promptIds, cache, this.adapterRows([sequence])));
      if (next === null) this.finish(sequence, 'stopped_by_caller');
      else if (!this.accept(sequence, next)) this.live.push(sequence);
    } catch (error) {
      this.finish(sequence, null, error as Error);
    }
  }

  private async step(): Promise<void> {
    const { model } = this;
    const batch = this.live;
    this.stats.steps++;
    this.stats.sequenceSteps += batch.length;
    this.stats.largestBatch = Math.max(this.stats.largestBatch, batch.length);
    const rows = await decodeStepLogits(model, batch.map((s) => s.generated.at(-1)!), batch.map((s) => s.cache!), this.adapterRows(batch)); // [live, V]
    const vocab = model.dims.vocab;
    const stillLive: Sequence[] = [];
    batch.forEach((sequence, row) => {
      const next = this.choose(sequence, rows.subarray(row * vocab, (row + 1) * vocab));
      if (next === null) this.finish(sequence, 'stopped_by_caller');
      else if (!this.accept(sequence, next)) stillLive.push(sequence);
    });
    this.live = stillLive;
  }
}
