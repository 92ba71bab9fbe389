import { Hash } from '@smithy/hash-node';
import { SignatureV4 } from '@smithy/signature-v4';
import type { Dispatcher } from 'undici';
import { agentError, isAgentError } from '../errors.ts';
import { buildAssumeRoleRequest, parseAssumeRoleResponse } from './eks-auth-protocol.ts';
import type { NodeCredentials } from './node-credentials.ts';
import { DEFAULT_RETRY_POLICY, type RetryPolicy, withRetry } from './retry.ts';
import type { CredentialExchange, ExchangeResult } from './types.ts';

export interface AttemptReport {
  /** HTTP status, or 0 when no answer arrived (timeout, reset, refused). */
  readonly status: number;
  readonly durationMs: number;
}

export interface EksAuthClientOptions {
  readonly endpoint: URL;
  readonly region: string;
  readonly clusterName: string;
  readonly credentials: NodeCredentials;
  /** A keep-alive pool shared by all calls; the caller owns and closes it. */
  readonly dispatcher: Dispatcher;
  readonly userAgent: string;
  readonly retry?: RetryPolicy;
  readonly onAttemptStart?: () => void;
  readonly onAttempt?: (report: AttemptReport) => void;
  readonly onRetry?: (error: Error, attempt: number) => void;
}

const MAX_RESPONSE_BYTES = 64 * 1024;

/** AssumeRoleForPodIdentity over a signed rest-json call, retried within a time budget. */
export function createEksAuthClient(options: EksAuthClientOptions): CredentialExchange {
  const signer = new SignatureV4({
    service: 'eks-auth',
    region: options.region,
    credentials: options.credentials,
    sha256: Hash.bind(null, 'sha256'),
  });
  const policy = options.retry ?? DEFAULT_RETRY_POLICY;
  const retryHooks = options.onRetry === undefined ? {} : { onRetry: options.onRetry };

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
      const body = await readBody(response.body, signal);
      return parseAssumeRoleResponse({ status, headers: response.headers, body });
    } finally {
      options.onAttempt?.({ status, durationMs: performance.now() - started });
    }
  }

  const singleAttempt: RetryPolicy = { ...policy, maxAttempts: 1 };
  return {
    exchange: (token, exchangeOptions) =>
      withRetry(exchangeOptions?.singleAttempt === true ? singleAttempt : policy, (signal) => attempt(token, signal), retryHooks),
  };
}

/** The body as text, refusing anything larger than an EKS Auth answer can be. */
async function readBody(body: Dispatcher.ResponseData['body'], signal: AbortSignal): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      size += (chunk as Buffer).length;
      if (size > MAX_RESPONSE_BYTES) {
        body.destroy();
        throw agentError('UpstreamInvalidResponse', `EKS Auth answered more than ${MAX_RESPONSE_BYTES} bytes`);
      }
      chunks.push(chunk as Buffer);
    }
  } catch (error) {
    if (isAgentError(error) || signal.aborted) throw error;
    throw agentError('UpstreamUnavailable', `EKS Auth's answer was cut off (${(error as Error).message})`, { cause: error });
  }
  return Buffer.concat(chunks).toString('utf8');
}
