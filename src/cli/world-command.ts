// `rank1 world make` writes the toy reasoning world (src/world/make.ts); `rank1 world probe` measures what a
// base model does with its held-out problems (src/world/probe.ts).
import type { BackendName } from '../kernels/backend.ts';
import { initBackend } from '../tensor/engine.ts';
import { loadChatTemplate } from '../model/chat-template.ts';
import { loadPeftAdapter, loadQwen2Checkpoint } from '../model/load.ts';
import { loadTokenizer } from '../model/tokenizer.ts';
import { loadBenchmark } from '../eval/benchmarks.ts';
import { makeWorld, WORLD_DEFAULTS, WORLD_FILES, type OperationRange, type WorldVersion } from '../world/make.ts';
import { PROBE_MODES, probeBase, type ProbeMode } from '../world/probe.ts';
import { note } from './io.ts';

export interface WorldMakeOptions {
  out: string;
  seed: number;
  operations: OperationRange;
  pretrainOperations: OperationRange;
  textbookPages: number;
  chats: number;
  reasoningRows: number;
  heldout: number;
  slipRate: number;
  thinkAloudShare: number;
  answerSectionShare: number;
  worldVersion: number;
  merges: number;
}

export async function worldMakeCommand(options: WorldMakeOptions): Promise<void> {
  const manifest = await makeWorld(options.out, {
    ...WORLD_DEFAULTS,
    seed: options.seed,
    operations: options.operations,
    pretrainOperations: options.pretrainOperations,
    textbookPages: options.textbookPages,
    chats: options.chats,
    reasoningRows: options.reasoningRows,
    heldoutProblems: options.heldout,
    slipRate: options.slipRate,
    thinkAloudShare: options.thinkAloudShare,
    // A version-1 world has no answer-section chats: the flag's default is for version 2.
    answerSectionShare: options.worldVersion === 1 ? 0 : options.answerSectionShare,
    version: options.worldVersion as WorldVersion,
    merges: options.merges,
  }, note);
  for (const [name, { bytes }] of Object.entries(manifest.files)) note(`  ${options.out}/${name}  ${bytes.toLocaleString('en-US')} bytes`);
  note(`  ${options.out}/${WORLD_FILES.world}  (seed ${manifest.seed}, difficulty ${manifest.difficulty.operations.min}–${manifest.difficulty.operations.max} operations)`);
  note(`next: rank1 pretrain --data ${options.out}/${WORLD_FILES.pretrain} --out models/toy`);
}

export interface WorldProbeOptions {
  model: string;
  adapter?: string;
  data: string;
  limit?: number;
  batch: number;
  maxTokens: number;
  modes: string[];
  json?: boolean;
  backend: BackendName | 'auto';
}

/** `rank1 world probe`: the base's accuracy answering at once, writing a textbook solution, and under s1's prompt. */
export async function worldProbeCommand(options: WorldProbeOptions): Promise<void> {
  const modes = options.modes.map((m) => {
    if (!(PROBE_MODES as readonly string[]).includes(m)) throw new Error(`--modes: "${m}" is not one of ${PROBE_MODES.join(', ')}`);
    return m as ProbeMode;
  });
  const choice = await initBackend(options.backend);
  note(`backend: ${choice.reason}`);
  const tokenizer = await loadTokenizer(options.model);
  if (!tokenizer) throw new Error(`${options.model} has no tokenizer.json`);
  const template = await loadChatTemplate(options.model);
  let problems = await loadBenchmark('toy', options.data);
  if (options.limit !== undefined) problems = problems.slice(0, options.limit);
  const { model } = await loadQwen2Checkpoint(options.model, choice.backend);
  if (options.adapter) await loadPeftAdapter(options.adapter, model);
  const results = await probeBase(model, tokenizer, template, problems, { modes, maxTokens: options.maxTokens, batch: options.batch, log: note });
  if (options.json) process.stdout.write(`${JSON.stringify(results.map(({ example: _, ...r }) => r))}\n`);
  else for (const r of results) process.stdout.write(`${r.mode}\t${r.correct}/${r.n}\t${r.accuracy.toFixed(3)}\n--- first ${r.mode} output ---\n${r.example}\n`);
  model.dispose();
}
