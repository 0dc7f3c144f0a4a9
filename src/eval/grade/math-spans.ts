// Math spans in prose: `$$…$$` and `\[…\]` (may cross lines), `$…$` and `\(…\)` (one line, as Markdown
// renderers and Math-Verify read them). `\$` is a dollar sign, not a delimiter.

export interface MathSpan {
  content: string;
  start: number;
  /** Just past the closing delimiter. */
  end: number;
}

const SPAN = /\$\$([\s\S]+?)\$\$|\\\[([\s\S]+?)\\\]|\\\(((?:[^\n\\]|\\(?!\)))+?)\\\)|(?<!\\)\$((?:[^$\n\\]|\\.)+?)(?<!\\)\$/g;

/** Every math span of `text`, in order, with its content trimmed. */
export function mathSpans(text: string): MathSpan[] {
  const spans: MathSpan[] = [];
  for (const match of text.matchAll(SPAN)) {
    const content = (match[1] ?? match[2] ?? match[3] ?? match[4] ?? '').trim();
    if (content !== '') spans.push({ content, start: match.index, end: match.index + match[0].length });
  }
  return spans;
}
