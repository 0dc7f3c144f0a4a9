// The whole (non-streaming) chat completion: decode to the end, then one `chat.completion` object. A client
// that goes away before the answer is sent aborts its decoding (it leaves the batch at the next step).
import type { FastifyReply } from 'fastify';
import { RequestDecoding, refusalError } from './decoding.ts';
import type { PreparedRequest } from './prepare.ts';
import { chatCompletion } from './protocol.ts';
import type { DecodeOutcome } from './scheduler.ts';
import type { Serving } from './serving.ts';
import { cutAtStop } from './stop-text.ts';

export async function respondFull(request: PreparedRequest, serving: Serving, reply: FastifyReply): Promise<ReturnType<typeof chatCompletion>> {
  const decoding = new RequestDecoding(request, serving);
  // 'close' before the response is written: the connection went away under it.
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) decoding.abort.abort();
  });
  // Text is only needed per token to find a stop sequence (decoding every prefix is quadratic).
  const watchStops = request.stops.length > 0;
  let outcome: DecodeOutcome;
  try {
    outcome = await decoding.submit((id, generated) => {
      if (watchStops) decoding.stopText.push(generated);
      return decoding.afterToken(id) || decoding.stopText.stopped;
    });
  } catch (error) {
    throw refusalError(error);
  }
  const text = serving.decodeText(outcome.ids);
  const content = decoding.stopText.stopped ? cutAtStop(text, request.stops) : text;
  return chatCompletion(request.id, request.model ?? serving.modelId, content, decoding.finishReason(outcome), decoding.usage(outcome));
}
