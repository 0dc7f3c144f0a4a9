// Reading LaTeX as text, before any parsing: matching braces, splitting at top-level separators, and finding
// `\boxed{…}` groups. Every grader step that cuts an answer apart goes through these, so that a comma inside
// `\frac{1,2}` or `(a, b)` is never mistaken for a list separator.

/** Index of the `}` closing the `{` at `open`, or -1; `\{` and `\}` are literal braces. */
export function matchingBrace(s: string, open: number): number {
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    const c = s[i];
    if (c === '\\') {
      i++;
      continue;
    }
    if (c === '{') depth++;
    else if (c === '}' && --depth === 0) return i;
  }
  return -1;
}

/** Splits at top-level occurrences of any separator (outside (), [], {}, `\{ \}`). */
export function splitTopLevel(s: string, separators: readonly string[]): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\' && (s[i + 1] === '{' || s[i + 1] === '}')) {
      depth += s[i + 1] === '{' ? 1 : -1;
      i++;
      continue;
    }
    if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']' || c === '}') depth = Math.max(0, depth - 1);
    else if (depth === 0) {
      const separator = separators.find((sep) => s.startsWith(sep, i) && !(/^\\[a-zA-Z]+$/.test(sep) && /[a-zA-Z]/.test(s[i + sep.length] ?? '')));
      if (separator !== undefined) {
        parts.push(s.slice(start, i));
        start = i + separator.length;
        i += separator.length - 1;
      }
    }
  }
  parts.push(s.slice(start));
  return parts;
}

export interface BoxedGroup {
  /** The text inside the braces. */
  content: string;
  /** Where `\boxed` starts and where its group ends (exclusive). */
  start: number;
  end: number;
}

const BOX_COMMAND = /\\(?:boxed|fbox|framebox)(?![a-zA-Z])/g;

/**
 * Every complete `\boxed{…}` / `\fbox{…}` / `\framebox{…}` (braces balanced) and TeX's one-token `\boxed 5`,
 * in order. A box left open (output cut by the token budget) is skipped.
 */
export function boxedGroups(text: string): BoxedGroup[] {
  const groups: BoxedGroup[] = [];
  for (const match of text.matchAll(BOX_COMMAND)) {
    const start = match.index;
    let i = start + match[0].length;
    const afterCommand = i;
    while (text[i] === ' ') i++;
    if (text[i] === '{') {
      const close = matchingBrace(text, i);
      if (close >= 0) groups.push({ content: text.slice(i + 1, close), start, end: close + 1 });
    } else if (i > afterCommand) {
      const token = /^[^\s$]+/.exec(text.slice(i))?.[0];
      if (token) groups.push({ content: token, start, end: i + token.length });
    }
  }
  // A box inside another box is part of the outer one's content, not an answer of its own.
  return groups.filter((g) => !groups.some((outer) => outer !== g && outer.start < g.start && g.end <= outer.end));
}
