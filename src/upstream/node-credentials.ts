import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import { fromNodeProviderChain } from '@aws-sdk/credential-providers';
import { agentError } from '../errors.ts';

/** The node's own credentials, used only to sign upstream calls. */
export type NodeCredentials = () => Promise<AwsCredentialIdentity>;

/**
 * Wraps a provider (the standard chain by default: environment, shared files, web identity,
 * container, instance metadata) so that its failures become a typed, retryable AgentError.
 * The chain memoizes and refreshes before expiry by itself.
 */
export function nodeCredentials(provider: AwsCredentialIdentityProvider = fromNodeProviderChain(), onResolved?: (identity: AwsCredentialIdentity) => void): NodeCredentials {
  return async () => {
    try {
      const identity = await provider();
      onResolved?.(identity);
      return identity;
    } catch (error) {
      throw agentError('NodeCredentialsUnavailable', `the node's AWS credentials could not be resolved: ${(error as Error).message}`, { cause: error });
    }
  };
}
