import type { AgentError } from '../errors.ts';
import type { VerifiedIdentity } from '../token/identity.ts';
import type { PodCredentials } from '../wire.ts';

export type { PodCredentials } from '../wire.ts';

export interface ExchangeResult {
  readonly credentials: PodCredentials;
  readonly requestId: string | undefined;
}

/** What is exchanged: the pod's token, and who it proved to be when it was verified locally. */
export interface ExchangeRequest {
  readonly token: string;
  /** Undefined with --token-verification none; the STS upstream never runs without it. */
  readonly identity: VerifiedIdentity | undefined;
}

/**
 * Turns a pod's token into credentials. EKS Auth and STS (with local associations) implement it
 * with one attempt each; layers (retry, the association gate) wrap it. Failures are AgentErrors
 * whose `retryable` tells the cache whether stale credentials may stand in.
 */
export interface CredentialExchange {
  /** For logs and messages: "EKS Auth" or "STS". */
  readonly name: string;
  exchange(request: ExchangeRequest, options?: ExchangeOptions): Promise<ExchangeResult>;
}

export interface ExchangeOptions {
  /**
   * A background renewal makes one attempt: the cache retries it later with its own backoff, and
   * retrying at once during throttling would only multiply the calls that the quota refuses.
   */
  readonly singleAttempt?: boolean;
  /** Bounds one attempt; the retry layer gives each attempt its own. */
  readonly signal?: AbortSignal;
}

/** A wrapper around an exchange, composed once (undici's interceptors are the model). */
export type ExchangeLayer = (inner: CredentialExchange) => CredentialExchange;

export interface AttemptReport {
  /** HTTP status, or 0 when no answer arrived (timeout, reset, refused). */
  readonly status: number;
  readonly durationMs: number;
}

/** What the upstream tells metrics and logs, whichever upstream it is; it knows nothing of Prometheus. */
export interface UpstreamObserver {
  attemptStarted?(): void;
  attemptEnded?(report: AttemptReport): void;
  /** An attempt failed and another follows. */
  retried?(error: AgentError, upstream: string): void;
  /** An attempt signed with the node's credentials succeeded: the upstream accepts them. */
  nodeCredentialsAccepted?(upstream: string): void;
  /** The upstream refused the node's credentials (AgentError.nodeCredentialsRejected). */
  nodeCredentialsRejected?(error: AgentError, upstream: string): void;
}
