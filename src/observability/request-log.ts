import type { LookupOutcome } from '../cache/credential-cache.ts';
import type { AgentError } from '../errors.ts';
import type { PodIdentity } from '../token/identity.ts';
import type { Logger } from './logger.ts';
import type { AgentMetrics } from './metrics.ts';

/** What one credentials request did, for its log line and metrics. Never holds the token or a credential. */
export interface RequestRecord {
  /** performance.now() at arrival. */
  readonly started: number;
  status: number;
  outcome: LookupOutcome | 'rejected';
  identity: PodIdentity | undefined;
  error: AgentError | undefined;
  upstreamRequestId: string | undefined;
  /** The source address as the socket sees it (with the node's redirect, the pod's own address). */
  client: string | undefined;
}

/** Records a finished request; never throws. */
export type RequestRecorder = (record: RequestRecord) => void;

export interface RequestLogOptions {
  /** --log-every-request: a line for each hit too, instead of the per-identity summary. */
  readonly everyRequest: boolean;
  /** How often hits are summarised. */
  readonly summaryIntervalMs?: number;
  /** Identities summarised at once; more flush early, so the summary's memory is bounded. */
  readonly maxIdentities?: number;
}

/** The request log: one recorder for the handler, and close() to write what is still summarised. */
export interface RequestLog {
  readonly record: RequestRecorder;
  /** A request refused before any handler saw it (unparsable, too large, too slow): logged and counted like the rest. */
  readonly refused: (error: AgentError, client: string | undefined) => void;
  close(): void;
}

const SUMMARY_INTERVAL_MS = 60_000;
const MAX_SUMMARISED = 10_000;

export function newRequestRecord(): RequestRecord {
  return { started: performance.now(), status: 0, outcome: 'rejected', identity: undefined, error: undefined, upstreamRequestId: undefined, client: undefined };
}

/**
 * Metrics for every request; a log line for every miss, refusal and error. Hits, which a looping
 * pod can send thousands of a second, are counted per identity and written as one line per identity
 * per interval (who was served, how many times, between when), so the log is the same audit trail
 * at a bounded volume; --log-every-request writes a line for each instead.
 */
export function createRequestLog(metrics: AgentMetrics, logger: Logger, options: RequestLogOptions): RequestLog {
  const count = countRequests(metrics);
  const summary = new HitSummary(logger, options.maxIdentities ?? MAX_SUMMARISED);
  const timer = options.everyRequest ? undefined : setInterval(() => summary.flush(), options.summaryIntervalMs ?? SUMMARY_INTERVAL_MS).unref();
  const record: RequestRecorder = (request) => {
    const seconds = (performance.now() - request.started) / 1000;
    try {
      count(request, seconds);
      if (timer !== undefined && request.outcome === 'hit' && request.status === 200 && request.identity !== undefined) summary.add(request.identity, request.client);
      else logRequest(logger, request, seconds);
    } catch (error) {
      // Bookkeeping must not fail the request, nor escape as an unhandled rejection.
      logger.error({ err: error }, 'recording a credential request failed');
    }
  };
  return {
    record,
    refused: (error, client) => record({ ...newRequestRecord(), status: error.status, error, client }),
    close() {
      clearInterval(timer);
      summary.flush();
    },
  };
}

/** One identity's hits since the last flush. */
interface Hits {
  count: number;
  first: number;
  last: number;
  /** The address of the latest hit. */
  client: string | undefined;
  /** Every address seen, kept only once a second one appears (and at most MAX_CLIENTS of them). */
  clients: Set<string | undefined> | undefined;
}

/** Distinct addresses counted per identity per interval (a count of 16 means 16 or more). */
const MAX_CLIENTS = 16;

/**
 * Hits by identity since the last flush. The key is the parsed token's identity object, which the
 * token checker's memo hands out again for every request with that token: a map look-up, no string.
 * The client address costs a comparison per hit (the same string while the pod keeps its address).
 */
class HitSummary {
  readonly #logger: Logger;
  readonly #max: number;
  #hits = new Map<PodIdentity, Hits>();

  constructor(logger: Logger, max: number) {
    this.#logger = logger;
    this.#max = max;
  }

  add(identity: PodIdentity, client: string | undefined): void {
    const now = Date.now();
    const seen = this.#hits.get(identity);
    if (seen !== undefined) {
      seen.count += 1;
      seen.last = now;
      if (client !== seen.client) {
        seen.clients ??= new Set([seen.client]);
        if (seen.clients.size < MAX_CLIENTS) seen.clients.add(client);
        seen.client = client;
      }
      return;
    }
    if (this.#hits.size >= this.#max) this.flush();
    this.#hits.set(identity, { count: 1, first: now, last: now, client, clients: undefined });
  }

  flush(): void {
    const hits = this.#hits;
    this.#hits = new Map();
    for (const [identity, { count, first, last, client, clients }] of hits) {
      this.#logger.info(
        {
          namespace: identity.namespace,
          serviceAccount: identity.serviceAccount,
          pod: identity.podName,
          client,
          clients: clients?.size ?? 1,
          status: 200,
          cache: 'hit',
          hits: count,
          first: new Date(first).toISOString(),
          last: new Date(last).toISOString(),
        },
        'credentials served from cache',
      );
    }
  }
}

function countRequests(metrics: AgentMetrics): (request: RequestRecord, seconds: number) => void {
  const responses = new Map<number, { inc(): void }>();
  const durations = new Map<string, { observe(seconds: number): void }>();
  const miss = metrics.cacheState.labels('miss');
  const { hits } = metrics;
  return (request, seconds) => {
    if (request.status === 200 && request.outcome === 'hit') {
      hits.served += 1;
      metrics.requestDuration.observeHit(seconds);
      return;
    }
    let byStatus = responses.get(request.status);
    if (byStatus === undefined) responses.set(request.status, (byStatus = metrics.httpResponses.labels(String(request.status))));
    byStatus.inc();
    const outcome = request.status === 200 ? request.outcome : 'error';
    let byOutcome = durations.get(outcome);
    if (byOutcome === undefined) durations.set(outcome, (byOutcome = metrics.requestDuration.labels(outcome)));
    byOutcome.observe(seconds);
    if (request.outcome === 'stale') metrics.cacheState.inc({ state: 'hit' });
    else if (request.outcome === 'miss' || request.outcome === 'coalesced') miss.inc();
    if (request.error !== undefined && request.outcome !== 'rejected') {
      metrics.cacheErrors.inc({ type: request.error.code, code: String(request.error.status) });
    }
  };
}

function logRequest(logger: Logger, request: RequestRecord, seconds: number): void {
  const fields = {
    namespace: request.identity?.namespace,
    serviceAccount: request.identity?.serviceAccount,
    pod: request.identity?.podName,
    client: request.client,
    status: request.status,
    cache: request.outcome,
    durationMs: Math.round(seconds * 1e6) / 1000,
    upstreamRequestId: request.upstreamRequestId,
    code: request.error?.code,
    message: request.error?.message,
    detail: request.error?.detail,
  };
  // A bug is worth its stack trace; the pod got a bare InternalError.
  if (request.error?.code === 'InternalError') logger.error({ ...fields, err: request.error.cause }, 'credential request failed inside the agent');
  // Said once at error when it starts (upstream/node-credentials.ts): one line per pod request would flood.
  else if (request.error?.nodeCredentialsRejected === true) logger.debug(fields, 'credential request failed: the upstream refuses the node\'s credentials');
  else if (request.status >= 500) logger.warn(fields, 'credential request failed');
  else logger.info(fields, 'credential request');
}
