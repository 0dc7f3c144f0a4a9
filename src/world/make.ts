// `rank1 world make`: writes the toy reasoning world, deterministically from a seed (same seed, same bytes).
//
//   pretrain.jsonl       {text} rows, shuffled: chat conversations (Qwen chat template) whose assistant answers
//                        at once, and plain-text textbook pages of worked solutions — so the base learns the
//                        skill as text but does not use it when chatting (an instruct model that does not reason)
//   reasoning.jsonl      s1K-1.1 rows {question, deepseek_thinking_trajectory, deepseek_attempt, solution}:
//   reasoning.parquet    R1-style traces with self-checks and occasional corrected slips (same rows)
//   heldout.jsonl        MATH-500-style {problem, answer, operations} rows, disjoint from every training split
//   tokenizer.json       byte-level BPE learned on the world's text, Qwen's special tokens (bpe.ts)
//   tokenizer_config.json, chat_template.jinja   Qwen2.5-Instruct's
//   world.json           seed, sizes, difficulty, and a SHA-256 per file
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { QWEN25_INSTRUCT_CHAT_TEMPLATE, renderChat, s1AssistantText } from '../model/chat-template.ts';
import { Random } from '../tensor/random.ts';
import { writeFileAtomic, writeJsonAtomic } from '../io/atomic.ts';
import { jsonlLine } from '../io/jsonl.ts';
import { tokenizerConfigJson, tokenizerJson, trainBpe } from './bpe.ts';
import {
  answerOf, answerSection, directAnswer, problemKey, questionText, randomProblem, reasoningTrajectory, textbookPage, type ChainProblem,
} from './task.ts';

export interface OperationRange {
  min: number;
  max: number;
}

export interface WorldOptions {
  seed: number;
  /** Plain-text worked solutions in the pretraining corpus. */
  textbookPages: number;
  /** Chat conversations answered at once in the pretraining corpus. */
  chats: number;
  /** s1K-style reasoning rows (the adapter's and the full finetune's training set). */
  reasoningRows: number;
  /** Held-out evaluation problems. */
  heldoutProblems: number;
  /** Operations per problem: the difficulty knob for held-out and reasoning rows. */
  operations: OperationRange;
  /** Operations per problem in the pretraining corpus (wider, so the skill generalises over lengths). */
  pretrainOperations: OperationRange;
  /** Share of reasoning traces (and of worked-aloud pages) with one corrected slip. */
  slipRate: number;
  /**
   * Share of the plain-text pages worked aloud in the traces' register (see textbookPage): how much of the
   * reasoning language pretraining sees. At 0 the traces' phrases are new words to the base.
   */
  thinkAloudShare: number;
  /**
   * Share of the chats whose assistant answers at once in s1's answer-section form (`<|im_start|>answer\nAnswer:
   * The last digit is \boxed{4}.`), so `answer` is a word the base has read where the traces use it. Version 2.
   */
  answerSectionShare: number;
  /**
   * 1: the BPE learns from the traces as `trajectory\nattempt`, no answer-section chats (the first shipped
   * base's world). 2: the BPE learns from the traces as rank1 train renders them (s1's think/answer markers).
   * 3: as 2, and pages end `Answer: The last digit is \boxed{4}.` (the answer section's words) instead of
   * `Answer: 4`: after worked steps those words copy the conclusion, while in an answer-section chat with no
   * steps before them they still guess at once.
   */
  version: WorldVersion;
  /** BPE merges to learn (the vocabulary is 256 bytes + merges + 3 special tokens). */
  merges: number;
}

export const WORLD_DEFAULTS: WorldOptions = {
  seed: 1,
  textbookPages: 22000,
  chats: 8000,
  reasoningRows: 256,
  heldoutProblems: 256,
  operations: { min: 4, max: 7 },
  pretrainOperations: { min: 1, max: 8 },
  slipRate: 0.1,
  thinkAloudShare: 0.5,
  answerSectionShare: 0.5,
  version: 3,
  merges: 253,
};

export const WORLD_FILES = {
  pretrain: 'pretrain.jsonl',
  reasoning: 'reasoning.jsonl',
  reasoningParquet: 'reasoning.parquet',
  heldout: 'heldout.jsonl',
  tokenizer: 'tokenizer.json',
  tokenizerConfig: 'tokenizer_config.json',
  chatTemplate: 'chat_template.jinja',
  world: 'world.json',
} as const;

export type WorldVersion = 1 | 2 | 3;

