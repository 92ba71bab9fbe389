import { type Dispatcher, EnvHttpProxyAgent } from 'undici';
import type { AssociationLookup } from '../associations/association-table.ts';
import { VERSION } from '../version.ts';
import { timeAttempts } from './attempt-timing.ts';
import { createEksAuthClient } from './eks-auth-client.ts';
import type { NodeCredentials } from './node-credentials.ts';
import { DEFAULT_RETRY_POLICY, type RetryPolicy, retrying } from './retry.ts';
import type { CredentialExchange, UpstreamObserver } from './types.ts';

/**
 * The pool every upstream call goes through, proxy variables honoured. One connection per
 * concurrent miss, up to a full node's pods: a miss queued in the pool spends its 500 ms attempt
 * waiting there (bench/README.md, Cold burst: 36 of 100 misses did with 64 connections).
 */
export function upstreamDispatcher(): Dispatcher {
  return new EnvHttpProxyAgent({ keepAliveTimeout: 30_000, connections: 256, connect: { timeout: 500 } });
}

/** Who grants credentials: EKS Auth, or STS AssumeRole by the agent with its own associations. */
export type UpstreamSettings =
  | { readonly kind: 'eks-auth'; readonly region: string; readonly clusterName: string; readonly endpoint: URL }
  | {
      readonly kind: 'sts';
      readonly region: string;
      readonly clusterName: string;
      /** undefined: the SDK's own resolution (regional endpoint, AWS_ENDPOINT_URL_STS). */
      readonly endpoint: URL | undefined;
      readonly clusterArn: string | undefined;
      readonly associations: AssociationLookup;
    };

export interface UpstreamParts {
  /** The node's own credentials, to sign with. */
  readonly credentials: NodeCredentials;
  /** The keep-alive pool; the caller owns and closes it. */
  readonly dispatcher: Dispatcher;
  readonly observer?: UpstreamObserver;
  readonly retry?: RetryPolicy;
}

export interface Upstream {
  readonly exchange: CredentialExchange;
  /** Settles once the exchange can be used (the STS client is loaded). */
  readonly ready: Promise<void>;
}

/**
 * The exchange the cache calls, composed once: a one-attempt client over a pool whose every HTTP
 * attempt is timed, inside the retry layer, and for STS behind the association gate. The cache and
 * everything else see only the exchange.
 */
export function createUpstream(settings: UpstreamSettings, parts: UpstreamParts): Upstream {
  const observer = parts.observer ?? {};
  const dispatcher = parts.dispatcher.compose(timeAttempts(observer));
  const retry = retrying(parts.retry ?? DEFAULT_RETRY_POLICY, observer);
  const common = { region: settings.region, clusterName: settings.clusterName, credentials: parts.credentials, dispatcher, userAgent: `pod-identity-agent/${VERSION}` };
  if (settings.kind === 'eks-auth') return { exchange: retry(createEksAuthClient({ ...common, endpoint: settings.endpoint })), ready: Promise.resolve() };

  // Imported only in this mode: the STS client would cost an EKS Auth agent about 7 MB for nothing.
  const loaded = import('./sts-client.ts').then(({ createStsClient, requireAssociation }) => {
    const client = createStsClient({ ...common, endpoint: settings.endpoint, clusterArn: settings.clusterArn, associations: settings.associations });
    return requireAssociation(settings.associations, settings.clusterName)(retry(client));
  });
  return {
    exchange: { name: 'STS', exchange: async (request, options) => (await loaded).exchange(request, options) },
    ready: loaded.then(() => undefined),
  };
}
