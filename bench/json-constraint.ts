// `tsx bench/json-constraint.ts`: tokens/s of a structured-outputs answer of ~500 tokens from `rank1 serve`
// (src/serve/) on the shipped toy base, greedy and sampled, beside the same number of tokens decoded with no
// constraint (the model's own cost) in the same run. The
// request goes through the server's own route (Fastify's inject, no socket), with a schema that cannot
// be finished in fewer than 500 tokens, so every answer is cut at max_tokens. The toy's vocabulary is 448
// tokens and its forward is cheap, so the constraint's cost shows beside the model's. Wall-clock tokens/s and
// tokens per CPU second of this process (all threads) are both reported: on a shared machine the second is
// the steadier.
//
// Also timed: the checker alone on the same answer, replayed token by token with every vocabulary token tried
// at every step (the worst case for the decoder: the model's best token refused), per accepted token: the old
// whole-text re-parse (kept as the tests' oracle in test/helpers/json-prefix-reference.ts) against the
// incremental state, in the same run.
//
//   npx tsx bench/json-constraint.ts [--tokens 500] [--repeats 3] [--out bench/results/DATE-json-constraint.json]
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command } from 'commander';
import { getCpuBackend } from '../src/tensor/engine.ts';
import { loadQwen2Checkpoint } from '../src/model/load.ts';
import { loadTokenizer } from '../src/model/tokenizer.ts';
import { loadChatTemplate, renderChat } from '../src/model/chat-template.ts';
import { DecodeScheduler } from '../src/serve/scheduler.ts';
import { buildServer } from '../src/serve/server.ts';
import { JsonConstraintState } from '../src/serve/json-constraint.ts';
import { compileSchema } from '../src/serve/json-schema.ts';
import { referencePrefixStatus } from '../test/helpers/json-prefix-reference.ts';
import { describeEnvironment, repoRoot } from './environment.ts';

const program = new Command()
  .option('--tokens <n>', 'max_tokens of each answer', Number, 500)
  .option('--repeats <n>', 'answers timed per mode (the median is reported)', Number, 3)
  .option('--label <text>', 'a note stored with the results (e.g. "before: re-parse per candidate")', '')
  .option('--out <file>', 'also write the results JSON here');
program.parse();
const options = program.opts<{ tokens: number; repeats: number; label: string; out?: string }>();

// Forty short strings: at least 40 × 4 characters of JSON before the document can close, so with max_tokens
// 500 the answer runs to the limit on the toy (its tokens are short).
const SCHEMA = {
  type: 'object',
  properties: {
    steps: { type: 'array', minItems: 40, maxItems: 40, items: { type: 'string', maxLength: 60 } },
    answer: { type: 'integer', minimum: 0, maximum: 9 },
  },
};

const toy = path.join(repoRoot, 'models/toy');
const { model } = await loadQwen2Checkpoint(toy, getCpuBackend());
const tokenizer = (await loadTokenizer(toy))!;
const chatTemplate = await loadChatTemplate(toy);
const scheduler = new DecodeScheduler(model, { maxBatch: 1 });
const app = buildServer({ scheduler, tokenizer, chatTemplate, modelId: 'toy', contextLength: 1024 });

interface Answer { seconds: number; cpuSeconds: number; completionTokens: number; content: string; finishReason: string }

const QUESTION = 'List the steps to find the last digit of 7 * 8.';