export interface WorldManifest {
  format: 'rank1-toy-world';
  version: WorldVersion;
  seed: number;
  task: string;
  difficulty: {
    operations: OperationRange; pretrainOperations: OperationRange; slipRate: number; thinkAloudShare?: number; answerSectionShare?: number;
  };
  sizes: { textbookPages: number; chats: number; reasoningRows: number; heldoutProblems: number; merges: number; vocabSize: number };
  files: Record<string, { sha256: string; bytes: number }>;
}

/** The options that made a world, read back from its manifest (so a model folder's world.json remakes it). */
export function worldOptionsFromManifest(manifest: WorldManifest): WorldOptions {
  if (manifest.format !== 'rank1-toy-world' || ![1, 2, 3].includes(manifest.version)) throw new Error(`not a rank1 toy-world manifest (format ${String(manifest.format)}, version ${String(manifest.version)})`);
  return {
    seed: manifest.seed,
    textbookPages: manifest.sizes.textbookPages,
    chats: manifest.sizes.chats,
    reasoningRows: manifest.sizes.reasoningRows,
    heldoutProblems: manifest.sizes.heldoutProblems,
    operations: manifest.difficulty.operations,
    pretrainOperations: manifest.difficulty.pretrainOperations,
    slipRate: manifest.difficulty.slipRate,
    thinkAloudShare: manifest.difficulty.thinkAloudShare ?? 0,
    answerSectionShare: manifest.version === 1 ? 0 : manifest.difficulty.answerSectionShare ?? 0,
    version: manifest.version,
    merges: manifest.sizes.merges,
  };
}

function validate(options: WorldOptions): void {
  const counts = ['textbookPages', 'chats', 'reasoningRows', 'heldoutProblems', 'merges'] as const;
  for (const key of counts) {
    if (!Number.isInteger(options[key]) || options[key] < 0) throw new RangeError(`world: ${key} must be a non-negative integer, got ${options[key]}`);
  }
  if (options.heldoutProblems < 1 || options.reasoningRows < 1) throw new RangeError('world: heldoutProblems and reasoningRows must be at least 1');
  for (const key of ['operations', 'pretrainOperations'] as const) {
    const { min, max } = options[key];
    if (!Number.isInteger(min) || !Number.isInteger(max) || min < 1 || max < min || max > 20) {
      throw new RangeError(`world: ${key} must be whole numbers with 1 ≤ min ≤ max ≤ 20, got ${min}–${max}`);
    }
  }
  if (![1, 2, 3].includes(options.version)) throw new RangeError(`world: version must be 1, 2 or 3, got ${String(options.version)}`);
  if (options.version === 1 && options.answerSectionShare !== 0) throw new RangeError('world: answerSectionShare needs version 2 or later');
  for (const key of ['slipRate', 'thinkAloudShare', 'answerSectionShare'] as const) {
    if (!(options[key] >= 0 && options[key] <= 1)) throw new RangeError(`world: ${key} must be in [0, 1], got ${options[key]}`);
  }
  if (!Number.isInteger(options.seed) || options.seed < 0) throw new RangeError(`world: seed must be a non-negative integer, got ${options.seed}`);
}

/** Distinct problems, none of whose keys is in `taken`; their keys are added to `taken`. */
function drawProblems(rng: Random, count: number, range: OperationRange, taken: Set<string>, distinct: boolean): ChainProblem[] {
  const out: ChainProblem[] = [];
  let attempts = 0;
  while (out.length < count) {
    if (++attempts > count * 100 + 1000) throw new Error(`world: could not draw ${count} distinct problems with ${range.min}–${range.max} operations; widen the range`);
    const problem = randomProblem(rng, range.min + rng.int(range.max - range.min + 1));
    const key = problemKey(problem);
    if (taken.has(key)) continue;
    if (distinct) taken.add(key);
    out.push(problem);
  }
  return out;
}

const jsonl = (rows: readonly unknown[]): string => rows.map(jsonlLine).join('');

export interface WorldContents {
  pretrainTexts: string[];
  reasoning: { question: string; deepseek_thinking_trajectory: string; deepseek_attempt: string; solution: string }[];
  heldout: { problem: string; answer: string; operations: number }[];
}

