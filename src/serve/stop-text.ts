// Stop sequences (`stop` in a request): where the first one begins in the generated text, the text cut there
// (a whole response), and the streamed text held back while its tail could still grow into one. One search,
// `firstStopAt`, serves both.

/** Where the earliest stop sequence begins in `text` (empty stops never match), or -1 if none appears. */
export function firstStopAt(text: string, stops: readonly string[]): number {
  let cut = -1;
  for (const stop of stops) {
    const at = stop ? text.indexOf(stop) : -1;
    if (at >= 0 && (cut < 0 || at < cut)) cut = at;
  }
  return cut;
}

/** `text` up to its first stop sequence (all of it if none appears). */
export function cutAtStop(text: string, stops: readonly string[]): string {
  const cut = firstStopAt(text, stops);
  return cut < 0 ? text : text.slice(0, cut);
}

/** The length of the longest tail of `text` that is a proper prefix of some stop sequence. */
function stopPrefixAtEnd(text: string, stops: readonly string[]): number {
  let hold = 0;
  for (const stop of stops) {
    for (let k = Math.min(stop.length - 1, text.length); k > hold; k--) {
      if (text.endsWith(stop.slice(0, k))) {
        hold = k;
        break;
      }
    }
  }
  return hold;
}

/**
 * Text seen so far, without a stop sequence or anything after it, holding back a tail that could still grow
 * into a stop sequence (or an incomplete UTF-8 character), so streamed deltas never need taking back.
 */
export class StopTextTracker {
  private sent = 0;
  stopped = false;

  constructor(private readonly decode: (ids: readonly number[]) => string, private readonly stops: readonly string[]) {}

  /** The new text to emit after `generated` (all ids so far); sets `stopped` when a stop sequence appeared. */
  push(generated: readonly number[], final = false): string {
    const text = this.decode(generated);
    let visible = text;
    const cut = firstStopAt(text, this.stops);
    if (cut >= 0) {
      visible = text.slice(0, cut);
      this.stopped = true;
    } else if (!final) {
      visible = text.slice(0, text.length - stopPrefixAtEnd(text, this.stops));
      while (visible.endsWith('\uFFFD')) visible = visible.slice(0, -1);
    }
    if (visible.length <= this.sent) return '';
    const delta = visible.slice(this.sent);
    this.sent = visible.length;
    return delta;
  }
}
