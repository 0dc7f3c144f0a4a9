// Reverse-mode autograd. Every differentiable op calls `record` right after computing its output, with a
// backward rule next to its forward (micrograd's layout). `backward` walks the graph in reverse topological
// order, summing gradients that meet at a tensor, and adds leaf gradients into `.grad`.
import { Tensor, formatShape, keep, tidy, type GradNode } from './tensor.ts';

let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn without recording a graph (inference, optimizer steps, backward rules themselves). */
export function noGrad<T>(fn: () => T): T {
  const previous = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = previous;
  }
}

/** Runs fn with graph recording on, even inside noGrad (a backward rule that re-runs a forward). */
export function enableGrad<T>(fn: () => T): T {
  const previous = gradEnabled;
  gradEnabled = true;
  try {
    return fn();
  } finally {
    gradEnabled = previous;
  }
}

/** Marks a leaf tensor as a parameter whose gradient backward() should compute. */
export function requireGrad<T extends Tensor>(tensor: T, requires = true): T {
  if (tensor.gradNode) throw new Error(`requireGrad: ${tensor} is not a leaf (it was computed by ${tensor.gradNode.op})`);
  if (requires && tensor.dtype !== 'f32') {
    throw new Error(`requireGrad: only f32 tensors can require grad; ${tensor} is ${tensor.dtype} (cast it first)`);
  }
  tensor.requiresGrad = requires;
  return tensor;
}

/**
 * Attaches a GradNode to `output` if grad is enabled and any input requires grad. `saved` are the tensors
 * the backward rule reads; they get their own handles so that disposing the originals (or a tidy scope
 * ending) does not free them before backward runs.
 */
export function record(
  op: string,
  output: Tensor,
  inputs: readonly Tensor[],
  saved: readonly Tensor[],
  backward: GradNode['backward'],
  /** Record even if no input requires grad: the rule updates parameters itself (checkpointing). */
  force = false,
): Tensor {
  if (!gradEnabled || (!force && !inputs.some((t) => t.requiresGrad))) return output;
  const savedHandles = saved.map((t) => keep(t.view(t.shape, t.strides, t.offset)));
  output.requiresGrad = true;
  output.gradNode = { op, inputs, saved: savedHandles, backward, released: false };
  return output;
}

function releaseNode(node: GradNode): void {
  if (node.released) return;
  node.released = true;
  for (const t of node.saved) t.dispose();
}

function topologicalOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const visited = new Set<Tensor>();
  // Iterative DFS: transformer graphs are deep enough to overflow a recursive one.
  const stack: [Tensor, boolean][] = [[root, false]];
  while (stack.length) {
    const [tensor, expanded] = stack.pop()!;
    if (expanded) {
      order.push(tensor);
      continue;
    }
    if (visited.has(tensor)) continue;
    visited.add(tensor);
    stack.push([tensor, true]);
    for (const input of tensor.gradNode?.inputs ?? []) {
      if (input.requiresGrad && !visited.has(input)) stack.push([input, false]);
    }
  }
  return order.reverse();
}

export interface BackwardOptions {
  /** Gradient of the output; defaults to 1 for a one-element output. */
  grad?: Tensor;
  /** Keep saved tensors so backward can run through the same graph again. */
  retainGraph?: boolean;
}

/**
 * Computes d(output)/d(leaf) for every leaf that requires grad and adds it into leaf.grad (so gradients
 * accumulate across calls, as in PyTorch, until zeroGrad).
 */
export function backward(output: Tensor, options: BackwardOptions = {}): void {
  output.liveRef('backward');
  if (!output.requiresGrad) {
    throw new Error(
      `backward: ${output} does not require grad: no tensor it was computed from has requiresGrad ` +
        `(or it was computed under noGrad, or through a non-differentiable op)`,
    );
  }
  if (!options.grad && output.size !== 1) {
    throw new Error(`backward: output ${formatShape(output.shape)} is not a scalar; pass options.grad of the same shape`);
  }
  if (options.grad && options.grad.shape.join() !== output.shape.join()) {
    throw new Error(`backward: grad ${formatShape(options.grad.shape)} does not match output ${formatShape(output.shape)}`);
  }
  const order = topologicalOrder(output);
  const grads = new Map<Tensor, Tensor>();
  noGrad(() => {
    const given = options.grad;
    grads.set(
      output,
      given
        ? given.view(given.shape, given.strides, given.offset)
        : Tensor.fromStorage(output.backend, output.backend.full(1, 1, 'f32'), output.shape),
    );
    for (const tensor of order) {
      const grad = grads.get(tensor);
      if (!grad) continue;
      grads.delete(tensor);
      const node = tensor.gradNode;
      if (!node) {
        accumulateLeafGrad(tensor, grad);
        continue;
      }
      if (node.released) {
        throw new Error(
          `backward: the graph through ${node.op} was already freed by an earlier backward; pass retainGraph: true to the first call`,
        );
      }
      const needsGrad = node.inputs.map((t) => t.requiresGrad);
      const inputGrads = tidy(() => node.backward(grad, node.saved, needsGrad));
      // A rule may pass its incoming gradient straight through, or give one tensor to two inputs: each
      // input gets its own handle so that disposing one never frees another's.
      const handedOut = new Set<Tensor>([grad]);
      inputGrads.forEach((g, i) => {
        if (!g) return;
        if (handedOut.has(g)) inputGrads[i] = g.view(g.shape, g.strides, g.offset);
        handedOut.add(g);
      });
      grad.dispose();
      node.inputs.forEach((input, i) => {
        const g = inputGrads[i];
        if (!needsGrad[i]) {
          g?.dispose();
          return;
        }
        if (!g) throw new Error(`backward: the rule of ${node.op} gave no gradient for input ${i}`);
        if (g.shape.join() !== input.shape.join()) {
          throw new Error(`backward: ${node.op} gave gradient ${formatShape(g.shape)} for input ${formatShape(input.shape)}`);
        }
        const previous = grads.get(input);
        if (previous) {
          grads.set(input, addGrads(previous, g));
          previous.dispose();
          g.dispose();
        } else {
          grads.set(input, g);
        }
      });
      if (!options.retainGraph) releaseNode(node);
    }
  });
  for (const leftover of grads.values()) leftover.dispose();
}

let addImplementation: ((a: Tensor, b: Tensor) => Tensor) | null = null;

/** ops.ts registers its add here (autograd must not import ops: ops imports autograd). */
export function registerGradAdd(add: (a: Tensor, b: Tensor) => Tensor): void {
  addImplementation = add;
}

function addGrads(a: Tensor, b: Tensor): Tensor {
  if (!addImplementation) throw new Error('autograd: ops.ts was not loaded');
  return addImplementation(a, b);
}

function accumulateLeafGrad(leaf: Tensor, grad: Tensor): void {
  if (!leaf.requiresGrad) {
    grad.dispose();
    return;
  }
  if (leaf.grad === null || leaf.grad.isDisposed) {
    leaf.grad = keep(grad);
  } else {
    const sum = keep(addGrads(leaf.grad, grad));
    leaf.grad.dispose();
    grad.dispose();
    leaf.grad = sum;
  }
}

/** Frees the graph behind a tensor without running backward (e.g. after an evaluation under grad). */
export function releaseGraph(output: Tensor): void {
  for (const tensor of topologicalOrder(output)) {
    if (tensor.gradNode) releaseNode(tensor.gradNode);
  }
}

export function zeroGrad(params: Iterable<Tensor>): void {
  for (const p of params) {
    p.grad?.dispose();
    p.grad = null;
  }
}
