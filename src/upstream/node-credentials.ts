import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import { fromNodeProviderChain } from '@aws-sdk/credential-providers';
import type { Logger } from 'pino';
import { type AgentError, agentError } from '../errors.ts';
import type { UpstreamObserver } from './types.ts';

/** The node's own credentials, used only to sign upstream calls. */
export type NodeCredentials = () => Promise<AwsCredentialIdentity>;

/**
 * Wraps a provider (the standard chain by default: environment, shared files, web identity,
 * container, instance metadata) so that its failures become a typed, retryable AgentError.
 * The chain memoizes and refreshes before expiry by itself.
 */
export function nodeCredentials(provider: AwsCredentialIdentityProvider = fromNodeProviderChain(), onResolved?: (identity: AwsCredentialIdentity) => void, status?: NodeCredentialsStatus): NodeCredentials {
  return async () => {
    try {
      const identity = await provider();
      onResolved?.(identity);
      status?.resolved(identity);
      return identity;
    } catch (error) {
      throw agentError('NodeCredentialsUnavailable', `the node's AWS credentials could not be resolved: ${(error as Error).message}`, { cause: error });
    }
  };
}

interface Rejection {
  readonly reason: string;
  readonly upstream: string;
  /** The access key id resolved last when the refusal came: other keys end it. Compared, never logged. */
  readonly keyId: string | undefined;
  readonly since: number;
}

/**
 * Whether the upstream takes the node's credentials, from its latest answers. A refusal (keys unknown,
 * a bad signature, an expired session, the node role without the permission) makes the agent not
 * ready, with the reason, until a call succeeds again or the chain hands out other keys. Each
 * transition is logged once; the requests failing meanwhile log at debug (request-log.ts).
 */
export class NodeCredentialsStatus {
  readonly #logger: Logger;
  readonly #onChange: (refused: boolean) => void;
  #rejection: Rejection | undefined;
  #keyId: string | undefined;
  /** What the upstream layers report to (retry.ts calls it for each attempt). */
  readonly observer: UpstreamObserver = {
    nodeCredentialsAccepted: (upstream) => this.#clear(`a call to ${upstream} with them succeeded`),
    nodeCredentialsRejected: (error, upstream) => this.#rejected(error, upstream),
  };

  /** onChange: each transition, for the metric (observability/instrumentation.ts). */
  constructor(logger: Logger, onChange: (refused: boolean) => void = () => {}) {
    this.#logger = logger;
    this.#onChange = onChange;
  }

  /** Why the upstream refuses the node's credentials; undefined while it takes them. */
  get rejection(): string | undefined {
    return this.#rejection?.reason;
  }

  /** The chain resolved credentials: keys other than the refused ones are worth trying. */
  resolved(identity: AwsCredentialIdentity): void {
    this.#keyId = identity.accessKeyId;
    if (this.#rejection !== undefined && identity.accessKeyId !== this.#rejection.keyId) this.#clear('the node\'s credentials were refreshed');
  }

  #rejected(error: AgentError, upstream: string): void {
    if (this.#rejection !== undefined) return;
    const reason = `${upstream} refuses the node's credentials (${error.code}): ${error.message}`;
    this.#rejection = { reason, upstream, keyId: this.#keyId, since: Date.now() };
    this.#onChange(true);
    this.#logger.error(
      { code: error.code, message: error.message, detail: error.detail, upstreamRequestId: error.upstreamRequestId },
      `${upstream} refuses the node's credentials: not ready until a call with them succeeds or they are refreshed (the requests failing meanwhile log at debug)`,
    );
  }

  #clear(why: string): void {
    const rejection = this.#rejection;
    if (rejection === undefined) return;
    this.#rejection = undefined;
    this.#onChange(false);
    this.#logger.info({ refusedForMs: Date.now() - rejection.since }, `${rejection.upstream} refusal of the node's credentials is over (${why}): ready again`);
  }
}
