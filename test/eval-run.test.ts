// `rank1 eval` end to end on a tiny random model (with a character-level tokenizer fixture): results file,
// resuming, guards against mixing runs; grading through a scripted completer; and the --compare table.
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { evalCommand, defaultResultsPath, type EvalCommandOptions } from '../src/cli/eval-command.ts';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { tinyQwen2Config, writeRandomQwen2Checkpoint } from '../src/model/random-model.ts';
import { loadTokenizer, type Tokenizer } from '../src/model/tokenizer.ts';
import { QWEN25_INSTRUCT_CHAT_TEMPLATE } from '../src/model/chat-template.ts';
import { loadBenchmark } from '../src/eval/benchmarks.ts';
import { readResults, type ResultRow } from '../src/eval/results.ts';
import { runEval, type Completer } from '../src/eval/run.ts';
import { buildCompareTable, formatCompareTable, parseCompareSpec, recoveryPercent } from '../src/eval/compare.ts';

const fixtures = path.resolve(import.meta.dirname, 'fixtures/eval');
const tokenizerDir = path.join(fixtures, 'char-tokenizer');
const mathData = path.join(fixtures, 'math-sample.jsonl');
let dir: string;
let modelDir: string;
let tokenizer: Tokenizer;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rank1-eval-'));
  modelDir = path.join(dir, 'model');
  // vocab 128 ≥ the fixture tokenizer's 100 ids
  await writeRandomQwen2Checkpoint(modelDir, tinyQwen2Config({ vocabSize: 128 }), 7, getCpuBackend());
  tokenizer = (await loadTokenizer(tokenizerDir))!;
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});
afterEach(() => {
  vi.restoreAllMocks();
});

/** Runs the command action, returning what it wrote to stdout and stderr. */
async function run(options: EvalCommandOptions): Promise<{ stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stdout += String(chunk);
    return true;
  });
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stderr += String(chunk);
    return true;
  });
  try {
    await evalCommand(options);
  } finally {
    vi.restoreAllMocks();
  }
  return { stdout, stderr };
}

const evalOptions = (out: string, extra: Partial<EvalCommandOptions> = {}): EvalCommandOptions => ({
  model: modelDir, tokenizer: tokenizerDir, bench: 'math500', data: mathData, out, maxTokens: 5, backend: 'cpu', ...extra,
});

async function lines(file: string): Promise<string[]> {
  return (await fs.readFile(file, 'utf8')).split('\n').filter((l) => l !== '');
}

