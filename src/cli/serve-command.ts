// `rank1 serve`: the OpenAI-compatible server (src/serve/) on a model folder and optional rank-1 adapter.
import * as path from 'node:path';
import { initBackend } from '../tensor/engine.ts';
import { loadPeftAdapter, loadQwen2Checkpoint } from '../model/load.ts';
import { loadTokenizer } from '../model/tokenizer.ts';
import { loadChatTemplate } from '../model/chat-template.ts';
import { DecodeScheduler } from '../serve/scheduler.ts';
import { buildServer, closeGracefully } from '../serve/server.ts';
import { note } from './io.ts';
import type { BackendOption } from './model-commands.ts';

export interface ServeOptions {
  model: string;
  adapter?: string;
  port: number;
  host: string;
  name?: string;
  maxBatch: number;
  maxQueue: number;
  maxTokens: number;
  bodyLimit: number;
  /** Seconds in-flight requests get after SIGTERM before they are ended with an error. */
  shutdownTimeout: number;
  backend: BackendOption;
  log?: boolean;
}

export async function serveCommand(options: ServeOptions): Promise<void> {
  const choice = await initBackend(options.backend);
  note(`backend: ${choice.reason}`);
  const { model, config, warnings } = await loadQwen2Checkpoint(options.model, choice.backend);
  for (const warning of warnings) note(`warning: ${warning}`);
  if (options.adapter) await loadPeftAdapter(options.adapter, model);
  const tokenizer = await loadTokenizer(options.model);
  if (!tokenizer) throw new Error(`no tokenizer.json in ${options.model}: rank1 serve needs one to read and write text`);
  const chatTemplate = await loadChatTemplate(options.model);
  const modelId = options.name ?? path.basename(path.resolve(options.model)) + (options.adapter ? `+${path.basename(path.resolve(options.adapter))}` : '');
  const scheduler = new DecodeScheduler(model, { maxBatch: options.maxBatch, maxQueue: options.maxQueue });
  const app = buildServer({
    scheduler, tokenizer, chatTemplate, modelId, contextLength: config.maxPositionEmbeddings,
    bodyLimit: options.bodyLimit, defaultMaxTokens: options.maxTokens, logger: options.log ?? false,
  });
  const address = await app.listen({ port: options.port, host: options.host });
  // One line on stdout that scripts can wait for; the rest goes to stderr.
  process.stdout.write(`rank1 serve: ${address}/v1 (model "${modelId}", up to ${options.maxBatch} sequences per step)\n`);
  // Runs until SIGTERM or SIGINT: then no new connections, 503 to new requests, idle keep-alive sockets closed,
  // in-flight ones finish (or, after --shutdown-timeout, end with an error).
  await new Promise<void>((resolve, reject) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      note(`${signal}: finishing ${scheduler.active + scheduler.queued} request(s) in flight (at most ${options.shutdownTimeout} s), accepting no new ones`);
      closeGracefully(app, scheduler, { timeoutMs: options.shutdownTimeout * 1000 }).then(resolve, reject);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  model.dispose();
  note('rank1 serve: stopped');
}
