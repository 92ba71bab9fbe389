import type { Server } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { AwsCredentialIdentityProvider } from '@smithy/types';
import type { Dispatcher } from 'undici';
import { accountKey } from './associations/association-table.ts';
import { type WatchedAssociations, watchAssociations } from './associations/watch.ts';
import { CredentialCache } from './cache/credential-cache.ts';
import { MissLimiter } from './cache/miss-limiter.ts';
import type { Config } from './config/index.ts';
import { type LoadedKubeConfig, loadKubeConfig } from './k8s/kube-config.ts';
import { type StartupTaintRemoval, type StartupTaintTiming, removeStartupTaint } from './k8s/node-taint.ts';
import { monitorEventLoop } from './observability/event-loop.ts';
import { associationsMetrics, cacheMetrics, endpointMetrics, nodeCredentialsMetrics, nodeCredentialsRefusal, observeCache, startupTaintMetrics, upstreamMetrics } from './observability/instrumentation.ts';
import type { Logger } from './observability/logger.ts';
import { type AgentMetrics, createMetrics } from './observability/metrics.ts';
import { createRequestLog } from './observability/request-log.ts';
import { createCredentialsHandler } from './server/credentials-handler.ts';
import { closeServer, createHttpServer, listen, listenOnHosts } from './server/http-server.ts';
import { createMetricsHandler } from './server/metrics-handler.ts';
import { type ProbeFile, writeProbeFile } from './server/probe-file.ts';
import { type ProbeOptions, createProbeHandler, readiness } from './server/probe-handler.ts';
import { type Trust, setUpTrust } from './trust/index.ts';
import { createIdentityResolver } from './trust/request-identity.ts';
import { type UpstreamSettings, createUpstream, upstreamDispatcher } from './upstream/index.ts';
import { NodeCredentialsStatus, nodeCredentials } from './upstream/node-credentials.ts';
import type { RetryPolicy } from './upstream/retry.ts';
import { untilResolved } from './upstream/wait-credentials.ts';

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
  /** What the credentials handler answers /readyz's check of the pods' path with; random when absent. */
  readonly selfCheckId?: string;
  /** How --startup-taint's removal polls readiness and backs off; tests shorten them. */
  readonly startupTaint?: StartupTaintTiming;
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
  const dispatcher = deps.dispatcher ?? upstreamDispatcher();
  const nodeStatus = new NodeCredentialsStatus(logger, nodeCredentialsRefusal(metrics));
  const credentials = nodeCredentials(deps.credentialProvider, nodeCredentialsMetrics(metrics), nodeStatus);
  const associations =
    config.sts === undefined
      ? undefined
      : watchAssociations({
          sources: config.sts.associations,
          logger,
          observer: associationsMetrics(metrics),
          onChange: (changed) => cache.invalidate((identity) => changed.has(accountKey(identity.namespace, identity.serviceAccount))),
        });
  const upstream = createUpstream(upstreamSettings(config, associations), { credentials, dispatcher, observer: { ...upstreamMetrics(metrics, logger), ...nodeStatus.observer }, ...(deps.retry === undefined ? {} : { retry: deps.retry }) });
  const missLimiter = new MissLimiter(config.missLimits, now);
  const cache = new CredentialCache({
    exchange: upstream.exchange,
    maxSize: config.maxCacheSize,
    retentionMs: config.maxCredentialRetentionMs,
    negativeTtlMs: config.negativeCacheTtlMs,
    admitMiss: (request) => missLimiter.admit(request.key, request.client ?? 'unknown'),
    renewalsPerSecond: config.maxServiceQps,
    observer: cacheMetrics(metrics, logger),
    now,
  });
  observeCache(metrics, cache, now);
  const requestLog = createRequestLog(metrics, logger, { everyRequest: config.logEveryRequest });
  const eventLoop = monitorEventLoop();
  const selfCheckId = deps.selfCheckId ?? randomUUID();
  let credentialServers: readonly Server[] = [];
  let bound: readonly AddressInfo[] = [];
  let draining = false;
  const probeOptions: ProbeOptions = {
    listeners: () => bound,
    podPort: config.podPort,
    selfCheckId,
    onPathChecked: endpointMetrics(metrics),
    nodeCredentials: credentials,
    nodeCredentialsRejection: () => nodeStatus.rejection,
    eventLoop,
    draining: () => draining,
    ...(associations === undefined ? {} : { associationsLoaded: () => associations.complete }),
    podsListed: () => trust?.pods?.synced,
  };
  const probeServer = createHttpServer(createProbeHandler(probeOptions));
  const stopping = new AbortController();
  const metricsServer = createHttpServer(createMetricsHandler(metrics.registry));
  let closing: Promise<void> | undefined;
  let starting: Promise<AgentAddresses> | undefined;
  // A close() during start-up stops it at its next step, rather than letting it bind after the close.
  const stillStarting = () => stopping.signal.throwIfAborted();
  let trust: Trust | undefined;
  let startupTaint: StartupTaintRemoval | undefined;
  let probeFile: ProbeFile | undefined;

  async function start(): Promise<AgentAddresses> {
    // From the first moment, so that the exec probes see a live, not yet ready agent (and why).
    if (config.probeFile !== undefined) probeFile = writeProbeFile(config.probeFile, probeOptions, logger);
    const kube = deps.kubernetes === undefined ? loadKubeConfig() : (deps.kubernetes ?? undefined);
    if (config.startupTaint !== undefined && kube === undefined) throw new Error('--startup-taint needs the Kubernetes API, and no configuration was found (in-cluster, KUBECONFIG, ~/.kube/config): this node would keep its taint and its pods would never be scheduled');
    trust = await setUpTrust({ settings: config, kube, logger, onPodDeleted: (uid) => cache.forgetPod(uid) });
    stillStarting();
    await upstream.ready;
    if (associations !== undefined) {
      if (trust.verifier === undefined) throw new Error('--upstream sts needs tokens verified locally, and they cannot be here (see the warning above): refusing to hand out roles to unverified callers');
      await associations.start(kube?.kubeConfig);
    }
    stillStarting();
    const resolveIdentity = createIdentityResolver({ clusterName: config.clusterName, verifier: trust.verifier, pods: trust.pods, now });
    // Probes and metrics first (/readyz says why meanwhile); binding is taking traffic on a shared port, so the credential listeners wait for node credentials and (pod binding) the pod list.
    const probe = await listen(probeServer, '127.0.0.1', config.probePort);
    const metricsAddress = config.metrics ? await listen(metricsServer, config.metricsAddress, config.metricsPort) : undefined;
    stillStarting();
    const where = { probe: `127.0.0.1:${probe.port}`, metrics: metricsAddress === undefined ? 'disabled' : `${config.metricsAddress}:${metricsAddress.port}` };
    logger.info({ ...where, waitingFor: [...(trust.pods === undefined ? [] : ['this node\'s pods listed']), 'node credentials'] }, 'probes and metrics bound; the credential listeners follow once the agent can answer');
    await Promise.all([trust.pods?.whenListed(stopping.signal), untilResolved(credentials, logger, stopping.signal)]);
    const handler = createCredentialsHandler({ bindHosts: config.bindHosts, port: config.port, audience: config.audience, cache, record: requestLog.record, resolveIdentity, selfCheckId, now });
    ({ servers: credentialServers, addresses: bound } = await listenOnHosts(config.bindHosts, config.port, handler, logger, requestLog.refused));
    stillStarting();
    cache.start();
    // In the background: serving never waits for the API server; the taint goes once /readyz says ready.
    if (config.startupTaint !== undefined && kube !== undefined && config.nodeName !== undefined) {
      startupTaint = removeStartupTaint({ kubeConfig: kube.kubeConfig, nodeName: config.nodeName, key: config.startupTaint, ready: async () => (await readiness(probeOptions)).ready, logger, observer: startupTaintMetrics(metrics), timing: deps.startupTaint });
    }
    logger.info(where, 'probes and metrics listening');
    return { credentials: bound, probe, metrics: metricsAddress };
  }

  return {
    cache,
    metrics,
    async listen() {
      try {
        starting ??= start();
        return await starting;
      } catch (error) {
        await this.close();
        throw error;
      }
    },
    close(deadlineMs = DEFAULT_DRAIN_MS) {
      closing ??= (async () => {
        draining = true;
        stopping.abort();
        // Whatever start-up made before it saw the abort (trust, listeners) is closed below.
        await starting?.catch(() => undefined);
        cache.close();
        startupTaint?.close();
        await Promise.all([trust?.close(), associations?.close()]);
        // Probes stay up while credentials drain, so that /readyz can say so.
        await Promise.all(credentialServers.map((server) => closeServer(server, deadlineMs)));
        await probeFile?.close();
        await Promise.all([probeServer, metricsServer].map((server) => closeServer(server, 0)));
        eventLoop.close();
        requestLog.close();
        if (deps.dispatcher === undefined) await dispatcher.destroy();
      })();
      return closing;
    },
  };
}

function upstreamSettings(config: Config, associations: WatchedAssociations | undefined): UpstreamSettings {
  const { region, clusterName, sts } = config;
  if (sts === undefined || associations === undefined) return { kind: 'eks-auth', region, clusterName, endpoint: config.endpoint.url };
  return { kind: 'sts', region, clusterName, endpoint: sts.endpoint, clusterArn: sts.clusterArn, associations };
}
