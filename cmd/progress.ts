/**
 * The progress line of long `img` commands (convert, export-diff, import-diff): on stderr, shown
 * on a terminal or when `-p` asks for it, so standard output stays free for data.
 *
 * @module
 */

/** A progress callback when progress is wanted (`-p`, or stderr is a terminal), else undefined. */
export function progressReporter(
  asked: boolean,
): ((done: number, total: number) => void) | undefined {
  return asked || (process.stderr.isTTY ?? false) ? writeProgress : undefined;
}

/** Ends the progress line (after the last update) when one was shown. */
export function endProgress(reporter: unknown): void {
  if (reporter !== undefined) process.stderr.write("\n");
}

function writeProgress(done: number, total: number): void {
  const percent = total === 0 ? 100 : (done / total) * 100;
  process.stderr.write(`\r    (${percent.toFixed(2)}/100%)`);
}
