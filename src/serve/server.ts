// `rank1 serve`: an OpenAI-compatible chat-completions server backed by rank1's own engine (Fastify for HTTP).
// Routes: GET /v1/models, GET /v1/models/:id, POST /v1/chat/completions (non-streaming, and `stream: true` as
// server-sent events). The parts, as vLLM's OpenAI server has them: the wire format (./protocol.ts), request
// preparation (./prepare.ts: checked, rendered through the chat template), the shared serving state
// (./serving.ts), one request's decoding (./decoding.ts, queued on the continuous-batching ./scheduler.ts),
// and the whole and the streamed response (./respond-full.ts, ./respond-stream.ts). Errors are OpenAI-shaped
// with 400 bad input, 404 unknown route or model, 413 body too large, 503 queue full or shutting down.
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import { prepareRequest } from './prepare.ts';
import { ApiError, errorBody } from './protocol.ts';
import { respondFull } from './respond-full.ts';
import { respondStream } from './respond-stream.ts';
import type { DecodeScheduler } from './scheduler.ts';
import { createServing, type ServerOptions } from './serving.ts';

function sendError(reply: FastifyReply, error: ApiError): FastifyReply {
  return reply.code(error.status).send(errorBody(error));
}

export function buildServer(options: ServerOptions): FastifyInstance {
  const serving = createServing(options);
  const { modelId } = serving;
  const created = Math.floor(Date.now() / 1000);
  const app = Fastify({ bodyLimit: options.bodyLimit ?? 2 ** 20, logger: options.logger ?? false, return503OnClosing: true });
  const modelObject = { id: modelId, object: 'model', created, owned_by: 'rank1' };

  app.setErrorHandler((error: Error & { statusCode?: number; code?: string }, _request, reply) => {
    if (error instanceof ApiError) return sendError(reply, error);
    if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || error.statusCode === 413) {
      return sendError(reply, new ApiError(413, `request body is larger than the server's limit of ${app.initialConfig.bodyLimit} bytes`, 'invalid_request_error', null, 'request_too_large'));
    }
    if (error.statusCode && error.statusCode >= 400 && error.statusCode < 500) {
      return sendError(reply, new ApiError(error.statusCode, error.message, 'invalid_request_error', null, error.code ?? null));
    }
    return sendError(reply, new ApiError(500, `internal error: ${error.message}`, 'server_error'));
  });
  app.setNotFoundHandler((request, reply) => sendError(reply, new ApiError(404, `no route ${request.method} ${request.url}; this server has GET /v1/models and POST /v1/chat/completions`, 'not_found_error', null, 'unknown_route')));

  app.get('/v1/models', async () => ({ object: 'list', data: [modelObject] }));
  app.get<{ Params: { id: string } }>('/v1/models/:id', async (request) => {
    if (request.params.id !== modelId) throw new ApiError(404, `model "${request.params.id}" not found; this server serves "${modelId}"`, 'not_found_error', 'model', 'model_not_found');
    return modelObject;
  });
  app.post('/v1/chat/completions', async (request, reply) => {
    const prepared = prepareRequest(request.body, serving);
    return prepared.stream ? respondStream(prepared, serving, reply) : respondFull(prepared, serving);
  });
  return app;
}

/** Closes the HTTP side (no new connections, 503 to new requests) then lets accepted generations finish. */
export async function closeGracefully(app: FastifyInstance, scheduler: DecodeScheduler): Promise<void> {
  const closing = app.close();
  await scheduler.drain();
  await closing;
}
