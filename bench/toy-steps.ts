// Shared by the toy-world scripts (toy-table1.ts, toy-analysis.ts): run a rank1 command as a user would (printed
// first, timed), and the `rank1 world make` arguments that remake a base's world from its world.json.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { repoRoot } from './environment.ts';
import type { WorldOptions } from '../src/world/make.ts';

export interface StepTiming {
  step: string;
  command: string;
  seconds: number;
}

const rank1 = path.join(repoRoot, 'bin/rank1.js');

/**
 * Runs `rank1 argv…`, appends its time to `timings`, and returns its stdout when captured (`capture`:
 * 'quiet' keeps it, 'echo' keeps and prints it; without, stdout goes to the terminal). Throws on failure.
 */
export async function rank1Step(timings: StepTiming[], name: string, argv: string[], capture?: 'quiet' | 'echo'): Promise<string> {
  process.stderr.write(`\n$ rank1 ${argv.join(' ')}\n`);
  const started = performance.now();
  const child = spawn(process.execPath, [rank1, ...argv], { stdio: ['ignore', capture ? 'pipe' : 'inherit', 'inherit'] });
  let stdout = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    if (capture === 'echo') process.stdout.write(chunk);
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  if (code !== 0) throw new Error(`rank1 ${argv.join(' ')} exited with ${code}`);
  const seconds = (performance.now() - started) / 1000;
  timings.push({ step: name, command: `rank1 ${argv.join(' ')}`, seconds });
  process.stderr.write(`(${name}: ${seconds.toFixed(1)} s)\n`);
  return stdout;
}

/** `world make --out DIR …` with every option of `o`, so the same world comes out byte for byte. */
export function worldMakeArgs(o: WorldOptions, out: string): string[] {
  return ['world', 'make', '--out', out, '--seed', String(o.seed), '--operations', `${o.operations.min}-${o.operations.max}`,
    '--pretrain-operations', `${o.pretrainOperations.min}-${o.pretrainOperations.max}`, '--textbook-pages', String(o.textbookPages),
    '--chats', String(o.chats), '--reasoning-rows', String(o.reasoningRows), '--heldout', String(o.heldoutProblems),
    '--slip-rate', String(o.slipRate), '--think-aloud-share', String(o.thinkAloudShare),
    '--answer-section-share', String(o.answerSectionShare), '--world-version', String(o.version), '--merges', String(o.merges)];
}