/** The world's rows, in memory (makeWorld writes them). */
export function generateWorld(options: WorldOptions): WorldContents {
  validate(options);
  const rng = new Random(options.seed);
  // Held-out first, then reasoning rows, then the pretraining corpus: each split avoids every earlier one.
  const taken = new Set<string>();
  const heldoutProblems = drawProblems(rng, options.heldoutProblems, options.operations, taken, true);
  const reasoningProblems = drawProblems(rng, options.reasoningRows, options.operations, taken, true);
  const reserved = new Set(taken);
  const pretrainTexts: string[] = [];
  for (const problem of drawProblems(rng, options.chats, options.pretrainOperations, reserved, false)) {
    pretrainTexts.push(renderChat(QWEN25_INSTRUCT_CHAT_TEMPLATE, [
      { role: 'user', content: questionText(problem) },
      { role: 'assistant', content: options.version >= 2 && rng.uniform() < options.answerSectionShare ? answerSection(directAnswer(problem)) : directAnswer(problem) },
    ]));
  }
  for (const problem of drawProblems(rng, options.textbookPages, options.pretrainOperations, reserved, false)) {
    pretrainTexts.push(textbookPage(problem, rng, options.thinkAloudShare, options.slipRate, options.version >= 3 ? 'sentence' : 'digit'));
  }
  rng.shuffle(pretrainTexts);
  return {
    pretrainTexts,
    reasoning: reasoningProblems.map((problem) => ({
      question: questionText(problem),
      deepseek_thinking_trajectory: reasoningTrajectory(problem, rng, options.slipRate),
      deepseek_attempt: directAnswer(problem),
      solution: String(answerOf(problem)),
    })),
    heldout: heldoutProblems.map((problem) => ({ problem: questionText(problem), answer: String(answerOf(problem)), operations: problem.operations.length })),
  };
}

/** Writes the world into `outDir` and returns its manifest (also written as world.json). */
export async function makeWorld(outDir: string, options: WorldOptions, log: (line: string) => void = () => {}): Promise<WorldManifest> {
  const world = generateWorld(options);
  log(`world: ${world.pretrainTexts.length} pretraining rows, ${world.reasoning.length} reasoning rows, ${world.heldout.length} held-out problems`);
  const reasoningTexts = world.reasoning.map((r) => renderChat(QWEN25_INSTRUCT_CHAT_TEMPLATE, [
    {
      role: 'user', content: r.question,
    },
    {
      role: 'assistant',
      content: options.version >= 2 ? s1AssistantText(r.deepseek_thinking_trajectory, r.deepseek_attempt) : `${r.deepseek_thinking_trajectory}\n${r.deepseek_attempt}`,
    },
  ]));
  // The vocabulary is learned on everything the model will read, including the think/answer markers' words.
  const bpe = trainBpe([...world.pretrainTexts, ...reasoningTexts, 'think\nanswer\nAnswer: '], options.merges);
  const vocabSize = bpe.vocab.size + 3;
  log(`tokenizer: byte-level BPE, ${bpe.merges.length} merges, ${vocabSize} tokens`);

  await fs.mkdir(outDir, { recursive: true });
  const parquet = parquetWriteBuffer({
    columnData: (['question', 'deepseek_thinking_trajectory', 'deepseek_attempt', 'solution'] as const).map((name) => ({
      name, data: world.reasoning.map((r) => r[name]), type: 'STRING' as const,
    })),
  });
  const contents: [string, string | Uint8Array][] = [
    [WORLD_FILES.pretrain, jsonl(world.pretrainTexts.map((text) => ({ text })))],
    [WORLD_FILES.reasoning, jsonl(world.reasoning)],
    [WORLD_FILES.reasoningParquet, new Uint8Array(parquet)],
    [WORLD_FILES.heldout, jsonl(world.heldout)],
    [WORLD_FILES.tokenizer, `${JSON.stringify(tokenizerJson(bpe), null, 1)}\n`],
    [WORLD_FILES.tokenizerConfig, `${JSON.stringify(tokenizerConfigJson(bpe.vocab.size), null, 2)}\n`],
    [WORLD_FILES.chatTemplate, QWEN25_INSTRUCT_CHAT_TEMPLATE],
  ];
  const files: WorldManifest['files'] = {};
  for (const [name, data] of contents) {
    await writeFileAtomic(path.join(outDir, name), data);
    files[name] = { sha256: createHash('sha256').update(data).digest('hex'), bytes: typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength };
  }
  const manifest: WorldManifest = {
    format: 'rank1-toy-world',
    version: options.version,
    seed: options.seed,
    task: 'last digit of a chain of operations (add 1–9, multiply by 3, 7 or 9) on a starting digit',
    difficulty: {
      operations: options.operations, pretrainOperations: options.pretrainOperations, slipRate: options.slipRate,
      thinkAloudShare: options.thinkAloudShare,
      ...(options.version >= 2 ? { answerSectionShare: options.answerSectionShare } : {}),
    },
    sizes: {
      textbookPages: options.textbookPages, chats: options.chats, reasoningRows: options.reasoningRows,
      heldoutProblems: options.heldoutProblems, merges: options.merges, vocabSize,
    },
    files,
  };
  await writeJsonAtomic(path.join(outDir, WORLD_FILES.world), manifest);
  return manifest;
}
