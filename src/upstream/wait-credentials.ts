import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { NodeCredentials } from './node-credentials.ts';

/** Retry delays while the node's credentials do not resolve: 0.5 s, doubling, at most 10 s. */
const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;

/**
 * Resolves once the node's credentials do. Until then the agent binds nothing pods reach: with a
 * shared port (surge rollouts) an agent that cannot sign would take pods' requests from the one that
 * can, and answer them 503. Each failure is logged with why; `signal` (shutdown) ends the wait.
 */
export async function untilResolved(credentials: NodeCredentials, logger: Logger, signal: AbortSignal): Promise<void> {
  for (let delayMs = FIRST_DELAY_MS; ; delayMs = Math.min(delayMs * 2, MAX_DELAY_MS)) {
    signal.throwIfAborted();
    try {
      await credentials();
      return;
    } catch (error) {
      logger.warn({ err: error, retryInMs: delayMs }, 'node credentials do not resolve: not serving pods (and not ready) until they do');
    }
    await sleep(delayMs, undefined, { signal });
  }
}
