import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { VERSION } from '../version.ts';
import { RequestDurationHistogram } from './request-duration.ts';

/**
 * The agent's metrics, on a registry of its own so that several agents can live in one process.
 * No label carries anything unbounded: no token, session name or pod name, only codes and outcomes.
 */
export interface AgentMetrics {
  readonly registry: Registry;
  // The reference agent's series, kept by name and labels for existing dashboards.
  readonly httpResponses: Counter<'code'>;
  readonly cacheState: Counter<'state'>;
  readonly cacheErrors: Counter<'type' | 'code'>;

  /** Hits through observeHit(), every other outcome through observe(). */
  readonly requestDuration: RequestDurationHistogram;
  readonly cacheLookups: Counter<'outcome'>;
  readonly cacheRenewals: Counter<'outcome'>;
  readonly cacheEvictions: Counter<'reason'>;
  readonly upstreamDuration: Histogram<'code'>;
  readonly upstreamRetries: Counter<'code'>;
  readonly upstreamInflight: Gauge;
  readonly nodeCredentialsExpiry: Gauge;
  /** 1 while the upstream refuses the node's own credentials (the agent is then not ready). */
  readonly nodeCredentialsRefused: Gauge;
  /** 1 when the last /readyz found this agent answering on the pods' path to the address, else 0. */
  readonly endpointReady: Gauge<'address'>;
  /** STS upstream: associations in force, and refused, by source (file or configmap). */
  readonly associations: Gauge<'source' | 'state'>;
  readonly associationReloads: Counter<'source' | 'result'>;
  /** --startup-taint: the outcome (removed, absent) once, and each try retried (conflict, failed). */
  readonly startupTaintRemovals: Counter<'result'>;
  /** Hits, counted as plain numbers (see HitTally). */
  readonly hits: HitTally;
  /** Where the gauges computed at scrape time read their values. */
  observe(sources: ScrapeSources): void;
}

/**
 * Hits bump these fields instead of calling prom-client, whose every inc() hashes and validates its
 * labels (about 0.15 µs, times three series per hit, measured). Each series adds what it has not yet
 * counted when Prometheus reads it, so a scrape sees exact values.
 */
export interface HitTally {
  /** Answered 200 from the cache: pod_identity_http_response{code="200"} and pod_identity_cache_state{state="hit"}. */
  served: number;
  /** pod_identity_cache_lookups_total{outcome="hit"}. */
  lookups: number;
}

export interface ScrapeSources {
  readonly cacheEntries: () => number;
  /** Seconds since the oldest cached credentials were fetched; 0 when the cache is empty. */
  readonly oldestCredentialAgeSeconds: () => number;
}

