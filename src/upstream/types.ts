import type { VerifiedIdentity } from '../token/identity.ts';

/** Temporary credentials for a pod, as the upstream granted them. */
export interface PodCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken: string;
  /** Undefined when the upstream's role ARN did not name an account. */
  readonly accountId: string | undefined;
  /** Epoch milliseconds. */
  readonly expiresAt: number;
}

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
 * Turns a pod's token into credentials. EKS Auth and STS (with local associations) implement it;
 * failures are AgentErrors whose `retryable` tells the cache whether stale credentials may stand in.
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
}
