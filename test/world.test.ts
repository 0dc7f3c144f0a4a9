// The toy reasoning world: the task's arithmetic, deterministic generation, disjoint splits, a tokenizer that
// the real tokenizer code loads and round-trips, and files that `rank1 train` and `rank1 eval` read unchanged.
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { Random } from '../src/tensor/random.ts';
import { loadTokenizer, type Tokenizer } from '../src/model/tokenizer.ts';
import { loadChatTemplate } from '../src/model/chat-template.ts';
import { loadTrainingRows, tokenizeRows } from '../src/train/data.ts';
import { loadBenchmark } from '../src/eval/benchmarks.ts';
import { gradeOutput } from '../src/eval/grade.ts';
import { generateWorld, makeWorld, worldOptionsFromManifest, WORLD_DEFAULTS, WORLD_FILES, type WorldManifest, type WorldOptions } from '../src/world/make.ts';
import { preTokenize, trainBpe } from '../src/world/bpe.ts';
import {
  answerOf, applyFull, questionText, randomProblem, reasoningTrajectory, runningDigits, textbookPage, workedLines, type ChainProblem,
} from '../src/world/task.ts';

const SMALL: WorldOptions = { ...WORLD_DEFAULTS, textbookPages: 300, chats: 200, reasoningRows: 40, heldoutProblems: 40 };

/** The answer by a different route: compose the affine maps x ↦ a·x + b (mod 10), then apply once. */
function composedAnswer(problem: ChainProblem): number {
  let a = 1;
  let b = 0;
  for (const op of problem.operations) {
    if (op.kind === 'add') b = (b + op.operand) % 10;
    else {
      a = (a * op.operand) % 10;
      b = (b * op.operand) % 10;
    }
  }
  return (a * problem.start + b) % 10;
}

const problemArbitrary = fc.record({ seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }), count: fc.integer({ min: 1, max: 12 }) })
  .map(({ seed, count }) => randomProblem(new Random(seed), count));

