// `rank1 serve`: the OpenAI-compatible server (src/serve/) on a model folder and optional rank-1 adapter.
import * as path from 'node:path';
import { initBackend } from '../tensor/engine.ts';
import { loadPeftAdapter, loadQwen2Checkpoint, readPeftAdapter } from '../model/load.ts';
import type { LoraAdapters } from '../model/lora.ts';
import { parseLoraModule } from '../serve/lora-modules.ts';
import { loadTokenizer } from '../model/tokenizer.ts';
import { loadChatTemplate } from '../model/chat-template.ts';
import { DecodeScheduler } from '../serve/scheduler.ts';
import { buildServer, closeGracefully } from '../serve/server.ts';
import { note } from './io.ts';
import type { BackendOption } from './model-commands.ts';

export interface ServeOptions {
  model: string;
  adapter?: string;
  /** vLLM's --lora-modules: NAME=DIR adapters served by name beside the base. */
  loraModules?: string[];
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
  if (options.adapter && options.loraModules?.length) throw new Error('--adapter installs one adapter for every request; with --lora-modules, serve it under a name (NAME=DIR) instead');
  if (options.adapter) await loadPeftAdapter(options.adapter, model);
  const loraModules = new Map<string, LoraAdapters>();
  for (const spec of options.loraModules ?? []) {
    const { name, dir } = parseLoraModule(spec);
    if (loraModules.has(name)) throw new Error(`--lora-modules names "${name}" twice`);
    loraModules.set(name, await readPeftAdapter(dir, model));
    note(`lora module "${name}": ${dir}`);
  }
  const tokenizer = await loadTokenizer(options.model);
  if (!tokenizer) throw new Error(`no tokenizer.json in ${options.model}: rank1 serve needs one to read and write text`);
  const chatTemplate = await loadChatTemplate(options.model);
  const modelId = options.name ?? path.basename(path.resolve(options.model)) + (options.adapter ? `+${path.basename(path.resolve(options.adapter))}` : '');
  if (loraModules.has(modelId)) throw new Error(`--lora-modules name "${modelId}" is the base model's name; pick another`);
  const scheduler = new DecodeScheduler(model, { maxBatch: options.maxBatch, maxQueue: options.maxQueue });
  const app = buildServer({
    scheduler, tokenizer, chatTemplate, modelId, contextLength: config.maxPositionEmbeddings,
    bodyLimit: options.bodyLimit, defaultMaxTokens: options.maxTokens, logger: options.log ?? false, loraModules,
  });
  const address = await app.listen({ port: options.port, host: options.host });
  // One line on stdout that scripts can wait for; the rest goes to stderr.
  process.stdout.write(`rank1 serve: ${address}/v1 (model "${modelId}"${loraModules.size ? ` and ${loraModules.size} LoRA module(s): ${[...loraModules.keys()].join(', ')}` : ''}, up to ${options.maxBatch} sequences per step)\n`);
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
  for (const adapters of loraModules.values()) adapters.dispose();
  model.dispose();
  note('rank1 serve: stopped');
}
