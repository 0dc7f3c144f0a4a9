// What a toy-world base model can do before any adapter, in the three ways it can be asked (the
// measurement TOY-WORLD-PROBE.md asks for before training adapters):
//   chat      the chat template with the generation prompt: the instruct habit, an answer at once
//   textbook  a plain-text page opened at "Solution:": the latent skill, worked step by step
//   think     s1's prompt (chat template + `<|im_start|>think`), exactly as `rank1 eval --bench toy` asks
// Each is greedy decoding on the same held-out problems, graded by exact integer match.
import { renderChat } from '../model/chat-template.ts';
import { generateBatch } from '../model/generate.ts';
import type { Qwen2Model } from '../model/qwen2.ts';
import type { Tokenizer } from '../model/tokenizer.ts';
import type { EvalProblem } from '../eval/benchmarks.ts';
import { gradeOutput } from '../eval/grade.ts';
import { buildEvalPrompt } from '../eval/prompt.ts';
import { textbookPrompt } from './task.ts';

export const PROBE_MODES = ['chat', 'textbook', 'think'] as const;
export type ProbeMode = (typeof PROBE_MODES)[number];

export interface ProbeResult {
  mode: ProbeMode;
  n: number;
  correct: number;
  accuracy: number;
  meanTokens: number;
  /** The first output, to show what the model does in this mode. */
  example: string;
}

function promptFor(mode: ProbeMode, problem: EvalProblem, template: string): string {
  switch (mode) {
    case 'chat': return renderChat(template, [{ role: 'user', content: problem.problem }], { addGenerationPrompt: true });
    case 'textbook': return textbookPrompt(problem.problem);
    case 'think': return buildEvalPrompt(template, problem);
  }
}

/** The answer of a textbook completion: the first "Answer: N" line (later pages are the model rambling on). */
function textbookAnswer(output: string): string {
  const m = /Answer:\s*(-?\d+)/.exec(output);
  return m ? `\\boxed{${m[1]}}` : output;
}

export async function probeBase(
  model: Qwen2Model, tokenizer: Tokenizer, template: string, problems: readonly EvalProblem[],
  options: { modes?: readonly ProbeMode[]; maxTokens: number; batch: number; log?: (line: string) => void },
): Promise<ProbeResult[]> {
  const results: ProbeResult[] = [];
  const stopIds = tokenizer.stopIds();
  for (const mode of options.modes ?? PROBE_MODES) {
    let correct = 0;
    let tokens = 0;
    let example = '';
    for (let start = 0; start < problems.length; start += options.batch) {
      const group = problems.slice(start, start + options.batch);
      const prompts = group.map((p) => tokenizer.encode(promptFor(mode, p, template), { addSpecialTokens: false }));
      const outputs = await generateBatch(model, prompts, {
        maxTokens: options.maxTokens, stopIds,
        ...(mode === 'textbook' ? { stopStrings: ['\nProblem:'], decode: (ids: readonly number[]) => tokenizer.decode(ids) } : {}),
      });
      outputs.forEach((out, i) => {
        const text = tokenizer.decode(out.ids);
        if (start + i === 0) example = text;
        tokens += out.ids.length;
        if (gradeOutput('toy', mode === 'textbook' ? textbookAnswer(text) : text, group[i]!).correct) correct++;
      });
    }
    const result = { mode, n: problems.length, correct, accuracy: correct / problems.length, meanTokens: tokens / problems.length, example };
    options.log?.(`${mode.padEnd(8)} ${correct}/${problems.length} = ${(100 * result.accuracy).toFixed(1)}%  (mean ${result.meanTokens.toFixed(0)} tokens)`);
    results.push(result);
  }
  return results;
}