describe('toy world task', () => {
  it('the answer equals the composition of the chain as one affine map mod 10', () => {
    fc.assert(fc.property(problemArbitrary, (problem) => answerOf(problem) === composedAnswer(problem)));
  });

  it('every worked step states a true fact and carries its last digit into the next step', () => {
    fc.assert(fc.property(problemArbitrary, (problem) => {
      const lines = workedLines(problem);
      const values = runningDigits(problem);
      expect(lines[0]).toBe(`Start: ${problem.start}.`);
      problem.operations.forEach((op, i) => {
        const m = /^\((\d+)\) [+*](\d): (\d+) ([+*]) (\d+) = (\d+), last digit (\d+)\.$/.exec(lines[i + 1]!)!;
        expect(m, lines[i + 1]).not.toBeNull();
        const [, index, restated, x, symbol, operand, full, digit] = m.map(Number) as number[];
        expect(index).toBe(i + 1);
        expect(lines[i + 1]!.startsWith(`(${i + 1}) ${op.kind === 'add' ? '+' : '*'}${op.operand}: `)).toBe(true);
        expect(restated).toBe(op.operand);
        expect(x).toBe(values[i]);
        expect(operand).toBe(op.operand);
        expect(m[4]).toBe(op.kind === 'add' ? '+' : '*');
        expect(full).toBe(op.kind === 'add' ? x! + operand! : x! * operand!);
        expect(digit).toBe(full! % 10);
        expect(values[i + 1]).toBe(digit);
        void symbol;
      });
    }));
  });

  it('answers are uniform over the digits (every map is a bijection), so answering blind scores 10%', () => {
    const rng = new Random(7);
    const counts = new Array<number>(10).fill(0);
    for (let i = 0; i < 5000; i++) counts[answerOf(randomProblem(rng, 5))]!++;
    for (const c of counts) expect(Math.abs(c - 500)).toBeLessThan(100);
  });

  it('a trace with a slip names the wrong value and corrects it, and still ends on the right answer', () => {
    const rng = new Random(3);
    let slips = 0;
    for (let i = 0; i < 200; i++) {
      const problem = randomProblem(rng, 6);
      const trace = reasoningTrajectory(problem, rng, 0.5);
      expect(trace.startsWith('Okay, let me work through this step by step.\n')).toBe(true);
      expect(trace.endsWith(`So the last digit is ${answerOf(problem)}.`)).toBe(true);
      expect(trace).toMatch(/Wait, let me check \(\d+\)/);
      const slip = /\((\d+)\) [+*]\d: (\d+) ([+*]) (\d+) = (\d+), last digit \d+\.\nWait, let me check \(\1\): \2 \3 \4 = (\d+), not \5\./.exec(trace);
      if (slip) {
        slips++;
        const [x, operand, wrong, right] = [Number(slip[2]), Number(slip[4]), Number(slip[5]), Number(slip[6])];
        const op = slip[3] === '+' ? { kind: 'add' as const, operand } : { kind: 'multiply' as const, operand };
        expect(right).toBe(applyFull(x, op));
        expect(wrong).not.toBe(right);
      }
    }
    expect(slips).toBeGreaterThan(60);
    expect(slips).toBeLessThan(140);
  });

  it('a textbook page ends with its answer and the end-of-text token', () => {
    const problem: ChainProblem = { start: 7, operations: [{ kind: 'add', operand: 5 }, { kind: 'multiply', operand: 3 }] };
    expect(questionText(problem)).toBe('Start with 7, then (1) +5, (2) *3. What is the last digit of the result?');
    expect(textbookPage(problem, new Random(1))).toMatch(/^Problem: Start with 7, then .*\nSolution:\nStart: 7\.\n\(1\) \+5: 7 \+ 5 = 12, last digit 2\.\n(Check \(\d\): .*\n)?\(2\) \*3: 2 \* 3 = 6, last digit 6\.\n(Check \(\d\): .*\n)?Answer: 6<\|endoftext\|>$/);
  });

  it('a page worked aloud is in the traces\' register: the same opening, checks and closing line, then the answer', () => {
    const problem: ChainProblem = { start: 7, operations: [{ kind: 'add', operand: 5 }, { kind: 'multiply', operand: 3 }, { kind: 'add', operand: 1 }] };
    const page = textbookPage(problem, new Random(3), 1, 0);
    expect(page).toMatch(/^Problem: Start with 7, then .*\nSolution:\nOkay, let me work through this step by step\.\nStart: 7\.\n\(1\) \+5: 7 \+ 5 = 12, last digit 2\.\n/);
    expect(page).toContain('Wait, let me check (');
    expect(page).toMatch(/\nSo the last digit is 7\.\nAnswer: 7<\|endoftext\|>$/);
    // With slips: some pages carry a corrected slip, as the traces do.
    const slipped = Array.from({ length: 200 }, (_, i) => textbookPage(problem, new Random(i), 1, 0.5)).filter((p) => p.includes(', not ')).length;
    expect(slipped).toBeGreaterThan(60);
    expect(slipped).toBeLessThan(140);
  });
});

