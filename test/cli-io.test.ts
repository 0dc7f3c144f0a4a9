// The CLI's progress display: off a terminal, a line at most every few seconds, always the last one, never the
// same line twice; with --no-progress the same lines on a terminal; on a terminal a bar and no lines.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { progressDisplay } from '../src/cli/io.ts';

function fakeStream(isTTY: boolean): { stream: NodeJS.WriteStream; written: string[] } {
  const written: string[] = [];
  const stream = { isTTY, columns: 100, write: (text: string) => written.push(text), cursorTo: () => true, clearLine: () => true, moveCursor: () => true };
  return { stream: stream as unknown as NodeJS.WriteStream, written };
}

const line = (value: number, total: number, values: { tokens: number }) => `rows ${value}/${total}  ${values.tokens} tokens`;

describe('progressDisplay', () => {
  beforeEach(() => vi.useFakeTimers({ now: 1_000_000 }));
  afterEach(() => vi.useRealTimers());

  it('off a terminal prints the first line, then one every 5 s, and always the last', () => {
    const { stream, written } = fakeStream(false);
    const progress = progressDisplay({ bar: 'rows {value}/{total} |{bar}|', line, stream });
    progress.update(1, 4, { tokens: 10 });
    vi.advanceTimersByTime(1000);
    progress.update(2, 4, { tokens: 20 });
    vi.advanceTimersByTime(5001);
    progress.update(3, 4, { tokens: 30 });
    progress.update(4, 4, { tokens: 40 });
    progress.stop();
    expect(written).toEqual(['rows 1/4  10 tokens\n', 'rows 3/4  30 tokens\n', 'rows 4/4  40 tokens\n']);
  });

  it('never repeats a line, prints every update with everyMs 0, and takes `last` from the caller', () => {
    const { stream, written } = fakeStream(false);
    const progress = progressDisplay({ bar: '', line, stream, everyMs: 0 });
    progress.update(1, 4, { tokens: 10 });
    progress.update(1, 4, { tokens: 10 });
    progress.update(2, 4, { tokens: 20 });
    expect(written).toEqual(['rows 1/4  10 tokens\n', 'rows 2/4  20 tokens\n']);
    const throttled = progressDisplay({ bar: '', line, stream });
    written.length = 0;
    throttled.update(1, 4, { tokens: 1 });
    throttled.update(2, 4, { tokens: 2 }, true);
    throttled.update(3, 4, { tokens: 3 });
    expect(written).toEqual(['rows 1/4  1 tokens\n', 'rows 2/4  2 tokens\n']);
  });

  it('with enabled false prints lines on a terminal; without a line function prints nothing', () => {
    const { stream, written } = fakeStream(true);
    progressDisplay({ bar: 'rows {value}/{total}', line, stream, enabled: false }).update(4, 4, { tokens: 40 });
    progressDisplay<{ tokens: number }>({ bar: 'rows {value}/{total}', stream, enabled: false }).update(4, 4, { tokens: 40 });
    expect(written).toEqual(['rows 4/4  40 tokens\n']);
  });

  it('on a terminal draws a bar from the format and prints no line', () => {
    const { stream, written } = fakeStream(true);
    const progress = progressDisplay({ bar: 'rows {value}/{total} |{bar}| {tokens} tokens', line, stream });
    progress.update(2, 4, { tokens: 20 });
    progress.stop();
    progress.stop();
    const text = written.join('');
    expect(text).toContain('rows 2/4 |');
    expect(text).toContain('| 20 tokens');
    expect(text).not.toContain('rows 2/4  20 tokens\n');
  });
});
