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
  return {
    ...prepareCredentials(credentials),
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
  };
}
