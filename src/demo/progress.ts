// One progress display for the whole of `rank1 demo`: on a terminal, a single bar that names the step (3/14
// train rank 1), shows that step's own progress (optimizer steps, problems, rows, forwards) and the run's
// clock, with a line printed above it as each step ends; elsewhere (CI, a pipe, a log file) just that one line
// per step, with its time.
import cliProgress from 'cli-progress';

export interface StepTiming {
  step: string;
  seconds: number;
  /** What the step produced, in a few words (the line printed as it ends). */
  summary: string;
}

export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
}

/** 42.3 s, or 6 min 05 s from a minute on. */
export function formatSeconds(seconds: number): string {
  if (seconds < 59.95) return `${seconds.toFixed(1)} s`;
  const whole = Math.round(seconds);
  return `${Math.floor(whole / 60)} min ${String(whole % 60).padStart(2, '0')} s`;
}

export class DemoProgress {
  readonly timings: StepTiming[] = [];
  private readonly started = performance.now();
  private readonly tty: boolean;
  private stepStarted = 0;
  private stepName = '';
  private index = 0;
  private detail = '';
  /** On a terminal, the bar of the step under way (a MultiBar for its log(); made per step, cleared at its end). */
  private multibar: cliProgress.MultiBar | null = null;
  private bar: cliProgress.SingleBar | null = null;

  constructor(private readonly stepCount: number, private readonly stream: ProgressStream = process.stderr, tty = stream.isTTY === true) {
    this.tty = tty;
  }

  /** Seconds since the display was made. */
  get elapsedSeconds(): number {
    return (performance.now() - this.started) / 1000;
  }

  /** Starts the next step. */
  begin(name: string): void {
    if (this.stepName) throw new Error(`demo progress: "${name}" began before "${this.stepName}" ended`);
    this.index++;
    this.stepName = name;
    this.stepStarted = performance.now();
    this.detail = '';
    if (this.tty) {
      this.multibar = new cliProgress.MultiBar({
        stream: this.stream as NodeJS.WritableStream,
        format: '{head} |{bar}| {count} {detail} | {clock}',
        hideCursor: true,
        clearOnComplete: true,
        barsize: 24,
        fps: 5,
      }, cliProgress.Presets.shades_classic);
      this.bar = this.multibar.create(1, 0, this.payload(''));
    }
  }

  /** The current step's own progress: `value` of `total` (units such as "steps", "problems"), and a detail. */
  update(value: number, total: number, unit: string, detail = ''): void {
    this.detail = detail;
    if (!this.bar) return;
    this.bar.setTotal(Math.max(1, total));
    this.bar.update(Math.min(value, Math.max(1, total)), this.payload(`${value}/${total} ${unit}`));
  }

  /** Ends the current step: clears its bar, prints its line with the time, and records it. */
  end(summary: string): StepTiming {
    if (!this.stepName) throw new Error('demo progress: end() without begin()');
    const timing: StepTiming = { step: this.stepName, seconds: (performance.now() - this.stepStarted) / 1000, summary };
    this.timings.push(timing);
    this.clearBar();
    this.note(`[${this.index}/${this.stepCount}] ${timing.step}: ${summary} (${formatSeconds(timing.seconds)})`);
    this.stepName = '';
    return timing;
  }

  /** A line of its own (above the bar while a step is under way on a terminal). */
  note(line: string): void {
    if (this.multibar) this.multibar.log(`${line}\n`);
    else this.stream.write(`${line}\n`);
  }

  /** Removes the bar (also after a failure, so the terminal is left clean). */
  stop(): void {
    this.clearBar();
  }

  private clearBar(): void {
    this.multibar?.stop();
    this.multibar = null;
    this.bar = null;
  }

  private payload(count: string): Record<string, string> {
    const head = `${this.index}/${this.stepCount} ${this.stepName}`;
    const clock = `step ${formatSeconds((performance.now() - this.stepStarted) / 1000)}, total ${formatSeconds(this.elapsedSeconds)}`;
    return { head: head.padEnd(22), count, detail: this.detail, clock };
  }
}
