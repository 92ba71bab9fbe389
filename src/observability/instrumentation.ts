import type { Logger } from 'pino';
import type { AssociationsObserver } from '../associations/watch.ts';
import type { CacheObserver, CredentialCache, RenewalReport } from '../cache/credential-cache.ts';
import type { StartupTaintObserver } from '../k8s/node-taint.ts';
import type { VerifiedIdentity } from '../token/identity.ts';
import type { UpstreamObserver } from '../upstream/types.ts';
import type { AgentMetrics } from './metrics.ts';

// Where the agent's parts meet Prometheus: each part reports through an observer interface of its
// own, and these are the only implementations that know the metric names.

/** Lookups, renewals and evictions counted; each renewal's outcome also logged (renewalLog). */
export function cacheMetrics(metrics: AgentMetrics, logger: Logger): CacheObserver {
  // A look-up happens on every hit: a hit is tallied (metrics.ts, HitTally), the others' counter children found once.
  const lookups = new Map<string, { inc(): void }>();
  return {
    lookup: (outcome) => {
      if (outcome === 'hit') {
        metrics.hits.lookups += 1;
        return;
      }
      let child = lookups.get(outcome);
      if (child === undefined) lookups.set(outcome, (child = metrics.cacheLookups.labels(outcome)));
      child.inc();
    },
    renewal: (report, identity) => {
      metrics.cacheRenewals.inc({ outcome: report.outcome });
      renewalLog(logger, report, identity);
    },
    eviction: (reason) => metrics.cacheEvictions.inc({ reason }),
  };
}

/**
 * A line per background renewal, quiet in steady state: a success at debug (the counter says how
 * many), the first success after failures at info, a failure at warn with the upstream's code.
 */
function renewalLog(logger: Logger, report: RenewalReport, identity: VerifiedIdentity | undefined): void {
  const { outcome, failuresBefore, error } = report;
  const fields = {
    namespace: identity?.namespace,
    serviceAccount: identity?.serviceAccount,
    pod: identity?.podName,
    outcome,
    failuresBefore: failuresBefore === 0 ? undefined : failuresBefore,
    code: error?.code,
    message: error?.message,
    detail: error?.detail,
    upstreamRequestId: error?.upstreamRequestId,
  };
  // A refusal of the node's own credentials is logged once when it starts (upstream/node-credentials.ts).
  if ((outcome === 'renewed' && failuresBefore === 0) || error?.nodeCredentialsRejected === true) logger.debug(fields, outcome === 'renewed' ? 'credentials renewed in the background' : 'background renewal failed: the upstream refuses the node\'s credentials');
  else if (outcome === 'renewed') logger.info(fields, `credentials renewed in the background again, after ${failuresBefore} failed ${failuresBefore === 1 ? 'try' : 'tries'}`);
  else if (outcome === 'dropped') logger.info(fields, 'background renewal refused for the token: its cached credentials are dropped');
  else logger.warn({ ...fields, retryInMs: report.retryInMs, cachedExpire: new Date(report.cachedExpireAt).toISOString() }, 'background renewal failed: the cached credentials are served until they expire, and the renewal is retried');
}

/** The gauges read at scrape time: cache size and the age of its oldest credentials. */
export function observeCache(metrics: AgentMetrics, cache: CredentialCache, now: () => number): void {
  metrics.observe({
    cacheEntries: () => cache.size,
    oldestCredentialAgeSeconds: () => {
      const oldest = cache.oldestFetchedAt();
      return oldest === undefined ? 0 : (now() - oldest) / 1000;
    },
  });
}

/** Attempts (in flight, duration by status) and retries, with a debug line for each retry. */
export function upstreamMetrics(metrics: AgentMetrics, logger: Logger): UpstreamObserver {
  return {
    attemptStarted: () => metrics.upstreamInflight.inc(),
    attemptEnded: ({ status, durationMs }) => {
      metrics.upstreamInflight.dec();
      metrics.upstreamDuration.observe({ code: String(status) }, durationMs / 1000);
    },
    retried: (error, upstream) => {
      metrics.upstreamRetries.inc({ code: error.code });
      logger.debug({ code: error.code, message: error.message }, `retrying ${upstream} call`);
    },
  };
}

export function associationsMetrics(metrics: AgentMetrics): AssociationsObserver {
  return {
    counted: (source, valid, refused) => {
      metrics.associations.set({ source, state: 'valid' }, valid);
      metrics.associations.set({ source, state: 'refused' }, refused);
    },
    reloaded: (source, result) => metrics.associationReloads.inc({ source, result }),
  };
}

/** The readiness check of each pods' path (bind host and pod port), as 1 or 0. */
export function endpointMetrics(metrics: AgentMetrics): (address: string, ok: boolean) => void {
  return (address, ok) => metrics.endpointReady.set({ address }, ok ? 1 : 0);
}

/** When the node's own credentials expire (0: static keys without expiry). */
export function nodeCredentialsMetrics(metrics: AgentMetrics): (identity: { readonly expiration?: Date }) => void {
  return (identity) => metrics.nodeCredentialsExpiry.set(identity.expiration === undefined ? 0 : identity.expiration.getTime() / 1000);
}

/** Each try at removing the startup taint, by result. */
export function startupTaintMetrics(metrics: AgentMetrics): StartupTaintObserver {
  return (result) => metrics.startupTaintRemovals.inc({ result });
}

/** pod_identity_node_credentials_refused, set on each transition of NodeCredentialsStatus. */
export function nodeCredentialsRefusal(metrics: AgentMetrics): (refused: boolean) => void {
  metrics.nodeCredentialsRefused.set(0);
  return (refused) => metrics.nodeCredentialsRefused.set(refused ? 1 : 0);
}
