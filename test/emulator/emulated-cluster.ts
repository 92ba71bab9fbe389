import { randomBytes } from 'node:crypto';
import type { SigV4Credential } from './sigv4-verifier.ts';
import { type EksAuthEmulator, type EmulatorOptions, type PodIdentityAssociation, startEksAuthEmulator } from './eks-auth-emulator.ts';
import { type TokenIssuer, createTokenIssuer } from './token-issuer.ts';

export interface EmulatedCluster {
  readonly clusterName: string;
  readonly region: string;
  readonly issuer: TokenIssuer;
  readonly emulator: EksAuthEmulator;
  /** What the node signs with; the emulator accepts only these. */
  readonly nodeCredentials: SigV4Credential;
  close(): Promise<void>;
}

export interface EmulatedClusterOptions extends Partial<Omit<EmulatorOptions, 'verificationKey'>> {
  readonly associations: PodIdentityAssociation[];
}

/** A token issuer and an EKS Auth emulator that trusts it: what the demo, tests and benchmarks stand on. */
export async function startEmulatedCluster(options: EmulatedClusterOptions): Promise<EmulatedCluster> {
  const clusterName = options.clusterName ?? 'demo';
  const region = options.region ?? 'us-west-2';
  const nodeCredentials = options.nodeCredentials?.[0] ?? { accessKeyId: 'AKIAEMULATEDNODE0000', secretAccessKey: randomBytes(30).toString('base64') };
  const issuer = await createTokenIssuer();
  const emulator = await startEksAuthEmulator({
    ...options,
    nodeCredentials: options.nodeCredentials ?? [nodeCredentials],
    clusterName,
    region,
    verificationKey: issuer.publicKey,
  });
  return { clusterName, region, issuer, emulator, nodeCredentials, close: () => emulator.close() };
}
