// `rank1 serve`: an OpenAI-compatible chat-completions server backed by rank1's own engine (Fastify for HTTP).
// Routes: GET /v1/models, GET /v1/models/:id, POST /v1/chat/completions (non-streaming, and `stream: true` as
// server-sent events), and for operators GET /health and GET /metrics (Prometheus text, ./metrics.ts). The parts, as vLLM's OpenAI server has them: the wire format (./protocol.ts), request
// preparation (./prepare.ts: checked, rendered through the chat template), the shared serving state
// (./serving.ts), one request's decoding (./decoding.ts, queued on the continuous-batching ./scheduler.ts),
// and the whole and the streamed response (./respond-full.ts, ./respond-stream.ts). Every error is
// OpenAI-shaped, Fastify's and Node's own included (400 bad input or URL, 404 unknown route or model, 413 body
// too large, 414 parameter too long, 431 headers too large, 503 queue full or shutting down, with
// Retry-After). `closeGracefully` is the shutdown: refuse new requests, close idle keep-alive sockets at once,
// let in-flight ones finish for a grace period, then end them with an error.
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import { prepareRequest } from './prepare.ts';
import { registerCompletions } from './completions.ts';
import { adapterForModel, servedModelNames } from './lora-modules.ts';
import { ApiError, errorBody } from './protocol.ts';
import { respondFull } from './respond-full.ts';
import { respondStream } from './respond-stream.ts';
import { screenRequest } from './screen.ts';
import { ShuttingDownError, type DecodeScheduler } from './scheduler.ts';
import { createServing, type ServerOptions } from './serving.ts';
import type { ServeMetrics } from './metrics.ts';

/** Seconds a client is told to wait after a 503 (queue full; shutting down: try another replica). */
const RETRY_AFTER_SECONDS = { queue_full: 1, shutting_down: 5 } as const;

/** What the shutdown needs of a built server: its responses not yet finished, and whether it is closing. */
interface Lifecycle {
  closing: boolean;
  open: Set<ServerResponse>;
  /** Called whenever a response finishes (the shutdown waits on it). */
  onResponseDone: (() => void) | null;
}
const lifecycles = new WeakMap<FastifyInstance, Lifecycle>();

function sendError(reply: FastifyReply, error: ApiError): FastifyReply {
  if (error.status === 503) reply.header('retry-after', String(error.code === 'queue_full' ? RETRY_AFTER_SECONDS.queue_full : RETRY_AFTER_SECONDS.shutting_down));
  return reply.code(error.status).send(errorBody(error));
}

/** Fastify's router refusing a URL before any route runs (`frameworkErrors`). */
function frameworkError(error: Error & { code?: string; statusCode?: number }): ApiError {
  if (error.code === 'FST_ERR_MAX_PARAM_LENGTH') return new ApiError(414, 'a path parameter of the URL is longer than the server accepts', 'invalid_request_error', null, 'url_too_long');
  if (error.code === 'FST_ERR_BAD_URL') return new ApiError(400, 'the URL is not valid (bad percent-encoding)', 'invalid_request_error', null, 'invalid_url');
  return new ApiError(error.statusCode ?? 500, error.message, (error.statusCode ?? 500) < 500 ? 'invalid_request_error' : 'server_error', null, error.code ?? null);
}

/** Node's HTTP parser refusing a request (`clientErrorHandler`): the answer is written on the socket itself. */
function clientError(error: Error & { code?: string }, socket: Socket, metrics: ServeMetrics): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, reason, apiError] = error.code === 'HPE_HEADER_OVERFLOW'
    ? [431, 'Request Header Fields Too Large', new ApiError(431, 'the request headers are larger than the server accepts', 'invalid_request_error', null, 'headers_too_large')]
    : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'Request Timeout', new ApiError(408, 'the request was not received in time', 'invalid_request_error', null, 'request_timeout')]
      : [400, 'Bad Request', new ApiError(400, 'the request is not valid HTTP', 'invalid_request_error', null, 'bad_request')];
  const body = JSON.stringify(errorBody(apiError));
  metrics.response(status);
  if (socket.writable) socket.write(`HTTP/1.1 ${status} ${reason}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n${body}`);
  socket.destroy();
}

