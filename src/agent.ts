import type { Server } from 'node:http';
import { type AddressInfo, isIPv6 } from 'node:net';
import type { AwsCredentialIdentityProvider } from '@smithy/types';
import { type Dispatcher, EnvHttpProxyAgent } from 'undici';
import { CredentialCache } from './cache/credential-cache.ts';
import type { Config } from './config/index.ts';
import type { Logger } from './observability/logger.ts';
import { type AgentMetrics, createMetrics } from './observability/metrics.ts';
import { type RequestHandler, createCredentialsHandler } from './server/credentials-handler.ts';
import { createIdentityResolver } from './trust/request-identity.ts';
import { MissLimiter } from './cache/miss-limiter.ts';
import { type LoadedKubeConfig, loadKubeConfig } from './k8s/kube-config.ts';
import { type Trust, setUpTrust } from './trust/index.ts';
import { closeServer, createHttpServer, listen } from './server/http-server.ts';
import { createMetricsHandler } from './server/metrics-handler.ts';
import { createProbeHandler } from './server/probe-handler.ts';
import { monitorEventLoop } from './observability/event-loop.ts';
import { type AssociationLookup, accountKey } from './associations/association-table.ts';
import type { Association } from './associations/association.ts';
import { type WatchedAssociations, watchAssociations } from './associations/watch.ts';
import type { AttemptHooks } from './upstream/bounded-body.ts';
import { createEksAuthClient } from './upstream/eks-auth-client.ts';
import { type NodeCredentials, nodeCredentials } from './upstream/node-credentials.ts';
import type { RetryPolicy } from './upstream/retry.ts';
import type { CredentialExchange } from './upstream/types.ts';
import { VERSION } from './version.ts';

const DEFAULT_DRAIN_MS = 5_000;

export interface AgentDeps {
  readonly logger: Logger;
  readonly metrics?: AgentMetrics;
  /** The node's credentials; the standard AWS chain when absent. */
  readonly credentialProvider?: AwsCredentialIdentityProvider;
  /** The upstream pool; a keep-alive pool that honours HTTPS_PROXY/NO_PROXY when absent. */
  readonly dispatcher?: Dispatcher;
  readonly retry?: RetryPolicy;
  /** The API server's configuration; found the usual way when absent, none at all when null. */
  readonly kubernetes?: LoadedKubeConfig | null;
  readonly now?: () => number;
}

export interface AgentAddresses {
  readonly credentials: readonly AddressInfo[];
  readonly probe: AddressInfo;
  /** Undefined with --no-metrics. */
  readonly metrics: AddressInfo | undefined;
}

export interface Agent {
  readonly cache: CredentialCache;
  readonly metrics: AgentMetrics;
  /** Binds every server; rejects when a required address cannot be bound. */
  listen(): Promise<AgentAddresses>;
  /**
   * Stops accepting, lets in-flight requests finish (cutting connections still busy after
   * `deadlineMs`), then closes probes, metrics and the upstream pool. Idempotent.
   */
  close(deadlineMs?: number): Promise<void>;
}

