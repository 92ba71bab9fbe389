import type { VerifiedIdentity } from '../token/identity.ts';
import type { ExchangeResult } from '../upstream/types.ts';
import { type PreparedAnswer, prepareCredentials } from '../wire.ts';
import { type Renewable, type RenewalTiming, schedule } from './renewal.ts';

/** Credentials ready to answer: the response body is serialised once and reused for every hit. */
export interface CredentialEntry extends PreparedAnswer, Renewable {
  /**
   * Kept only to renew in the background; never logged, never a key. For a verified identity it
   * moves to the pod's newest token when the kubelet rotates it.
   */
  token: string;
  /** Moves later with the pod's newest token. */
  tokenExpiresAt: number;
  /** The pod the credentials are for, when the token was verified: its deletion drops them. */
  readonly identity: VerifiedIdentity | undefined;
  readonly expiresAt: number;
  readonly fetchedAt: number;
  /** Past this, a request waits for fresh credentials instead of taking these (stale ones stand in on failure). */
  readonly mustRefreshAt: number;
  readonly upstreamRequestId: string | undefined;
  /**
   * The latest expiry among credentials handed to a pod for this token. Until then a pod may come
   * back; after it, nobody holds credentials from here and renewing would spend quota for nobody.
   */
  servedUntil: number;
  /** The cache's count of uses at this entry's latest hit or store: the least recently used goes first when full. */
  lastUsed: number;
}

export interface EntryRequest {
  readonly token: string;
  readonly tokenExpiresAt: number;
  /** Who the token proved to be, when verified locally; undefined with --token-verification none. */
  readonly identity: VerifiedIdentity | undefined;
}

export function createEntry(request: EntryRequest, result: ExchangeResult, fetchedAt: number, timing: RenewalTiming): CredentialEntry {
  const { credentials } = result;
  const { mustRefreshAt, renewAt } = schedule(credentials.expiresAt, fetchedAt, timing);
  const { body, headers } = prepareCredentials(credentials);
  // Spelled out rather than spread: a literal of known shape keeps every field in the object, where
  // a spread adds a separate property array (about 100 bytes an entry, measured with bench/heap-profile.ts).
  return {
    body,
    headers: sharedHeaders(headers),
    token: request.token,
    tokenExpiresAt: request.tokenExpiresAt,
    identity: request.identity,
    expiresAt: credentials.expiresAt,
    fetchedAt,
    mustRefreshAt,
    upstreamRequestId: result.requestId,
    renewAt,
    renewalFailures: 0,
    servedUntil: 0,
    lastUsed: 0,
  };
}

/**
 * Entries whose headers are equal share one array: they differ only in the body's length, which
 * varies by a few bytes, so thousands of entries hold a handful of arrays (about 100 bytes an entry
 * otherwise). Node's writeHead only reads the array.
 */
const headerSets = new Map<string, PreparedAnswer['headers']>();
const MAX_HEADER_SETS = 256;
function sharedHeaders(headers: PreparedAnswer['headers']): PreparedAnswer['headers'] {
  const key = headers.join('\n');
  const shared = headerSets.get(key);
  if (shared !== undefined) return shared;
  if (headerSets.size >= MAX_HEADER_SETS) headerSets.delete(headerSets.keys().next().value as string);
  headerSets.set(key, headers);
  return headers;
}