describe('rank1 eval on a tiny random model', () => {
  it('writes one results row per problem and a summary line', async () => {
    const out = path.join(dir, 'run', 'math500.jsonl');
    const { stdout, stderr } = await run(evalOptions(out));
    const rows = (await lines(out)).map((l) => JSON.parse(l) as ResultRow);
    expect(rows.map((r) => r.index)).toEqual([0, 1, 2]);
    for (const row of rows) {
      expect(row).toMatchObject({ bench: 'math500', tokensGenerated: expect.any(Number), seconds: expect.any(Number) });
      expect(row.tokensGenerated).toBeLessThanOrEqual(5);
      expect(['stop_id', 'max_tokens']).toContain(row.stopReason);
      expect(typeof row.output).toBe('string');
      expect(Object.keys(row)).toEqual(expect.arrayContaining(['index', 'id', 'problem', 'gold', 'extracted', 'correct', 'tokensGenerated', 'stopReason', 'seconds']));
    }
    expect(rows[1]).toMatchObject({ id: 'sample/half.json', gold: '\\frac{1}{2}', problem: 'Simplify $\\frac{2}{4}$.' });
    const summary = JSON.parse(stdout.trim());
    expect(summary).toMatchObject({ bench: 'math500', n: 3, generated: 3, out });
    expect(summary.accuracy).toBe(summary.correct / 3);
    expect(summary.meanTokens).toBeCloseTo(rows.reduce((s, r) => s + r.tokensGenerated, 0) / 3, 10);
    expect(stderr).toMatch(/chat template: built-in Qwen2\.5-Instruct/);
    expect(stderr).toMatch(/\[3\/3\] sample\/interval\.json: (correct|wrong)/);
  });

  it('resumes: problems already in --out are skipped, a cut-off last line is redone', async () => {
    const out = path.join(dir, 'resume.jsonl');
    await run(evalOptions(out, { limit: 2 }));
    const firstTwo = await lines(out);
    expect(firstTwo).toHaveLength(2);

    // Same --out without --limit: only problem 2 is generated; the first two rows are untouched.
    const resumed = await run(evalOptions(out));
    expect(JSON.parse(resumed.stdout)).toMatchObject({ n: 3, generated: 1 });
    expect(resumed.stderr).toMatch(/resuming .*resume\.jsonl: 2 problem\(s\) already done/);
    const all = await lines(out);
    expect(all.slice(0, 2)).toEqual(firstTwo);
    expect(all).toHaveLength(3);

    // Nothing left to do.
    expect(JSON.parse((await run(evalOptions(out))).stdout)).toMatchObject({ n: 3, generated: 0 });

    // A run killed mid-write leaves half a line: it is dropped and that problem done again.
    await fs.writeFile(out, `${all.slice(0, 2).join('\n')}\n${all[2]!.slice(0, 25)}`);
    const repaired = await run(evalOptions(out));
    expect(repaired.stderr).toMatch(/dropped a cut-off last line/);
    expect(JSON.parse(repaired.stdout)).toMatchObject({ n: 3, generated: 1 });
    // Greedy decoding: the same rows again, but for the redone problem's timing.
    const withoutTiming = (ls: string[]) => ls.map((l) => ({ ...(JSON.parse(l) as ResultRow), seconds: 0 }));
    expect(withoutTiming(await lines(out))).toEqual(withoutTiming(all));
  });

  it('refuses to resume a results file from other data or another benchmark', async () => {
    const out = path.join(dir, 'mismatch.jsonl');
    await run(evalOptions(out, { limit: 1 }));
    const row = JSON.parse((await lines(out))[0]!) as ResultRow;
    await fs.writeFile(out, `${JSON.stringify({ ...row, problem: 'a different problem' })}\n`);
    await expect(run(evalOptions(out))).rejects.toThrow(/mismatch\.jsonl: problem 0 in the results file is not problem 0 of the data file/);
    await fs.writeFile(out, `${JSON.stringify({ ...row, bench: 'aime24' })}\n`);
    await expect(run(evalOptions(out))).rejects.toThrow(/holds aime24 results .* but this run is math500/);
    await fs.writeFile(out, `${JSON.stringify(row)}\n${JSON.stringify(row)}\n`);
    await expect(run(evalOptions(out))).rejects.toThrow(/problem 0 appears twice/);
    await fs.writeFile(out, `not json\n${JSON.stringify(row)}\n`);
    await expect(run(evalOptions(out))).rejects.toThrow(/mismatch\.jsonl:1: not valid JSON/);
  });

  it('says what is missing or wrong in the options', async () => {
    await expect(run({ model: modelDir, backend: 'cpu' })).rejects.toThrow(/eval needs --bench, --data/);
    await expect(run(evalOptions(path.join(dir, 'x.jsonl'), { bench: 'mmlu' }))).rejects.toThrow(/--bench must be one of aime24, math500, gpqa/);
    await expect(run(evalOptions(path.join(dir, 'x.jsonl'), { tokenizer: undefined }))).rejects.toThrow(/no tokenizer\.json in .*model: eval needs a tokenizer/);
    await expect(run({ compare: ['base=a.jsonl'], model: modelDir })).rejects.toThrow(/--compare reads results files only; drop --model/);
  });

  it('puts results under results/ by default, named by benchmark and time', () => {
    expect(defaultResultsPath('gpqa', new Date('2025-02-03T04:05:06.789Z'))).toBe(path.join('results', 'gpqa-2025-02-03T04-05-06-789Z.jsonl'));
  });
});

