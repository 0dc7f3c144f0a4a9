// `rank1 info | tokenize | logits | generate | hooks`: the model-facing commands. JSON goes to stdout,
// human notes (backend choice, warnings) to stderr, so outputs can be piped.
import * as path from 'node:path';
import type { BackendName } from '../kernels/backend.ts';
import { initBackend } from '../tensor/engine.ts';
import { tensor } from '../tensor/ops.ts';
import { tidy } from '../tensor/tensor.ts';
import { openCheckpoint } from '../model/checkpoint.ts';
import { encodeChat, loadChatTemplate } from '../model/chat-template.ts';
import { generate } from '../model/generate.ts';
import { HOOK_KINDS, adapterHookNames, listHookPoints } from '../model/hooks.ts';
import { HookRecorder, steer, withHooks, type HookSpec } from '../model/hook-registry.ts';
import { adapterModules, resolveModuleSelection, zeroAblationHooks } from '../model/adapter-select.ts';
import { dimsFromConfig, loadPeftAdapter, loadQwen2Checkpoint } from '../model/load.ts';
import { loadTokenizer, type Tokenizer } from '../model/tokenizer.ts';
import type { Qwen2Model } from '../model/qwen2.ts';
import type { Qwen2Config } from '../model/config.ts';
import { projectionDims } from '../model/lora.ts';
import { estimateForwardActivations, formatBytes } from '../train/memory.ts';
import { note } from './io.ts';

export type BackendOption = BackendName | 'auto';

async function requireTokenizer(from: string): Promise<Tokenizer> {
  const tokenizer = await loadTokenizer(from);
  if (!tokenizer) throw new Error(`no tokenizer.json in ${from}: pass token ids with --ids instead of --text`);
  return tokenizer;
}

/** Text to ids; with chat, the text is one user message (read as text) rendered by the folder's (or the built-in) template. */
async function encodeText(tokenizer: Tokenizer, text: string, chat: boolean, templateDir: string | undefined): Promise<number[]> {
  if (!chat) return tokenizer.encode(text, { addSpecialTokens: false });
  const template = await loadChatTemplate(templateDir ?? '');
  return encodeChat(tokenizer, template, [{ role: 'user', content: text }], { addGenerationPrompt: true });
}

export function parseIds(text: string): number[] {
  const ids = text.split(',').map((s) => s.trim()).filter((s) => s !== '').map(Number);
  const bad = ids.findIndex((id) => !Number.isInteger(id) || id < 0);
  if (ids.length === 0 || bad >= 0) throw new Error(`--ids must be comma-separated non-negative integers, got "${text}"`);
  return ids;
}

// ---- info ---------------------------------------------------------------------------------------

export function describeModel(config: Qwen2Config, weightBytes: number) {
  const { numHiddenLayers: L, hiddenSize: H, numKeyValueHeads: kv, headDim: hd, intermediateSize: I, vocabSize: V } = config;
  const perLayer = Object.values(projectionDims(H, I, config.numAttentionHeads, kv, hd)).reduce((n, d) => n + d.inFeatures + d.outFeatures, 0);
  const adapterParameterCount = L * perLayer;
  const kvBytesPerToken = L * 2 * kv * hd * 4;
  // Peak activations for a forward of T tokens without gradients, as the commands now run it: a few [T, H]
  // and [T, I] buffers plus one [chunk, V] chunk of logits (src/train/memory.ts), in f32.
  const activationBytes = (tokens: number) => estimateForwardActivations({ hidden: H, intermediate: I, vocab: V }, tokens);
  return {
    architecture: 'Qwen2ForCausalLM',
    layers: L,
    hidden: H,
    intermediate: I,
    heads: config.numAttentionHeads,
    kvHeads: kv,
    headDim: hd,
    vocab: V,
    ropeTheta: config.ropeTheta,
    tiedEmbeddings: config.tieWordEmbeddings,
    torchDtype: config.torchDtype,
    adapters: 7 * L,
    adapterParameters: adapterParameterCount,
    weightBytes,
    kvCacheBytesPerToken: kvBytesPerToken,
    memory: {
      // Weights stay in their storage dtype on both backends; compute buffers are f32.
      cpu: { weights: weightBytes, forward2048: weightBytes + activationBytes(2048) + 2048 * kvBytesPerToken },
      webgpu: { weights: weightBytes, forward2048: weightBytes + activationBytes(2048) + 2048 * kvBytesPerToken },
    },
  };
}

