// A peer library either loads, with what it reported about itself, or is skipped with a reason.
import type { Implementation } from '../harness.ts';
import type { MatmulPeer } from '../cases/matmul.ts';

export type PeerLoad =
  | { peer: MatmulPeer; info: Record<string, unknown> }
  | { impl: Implementation; skipped: string };

export function errorText(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split('\n')[0]!.slice(0, 300);
}
