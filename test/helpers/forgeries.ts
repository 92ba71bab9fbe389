// Tokens under the cluster's own kid that only the signature check refuses: what forged-tokens.test.ts
// (STS mode) and kubernetes-trust.test.ts (EKS Auth mode) both send.
import type { Test } from 'tap';
import { type IssueOptions, type ProjectedTokenClaims, createTokenIssuer, tamperPayload } from '../emulator/token-issuer.ts';
import type { Reply, RequestOptions } from './harness.ts';

export interface Target {
  /** What the altered payload claims: the target's pod, all else of the genuine token kept. */
  readonly claims: (claims: ProjectedTokenClaims) => ProjectedTokenClaims;
  /** Who another key under the same kid signs for. */
  readonly subject: IssueOptions;
  /** How the cases name the target, e.g. "the admin pod". */
  readonly name: string;
}

/** The genuine token altered after signing (to the target, to a longer life), and the target signed by another key under its kid. */
export async function forgeriesUnderKid(genuine: string, kid: string, target: Target): Promise<[string, string][]> {
  const sameKid = await createTokenIssuer({ kid });
  return [
    [`payload altered after signing: ${target.name}`, tamperPayload(genuine, target.claims)],
    ['payload altered after signing: a longer life', tamperPayload(genuine, (claims) => ({ ...claims, exp: claims.exp + 86_400 }))],
    ['signed by another key under the cluster\'s kid', await sameKid.issue(target.subject)],
  ];
}

/** Each forgery carries the cluster's header and kid, and is refused as TokenSignatureInvalid (401); each is a secret for the log audit. */
export async function expectSignatureRefused(t: Test, genuine: string, cases: readonly [string, string][], client: { send(options: RequestOptions): Promise<Reply>; audit: { secrets: Set<string> } }): Promise<void> {
  for (const [name, authorization] of cases) {
    client.audit.secrets.add(authorization);
    t.equal(authorization.split('.')[0], genuine.split('.')[0], `${name}: the cluster's header and kid`);
    const reply = await client.send({ authorization });
    t.equal(reply.status, 401, name);
    t.equal(reply.json?.Code, 'TokenSignatureInvalid', name);
  }
}