export async function infoCommand(options: { model: string; json?: boolean }): Promise<void> {
  const checkpoint = await openCheckpoint(options.model);
  const config = checkpoint.config;
  let parameters = 0;
  for (const { shape } of checkpoint.expected) parameters += shape.reduce((a, b) => a * b, 1);
  const info = { ...describeModel(config, checkpoint.totalBytes), parameters, files: checkpoint.files.map((f) => path.basename(f)) };
  for (const warning of checkpoint.warnings) note(`warning: ${warning}`);
  if (options.json) {
    process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
    return;
  }
  const m = info.memory;
  const lines = [
    `model        ${options.model}`,
    `architecture Qwen2ForCausalLM, ${config.numHiddenLayers} layers, hidden ${config.hiddenSize}, intermediate ${config.intermediateSize}`,
    `attention    ${config.numAttentionHeads} heads, ${config.numKeyValueHeads} key/value heads, head dim ${config.headDim}, rope θ ${config.ropeTheta}`,
    `vocab        ${config.vocabSize}${config.tieWordEmbeddings ? ' (tied embeddings)' : ''}`,
    `parameters   ${parameters.toLocaleString('en-US')} (${config.torchDtype}, ${formatBytes(checkpoint.totalBytes)} of weights in ${checkpoint.files.length} file(s))`,
    `adapters     ${7 * config.numHiddenLayers} rank-1 adapters (7 per layer: gate, up, down, q, k, v, o), ${info.adapterParameters.toLocaleString('en-US')} trainable scalars`,
    `memory       weights ${formatBytes(checkpoint.totalBytes)} on cpu or webgpu (kept in ${config.torchDtype}); a 2048-token forward ≈ ${formatBytes(m.cpu.forward2048)}`,
    `kv cache     ${formatBytes(info.kvCacheBytesPerToken)} per token`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

// ---- tokenize -----------------------------------------------------------------------------------

export async function tokenizeCommand(options: { model?: string; tokenizer?: string; text: string; chat?: boolean }): Promise<void> {
  const source = options.tokenizer ?? options.model;
  if (!source) throw new Error('tokenize needs --model DIR or --tokenizer FILE');
  const tokenizer = await requireTokenizer(source);
  const templateDir = options.model ?? path.dirname(options.tokenizer!);
  const ids = await encodeText(tokenizer, options.text, options.chat ?? false, templateDir);
  process.stdout.write(`${JSON.stringify({ ids })}\n`);
}

// ---- shared model loading -----------------------------------------------------------------------

interface LoadedForCli {
  model: Qwen2Model;
  tokenizer: Tokenizer | null;
}

async function loadForCli(options: { model: string; adapter?: string; backend: BackendOption }): Promise<LoadedForCli> {
  const choice = await initBackend(options.backend);
  note(`backend: ${choice.reason}`);
  const { model, warnings } = await loadQwen2Checkpoint(options.model, choice.backend);
  for (const warning of warnings) note(`warning: ${warning}`);
  if (options.adapter) await loadPeftAdapter(options.adapter, model);
  const tokenizer = await loadTokenizer(options.model).catch((err: Error) => {
    note(`warning: tokenizer not loaded: ${err.message}`);
    return null;
  });
  return { model, tokenizer };
}

function checkAdapterNames(model: Qwen2Model, names: readonly string[], flag: string): void {
  if (!model.adapters) throw new Error(`${flag} needs an adapter (--adapter DIR)`);
  const known = new Set(adapterHookNames(model.dims.layers));
  for (const name of names) {
    if (!known.has(name)) throw new Error(`${flag}: "${name}" is not an adapter of this model (e.g. model.layers.0.self_attn.q_proj)`);
    if (!model.adapters.adapters.has(name)) throw new Error(`${flag}: the adapter has no ${name} (not in its target_modules)`);
  }
}

// ---- logits -------------------------------------------------------------------------------------

/** JSON numbers for f32 values: 9 significant digits always read back to the same f32. */
function f32Json(values: Float32Array): string {
  let out = '[';
  for (let i = 0; i < values.length; i++) {
    if (i > 0) out += ',';
    const v = values[i]!;
    out += Number.isFinite(v) ? String(+v.toPrecision(9)) : 'null';
  }
  return `${out}]`;
}

export async function logitsCommand(options: {
  model: string; adapter?: string; ids?: string; text?: string; chat?: boolean; ablate?: string; backend: BackendOption;
}): Promise<void> {
  if ((options.ids === undefined) === (options.text === undefined)) throw new Error('logits needs exactly one of --ids or --text');
  const { model, tokenizer } = await loadForCli(options);
  let ids: number[];
  if (options.ids !== undefined) ids = parseIds(options.ids);
  else {
    if (!tokenizer) throw new Error(`no tokenizer.json in ${options.model}: pass token ids with --ids`);
    ids = await encodeText(tokenizer, options.text!, options.chat ?? false, options.model);
  }
  const bad = ids.findIndex((id) => id >= model.dims.vocab);
  if (bad >= 0) throw new Error(`token id ${ids[bad]} at position ${bad} is outside the vocabulary [0, ${model.dims.vocab})`);
  if (options.ablate !== undefined && !model.adapters) throw new Error('--ablate needs an adapter (--adapter DIR)');
  // The same selection as rank1 eval --ablate and rank1 adapter select: groups, projections or module paths.
  const ablate = options.ablate !== undefined ? resolveModuleSelection(options.ablate, adapterModules(model.adapters), `--ablate: adapter ${options.adapter}`) : [];
  const recorder = new HookRecorder();
  const adapterNames = model.adapters ? [...model.adapters.adapters.keys()] : [];
  // The recorder runs first, so acts are the raw A·x even for ablated adapters.
  const hooks: HookSpec = [
    ...adapterNames.map((name) => [name, recorder.hook] as const),
    ...zeroAblationHooks(ablate),
  ];
  const input = () => tensor(Int32Array.from(ids), [1, ids.length], { backend: model.backend, dtype: 'i32' });
  const logits = await withHooks(model, hooks, () => tidy(() => model.forward(input())).toFloat32Array());
  const V = model.dims.vocab;
  const out: string[] = [];
  out.push(`{"ids":${JSON.stringify(ids)},"logits":[`);
  for (let t = 0; t < ids.length; t++) out.push(`${t > 0 ? ',' : ''}${f32Json(logits.subarray(t * V, (t + 1) * V))}`);
  out.push(']');
  if (model.adapters) {
    out.push(',"acts":{');
    let first = true;
    for (const name of adapterNames) {
      out.push(`${first ? '' : ','}${JSON.stringify(name)}:${f32Json(await recorder.get(name).toFloat32Array())}`);
      first = false;
    }
    out.push('}');
  }
  out.push('}\n');
  recorder.dispose();
  await writeStdout(out.join(''));
}

async function writeStdout(text: string): Promise<void> {
  await new Promise<void>((resolve, reject) => process.stdout.write(text, (err) => (err ? reject(err) : resolve())));
}

// ---- generate -----------------------------------------------------------------------------------

export function parseSteer(specs: readonly string[]): [string, number][] {
  return specs.map((spec) => {
    const eq = spec.lastIndexOf('=');
    const value = Number(spec.slice(eq + 1));
    if (eq <= 0 || !Number.isFinite(value)) throw new Error(`--steer expects MODULE=VALUE (e.g. model.layers.3.mlp.up_proj=50), got "${spec}"`);
    return [spec.slice(0, eq), value];
  });
}

export async function generateCommand(options: {
  model: string; adapter?: string; prompt: string; chat?: boolean; maxTokens: number; temperature: number; topP: number;
  seed: number; steer?: string[]; backend: BackendOption;
}): Promise<void> {
  const { model, tokenizer } = await loadForCli(options);
  if (!tokenizer) throw new Error(`no tokenizer.json in ${options.model}: generate needs a tokenizer`);
  const steering = parseSteer(options.steer ?? []);
  if (steering.length) checkAdapterNames(model, steering.map(([n]) => n), '--steer');
  const promptIds = await encodeText(tokenizer, options.prompt, options.chat ?? false, options.model);
  const stream = tokenizer.createDecodeStream({ skipSpecialTokens: true });
  const stopIds = tokenizer.stopIds();
  const hooks: HookSpec = steering.map(([name, value]) => [name, steer(value)] as const);
  const result = await withHooks(model, hooks, () => generate(model, promptIds, {
    maxTokens: options.maxTokens,
    temperature: options.temperature,
    topP: options.topP,
    seed: options.seed,
    stopIds,
    onToken: (id) => process.stdout.write(stream.push(id)),
  }));
  process.stdout.write(`${stream.flush()}\n`);
  note(`[${result.ids.length} tokens, stopped by ${result.stopReason}]`);
}

// ---- hooks --------------------------------------------------------------------------------------

/** Every hook point in forward order; `--kind adapter` lists the adapters in the paper's order (7·layer + j). */
export async function hooksCommand(options: { model: string; kind?: string }): Promise<void> {
  const { kind } = options;
  if (kind !== undefined && !(HOOK_KINDS as readonly string[]).includes(kind)) {
    throw new Error(`--kind must be one of ${HOOK_KINDS.join(', ')}; got "${kind}"`);
  }
  const { config } = await openCheckpoint(options.model);
  const points = listHookPoints(dimsFromConfig(config)).filter((p) => !kind || p.kind === kind);
  if (kind === 'adapter') points.sort((a, b) => a.adapterIndex! - b.adapterIndex!);
  for (const p of points) process.stdout.write(`${p.name}\t${p.shape}\t${p.description}\n`);
}
