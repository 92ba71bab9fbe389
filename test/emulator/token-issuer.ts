// Issues Kubernetes projected service-account tokens for tests and demos, standing in for
// the API server's token signer (protocols.md §3).
import { randomUUID } from 'node:crypto';
import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';
import type { CryptoKey, JWK, JWTPayload } from 'jose';

export const DEFAULT_ISSUER = 'https://oidc.eks.local/id/EMULATOR';
export const DEFAULT_AUDIENCE = 'pods.eks.amazonaws.com';
const DEFAULT_LIFETIME_SECONDS = 86_400;

export type TokenIssuerOptions = {
  issuer?: string;
  audience?: string;
  algorithm?: 'RS256';
  /**
   * The kid to sign under instead of the key's own thumbprint: with another issuer's kid, a forger
   * who knows the cluster's key id (it is public) but not its private key.
   */
  kid?: string;
};

export type IssueOptions = {
  namespace: string;
  serviceAccount: string;
  podName?: string;
  podUid?: string;
  nodeName?: string;
  /** Default 86400, as the EKS webhook projects it. */
  expiresInSeconds?: number;
  /** Epoch seconds; default now. */
  issuedAt?: number;
  /** Epoch seconds; default issuedAt. */
  notBefore?: number;
  audience?: string | string[];
};

/** The `kubernetes.io` private claim of a projected token. */
export type KubernetesClaim = {
  namespace: string;
  serviceaccount: { name: string; uid: string };
  pod: { name: string; uid: string };
  node: { name: string; uid: string };
};

export type ProjectedTokenClaims = JWTPayload & {
  iss: string;
  sub: string;
  aud: string[];
  exp: number;
  iat: number;
  nbf: number;
  jti: string;
  'kubernetes.io': KubernetesClaim;
};

/** The identity fields a consumer of a projected token needs. */
export type KubernetesSubject = { namespace: string; serviceAccount: string; podName: string };

export type TokenIssuer = {
  readonly issuer: string;
  readonly kid: string;
  readonly publicKey: CryptoKey;
  issue(claims: IssueOptions): Promise<string>;
  jwks(): Promise<{ keys: JWK[] }>;
};

export async function createTokenIssuer(options: TokenIssuerOptions = {}): Promise<TokenIssuer> {
  const algorithm = options.algorithm ?? 'RS256';
  const issuer = options.issuer ?? DEFAULT_ISSUER;
  const defaultAudience = options.audience ?? DEFAULT_AUDIENCE;
  const { publicKey, privateKey } = await generateKeyPair(algorithm, { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  // The API server derives its kid from the key too, so a thumbprint is the faithful choice.
  const kid = options.kid ?? (await calculateJwkThumbprint(publicJwk));
  const uids = new UidRegistry();

  async function issue(claims: IssueOptions): Promise<string> {
    const payload = buildClaims(claims, issuer, defaultAudience, uids);
    return new SignJWT(payload).setProtectedHeader({ alg: algorithm, kid, typ: 'JWT' }).sign(privateKey);
  }

  async function jwks(): Promise<{ keys: JWK[] }> {
    return { keys: [{ ...publicJwk, kid, alg: algorithm, use: 'sig' }] };
  }

  return { issuer, kid, publicKey, issue, jwks };
}

/**
 * The token with its payload rewritten and its header and signature kept: a token altered after
 * signing, as an attacker who holds one pod's token would try for another identity.
 */
export function tamperPayload(token: string, change: (claims: ProjectedTokenClaims) => ProjectedTokenClaims): string {
  const [header, payload, signature] = token.split('.') as [string, string, string];
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as ProjectedTokenClaims;
  return `${header}.${Buffer.from(JSON.stringify(change(claims))).toString('base64url')}.${signature}`;
}

function buildClaims(
  claims: IssueOptions,
  issuer: string,
  defaultAudience: string,
  uids: UidRegistry,
): ProjectedTokenClaims {
  const iat = claims.issuedAt ?? Math.floor(Date.now() / 1000);
  const podName = claims.podName ?? `${claims.serviceAccount}-pod`;
  const nodeName = claims.nodeName ?? 'ip-10-0-0-1.ec2.internal';
  const audience = claims.audience ?? defaultAudience;
  return {
    iss: issuer,
    sub: `system:serviceaccount:${claims.namespace}:${claims.serviceAccount}`,
    aud: Array.isArray(audience) ? [...audience] : [audience],
    exp: iat + (claims.expiresInSeconds ?? DEFAULT_LIFETIME_SECONDS),
    iat,
    nbf: claims.notBefore ?? iat,
    jti: randomUUID(),
    'kubernetes.io': {
      namespace: claims.namespace,
      serviceaccount: {
        name: claims.serviceAccount,
        uid: uids.get(`sa/${claims.namespace}/${claims.serviceAccount}`),
      },
      pod: { name: podName, uid: claims.podUid ?? uids.get(`pod/${claims.namespace}/${podName}`) },
      node: { name: nodeName, uid: uids.get(`node/${nodeName}`) },
    },
  };
}

/** Reads the service account (and pod, if present) from verified or decoded token claims. */
export function readKubernetesSubject(payload: JWTPayload): KubernetesSubject | undefined {
  const k8s = payload['kubernetes.io'] as
    | { namespace?: unknown; serviceaccount?: { name?: unknown }; pod?: { name?: unknown } }
    | undefined;
  const namespace = k8s?.namespace;
  const serviceAccount = k8s?.serviceaccount?.name;
  if (typeof namespace !== 'string' || typeof serviceAccount !== 'string') return undefined;
  const podName = typeof k8s?.pod?.name === 'string' ? k8s.pod.name : 'pod';
  return { namespace, serviceAccount, podName };
}

/** Keeps uids stable per object, as a cluster would, so repeated tokens describe the same pod. */
class UidRegistry {
  readonly #uids = new Map<string, string>();

  get(key: string): string {
    let uid = this.#uids.get(key);
    if (uid === undefined) {
      uid = randomUUID();
      this.#uids.set(key, uid);
    }
    return uid;
  }
}