describe('toy world generation', () => {
  let dir: string;
  let manifest: WorldManifest;
  let tokenizer: Tokenizer;
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-world-'));
    manifest = await makeWorld(path.join(dir, 'a'), SMALL);
    tokenizer = (await loadTokenizer(path.join(dir, 'a')))!;
  });

  it('the same seed gives the same bytes; another seed gives another world', async () => {
    const again = await makeWorld(path.join(dir, 'b'), SMALL);
    expect(again).toEqual(manifest);
    for (const name of Object.values(WORLD_FILES)) {
      const [x, y] = await Promise.all([fs.readFile(path.join(dir, 'a', name)), fs.readFile(path.join(dir, 'b', name))]);
      expect(x.equals(y), name).toBe(true);
    }
    const other = await makeWorld(path.join(dir, 'c'), { ...SMALL, seed: 2 });
    expect(other.files[WORLD_FILES.heldout]!.sha256).not.toBe(manifest.files[WORLD_FILES.heldout]!.sha256);
    expect(other.files[WORLD_FILES.pretrain]!.sha256).not.toBe(manifest.files[WORLD_FILES.pretrain]!.sha256);
  });

  it('held-out problems appear in no training split, and reasoning problems not in pretraining', () => {
    const world = generateWorld(SMALL);
    const heldout = new Set(world.heldout.map((h) => h.problem));
    const reasoning = new Set(world.reasoning.map((r) => r.question));
    expect(heldout.size).toBe(SMALL.heldoutProblems);
    expect(reasoning.size).toBe(SMALL.reasoningRows);
    for (const q of reasoning) expect(heldout.has(q)).toBe(false);
    // Every pretraining row names one problem: the text between "Start with" and "result?".
    const asked = world.pretrainTexts.map((t) => /Start with \d, then .*? What is the last digit of the result\?/.exec(t)![0]);
    expect(asked).toHaveLength(SMALL.textbookPages + SMALL.chats);
    for (const q of asked) {
      expect(heldout.has(q)).toBe(false);
      expect(reasoning.has(q)).toBe(false);
    }
    for (const h of world.heldout) {
      expect(h.operations).toBeGreaterThanOrEqual(SMALL.operations.min);
      expect(h.operations).toBeLessThanOrEqual(SMALL.operations.max);
    }
  });

  it('the pretraining corpus mixes chats answered at once with plain-text worked pages', () => {
    const world = generateWorld(SMALL);
    const chats = world.pretrainTexts.filter((t) => t.startsWith('<|im_start|>system\n'));
    const pages = world.pretrainTexts.filter((t) => t.startsWith('Problem: '));
    expect(chats).toHaveLength(SMALL.chats);
    expect(pages).toHaveLength(SMALL.textbookPages);
    for (const chat of chats) {
      expect(chat).toMatch(/<\|im_start\|>assistant\n(<\|im_start\|>answer\nAnswer: )?The last digit is \\boxed\{\d\}\.<\|im_end\|>\n$/);
      expect(chat).not.toContain('Start: ');
      expect(chat).not.toContain('<|im_start|>think');
    }
    // Version 2: about half the chats answer at once in s1's answer-section form, so `answer` is a known word.
    const sectioned = chats.filter((c) => c.includes('<|im_start|>assistant\n<|im_start|>answer\nAnswer: The last digit is')).length;
    expect(sectioned).toBeGreaterThan(SMALL.chats * 0.4);
    expect(sectioned).toBeLessThan(SMALL.chats * 0.6);
    // About half the pages are worked aloud (thinkAloudShare 0.5): the traces' language is latent, never in a chat.
    const aloud = pages.filter((p) => p.includes('\nSolution:\nOkay, let me work through this step by step.\n')).length;
    expect(aloud).toBeGreaterThan(SMALL.textbookPages * 0.4);
    expect(aloud).toBeLessThan(SMALL.textbookPages * 0.6);
    for (const chat of chats) expect(chat).not.toMatch(/Okay, let me|Wait, let me check/);
    // Shuffled: chats are not all at one end.
    const firstHalf = world.pretrainTexts.slice(0, world.pretrainTexts.length / 2).filter((t) => t.startsWith('<|im_start|>')).length;
    expect(firstHalf).toBeGreaterThan(SMALL.chats * 0.3);
    expect(firstHalf).toBeLessThan(SMALL.chats * 0.7);
  });

  it('the tokenizer loads through the Hugging Face code path, round-trips every file, and keeps Qwen\'s special tokens', async () => {
    expect(tokenizer.chatTokens.imStart).toBeDefined();
    expect(tokenizer.chatTokens.imEnd).toBeDefined();
    expect(tokenizer.chatTokens.endOfText).toBeDefined();
    expect(tokenizer.vocabSize).toBe(manifest.sizes.vocabSize);
    expect(tokenizer.eosTokenIds).toContain(tokenizer.chatTokens.imEnd);
    const world = generateWorld(SMALL);
    const texts = [...world.pretrainTexts.slice(0, 50), ...world.reasoning.map((r) => r.deepseek_thinking_trajectory), 'any text: ünïcode, 数字 42 ✓'];
    for (const text of texts) expect(tokenizer.decode(tokenizer.encode(text, { addSpecialTokens: false }))).toBe(text);
    const ids = tokenizer.encode('<|im_start|>user\nhi<|im_end|>', { addSpecialTokens: false });
    expect(ids[0]).toBe(tokenizer.chatTokens.imStart);
    expect(ids.at(-1)).toBe(tokenizer.chatTokens.imEnd);
    // Learned merges make the world's words single tokens: a worked step is a dozen tokens, not 30 characters.
    expect(tokenizer.encode('(2) *3: 2 * 3 = 6, last digit 6.', { addSpecialTokens: false }).map((id) => tokenizer.decode([id])))
      .toEqual(['(', '2', ')', ' *3', ':', ' 2', ' *', ' 3', ' =', ' 6', ',', ' last', ' digit', ' 6', '.']);
  });

  it('BPE training is deterministic and its pieces follow the split pattern (a digit keeps its leading space)', () => {
    expect(preTokenize('(2) 2 * 13 = 26, last')).toEqual(['(', '2', ')', ' 2', ' *', ' 1', '3', ' =', ' 2', '6', ',', ' last']);
    // An operation is one piece, operator and digit together, so a step copies it as one token.
    expect(preTokenize('then (1) +5, (2) *3:')).toEqual(['then', ' (', '1', ')', ' +5', ',', ' (', '2', ')', ' *3', ':']);
    const texts = ['the cat sat on the mat', 'the cat ate', 'a mat'];
    expect(trainBpe(texts, 10)).toEqual(trainBpe(texts, 10));
    expect(trainBpe(texts, 10).merges[0]).toEqual(['a', 't']); // cat, sat, mat, cat, ate, mat
  });

  it('rank1 train reads the reasoning rows from JSONL and Parquet alike, scoring the assistant turn', async () => {
    const template = await loadChatTemplate(path.join(dir, 'a'));
    const jsonl = await loadTrainingRows(path.join(dir, 'a', WORLD_FILES.reasoning));
    const parquet = await loadTrainingRows(path.join(dir, 'a', WORLD_FILES.reasoningParquet));
    expect(jsonl.map((r) => r.kind)).toEqual(new Array(SMALL.reasoningRows).fill('s1k'));
    const a = tokenizeRows(jsonl, tokenizer, template);
    const b = tokenizeRows(parquet, tokenizer, template);
    expect(b).toEqual(a);
    const text = tokenizer.decode(Array.from(a[0]!.inputIds));
    expect(text).toContain('<|im_start|>assistant\n<|im_start|>think\nOkay, let me work through this step by step.');
    expect(text).toMatch(/<\|im_start\|>answer\nAnswer: The last digit is \\boxed\{\d\}\.<\|im_end\|>\n$/);
    const scoredFrom = a[0]!.lossMask.indexOf(1);
    expect(tokenizer.decode(Array.from(a[0]!.inputIds.slice(0, scoredFrom)))).toMatch(/<\|im_start\|>assistant\n$/);
  });

  it('rank1 eval --bench toy reads the held-out file and grades by exact integer match', async () => {
    const problems = await loadBenchmark('toy', path.join(dir, 'a', WORLD_FILES.heldout));
    expect(problems).toHaveLength(SMALL.heldoutProblems);
    const p = problems[0]!;
    expect(gradeOutput('toy', `think...<|im_start|>answer\nAnswer: The last digit is \\boxed{${p.gold}}.`, p).correct).toBe(true);
    expect(gradeOutput('toy', `\\boxed{${p.gold}.0}`, p).correct).toBe(false);
    expect(gradeOutput('toy', `\\boxed{${(Number(p.gold) + 1) % 10}}`, p).correct).toBe(false);
    expect(gradeOutput('toy', 'no answer', p)).toEqual({ extracted: null, correct: false });
  });

  it('bad options are refused with the field named', () => {
    expect(() => generateWorld({ ...SMALL, operations: { min: 5, max: 3 } })).toThrow(/operations must be whole numbers with 1 ≤ min ≤ max/);
    expect(() => generateWorld({ ...SMALL, slipRate: 2 })).toThrow(/slipRate/);
    expect(() => generateWorld({ ...SMALL, heldoutProblems: 0 })).toThrow(/heldoutProblems/);
    expect(() => generateWorld({ ...SMALL, version: 1 })).toThrow(/answerSectionShare needs version 2/);
    expect(() => generateWorld({ ...SMALL, version: 4 as never })).toThrow(/version must be 1, 2 or 3/);
  });
});

