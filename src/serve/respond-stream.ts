// The streamed chat completion (`stream: true`): server-sent events on the raw response — a first chunk with
// the assistant's role, a chunk per batch of new text as tokens are chosen (text that could still turn into a
// stop sequence is held back), a last chunk with the finish reason, the usage chunk if asked for, then
// `data: [DONE]`. A client that disconnects aborts its decoding (it leaves the batch at the next step). A failure after the headers are sent can
// only be reported in the stream: an error event before `[DONE]`.
import type { FastifyReply } from 'fastify';
import { RequestDecoding, refusalError } from './decoding.ts';
import { PieceQueue, endEventStream, openEventStream } from './event-stream.ts';
import type { PreparedRequest } from './prepare.ts';
import { chatCompletionChunk, usageChunk } from './protocol.ts';
import type { DecodeOutcome } from './scheduler.ts';
import type { Serving } from './serving.ts';

export async function respondStream(request: PreparedRequest, serving: Serving, reply: FastifyReply): Promise<FastifyReply> {
  const decoding = new RequestDecoding(request, serving);
  const chunk = (delta: { role?: 'assistant'; content?: string }, finish: 'stop' | 'length' | null = null) => chatCompletionChunk(request.id, request.model ?? serving.modelId, delta, finish);
  const pieces = new PieceQueue<string>();
  let outcomePromise: Promise<DecodeOutcome>;
  try {
    outcomePromise = decoding.submit((id, generated) => {
      const complete = decoding.afterToken(id);
      const delta = decoding.stopText.push(generated, complete);
      if (delta) pieces.push(delta);
      return complete || decoding.stopText.stopped;
    });
  } catch (error) {
    throw refusalError(error);
  }
  const send = openEventStream(reply, decoding.abort);
  send(chunk({ role: 'assistant', content: '' }));
  await pieces.drainUntil(outcomePromise, (batch) => send(chunk({ content: batch.join('') })));
  return endEventStream(reply, send, outcomePromise, (outcome) => {
    const tail = decoding.stopText.push(outcome.ids, true);
    if (tail) send(chunk({ content: tail }));
    send(chunk({}, decoding.finishReason(outcome)));
    if (request.includeUsage) send(usageChunk(request.id, request.model ?? serving.modelId, decoding.usage(outcome)));
  });
}