describe('grading through the loop (scripted completer)', () => {
  /** Answers each problem with a fixed text, as a model would after its thinking. */
  const scripted = (answers: string[]): Completer => {
    let call = 0;
    return async (promptIds, { stopIds }) => {
      expect(tokenizer.decode(promptIds).endsWith('<|im_start|>assistant\n<|im_start|>think')).toBe(true);
      const ids = [...tokenizer.encode(`\nlet me think\n<|im_start|>answer\n${answers[call++]}`, { addSpecialTokens: false }), stopIds[0]!];
      return { ids, stopReason: 'stop_id' };
    };
  };

  it('grades MATH answers with equivalence and records what it read', async () => {
    const problems = await loadBenchmark('math500', mathData);
    const result = await runEval({
      bench: 'math500', problems, tokenizer, chatTemplate: QWEN25_INSTRUCT_CHAT_TEMPLATE, out: path.join(dir, 'scripted-math.jsonl'), maxTokens: 100,
      complete: scripted(['Answer: $\\boxed{2}$', 'Answer: 0.5', 'Answer: \\boxed{[-2, 2]}']),
    });
    expect(result.rows.map((r) => [r.extracted, r.correct])).toEqual([['2', true], ['0.5', true], ['[-2, 2]', false]]);
    expect(result.summary).toMatchObject({ n: 3, correct: 2 });
    expect(result.rows[0]!.output).toMatch(/<\|im_start\|>answer\nAnswer: \$\\boxed\{2\}\$<\|im_end\|>$/);
  });

  it('grades GPQA letters against the shuffled gold letter', async () => {
    const problems = await loadBenchmark('gpqa', path.join(fixtures, 'gpqa-sample.csv'));
    const answers = problems.map((p, k) => (k % 2 === 0 ? `Answer: ${p.gold}` : `Answer: ${p.gold === 'A' ? 'B' : 'A'}`));
    const result = await runEval({
      bench: 'gpqa', problems, tokenizer, chatTemplate: QWEN25_INSTRUCT_CHAT_TEMPLATE, out: path.join(dir, 'scripted-gpqa.jsonl'), maxTokens: 100,
      complete: scripted(answers),
    });
    expect(result.rows.map((r) => r.correct)).toEqual([true, false, true, false]);
    expect(result.rows[0]!.choices).toEqual(problems[0]!.choices);
  });

  it('stops on <|im_end|>, <|endoftext|> and the eos ids', () => {
    expect(new Set(tokenizer.stopIds())).toEqual(new Set([99, 97]));
  });
});

// ---- --compare ------------------------------------------------------------------------------------

/** A results file with `correct` right answers out of `n`. */
async function resultsFile(name: string, bench: 'aime24' | 'math500' | 'gpqa', n: number, correct: number, tokens = 100): Promise<string> {
  const file = path.join(dir, 'compare', name);
  await fs.mkdir(path.dirname(file), { recursive: true });
  const rows: ResultRow[] = Array.from({ length: n }, (_, index) => ({
    bench, index, id: String(index), problem: `problem ${index}`, gold: '1', extracted: index < correct ? '1' : '2', correct: index < correct,
    tokensGenerated: tokens, stopReason: 'stop_id', seconds: 1,
  }));
  await fs.writeFile(file, rows.map((r) => `${JSON.stringify(r)}\n`).join(''));
  return file;
}

