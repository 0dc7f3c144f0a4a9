// The grading worker's entry (plain JavaScript, so that a bare Node worker can start it): registers the tsx
// loader, then answers { id, predicted, reference, precision } with { id, equal } using symbolicEquivalent.
import { parentPort } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
const { symbolicEquivalent, warmUpEquivalence } = await import('./equivalence.ts');
warmUpEquivalence(); // before the first deadline starts
parentPort.on('message', ({ id, predicted, reference, precision }) => {
  let equal = false;
  try {
    equal = symbolicEquivalent(predicted, reference, { precision });
  } catch {
    equal = false;
  }
  parentPort.postMessage({ id, equal });
});
parentPort.postMessage({ ready: true });
