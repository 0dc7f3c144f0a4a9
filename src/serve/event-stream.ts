// Server-sent events, shared by the streamed chat completion and the streamed completion: taking the response
// over from Fastify, the queue between the decode loop (which produces text as tokens are chosen) and the
// sender (which writes it in batches while the loop runs), and the end of a stream — the last events, or an
// error event when generation failed after the headers went out — before `data: [DONE]`.
import type { FastifyReply } from 'fastify';
import { refusalError } from './decoding.ts';
import { ApiError, errorBody } from './protocol.ts';

export type SendEvent = (data: unknown) => void;

/** Takes the response over from Fastify for server-sent events; a client that goes away aborts its decoding. */
export function openEventStream(reply: FastifyReply, abort: AbortController): SendEvent {
  reply.hijack();
  const raw = reply.raw;
  raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
  raw.on('close', () => abort.abort());
  return (data) => raw.write(`data: ${JSON.stringify(data)}\n\n`);
}

/** Pieces the decode loop pushes as tokens are chosen, drained by the sender in batches. */
export class PieceQueue<T> {
  private pending: T[] = [];
  private wake: (() => void) | null = null;

  push(piece: T): void {
    this.pending.push(piece);
    this.wake?.();
  }

  /** Hands every batch of waiting pieces to `send` as they come, until `outcome` settles and none is left. */
  async drainUntil(outcome: Promise<unknown>, send: (batch: T[]) => void): Promise<void> {
    let settled = false;
    void outcome.finally(() => {
      settled = true;
      this.wake?.();
    }).catch(() => undefined);
    while (!settled || this.pending.length) {
      if (this.pending.length) {
        send(this.pending.splice(0));
        continue;
      }
      await new Promise<void>((resolve) => { this.wake = resolve; });
      this.wake = null;
    }
  }
}

/**
 * Ends a stream: `finish` sends the last events from the outcome; a failed generation becomes an error event
 * (the status line went out long ago); then `data: [DONE]`.
 */
export async function endEventStream<T>(reply: FastifyReply, send: SendEvent, outcome: Promise<T>, finish: (outcome: T) => void): Promise<FastifyReply> {
  try {
    finish(await outcome);
  } catch (error) {
    const refusal = refusalError(error);
    send(errorBody(refusal instanceof ApiError ? refusal : new ApiError(500, `generation failed: ${refusal.message}`, 'server_error')));
  }
  reply.raw.end('data: [DONE]\n\n');
  return reply;
}
