import { Hash } from '@smithy/hash-node';
import { SignatureV4 } from '@smithy/signature-v4';
import type { Dispatcher } from 'undici';
import { readBoundedBody } from './bounded-body.ts';
import { buildAssumeRoleRequest, parseAssumeRoleResponse } from './eks-auth-protocol.ts';
import type { NodeCredentials } from './node-credentials.ts';
import type { CredentialExchange } from './types.ts';

export interface EksAuthClientOptions {
  readonly endpoint: URL;
  readonly region: string;
  readonly clusterName: string;
  readonly credentials: NodeCredentials;
  /** A keep-alive pool shared by all calls; the caller owns and closes it. */
  readonly dispatcher: Dispatcher;
  readonly userAgent: string;
}

/** AssumeRoleForPodIdentity over a signed rest-json call: one attempt, bounded by the caller's signal. */
export function createEksAuthClient(options: EksAuthClientOptions): CredentialExchange {
  const signer = new SignatureV4({
    service: 'eks-auth',
    region: options.region,
    credentials: options.credentials,
    sha256: Hash.bind(null, 'sha256'),
  });
  return {
    name: 'EKS Auth',
    async exchange({ token }, exchangeOptions) {
      const signal = exchangeOptions?.signal;
      const unsigned = buildAssumeRoleRequest(options.endpoint, options.clusterName, token, options.userAgent);
      const signed = await signer.sign(unsigned);
      const response = await options.dispatcher.request({
        origin: options.endpoint.origin,
        method: unsigned.method,
        path: unsigned.path,
        headers: signed.headers,
        body: unsigned.body,
        signal,
      });
      const body = (await readBoundedBody(response.body, signal, 'EKS Auth')).toString('utf8');
      return parseAssumeRoleResponse({ status: response.statusCode, headers: response.headers, body });
    },
  };
}
