// The prompt templates of autointerpretation (Jinja, in ./prompts, each replaceable from a folder) and the
// one way an example is shown in them: its context as one line, the firing token marked <<so>>.
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { Template } from '@huggingface/jinja';
import type { TopExample } from './topk.ts';

export const PROMPT_NAMES = ['system', 'explain', 'categories', 'assign', 'detection', 'fuzzing'] as const;
export type PromptName = (typeof PROMPT_NAMES)[number];
export type Prompts = Record<PromptName, string>;

const BUILT_IN_PROMPTS = path.join(import.meta.dirname, 'prompts');

/** The prompt templates (Jinja): the built-in ones, each replaced by `DIR/<name>.jinja` when `dir` has it. */
export async function loadPrompts(dir?: string): Promise<Prompts> {
  const prompts = {} as Prompts;
  if (dir) {
    const stat = await fs.stat(dir).catch(() => null);
    if (!stat?.isDirectory()) throw new Error(`--prompts ${dir}: not a folder (it should hold any of ${PROMPT_NAMES.map((n) => `${n}.jinja`).join(', ')})`);
  }
  for (const name of PROMPT_NAMES) {
    const custom = dir ? await fs.readFile(path.join(dir, `${name}.jinja`), 'utf8').catch(() => null) : null;
    const text = custom ?? await fs.readFile(path.join(BUILT_IN_PROMPTS, `${name}.jinja`), 'utf8');
    try {
      new Template(text);
    } catch (error) {
      throw new Error(`prompt template ${custom !== null ? path.join(dir!, `${name}.jinja`) : name} does not parse: ${(error as Error).message}`);
    }
    prompts[name] = text;
  }
  return prompts;
}

export function renderPrompt(template: string, context: Record<string, unknown>): string {
  return new Template(template).render(context).trim();
}

/**
 * One context as one line of text, the activating token marked <<so>> (or the token at `mark`), cut to
 * `window` tokens either side of the activating token.
 */
export function contextText(example: TopExample, mark: number | null = example.center, window = Infinity): string {
  const tokens = example.context_tokens.length === example.context_ids.length ? example.context_tokens : example.context_ids.map((id) => `[${id}]`);
  const from = Math.max(0, example.center - window);
  const to = Math.min(tokens.length, example.center + window + 1);
  return tokens.slice(from, to).map((token, i) => (i + from === mark ? `<<${token}>>` : token)).join('').replace(/\r?\n/g, '⏎');
}
