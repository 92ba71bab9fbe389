import type { ExchangeResult } from '../upstream/types.ts';

/** Credentials ready to answer: the response body is serialised once and reused for every hit. */
export interface CredentialEntry {
  readonly body: Buffer;
  /** Epoch milliseconds. */
  readonly expiresAt: number;
  readonly fetchedAt: number;
  /** After this, a request goes upstream for fresh credentials (stale ones stand in if that fails). */
  readonly renewAt: number;
  readonly upstreamRequestId: string | undefined;
}

export interface RenewalTiming {
  readonly retentionMs: number;
  readonly minLifetimeMs: number;
}

// Renewing at two thirds of the lifetime leaves a 59-minute credential 20 minutes of slack,
// more than the 15 minutes at which botocore starts refreshing.
const RENEW_FRACTION = 2 / 3;

export function createEntry(result: ExchangeResult, fetchedAt: number, timing: RenewalTiming): CredentialEntry {
  const { credentials } = result;
  const lifetime = credentials.expiresAt - fetchedAt;
  const renewAt = Math.min(
    fetchedAt + timing.retentionMs,
    fetchedAt + lifetime * RENEW_FRACTION,
    credentials.expiresAt - timing.minLifetimeMs,
  );
  const body = Buffer.from(
    JSON.stringify({
      AccessKeyId: credentials.accessKeyId,
      SecretAccessKey: credentials.secretAccessKey,
      Token: credentials.sessionToken,
      AccountId: credentials.accountId,
      // toISOString() gives RFC 3339 UTC with "Z", the one form every SDK accepts.
      Expiration: new Date(credentials.expiresAt).toISOString(),
    }),
  );
  return { body, expiresAt: credentials.expiresAt, fetchedAt, renewAt, upstreamRequestId: result.requestId };
}