describe('toy world version 3', () => {
  it('pages answer in the answer section\'s words, versions 1 and 2 with the bare digit; chats and traces are unchanged', () => {
    const v3 = generateWorld({ ...SMALL, version: 3 });
    const v2 = generateWorld({ ...SMALL, version: 2 });
    const pages = (w: typeof v3) => w.pretrainTexts.filter((t) => t.startsWith('Problem: '));
    expect(pages(v3).length).toBeGreaterThan(0);
    for (const page of pages(v3)) expect(page).toMatch(/\nAnswer: The last digit is \\boxed\{\d\}\.<\|endoftext\|>$/);
    for (const page of pages(v2)) expect(page).toMatch(/\nAnswer: \d<\|endoftext\|>$/);
    // The page's answer is its worked conclusion (the copy the answer section should learn).
    for (const page of pages(v3).slice(0, 50)) {
      const steps = [...page.matchAll(/last digit (?:is )?(\d)\./g)];
      expect(page).toContain(`\\boxed{${steps.at(-1)![1]}}`);
    }
    expect(v3.pretrainTexts.filter((t) => !t.startsWith('Problem: '))).toEqual(v2.pretrainTexts.filter((t) => !t.startsWith('Problem: ')));
    expect(v3.reasoning).toEqual(v2.reasoning);
    expect(v3.heldout).toEqual(v2.heldout);
  });
});

