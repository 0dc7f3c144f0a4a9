// `rank1 pretrain`: full-parameter training of a fresh Qwen2-architecture model from scratch (GQA, q/k/v
// biases, RoPE, RMSNorm, SwiGLU, tied embeddings; Hugging Face's N(0, 0.02) init) on text rows, with
// everything `rank1 train` guarantees (progress, metrics, atomic checkpoints, exact resume, Ctrl-C, NaN stop,
// memory refusal). The output is a normal Hugging Face folder: config.json, model.safetensors,
// generation_config.json and the tokenizer files (tokenizer.json, tokenizer_config.json, chat template).
//
// Loss: every token of a plain-text row; only the assistant turn of a chat-templated row (as `rank1 train`).
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { BackendName } from '../kernels/backend.ts';
import { initBackend } from '../tensor/engine.ts';
import { loadChatTemplate } from '../model/chat-template.ts';
import { copyCompanionFiles, openCheckpoint, writeCheckpoint } from '../model/checkpoint.ts';
import { parseQwen2Config, type Qwen2Config } from '../model/config.ts';
import { modelTensors } from '../model/load.ts';
import { loadTokenizer, type Tokenizer } from '../model/tokenizer.ts';
import { loadTrainingRows, tokenizeRows } from '../train/data.ts';
import { initialQwen2Model, pretrainConfig, type ArchitectureOptions } from '../train/pretrain.ts';
import { PAPER_TRAINING, type TrainSettings } from '../train/trainer.ts';
import { note } from './io.ts';
import { checkTrainingMemory, runTrainingJob } from './train-command.ts';

export interface PretrainCommandOptions extends Partial<ArchitectureOptions> {
  data: string;
  out: string;
  tokenizer?: string;
  config?: string;
  epochs: number;
  steps?: number;
  batch: number;
  microBatch: number;
  lr: number;
  weightDecay: number;
  warmupRatio: number;
  maxGradNorm: number;
  seed: number;
  blockSize: number;
  saveEvery: number;
  keepCheckpoints: number;
  saveDtype: 'bf16' | 'f32';
  resume?: string;
  gradientCheckpointing: boolean;
  /** Rows per chunk of the loss (default: defaultLossChunkRows(V)). */
  lossChunk?: number;
  /** The dtype checkpointed layer inputs are kept in (default f32). */
  checkpointDtype?: 'f32' | 'bf16';
  memoryLimit?: number;
  progress: boolean;
  backend: BackendName | 'auto';
}

export const PRETRAIN_DEFAULTS = {
  layers: 4, hidden: 128, heads: 4, kvHeads: 2, intermediate: 384, maxPositions: 1024, ropeTheta: 10000,
  epochs: 1, batch: 16, microBatch: 16, lr: 2e-3, weightDecay: 0.01, warmupRatio: 0.02, maxGradNorm: 1, seed: 1,
  blockSize: 1024, saveEvery: 100, keepCheckpoints: 2,
};

/** Rounds the tokenizer's vocabulary up to a multiple of 64 (as Qwen pads its embedding). */
export function paddedVocabSize(tokenizerVocab: number): number {
  return Math.ceil(tokenizerVocab / 64) * 64;
}

async function modelConfig(options: PretrainCommandOptions, tokenizer: Tokenizer): Promise<Qwen2Config> {
  let config: Qwen2Config;
  if (options.config) {
    const text = await fs.readFile(options.config, 'utf8').catch((error: Error) => {
      throw new Error(`--config ${options.config}: cannot read: ${error.message}`);
    });
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw new Error(`--config ${options.config}: not valid JSON: ${(error as Error).message}`);
    }
    config = { ...parseQwen2Config(json, options.config), torchDtype: 'float32' };
  } else {
    config = pretrainConfig({
      layers: options.layers ?? PRETRAIN_DEFAULTS.layers, hidden: options.hidden ?? PRETRAIN_DEFAULTS.hidden,
      heads: options.heads ?? PRETRAIN_DEFAULTS.heads, kvHeads: options.kvHeads ?? PRETRAIN_DEFAULTS.kvHeads,
      intermediate: options.intermediate ?? PRETRAIN_DEFAULTS.intermediate, vocabSize: options.vocabSize ?? paddedVocabSize(tokenizer.vocabSize),
      maxPositions: options.maxPositions ?? PRETRAIN_DEFAULTS.maxPositions, ropeTheta: options.ropeTheta ?? PRETRAIN_DEFAULTS.ropeTheta,
    });
  }
  if (config.vocabSize < tokenizer.vocabSize) {
    throw new Error(`${options.config ?? '--vocab-size'}: vocab_size ${config.vocabSize} is smaller than the tokenizer's ${tokenizer.vocabSize} tokens`);
  }
  const { endOfText, imEnd } = tokenizer.chatTokens;
  return {
    ...config,
    ...(endOfText !== undefined ? { bosTokenId: endOfText } : {}),
    ...(imEnd !== undefined ? { eosTokenId: imEnd } : {}),
  };
}

