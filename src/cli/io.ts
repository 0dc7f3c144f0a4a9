// What the CLI tells its user, on stderr (stdout carries a command's own output, such as a table): `note`
// for a line, `progressDisplay` for a counted job — a cli-progress bar on a terminal, and elsewhere (CI, a
// pipe, a log file, or --no-progress) a plain line at most every few seconds and always on the last count.
import cliProgress from 'cli-progress';

/** One line to stderr. */
export function note(line: string): void {
  process.stderr.write(`${line}\n`);
}

export type ProgressValues = Record<string, string | number>;

export interface ProgressOptions<Values extends ProgressValues> {
  /** The bar's cli-progress format: {bar}, {value}, {total}, {eta_formatted} and the keys of Values. */
  bar: string;
  /** The line printed where there is no bar; without it nothing is printed there. */
  line?: (value: number, total: number, values: Values) => string;
  /** false (--no-progress): no bar, the lines instead. */
  enabled?: boolean;
  /** Where there is no bar, the least time between two lines; 0 prints a line on every update. */
  everyMs?: number;
  stream?: NodeJS.WriteStream;
}

export interface ProgressDisplay<Values extends ProgressValues> {
  /** `value` of `total` done; `last` (by default value === total) prints its line whatever the time. */
  update(value: number, total: number, values: Values, last?: boolean): void;
  /** Ends the bar (the next update starts a new one, as a job's next stage does). Safe to call twice. */
  stop(): void;
}

/** A bar on a terminal, a line every `everyMs` (5 s) elsewhere; a line equal to the one before is not repeated. */
export function progressDisplay<Values extends ProgressValues>(options: ProgressOptions<Values>): ProgressDisplay<Values> {
  const stream = options.stream ?? process.stderr;
  const everyMs = options.everyMs ?? 5000;
  const bar = options.enabled !== false && stream.isTTY
    ? new cliProgress.SingleBar({ format: options.bar, stream, hideCursor: true }, cliProgress.Presets.shades_classic)
    : null;
  let started = false;
  let lastPrinted = 0;
  let lastLine = '';
  return {
    update(value, total, values, last = value === total) {
      if (bar) {
        if (!started) bar.start(total, value, values);
        started = true;
        bar.setTotal(total);
        bar.update(value, values);
        return;
      }
      if (!options.line) return;
      const line = options.line(value, total, values);
      if (line === lastLine || !(last || everyMs === 0 || Date.now() - lastPrinted > everyMs)) return;
      lastPrinted = Date.now();
      lastLine = line;
      stream.write(`${line}\n`);
    },
    stop() {
      if (started) bar?.stop();
      started = false;
    },
  };
}