/** Wires the agent from its configuration without touching the network, so tests can build several. */
export function buildAgent(config: Config, deps: AgentDeps): Agent {
  const { logger } = deps;
  const now = deps.now ?? Date.now;
  const metrics = deps.metrics ?? createMetrics();
  const ownsDispatcher = deps.dispatcher === undefined;
  const dispatcher = deps.dispatcher ?? new EnvHttpProxyAgent({ keepAliveTimeout: 30_000, connections: 64, connect: { timeout: 500 } });
  const credentials = nodeCredentials(deps.credentialProvider, (identity) =>
    metrics.nodeCredentialsExpiry.set(identity.expiration === undefined ? 0 : identity.expiration.getTime() / 1000),
  );
  const associations = new PendingAssociations();
  const { exchange, loaded: upstreamLoaded } = createUpstream(config, {
    credentials,
    dispatcher,
    associations,
    ...(deps.retry === undefined ? {} : { retry: deps.retry }),
    onAttemptStart: () => metrics.upstreamInflight.inc(),
    onAttempt: ({ status, durationMs }) => {
      metrics.upstreamInflight.dec();
      metrics.upstreamDuration.observe({ code: String(status) }, durationMs / 1000);
    },
    onRetry: (error) => {
      metrics.upstreamRetries.inc({ code: 'code' in error ? String(error.code) : 'Error' });
      logger.debug({ code: 'code' in error ? error.code : undefined, message: error.message }, `retrying ${exchange.name} call`);
    },
  });
  const missLimiter = new MissLimiter(config.missLimits, now);
  const cache = new CredentialCache({
    exchange,
    maxSize: config.maxCacheSize,
    retentionMs: config.maxCredentialRetentionMs,
    negativeTtlMs: config.negativeCacheTtlMs,
    admitMiss: (request) => missLimiter.admit(request.key, request.client ?? 'unknown'),
    renewalsPerSecond: config.maxServiceQps,
    observer: {
      lookup: (outcome) => metrics.cacheLookups.inc({ outcome }),
      renewal: (outcome) => metrics.cacheRenewals.inc({ outcome }),
      eviction: (reason) => metrics.cacheEvictions.inc({ reason }),
    },
    now,
  });
  metrics.observe({
    cacheEntries: () => cache.size,
    oldestCredentialAgeSeconds: () => {
      const oldest = cache.oldestFetchedAt();
      return oldest === undefined ? 0 : (now() - oldest) / 1000;
    },
  });
  const credentialServers: Server[] = [];
  const bound: AddressInfo[] = [];
  const eventLoop = monitorEventLoop();
  let draining = false;
  const probeServer = createHttpServer(
    createProbeHandler({
      listeners: () => bound,
      nodeCredentials: credentials,
      eventLoop,
      draining: () => draining,
      ...(config.sts === undefined ? {} : { associationsLoaded: () => associations.complete }),
    }),
  );
  const metricsServer = createHttpServer(createMetricsHandler(metrics.registry));
  let closing: Promise<void> | undefined;
  let trust: Trust | undefined;

  const makeCredentialsHandler = ({ verifier, pods }: Trust) =>
    createCredentialsHandler({
      bindHosts: config.bindHosts,
      port: config.port,
      audience: config.audience,
      cache,
      logger,
      metrics,
      resolveIdentity: createIdentityResolver({ clusterName: config.clusterName, verifier, pods, now }),
      now,
    });

  async function bindCredentialServers(handler: RequestHandler): Promise<void> {
    for (const host of config.bindHosts) {
      const server = createHttpServer(handler);
      try {
        bound.push(await listen(server, host, config.port));
        credentialServers.push(server);
        logger.info({ address: host, port: config.port }, 'serving credentials');
      } catch (error) {
        if (!isMissingIpv6(host, error)) throw bindError(host, config.port, error);
        logger.warn({ address: host, port: config.port, code: (error as NodeJS.ErrnoException).code }, 'IPv6 bind host unavailable on this node; serving IPv4 only');
      }
    }
  }

  return {
    cache,
    metrics,
    async listen() {
      try {
        const kube = deps.kubernetes === undefined ? loadKubeConfig() : (deps.kubernetes ?? undefined);
        trust = await setUpTrust({ config, kube, logger, onPodDeleted: (uid) => cache.forgetPod(uid) });
        await upstreamLoaded;
        if (config.sts !== undefined) {
          if (trust.verifier === undefined) throw new Error('--upstream sts needs tokens verified locally, and they cannot be here (see the warning above): refusing to hand out roles to unverified callers');
          associations.use(
            await watchAssociations({
              sources: config.sts.associations,
              kubeConfig: kube?.kubeConfig,
              logger,
              metrics,
              onChange: (changed) => cache.invalidate((identity) => changed.has(accountKey(identity.namespace, identity.serviceAccount))),
            }),
          );
        }
        await bindCredentialServers(makeCredentialsHandler(trust));
        if (bound.length === 0) throw new Error(`no bind host could be bound (${config.bindHosts.join(', ')})`);
        const probe = await listen(probeServer, '127.0.0.1', config.probePort);
        const metricsAddress = config.metrics ? await listen(metricsServer, config.metricsAddress, config.metricsPort) : undefined;
        cache.start();
        logger.info({ probe: `127.0.0.1:${probe.port}`, metrics: metricsAddress === undefined ? 'disabled' : `${config.metricsAddress}:${metricsAddress.port}` }, 'probes and metrics listening');
        return { credentials: [...bound], probe, metrics: metricsAddress };
      } catch (error) {
        await this.close();
        throw error;
      }
    },
    close(deadlineMs = DEFAULT_DRAIN_MS) {
      closing ??= (async () => {
        draining = true;
        cache.close();
        await Promise.all([trust?.close(), associations.close()]);
        // Probes stay up while credentials drain, so that /readyz can say so.
        await Promise.all(credentialServers.map((server) => closeServer(server, deadlineMs)));
        await Promise.all([probeServer, metricsServer].map((server) => closeServer(server, 0)));
        eventLoop.close();
        if (ownsDispatcher) await dispatcher.destroy();
      })();
      return closing;
    },
  };
}

interface UpstreamParts extends AttemptHooks {
  readonly credentials: NodeCredentials;
  readonly dispatcher: Dispatcher;
  readonly associations: AssociationLookup;
  readonly retry?: RetryPolicy;
  readonly onRetry: (error: Error) => void;
}

/**
 * EKS Auth, or STS with the agent's own associations: the cache and everything else sees only the
 * exchange. `loaded` settles once the exchange can be used (listen() waits for it).
 */
function createUpstream(config: Config, parts: UpstreamParts): { exchange: CredentialExchange; loaded: Promise<unknown> } {
  const userAgent = `pod-identity-agent/${VERSION}`;
  const { sts } = config;
  if (sts === undefined) {
    return { exchange: createEksAuthClient({ ...parts, endpoint: config.endpoint.url, region: config.region, clusterName: config.clusterName, userAgent }), loaded: Promise.resolve() };
  }
  // Imported only in this mode: the STS client would cost an EKS Auth agent about 7 MB for nothing.
  const client = import('./upstream/sts-client.ts').then(({ createStsClient }) =>
    createStsClient({ ...parts, region: config.region, endpoint: sts.endpoint, clusterName: config.clusterName, clusterArn: sts.clusterArn, userAgent }),
  );
  return { exchange: { name: 'STS', exchange: async (request, options) => (await client).exchange(request, options) }, loaded: client };
}

/** The associations, known only once listen() has read them; until then nothing is found and nothing is complete. */
class PendingAssociations implements AssociationLookup {
  #watched: WatchedAssociations | undefined;

  use(watched: WatchedAssociations): void {
    this.#watched = watched;
  }

  get complete(): boolean {
    return this.#watched?.complete ?? false;
  }

  find(namespace: string, serviceAccount: string): Association | undefined {
    return this.#watched?.find(namespace, serviceAccount);
  }

  async close(): Promise<void> {
    await this.#watched?.close();
  }
}

/** A node without IPv6 (disabled, or the address never assigned) must not crash the agent. */
function isMissingIpv6(host: string, error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return isIPv6(host) && (code === 'EADDRNOTAVAIL' || code === 'EAFNOSUPPORT');
}

function bindError(host: string, port: number, error: unknown): Error {
  const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
  return new Error(`cannot listen on ${isIPv6(host) ? `[${host}]` : host}:${port}: ${code}`, { cause: error });
}