// From 50 µs: a hit takes tens of microseconds, a miss one EKS Auth round trip, a failure up to the 2.5 s budget.
const REQUEST_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const UPSTREAM_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export function createMetrics(options: { readonly defaultMetrics?: boolean } = {}): AgentMetrics {
  const registry = new Registry();
  if (options.defaultMetrics ?? true) {
    collectDefaultMetrics({ register: registry });
    // Gauges named like counters, which promtool rightly flags; sum the per-type series instead.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);
  }
  let sources: ScrapeSources = { cacheEntries: () => 0, oldestCredentialAgeSeconds: () => 0 };
  const registers = [registry];
  const hits: HitTally = { served: 0, lookups: 0 };

  new Gauge({
    name: 'pod_identity_build_info',
    help: 'Always 1; labels carry the agent and Node.js versions',
    labelNames: ['version', 'nodejs_version'],
    registers,
  }).set({ version: VERSION, nodejs_version: process.version }, 1);
  new Gauge({
    name: 'pod_identity_cache_entries',
    help: 'Identities in the credential cache',
    registers,
    collect() {
      this.set(sources.cacheEntries());
    },
  });
  new Gauge({
    name: 'pod_identity_cache_oldest_credential_age_seconds',
    help: 'Age of the oldest credentials the cache would serve (time since they were fetched)',
    registers,
    collect() {
      this.set(sources.oldestCredentialAgeSeconds());
    },
  });

  return {
    registry,
    hits,
    httpResponses: new Counter({ name: 'pod_identity_http_response', help: 'Credential responses by HTTP status code (reference agent series)', labelNames: ['code'], registers, collect: tallied({ code: '200' }, () => hits.served) }),
    cacheState: new Counter({ name: 'pod_identity_cache_state', help: 'Credential cache lookups by state: hit or miss (reference agent series)', labelNames: ['state'], registers, collect: tallied({ state: 'hit' }, () => hits.served) }),
    cacheErrors: new Counter({ name: 'pod_identity_cache_errors', help: 'Failed credential fetches by error code and HTTP status (reference agent series)', labelNames: ['type', 'code'], registers }),
    requestDuration: new RequestDurationHistogram({
      name: 'pod_identity_request_duration_seconds',
      help: 'Credential requests from arrival to answer, by outcome: hit, miss, coalesced, stale, error',
      labelNames: ['outcome'],
      buckets: REQUEST_BUCKETS,
      registers,
    }),
    cacheLookups: new Counter({
      name: 'pod_identity_cache_lookups_total',
      help: 'Credential cache look-ups by outcome: hit, miss, coalesced (joined another request\'s upstream call), stale (served during an upstream failure), negative (remembered upstream verdict)',
      labelNames: ['outcome'],
      registers,
      collect: tallied({ outcome: 'hit' }, () => hits.lookups),
    }),
    cacheRenewals: new Counter({
      name: 'pod_identity_cache_renewals_total',
      help: 'Background renewals by outcome: renewed, failed (temporary, retried later), dropped (upstream verdict on the token)',
      labelNames: ['outcome'],
      registers,
    }),
    cacheEvictions: new Counter({
      name: 'pod_identity_cache_evictions_total',
      help: 'Identities removed from the cache by reason: capacity, token_expired, idle, expired, rejected, pod_deleted, association_changed',
      labelNames: ['reason'],
      registers,
    }),
    upstreamDuration: new Histogram({
      name: 'pod_identity_upstream_request_duration_seconds',
      help: 'Upstream (EKS Auth or STS) call attempts by HTTP status (0: no answer)',
      labelNames: ['code'],
      buckets: UPSTREAM_BUCKETS,
      registers,
    }),
    upstreamRetries: new Counter({ name: 'pod_identity_upstream_retries_total', help: 'Upstream (EKS Auth or STS) call attempts retried, by the error code that caused the retry', labelNames: ['code'], registers }),
    upstreamInflight: new Gauge({ name: 'pod_identity_upstream_inflight_requests', help: 'Upstream (EKS Auth or STS) call attempts under way', registers }),
    endpointReady: new Gauge({
      name: 'pod_identity_endpoint_ready',
      help: 'Whether the last readiness check found this agent answering where pods connect (bind host and pod port, through the node\'s redirect): 1 yes, 0 no (nothing there, or another workload answering)',
      labelNames: ['address'],
      registers,
    }),
    nodeCredentialsRefused: new Gauge({
      name: 'pod_identity_node_credentials_refused',
      help: '1 while the upstream (EKS Auth or STS) refuses the node\'s own credentials (unknown keys, a bad signature, an expired session, the node role without the permission): the agent is not ready; 0 otherwise',
      registers,
    }),
    nodeCredentialsExpiry: new Gauge({
      name: 'pod_identity_node_credentials_expiry_timestamp_seconds',
      help: 'When the node\'s own AWS credentials last resolved expire (Unix time); 0 for credentials without expiry or none resolved yet',
      registers,
    }),
    associations: new Gauge({
      name: 'pod_identity_associations',
      help: 'STS upstream: associations by source (file, configmap) and state (valid: in force; refused: invalid or duplicate entries)',
      labelNames: ['source', 'state'],
      registers,
    }),
    associationReloads: new Counter({
      name: 'pod_identity_association_reloads_total',
      help: 'STS upstream: association sources read after a change, by source and result (applied, failed: the last good associations stay)',
      labelNames: ['source', 'result'],
      registers,
    }),
    startupTaintRemovals: new Counter({
      name: 'pod_identity_startup_taint_removals_total',
      help: '--startup-taint: tries at removing the startup taint from this node, by result: removed or absent (the outcome, once), conflict (another writer changed the node; read again) or failed (API server unreachable or refusing; retried with backoff)',
      labelNames: ['result'],
      registers,
    }),
    observe(next) {
      sources = next;
    },
  };
}

/** A collect() that adds to one series what a HitTally field has counted since the last read. */
function tallied<T extends string>(labels: Partial<Record<T, string>>, read: () => number): (this: Counter<T>) => void {
  let counted = 0;
  return function collect(this: Counter<T>) {
    const total = read();
    if (total > counted) this.inc(labels, total - counted);
    counted = total;
  };
}
