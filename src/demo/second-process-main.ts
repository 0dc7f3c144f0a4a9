// The demo's second process itself (forked by second-process.ts): takes the job from its parent, reads the
// world the parent made, runs the full finetune and its evaluation (the same functions the steps call in one
// process) on its own CPU backend, and reports each step's line, progress, log lines and timing back over IPC.
import { initBackend } from '../tensor/engine.ts';
import { DemoContext } from './context.ts';
import type { DemoSummary } from './folder.ts';
import { DemoProgress } from './progress.ts';
import { ALONGSIDE_STEPS, type AlongsideStep, type SecondProcessJob, type SecondProcessMessage } from './second-process.ts';
import { evaluate, readWorld, trainDemoModel } from './steps-training.ts';

/** Sends a message to the parent; resolves once it is handed to the channel (so a last one is not lost on exit). */
function send(message: SecondProcessMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) resolve();
    else process.send(message, undefined, {}, () => resolve());
  });
}

/** The display of a step here: nothing printed, each update sent to the parent, which shows it. */
class ForwardedProgress extends DemoProgress {
  step: AlongsideStep = ALONGSIDE_STEPS[0];

  constructor() {
    super(ALONGSIDE_STEPS.length, { write: () => true }, false);
  }

  override update(value: number, total: number, unit: string, detail = ''): void {
    void send({ type: 'progress', step: this.step, value, total, unit, detail });
  }
}

async function runJob(job: SecondProcessJob): Promise<void> {
  const { backend } = await initBackend('cpu');
  const progress = new ForwardedProgress();
  // The summary is the parent's to write: the steps run here only return their lines and numbers.
  const summary = {} as DemoSummary;
  const context = new DemoContext(
    { out: job.out, base: job.base, sizes: job.sizes, mode: job.mode, seed: job.seed, backend, secondProcess: false },
    progress, (line) => void send({ type: 'log', line }), summary,
  );
  await readWorld(context, job.worldOptions);
  for (const step of ALONGSIDE_STEPS) {
    progress.step = step;
    progress.begin(step);
    const { line, trained } = step === 'train full'
      ? await trainDemoModel(context, 'full')
      : { line: await evaluate(context, 'full'), trained: null };
    await send({ type: 'done', step, line, trained, timing: progress.end(line) });
  }
}

let finished = false;
/** Ends the channel to the parent once the job is done (or failed), which lets this process exit. */
function finish(): void {
  finished = true;
  process.disconnect?.();
}

// The parent gone before the job is done (killed, or the demo failed and stopped this one): nothing to report to.
process.on('disconnect', () => {
  if (!finished) process.exit(1);
});

process.once('message', (job: SecondProcessJob) => {
  runJob(job).then(finish, async (error: unknown) => {
    process.exitCode = 1;
    await send({ type: 'failed', message: error instanceof Error ? error.message : String(error) });
    finish();
  });
});