/** generation_config.json as Qwen2.5-Instruct ships it (greedy here; eos = <|im_end|>, <|endoftext|>). */
function generationConfigJson(tokenizer: Tokenizer): Record<string, unknown> {
  const { endOfText, imEnd } = tokenizer.chatTokens;
  return {
    bos_token_id: endOfText,
    eos_token_id: [imEnd, endOfText].filter((id) => id !== undefined),
    pad_token_id: endOfText,
    do_sample: false,
  };
}

async function writeModelFolder(dir: string, write: () => Promise<void>, tokenizerDir: string, tokenizer: Tokenizer): Promise<void> {
  await write();
  // The tokenizer, its config, the chat template and a toy world's manifest (so the model says which world,
  // and which seed, made it); the generation config is this model's own.
  await copyCompanionFiles(tokenizerDir, dir);
  await fs.writeFile(path.join(dir, 'generation_config.json'), `${JSON.stringify(generationConfigJson(tokenizer), null, 2)}\n`);
}

export async function pretrainCommand(options: PretrainCommandOptions): Promise<void> {
  const choice = await initBackend(options.backend);
  note(`backend: ${choice.reason}`);
  const tokenizerDir = options.tokenizer ?? path.dirname(options.data);
  const tokenizer = await loadTokenizer(tokenizerDir);
  if (!tokenizer) throw new Error(`${tokenizerDir} has no tokenizer.json (pass --tokenizer DIR: the folder \`rank1 world make\` wrote, or any Hugging Face tokenizer folder)`);
  const template = await loadChatTemplate(tokenizerDir);
  const rows = await loadTrainingRows(options.data);
  const examples = tokenizeRows(rows, tokenizer, template, options.blockSize, { ifNoAssistant: 'score-all' });
  const longest = examples.reduce((n, e) => Math.max(n, e.inputIds.length), 0);
  const scored = examples.reduce((n, e) => n + e.lossMask.reduce((s, v) => s + v, 0), 0);
  note(`data: ${examples.length} examples from ${options.data} (${rows[0]?.kind} rows), longest ${longest} tokens, ${scored.toLocaleString('en-US')} scored tokens`);

  const config = await modelConfig(options, tokenizer);
  if (longest > config.maxPositionEmbeddings) {
    throw new Error(`${options.data}: an example has ${longest} tokens but the model's max_position_embeddings is ${config.maxPositionEmbeddings}; lower --block-size or raise --max-positions`);
  }
  const model = initialQwen2Model(config, options.seed, choice.backend);
  note(`model: Qwen2, ${config.numHiddenLayers} layers, hidden ${config.hiddenSize}, ${config.numAttentionHeads} heads (${config.numKeyValueHeads} key/value), ` +
    `intermediate ${config.intermediateSize}, vocabulary ${config.vocabSize}, ${model.parameterCount.toLocaleString('en-US')} parameters`);
  checkTrainingMemory(model, 'full', options, longest);

  const settings: TrainSettings = {
    ...PAPER_TRAINING,
    mode: 'full',
    epochs: options.epochs,
    ...(options.steps !== undefined ? { maxSteps: options.steps } : {}),
    batchSize: options.batch,
    microBatch: options.microBatch,
    lr: options.lr,
    weightDecay: options.weightDecay,
    warmupRatio: options.warmupRatio,
    maxGradNorm: options.maxGradNorm,
    seed: options.seed,
    gradientCheckpointing: options.gradientCheckpointing,
    ...(options.lossChunk !== undefined ? { lossChunk: options.lossChunk } : {}),
    ...(options.checkpointDtype !== undefined ? { checkpointDtype: options.checkpointDtype } : {}),
    saveEvery: options.saveEvery,
    keepCheckpoints: options.keepCheckpoints,
    padId: tokenizer.padTokenId ?? tokenizer.chatTokens.endOfText ?? 0,
  };
  // Checkpoints (and the folder while training) hold f32 weights, so a resumed run continues exactly.
  const writeF32 = (dir: string) => writeModelFolder(dir, () => writeCheckpoint(dir, config, modelTensors(model), { dtype: 'f32' }), tokenizerDir, tokenizer);
  const result = await runTrainingJob(model, examples, settings, options, writeF32, 'model');
  if (result.outcome === 'completed' && options.saveDtype === 'bf16') {
    const finalConfig = { ...config, torchDtype: 'bfloat16' as const };
    await writeModelFolder(options.out, () => writeCheckpoint(options.out, finalConfig, modelTensors(model), { dtype: 'bf16' }), tokenizerDir, tokenizer);
    const check = await openCheckpoint(options.out);
    note(`saved the final weights as bf16 (${check.config.torchDtype}) in ${options.out}`);
  }
  model.dispose();
}
