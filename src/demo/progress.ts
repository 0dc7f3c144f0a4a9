// One progress display for the whole of `rank1 demo`: on a terminal, a single bar that names the step (3/14
// train rank 1), shows that step's own progress (optimizer steps, problems, rows, forwards) and the run's
// clock, with a line printed above it as each step ends; elsewhere (CI, a pipe, a log file) just that one line
// per step, with its time.
import { readFileSync } from 'node:fs';
import cliProgress from 'cli-progress';

export interface StepTiming {
  step: string;
  seconds: number;
  /** CPU seconds the process spent in the step (user + system, every thread: the WASM workers included). */
  cpuSeconds: number;
  /**
   * CPU seconds of the main thread alone (null where the platform cannot say): the part no second core can
   * take over, so on an otherwise idle machine a step takes about max(this, cpuSeconds / cores).
   */
  mainThreadCpuSeconds: number | null;
  /** What the step produced, in a few words (the line printed as it ends). */
  summary: string;
  /**
   * When the step ran in the second process (alongside the steps before it): its own figures there; `seconds`
   * and `cpuSeconds` above are then only this process's wait for it.
   */
  alongside?: Omit<StepTiming, 'summary' | 'alongside'>;
}

/** What a step reports its progress to. */
export interface StepProgress {
  /** The current step's own progress: `value` of `total` (units such as "steps", "problems"), and a detail. */
  update(value: number, total: number, unit: string, detail?: string): void;
  /** Seconds since the run began. */
  readonly elapsedSeconds: number;
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

/** This thread's CPU seconds (user + system): Node ≥ 23.9's threadCpuUsage, else Linux's /proc/thread-self/stat, else null. */
export function threadCpuSeconds(): number | null {
  const usage = (process as { threadCpuUsage?: () => NodeJS.CpuUsage }).threadCpuUsage?.();
  if (usage) return (usage.user + usage.system) / 1e6;
  try {
    // Fields after the command name (which may hold spaces): state is the 1st, utime the 12th, stime the 13th, in 1/100 s.
    const stat = readFileSync('/proc/thread-self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return null;
  }
}

export class DemoProgress implements StepProgress {
  readonly timings: StepTiming[] = [];
  private readonly started = performance.now();
  private readonly tty: boolean;
  private stepStarted = 0;
  private stepCpuStarted: NodeJS.CpuUsage = process.cpuUsage();
  private stepThreadCpuStarted: number | null = null;
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
    this.stepCpuStarted = process.cpuUsage();
    this.stepThreadCpuStarted = threadCpuSeconds();
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

  /** Ends the current step: clears its bar, prints its line with the time, and records it (with its figures in the second process, if it ran there). */
  end(summary: string, alongside?: StepTiming | null): StepTiming {
    if (!this.stepName) throw new Error('demo progress: end() without begin()');
    const cpu = process.cpuUsage(this.stepCpuStarted);
    const threadCpu = threadCpuSeconds();
    const timing: StepTiming = {
      step: this.stepName, seconds: (performance.now() - this.stepStarted) / 1000, cpuSeconds: (cpu.user + cpu.system) / 1e6,
      mainThreadCpuSeconds: threadCpu === null || this.stepThreadCpuStarted === null ? null : threadCpu - this.stepThreadCpuStarted, summary,
      ...(alongside ? { alongside: { step: alongside.step, seconds: alongside.seconds, cpuSeconds: alongside.cpuSeconds, mainThreadCpuSeconds: alongside.mainThreadCpuSeconds } } : {}),
    };
    this.timings.push(timing);
    this.clearBar();
    const time = alongside ? `${formatSeconds(alongside.seconds)} in the second process, alongside; waited ${formatSeconds(timing.seconds)}` : formatSeconds(timing.seconds);
    this.note(`[${this.index}/${this.stepCount}] ${timing.step}: ${summary} (${time})`);
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