describe('rank1 eval --compare', () => {
  it('prints Table 1 with accuracies and % recovery', async () => {
    // AIME24: 3/30 → 6/30 → 9/30 (recovery 50%); MATH500: 100/500 → 250/500 → 200/500 (150%);
    // GPQA: 50/198 → 40/198 → 50/198 (full == base: n/a).
    const aime = `base=${await resultsFile('aime-base.jsonl', 'aime24', 30, 3)},lora=${await resultsFile('aime-lora.jsonl', 'aime24', 30, 6)},full=${await resultsFile('aime-full.jsonl', 'aime24', 30, 9)}`;
    const math = `math500:base=${await resultsFile('math-base.jsonl', 'math500', 500, 100)},lora=${await resultsFile('math-lora.jsonl', 'math500', 500, 250)},full=${await resultsFile('math-full.jsonl', 'math500', 500, 200)}`;
    const gpqa = `full=${await resultsFile('gpqa-full.jsonl', 'gpqa', 198, 50)},base=${await resultsFile('gpqa-base.jsonl', 'gpqa', 198, 50)},lora=${await resultsFile('gpqa-lora.jsonl', 'gpqa', 198, 40)}`;
    const { stdout } = await run({ compare: [gpqa, math, aime] });
    expect(stdout).toBe([
      '               AIME24  MATH500  GPQA',
      'Base             10.0     20.0  25.3',
      'Rank-1 LoRA      20.0     50.0  20.2',
      'Full finetune    30.0     40.0  25.3',
      '% recovery       50.0    150.0   n/a',
      '',
    ].join('\n'));

    const json = JSON.parse((await run({ compare: [aime], json: true })).stdout);
    expect(json.benches).toEqual(['aime24']);
    expect(json.recovery.aime24).toBeCloseTo(50, 10);
    expect(json.cells.lora.aime24).toMatchObject({ n: 30, correct: 6 });
  });

  it('shows n/a for a missing run and warns when runs cover different problems', async () => {
    const table = await buildCompareTable([parseCompareSpec(`base=${await resultsFile('p-base.jsonl', 'math500', 10, 2)},lora=${await resultsFile('p-lora.jsonl', 'math500', 8, 4)}`)]);
    expect(table.recovery.math500).toBeNull();
    expect(table.warnings.join()).toMatch(/MATH500: the runs cover different problems \(base n=10, lora n=8\)/);
    expect(formatCompareTable(table)).toMatch(/Full finetune +n\/a\n% recovery +n\/a\n$/);
  });

  it('computes recovery from exact accuracies', () => {
    const s = (correct: number, n: number) => ({ n, correct, accuracy: correct / n, meanTokens: 0 });
    expect(recoveryPercent(s(1, 10), s(2, 10), s(3, 10))).toBeCloseTo(50, 10);
    expect(recoveryPercent(s(1, 10), s(0, 10), s(3, 10))).toBeCloseTo(-50, 10);
    expect(recoveryPercent(s(1, 10), s(2, 10), s(2, 20))).toBeNull();
  });

  it('rejects malformed specs and mismatched files', async () => {
    expect(() => parseCompareSpec('math500:base')).toThrow(/expected ROLE=FILE items, got "base"/);
    expect(() => parseCompareSpec('mmlu:base=a')).toThrow(/unknown benchmark "mmlu"/);
    expect(() => parseCompareSpec('rank1=a')).toThrow(/unknown role "rank1"/);
    expect(() => parseCompareSpec('base=a,base=b')).toThrow(/base is given twice/);
    expect(parseCompareSpec('gpqa:base=x.jsonl, full = y.jsonl')).toEqual({ bench: 'gpqa', files: { base: 'x.jsonl', full: 'y.jsonl' } });
    const aimeFile = await resultsFile('m-aime.jsonl', 'aime24', 5, 1);
    await expect(buildCompareTable([parseCompareSpec(`gpqa:base=${aimeFile}`)])).rejects.toThrow(/holds aime24 results, but the comparison is for gpqa/);
    await expect(buildCompareTable([parseCompareSpec(`base=${aimeFile}`), parseCompareSpec(`lora=${aimeFile}`)])).rejects.toThrow(/aime24 is given twice/);
    await expect(buildCompareTable([parseCompareSpec(`base=${path.join(dir, 'none.jsonl')}`)])).rejects.toThrow(/none\.jsonl: no results/);
    expect((await readResults(path.join(dir, 'none.jsonl'))).rows).toEqual([]);
  });
});