async function answer(temperature: number): Promise<Answer> {
  const payload = {
    model: 'toy', messages: [{ role: 'user', content: QUESTION }], max_tokens: options.tokens, temperature, seed: 1,
    response_format: { type: 'json_schema', json_schema: { name: 'steps', schema: SCHEMA } },
  };
  const started = performance.now();
  const cpu = process.cpuUsage();
  const response = await app.inject({ method: 'POST', url: '/v1/chat/completions', payload });
  const cpuSeconds = cpuSecondsSince(cpu);
  const seconds = (performance.now() - started) / 1000;
  if (response.statusCode !== 200) throw new Error(`status ${response.statusCode}: ${response.body}`);
  const body = response.json() as { choices: { message: { content: string }; finish_reason: string }[]; usage: { completion_tokens: number } };
  return { seconds, cpuSeconds, completionTokens: body.usage.completion_tokens, content: body.choices[0]!.message.content, finishReason: body.choices[0]!.finish_reason };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
/** CPU seconds this process (all its threads) spent since `start`: steadier than wall time on a busy machine. */
const cpuSecondsSince = (start: NodeJS.CpuUsage) => {
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1e6;
};

async function timeConstrained(temperature: number) {
  await answer(temperature); // warm-up: kernels, token-text cache
  const runs: Answer[] = [];
  for (let r = 0; r < options.repeats; r++) runs.push(await answer(temperature));
  return {
    tokensPerSecond: median(runs.map((run) => run.completionTokens / run.seconds)),
    tokensPerCpuSecond: median(runs.map((run) => run.completionTokens / run.cpuSeconds)),
    runs: runs.map(({ seconds, cpuSeconds, completionTokens, finishReason }) => ({ seconds, cpuSeconds, completionTokens, finishReason })),
    sample: runs[0]!.content.slice(0, 160),
  };
}

/** The same number of tokens decoded with no constraint and no stop ids (the model's own cost), same prompt. */
async function timeDecodeOnly() {
  const promptIds = tokenizer.encode(renderChat(chatTemplate, [{ role: 'user', content: QUESTION }], { addGenerationPrompt: true }), { addSpecialTokens: false });
  const decode = () => scheduler.submit({ promptIds, maxTokens: options.tokens, temperature: 0, topP: 1, seed: 1, stopIds: [] });
  await decode();
  const tokensPerSecond: number[] = [];
  const tokensPerCpuSecond: number[] = [];
  for (let r = 0; r < options.repeats; r++) {
    const started = performance.now();
    const cpu = process.cpuUsage();
    const outcome = await decode();
    tokensPerCpuSecond.push(outcome.ids.length / cpuSecondsSince(cpu));
    tokensPerSecond.push(outcome.ids.length / ((performance.now() - started) / 1000));
  }
  return { tokensPerSecond: median(tokensPerSecond), tokensPerCpuSecond: median(tokensPerCpuSecond) };
}

/** The checker alone: the answer's tokens accepted one by one, every vocabulary token tried before each. */
function checkerOnly(content: string) {
  const node = compileSchema(SCHEMA);
  const vocab = model.dims.vocab;
  const texts = Array.from({ length: vocab }, (_, id) => tokenizer.decode([id], { skipSpecialTokens: true }));
  const ids = tokenizer.encode(content, { addSpecialTokens: false });
  const modes: Record<string, () => void> = {
    // Before: the whole text so far plus the piece, parsed from the start for every candidate (the old checker).
    reparse: () => {
      let text = '';
      for (const id of ids) {
        for (let candidate = 0; candidate < vocab; candidate++) referencePrefixStatus(node, text + texts[candidate]!);
        text += texts[id]!;
      }
    },
    // Now: the accepted text's parser state, and only the candidate's characters read per check.
    incremental: () => {
      const state = new JsonConstraintState(node);
      for (const id of ids) {
        for (let candidate = 0; candidate < vocab; candidate++) state.statusWith(texts[candidate]!);
        state.accept(texts[id]!);
      }
    },
  };
  // The modes alternate, three rounds, and each reports its median: the machine is shared and its load moves.
  const times: Record<string, number[]> = {};
  for (let round = 0; round < 3; round++) {
    for (const [name, run] of Object.entries(modes)) {
      const started = performance.now();
      run();
      (times[name] ??= []).push((performance.now() - started) / ids.length);
    }
  }
  return Object.fromEntries(Object.entries(times).map(([name, values]) => [name, { msPerToken: median(values), rounds: values, tokens: ids.length }]));
}

const decodeOnly = await timeDecodeOnly();
const constrainedGreedy = await timeConstrained(0);
const constrainedSampled = await timeConstrained(1);
const report = {
  bench: 'structured outputs: tokens/s of a constrained ~500-token answer through rank1 serve (toy base, CPU; greedy and sampled)',
  label: options.label, date: new Date().toISOString(), maxTokens: options.tokens, schema: SCHEMA,
  environment: describeEnvironment({ reason: 'not probed (CPU backend)' }),
  note: 'shared machine (2 cores, other jobs running): compare numbers from the same run',
  constrainedGreedy, constrainedSampled, decodeOnly, checkerOnly: checkerOnly((await answer(0)).content),
};
await app.close();
model.dispose();
const text = `${JSON.stringify(report, null, 2)}\n`;
if (options.out) fs.writeFileSync(options.out, text);
process.stdout.write(text);
