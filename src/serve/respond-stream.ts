// The streamed chat completion (`stream: true`): server-sent events on the raw response — a first chunk with
// the assistant's role, a chunk per batch of new text as tokens are chosen (text that could still turn into a
// stop sequence is held back), a last chunk with the finish reason, the usage chunk if asked for, then
// `data: [DONE]`. A client that disconnects aborts its decoding (it leaves the batch at the next step). A failure after the headers are sent can
// only be reported in the stream: an error event before `[DONE]`.
import type { FastifyReply } from 'fastify';
import { RequestDecoding, refusalError } from './decoding.ts';
import type { PreparedRequest } from './prepare.ts';
import { ApiError, chatCompletionChunk, errorBody, usageChunk } from './protocol.ts';
import type { DecodeOutcome } from './scheduler.ts';
import type { Serving } from './serving.ts';

export async function respondStream(request: PreparedRequest, serving: Serving, reply: FastifyReply): Promise<FastifyReply> {
  const decoding = new RequestDecoding(request, serving);
  const chunk = (delta: { role?: 'assistant'; content?: string }, finish: 'stop' | 'length' | null = null) => chatCompletionChunk(request.id, request.model ?? serving.modelId, delta, finish);
  // Text waiting to be sent, and the sender's wake-up call while it waits for more.
  const pending: string[] = [];
  let wake: (() => void) | null = null;
  let outcomePromise: Promise<DecodeOutcome>;
  try {
    outcomePromise = decoding.submit((id, generated) => {
      const complete = decoding.afterToken(id);
      const delta = decoding.stopText.push(generated, complete);
      if (delta) {
        pending.push(delta);
        wake?.();
      }
      return complete || decoding.stopText.stopped;
    });
  } catch (error) {
    throw refusalError(error);
  }
  const send = openEventStream(reply, decoding.abort);
  send(chunk({ role: 'assistant', content: '' }));
  let done = false;
  void outcomePromise.finally(() => {
    done = true;
    wake?.();
  }).catch(() => undefined);
  while (!done || pending.length) {
    if (pending.length) {
      send(chunk({ content: pending.splice(0).join('') }));
      continue;
    }
    await new Promise<void>((resolve) => { wake = resolve; });
    wake = null;
  }
  try {
    const outcome = await outcomePromise;
    const tail = decoding.stopText.push(outcome.ids, true);
    if (tail) send(chunk({ content: tail }));
    send(chunk({}, decoding.finishReason(outcome)));
    if (request.includeUsage) send(usageChunk(request.id, request.model ?? serving.modelId, decoding.usage(outcome)));
  } catch (error) {
    const refusal = refusalError(error);
    send(errorBody(refusal instanceof ApiError ? refusal : new ApiError(500, `generation failed: ${refusal.message}`, 'server_error')));
  }
  reply.raw.end('data: [DONE]\n\n');
  return reply;
}

/** Takes the response over from Fastify for server-sent events; returns the sender of one `data:` event. */
function openEventStream(reply: FastifyReply, abort: AbortController): (data: unknown) => void {
  reply.hijack();
  const raw = reply.raw;
  raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
  raw.on('close', () => abort.abort());
  return (data) => raw.write(`data: ${JSON.stringify(data)}\n\n`);
}
