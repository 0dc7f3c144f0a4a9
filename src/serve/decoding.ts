// One request's decoding in `rank1 serve`, shared by the whole response (./respond-full.ts) and the streamed
// one (./respond-stream.ts): the submission to the scheduler with the request's sampling settings and its
// structured-outputs constraint, the stop-sequence tracking, and what the response reports at the end — the
// finish reason and the token counts. Scheduler refusals become the client's errors here (503, or 400 for a
// prompt the model cannot read).
import { JsonConstraintState } from './json-constraint.ts';
import { ApiError, usage, type FinishReason, type Usage } from './protocol.ts';
import type { PreparedRequest } from './prepare.ts';
import { QueueFullError, ShuttingDownError, type DecodeOutcome } from './scheduler.ts';
import type { Serving } from './serving.ts';
import { StopTextTracker } from './stop-text.ts';

/** Called with each token as soon as it is chosen and all ids so far; true stops the sequence there. */
export type TokenListener = (id: number, generated: readonly number[]) => boolean;

export class RequestDecoding {
  readonly stopText: StopTextTracker;
  /** Aborting removes the sequence from the batch at the next step (a stream's client went away). */
  readonly abort = new AbortController();
  /** Structured outputs: the text so far, only extended by tokens that keep it a prefix of an accepted document. */
  private readonly jsonConstraint: JsonConstraintState | null;
  private documentComplete = false;

  constructor(private readonly request: PreparedRequest, private readonly serving: Serving) {
    this.stopText = new StopTextTracker(serving.decodeText, request.stops);
    this.jsonConstraint = request.schema === null ? null : new JsonConstraintState(request.schema);
  }

  /** Queues the decoding (timed for the metrics). Throws at once when the scheduler refuses (see `refusalError`). */
  submit(onToken: TokenListener): Promise<DecodeOutcome> {
    const { promptIds, maxTokens, temperature, topP, seed, receivedAt } = this.request;
    const constraint = this.jsonConstraint === null ? {} : { allowToken: (_generated: readonly number[], candidate: number) => this.allows(candidate) };
    const timer = this.serving.metrics.requestTimer(receivedAt ?? performance.now());
    const timedListener: TokenListener = (id, generated) => {
      timer.token();
      return onToken(id, generated);
    };
    const outcome = this.serving.scheduler.submit({ promptIds, maxTokens, temperature, topP, seed, stopIds: this.serving.stopIds, signal: this.abort.signal, ...constraint, onToken: timedListener, onAdmit: timer.admitted, adapter: this.request.adapter ?? null });
    outcome.then(
      (done) => timer.finished(done.stopReason === 'aborted' ? 'abort' : this.finishReason(done), promptIds.length, this.usage(done).completion_tokens),
      () => timer.finished('error', promptIds.length, 0),
    );
    return outcome;
  }

  /** Whether `candidate` may come next under the schema: text that keeps the document valid, no special token. */
  private allows(candidate: number): boolean {
    const piece = this.serving.tokenText(candidate);
    return piece !== '' && !this.serving.stopIds.includes(candidate) && !piece.includes('\uFFFD') && this.jsonConstraint!.statusWith(piece) !== 'invalid';
  }

  /** Adds a chosen token to the structured text; true once the document is complete (the sequence ends). */
  afterToken(id: number): boolean {
    if (this.jsonConstraint === null) return false;
    this.documentComplete = this.jsonConstraint.accept(this.serving.tokenText(id)) === 'complete';
    return this.documentComplete;
  }

  /**
   * 'length' when max_tokens cut the answer short, 'stop' when it ended (end of turn, stop sequence, document).
   * A constrained answer is 'stop' only as a whole document, uncut by a stop sequence.
   */
  finishReason(outcome: DecodeOutcome): FinishReason {
    if (this.jsonConstraint !== null) return this.documentComplete && !this.stopText.stopped ? 'stop' : 'length';
    return outcome.stopReason === 'max_tokens' && !this.stopText.stopped && !this.documentComplete ? 'length' : 'stop';
  }

  usage(outcome: DecodeOutcome): Usage {
    return usage(this.request.promptIds.length, outcome.ids.filter((t) => !this.serving.stopIds.includes(t)).length);
  }
}

/** A scheduler's refusal as the client's error; anything else passes through (a 500). */
export function refusalError(error: unknown): Error {
  if (error instanceof QueueFullError) return new ApiError(503, error.message, 'overloaded_error', null, 'queue_full');
  if (error instanceof ShuttingDownError) return new ApiError(503, error.message, 'overloaded_error', null, 'shutting_down');
  if (error instanceof RangeError) return new ApiError(400, error.message, 'invalid_request_error', 'messages');
  return error as Error;
}
