import type { VerifiedIdentity } from '../token/identity.ts';
import type { ExchangeResult } from '../upstream/types.ts';

/** Credentials ready to answer: the response body is serialised once and reused for every hit. */
export interface CredentialEntry {
  /**
   * Kept only to renew in the background; never logged, never a key. For a verified identity it
   * moves to the pod's newest token when the kubelet rotates it.
   */
  token: string;
  /** Epoch ms after which the pod can no longer send this token: nothing left to renew for. */
  tokenExpiresAt: number;
  /** The pod the credentials are for, when the token was verified: its deletion drops them. */
  readonly identity: VerifiedIdentity | undefined;
  readonly body: Buffer;
  /** The response headers for `body`, flat as `writeHead` takes them, built once with it. */
  readonly headers: readonly string[];
  readonly expiresAt: number;
  readonly fetchedAt: number;
  /** Past this, a request waits for fresh credentials instead of taking these (stale ones stand in on failure). */
  readonly mustRefreshAt: number;
  readonly upstreamRequestId: string | undefined;
  /** When the background renewal is due; moved later after a failed attempt. */
  renewAt: number;
  renewalFailures: number;
  /**
   * The latest expiry among credentials handed to a pod for this token. Until then a pod may come
   * back; after it, nobody holds credentials from here and renewing would spend quota for nobody.
   */
  servedUntil: number;
}

export interface EntryTiming {
  readonly retentionMs: number;
  readonly minLifetimeMs: number;
  readonly random: () => number;
}

// Renewing at two thirds of the lifetime leaves a 59-minute credential 20 minutes of slack,
// more than the 15 minutes at which botocore starts refreshing.
const RENEW_FRACTION = 2 / 3;
// Up to a tenth earlier, so that identities fetched together (a node's boot) do not renew together.
const RENEW_JITTER = 0.1;
// SDKs refresh when 5 minutes are left (JS, Go); past that point a pod should get fresh credentials.
const MUST_REFRESH_BEFORE_EXPIRY_MS = 5 * 60_000;

export interface EntryRequest {
  readonly token: string;
  readonly tokenExpiresAt: number;
  /** Who the token proved to be, when verified locally; undefined with --token-verification none. */
  readonly identity: VerifiedIdentity | undefined;
}

export function createEntry(request: EntryRequest, result: ExchangeResult, fetchedAt: number, timing: EntryTiming): CredentialEntry {
  const { credentials } = result;
  const lifetime = credentials.expiresAt - fetchedAt;
  const mustRefreshAt = credentials.expiresAt - Math.max(timing.minLifetimeMs, Math.min(MUST_REFRESH_BEFORE_EXPIRY_MS, lifetime / 4));
  const renewAfter = Math.min(timing.retentionMs, lifetime * RENEW_FRACTION) * (1 - RENEW_JITTER * timing.random());
  const body = unpooled(
    JSON.stringify({
      AccessKeyId: credentials.accessKeyId,
      SecretAccessKey: credentials.secretAccessKey,
      Token: credentials.sessionToken,
      AccountId: credentials.accountId,
      // toISOString() gives RFC 3339 UTC with "Z", the one form every SDK accepts.
      Expiration: new Date(credentials.expiresAt).toISOString(),
    }),
  );
  return {
    token: request.token,
    tokenExpiresAt: request.tokenExpiresAt,
    identity: request.identity,
    body,
    headers: ['content-type', 'application/json', 'cache-control', 'no-store', 'content-length', String(body.length)],
    expiresAt: credentials.expiresAt,
    fetchedAt,
    mustRefreshAt,
    upstreamRequestId: result.requestId,
    renewAt: Math.min(fetchedAt + renewAfter, mustRefreshAt),
    renewalFailures: 0,
    servedUntil: 0,
  };
}

/**
 * A buffer of its own rather than a slice of Node's shared 8 KiB pool: a long-lived slice pins the
 * whole slab, which with thousands of cached bodies costs several times the bodies themselves.
 */
function unpooled(text: string): Buffer {
  const buffer = Buffer.allocUnsafeSlow(Buffer.byteLength(text));
  buffer.write(text);
  return buffer;
}
