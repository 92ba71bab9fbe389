import { Hash } from '@smithy/hash-node';
import { SignatureV4 } from '@smithy/signature-v4';
import type { Dispatcher } from 'undici';
import { type AttemptHooks, readBoundedBody } from './bounded-body.ts';
import { buildAssumeRoleRequest, parseAssumeRoleResponse } from './eks-auth-protocol.ts';
import type { NodeCredentials } from './node-credentials.ts';
import { DEFAULT_RETRY_POLICY, type RetryPolicy, withRetry } from './retry.ts';
import type { CredentialExchange, ExchangeResult } from './types.ts';

export interface EksAuthClientOptions extends AttemptHooks {
  readonly endpoint: URL;
  readonly region: string;
  readonly clusterName: string;
  readonly credentials: NodeCredentials;
  /** A keep-alive pool shared by all calls; the caller owns and closes it. */
  readonly dispatcher: Dispatcher;
  readonly userAgent: string;
  readonly retry?: RetryPolicy;
  readonly onRetry?: (error: Error, attempt: number) => void;
}

/** AssumeRoleForPodIdentity over a signed rest-json call, retried within a time budget. */
export function createEksAuthClient(options: EksAuthClientOptions): CredentialExchange {
  const signer = new SignatureV4({
    service: 'eks-auth',
    region: options.region,
    credentials: options.credentials,
    sha256: Hash.bind(null, 'sha256'),
  });
  const policy = options.retry ?? DEFAULT_RETRY_POLICY;
  const retryHooks = { upstream: 'EKS Auth', ...(options.onRetry === undefined ? {} : { onRetry: options.onRetry }) };

  async function attempt(token: string, signal: AbortSignal): Promise<ExchangeResult> {
    const unsigned = buildAssumeRoleRequest(options.endpoint, options.clusterName, token, options.userAgent);
    const signed = await signer.sign(unsigned);
    const started = performance.now();
    let status = 0;
    options.onAttemptStart?.();
    try {
      const response = await options.dispatcher.request({
        origin: options.endpoint.origin,
        method: unsigned.method,
        path: unsigned.path,
        headers: signed.headers,
        body: unsigned.body,
        signal,
      });
      status = response.statusCode;
      const body = (await readBoundedBody(response.body, signal, 'EKS Auth')).toString('utf8');
      return parseAssumeRoleResponse({ status, headers: response.headers, body });
    } finally {
      options.onAttempt?.({ status, durationMs: performance.now() - started });
    }
  }

  const singleAttempt: RetryPolicy = { ...policy, maxAttempts: 1 };
  return {
    name: 'EKS Auth',
    exchange: ({ token }, exchangeOptions) =>
      withRetry(exchangeOptions?.singleAttempt === true ? singleAttempt : policy, (signal) => attempt(token, signal), retryHooks),
  };
}