export function buildServer(options: ServerOptions): FastifyInstance {
  const serving = createServing(options);
  const { modelId, metrics } = serving;
  const created = Math.floor(Date.now() / 1000);
  const app: FastifyInstance = Fastify({
    bodyLimit: options.bodyLimit ?? 2 ** 20, logger: options.logger ?? false,
    // The shutdown answers new requests itself (OpenAI-shaped, Retry-After) rather than with Fastify's 503.
    return503OnClosing: false,
    frameworkErrors: (error, _request, reply) => {
      metrics.response(frameworkError(error).status); // no hook runs for a URL the router refused
      return sendError(reply, frameworkError(error));
    },
    clientErrorHandler: (error, socket) => clientError(error, socket, metrics),
  });
  const lifecycle: Lifecycle = { closing: false, open: new Set(), onResponseDone: null };
  lifecycles.set(app, lifecycle);
  const modelObject = { id: modelId, object: 'model', created, owned_by: 'rank1' };

  app.addHook('onRequest', async (_request, reply) => {
    const response = reply.raw;
    response.once('finish', () => metrics.response(response.statusCode));
    if (lifecycle.closing) {
      reply.header('connection', 'close');
      return sendError(reply, new ApiError(503, 'the server is shutting down and accepts no new requests', 'overloaded_error', null, 'shutting_down'));
    }
    lifecycle.open.add(response);
    response.once('close', () => {
      lifecycle.open.delete(response);
      lifecycle.onResponseDone?.();
    });
  });
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
  app.setNotFoundHandler((request, reply) => sendError(reply, new ApiError(404, `no route ${request.method} ${request.url}; this server has GET /v1/models, POST /v1/chat/completions, POST /v1/completions, GET /health and GET /metrics`, 'not_found_error', null, 'unknown_route')));

  app.get('/health', async () => ({ status: 'ok' }));
  app.get('/metrics', async (_request, reply) => {
    const { contentType, text } = await metrics.exposition();
    return reply.type(contentType).send(text);
  });
  // The base and each --lora-modules adapter (vLLM lists an adapter with `parent` the base).
  const modelObjects = servedModelNames(modelId, serving.loraModules).map((id) => (id === modelId ? modelObject : { id, object: 'model', created, owned_by: 'rank1', root: id, parent: modelId }));
  app.get('/v1/models', async () => ({ object: 'list', data: modelObjects }));
  app.get<{ Params: { id: string } }>('/v1/models/:id', async (request) => {
    adapterForModel(request.params.id, modelId, serving.loraModules); // 404 unless served
    return modelObjects.find((m) => m.id === request.params.id)!;
  });
  registerCompletions(app, serving);
  app.post('/v1/chat/completions', async (request, reply) => {
    const receivedAt = performance.now();
    await screenRequest(request.body, serving); // cheap bounds first: a huge message never reaches the tokenizer whole
    const prepared = prepareRequest(request.body, serving, receivedAt);
    return prepared.stream ? respondStream(prepared, serving, reply) : respondFull(prepared, serving, reply);
  });
  return app;
}

export interface ShutdownOptions {
  /** How long in-flight requests may take before they are ended with an error (default 30 s). */
  timeoutMs?: number;
}

/**
 * The shutdown: no new connections, 503 (Connection: close) to new requests on open ones, idle keep-alive
 * sockets closed at once and each one that goes idle closed as it does; in-flight requests finish, or after
 * `timeoutMs` are ended (a stream with an error chunk, a whole answer with 503). Resolves once the server is closed.
 */
export async function closeGracefully(app: FastifyInstance, scheduler: DecodeScheduler, { timeoutMs = 30_000 }: ShutdownOptions = {}): Promise<void> {
  const lifecycle = lifecycles.get(app);
  if (!lifecycle) throw new Error('closeGracefully: this app was not made by buildServer');
  lifecycle.closing = true;
  const server = app.server;
  const closed = app.close(); // stops listening; Node closes the sockets idle now
  const responsesDone = () => new Promise<void>((resolve) => {
    const check = () => {
      // A keep-alive socket whose response just ended goes idle on the next turn of the loop.
      setImmediate(() => server.closeIdleConnections());
      if (lifecycle.open.size === 0) resolve();
    };
    lifecycle.onResponseDone = check;
    check();
  });
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    responsesDone().then(() => false),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs))),
  ]);
  clearTimeout(timer);
  if (timedOut) {
    scheduler.cancelAll(new ShuttingDownError(`the server shut down before this request finished (its grace period of ${timeoutMs / 1000} s ran out)`));
    await Promise.race([responsesDone(), new Promise((resolve) => setTimeout(resolve, 2000))]);
  }
  await scheduler.drain();
  server.closeAllConnections(); // nothing is in flight: any socket left is idle or half-open
  await closed;
}
