import { setTimeout as sleep } from 'node:timers/promises';
import { AgentError, agentError, isAgentError } from '../errors.ts';
import type { ExchangeLayer, ExchangeRequest, UpstreamObserver } from './types.ts';

export interface RetryPolicy {
  /** Most attempts, the first included. */
  readonly maxAttempts: number;
  /** Each attempt is cut off after this long. */
  readonly attemptTimeoutMs: number;
  /** No attempt starts, and none runs, past this long after the first began. */
  readonly budgetMs: number;
  /** Backoff before attempt n is uniform in [0, min(cap, base * 2^n)) ("full jitter"). */
  readonly backoffBaseMs: number;
  readonly backoffCapMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = Object.freeze({
  maxAttempts: 4,
  attemptTimeoutMs: 500,
  budgetMs: 2500,
  backoffBaseMs: 50,
  backoffCapMs: 400,
});

export interface RetryHooks {
  /** The service, for messages: "EKS Auth" by default. */
  readonly upstream?: string;
  readonly random?: () => number;
  readonly now?: () => number;
  /** Called before each retry with the error that caused it. */
  readonly onRetry?: (error: AgentError, attempt: number) => void;
}

/**
 * The retry layer: each call of the inner (one-attempt) exchange gets its own deadline, and a
 * retryable failure is tried again within the policy's attempts and budget. A background renewal
 * (`singleAttempt`) gets one attempt.
 */
export function retrying(policy: RetryPolicy, observer: UpstreamObserver = {}): ExchangeLayer {
  const once: RetryPolicy = { ...policy, maxAttempts: 1 };
  return (inner) => {
    const hooks: RetryHooks = { upstream: inner.name, onRetry: (error) => observer.retried?.(error, inner.name) };
    // Each attempt's answer says whether the upstream takes the node's credentials (readiness).
    const attempt = (request: ExchangeRequest, signal: AbortSignal) =>
      inner.exchange(request, { signal }).then(
        (result) => {
          observer.nodeCredentialsAccepted?.(inner.name);
          return result;
        },
        (caught: unknown) => {
          if (isAgentError(caught) && caught.nodeCredentialsRejected) observer.nodeCredentialsRejected?.(caught, inner.name);
          throw caught;
        },
      );
    return {
      name: inner.name,
      exchange: (request, options) => withRetry(options?.singleAttempt === true ? once : policy, (signal) => attempt(request, signal), hooks),
    };
  };
}

/** The smallest slice worth starting an attempt with: less and it cannot finish a TLS handshake. */
const MIN_ATTEMPT_MS = 50;

/**
 * Runs `attempt` until it succeeds, fails for good, or the budget is spent. Only retryable
 * AgentErrors are retried; the attempt receives the signal that bounds it.
 */
export async function withRetry<T>(policy: RetryPolicy, attempt: (signal: AbortSignal) => Promise<T>, hooks: RetryHooks = {}): Promise<T> {
  const now = hooks.now ?? Date.now;
  const random = hooks.random ?? Math.random;
  const deadline = now() + policy.budgetMs;
  for (let n = 1; ; n++) {
    const remaining = deadline - now();
    const signal = AbortSignal.timeout(Math.max(1, Math.min(policy.attemptTimeoutMs, remaining)));
    let error: AgentError;
    try {
      return await attempt(signal);
    } catch (caught) {
      error = asAgentError(caught, signal, hooks.upstream ?? 'EKS Auth');
    }
    // Refused node credentials are retried later (the cache's backoff), when the chain may have new ones; not at once.
    if (!error.retryable || error.nodeCredentialsRejected || n >= policy.maxAttempts) throw error;
    const delay = random() * Math.min(policy.backoffCapMs, policy.backoffBaseMs * 2 ** n);
    if (deadline - now() - delay < MIN_ATTEMPT_MS) throw error;
    hooks.onRetry?.(error, n);
    await sleep(delay);
  }
}

/** Timeouts and network failures become UpstreamUnavailable; AgentErrors pass through. */
function asAgentError(caught: unknown, signal: AbortSignal, upstream: string): AgentError {
  if (isAgentError(caught)) return caught;
  if (signal.aborted) return agentError('UpstreamUnavailable', `${upstream} did not answer in time`, { cause: caught });
  const code = (caught as { code?: unknown }).code;
  const detail = typeof code === 'string' ? code : (caught as Error).message;
  return agentError('UpstreamUnavailable', `${upstream} could not be reached (${detail})`, { cause: caught });
}
