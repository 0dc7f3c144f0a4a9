// Stop sequences in `rank1 serve` (src/serve/stop-text.ts): the whole response cut at the earliest stop, and
// the streamed deltas, which hold back what could still become a stop, add up to exactly that text.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { StopTextTracker, cutAtStop, firstStopAt } from '../src/serve/stop-text.ts';

// X and Y are the two halves of one character (é) as a byte-level tokenizer splits it: X alone decodes to
// U+FFFD, which the next token may turn into é, so a streamed U+FFFD would have to be taken back.
const pieceArb = fc.constantFrom('a', 'b', 'ab', ' ', 'ba ', 'X', 'Y', 'aab');
const decodePieces = (pieces: readonly string[]) => pieces.join('').replaceAll('XY', 'é').replaceAll('X', '\uFFFD').replaceAll('Y', '\uFFFD');
const stopArb = fc.string({ unit: fc.constantFrom('a', 'b', ' '), minLength: 0, maxLength: 3 });

describe('stop sequences', () => {
  it('cutAtStop keeps the text before the earliest stop; empty stops never match', () => {
    expect(firstStopAt('hello world', ['wor', 'lo', ''])).toBe(3);
    expect(cutAtStop('hello world', ['wor', 'lo'])).toBe('hel');
    expect(cutAtStop('hello world', ['', 'xyz'])).toBe('hello world');
    fc.assert(fc.property(fc.string({ unit: fc.constantFrom('a', 'b', ' ') }), fc.array(stopArb, { maxLength: 3 }), (text, stops) => {
      const cut = cutAtStop(text, stops);
      expect(text.startsWith(cut)).toBe(true);
      // No stop lies wholly inside the kept text, and one begins where it was cut.
      for (const stop of stops) if (stop) expect(cut.includes(stop)).toBe(false);
      if (cut.length < text.length) expect(stops.some((stop) => stop && text.startsWith(stop, cut.length))).toBe(true);
    }), { numRuns: 500, seed: 21 });
  });

  it('streamed deltas, stopped as the server stops, add up to the whole response cut at the stop (fast-check)', () => {
    fc.assert(fc.property(fc.array(pieceArb, { minLength: 1, maxLength: 12 }), fc.array(stopArb, { maxLength: 3 }), (pieces, stops) => {
      const decode = (ids: readonly number[]) => decodePieces(ids.map((i) => pieces[i]!));
      const tracker = new StopTextTracker(decode, stops.filter((stop) => stop.length > 0));
      const ids: number[] = [];
      let streamed = '';
      for (let i = 0; i < pieces.length && !tracker.stopped; i++) {
        ids.push(i);
        streamed += tracker.push(ids);
      }
      streamed += tracker.push(ids, true);
      const whole = decode(ids);
      expect(streamed).toBe(tracker.stopped ? cutAtStop(whole, stops) : whole);
      expect(tracker.stopped).toBe(firstStopAt(whole, stops) >= 0);
    }), { numRuns: 1000, seed: 22 });
  });
});
