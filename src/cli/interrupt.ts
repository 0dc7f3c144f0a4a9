// Ctrl-C for long commands that can stop cleanly: the first asks the work to stop at its next safe point (it
// then saves and exits), the second exits at once.
export interface Interrupt {
  /** True once Ctrl-C was pressed. */
  readonly requested: () => boolean;
  /** Removes the handler. */
  dispose(): void;
}

export function stopOnCtrlC(message: string): Interrupt {
  let stopRequested = false;
  const onSigint = () => {
    if (stopRequested) process.exit(130);
    stopRequested = true;
    process.stderr.write(`\nCtrl-C: ${message}\n`);
  };
  process.on('SIGINT', onSigint);
  return { requested: () => stopRequested, dispose: () => process.off('SIGINT', onSigint) };
}