describe('toy world manifest', () => {
  it('remakes the same world from the options it records', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-world-manifest-'));
    const options = { ...SMALL, seed: 9, operations: { min: 3, max: 5 }, slipRate: 0.2, merges: 100 };
    const manifest = await makeWorld(dir, options);
    expect(worldOptionsFromManifest(manifest)).toEqual(options);
    expect(() => worldOptionsFromManifest({ ...manifest, format: 'other' as never })).toThrow(/not a rank1 toy-world manifest/);
  });

  it('a version-1 manifest remakes a version-1 world: no answer-section chats, the BPE learned without s1\'s markers', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-world-v1-'));
    const v1 = { ...SMALL, version: 1 as const, answerSectionShare: 0 };
    const manifest = await makeWorld(path.join(dir, 'a'), v1);
    expect(manifest.version).toBe(1);
    expect(manifest.difficulty).not.toHaveProperty('answerSectionShare');
    expect(worldOptionsFromManifest(manifest)).toEqual(v1);
    expect(generateWorld(v1).pretrainTexts.some((t) => t.includes('<|im_start|>answer'))).toBe(false);
    // The two versions learn different vocabularies from the same seed: `answer` is a token only in version 2.
    const [t1, t2] = await Promise.all([loadTokenizer(path.join(dir, 'a')), makeWorld(path.join(dir, 'b'), SMALL).then(() => loadTokenizer(path.join(dir, 'b')))]);
    const pieces = (t: Tokenizer | null) => t!.encode('<|im_start|>answer\n', { addSpecialTokens: false }).length;
    expect(pieces(t2)).toBe(3);
    expect(pieces(t1)).toBeGreaterThan(3);
  });
});
