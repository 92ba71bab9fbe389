import type { LogLevel } from '../observability/logger.ts';
import { DEFAULT_MISS_LIMITS, type MissLimits } from '../cache/miss-limiter.ts';
import type { AssociationSources } from '../associations/watch.ts';
import type { TrustSettings } from '../trust/index.ts';
import { type ResolvedEndpoint, parseEndpointUrl, resolveEndpoint } from '../upstream/endpoint.ts';
import { ConfigError, type FlagSetting, type FlagValues, collectProblems, parseFlags, readFlag, renderUsage } from './flag-table.ts';
import { SERVER_FLAGS } from './server-flags.ts';

/** The server's settings, validated once at start-up; trust's own (verification, pod binding) among them. */
export interface Config extends TrustSettings {
  readonly clusterName: string;
  readonly region: string;
  /** Who exchanges tokens for credentials: EKS Auth, or STS AssumeRole with local associations. */
  readonly upstream: 'eks-auth' | 'sts';
  /** EKS Auth's endpoint (unused with --upstream sts). */
  readonly endpoint: ResolvedEndpoint;
  /** Present with --upstream sts only. */
  readonly sts: StsConfig | undefined;
  /** IP literals without brackets, in the order given. */
  readonly bindHosts: readonly string[];
  readonly port: number;
  /** Where pods connect (80 behind the node's redirect); undefined: the port bound. Readiness checks the path from there. */
  readonly podPort: number | undefined;
  readonly probePort: number;
  /** --probe-file: where liveness and readiness are written for an exec probe; undefined: off. */
  readonly probeFile: string | undefined;
  readonly metricsAddress: string;
  readonly metricsPort: number;
  /** False with --no-metrics: no metrics listener at all. */
  readonly metrics: boolean;
  readonly maxCredentialRetentionMs: number;
  readonly maxCacheSize: number;
  readonly maxServiceQps: number;
  readonly negativeCacheTtlMs: number;
  readonly shutdownTimeoutMs: number;
  readonly logLevel: LogLevel;
  /** --log-every-request: hits logged one by one rather than summarised. */
  readonly logEveryRequest: boolean;
  readonly missLimits: MissLimits;
  /** --startup-taint: the key of the taint removed from this node once the agent is ready; undefined: off. */
  readonly startupTaint: string | undefined;
}

export interface StsConfig {
  /** --endpoint; undefined: the SDK's resolution (regional endpoint, AWS_ENDPOINT_URL_STS). */
  readonly endpoint: URL | undefined;
  readonly associations: AssociationSources;
  /** Sent as the eks-cluster-arn session tag when given. */
  readonly clusterArn: string | undefined;
}

/**
 * daemonset/example's cluster name, which an operator replaces in their copy: an agent started with
 * it was deployed without its cluster's settings, and every EKS Auth call would fail, so it does not start.
 */
export const EXAMPLE_CLUSTER_NAME = 'CHANGE-ME-cluster-name';

export const SERVER_USAGE: string = renderUsage('Usage: pod-identity-agent server --cluster-name NAME [flags]\n', SERVER_FLAGS);

export interface ParsedServerArgs {
  readonly help: boolean;
  readonly config?: Config;
  readonly warnings: readonly string[];
}

type ServerValues = FlagValues<typeof SERVER_FLAGS>;
type ServerFlag = keyof typeof SERVER_FLAGS;

/** Parses `server` flags; throws ConfigError naming every bad flag. */
export function parseServerArgs(argv: readonly string[], env: NodeJS.ProcessEnv): ParsedServerArgs {
  const values = parseFlags(SERVER_FLAGS, argv);
  if (values.help === true) return { help: true, warnings: [] };
  const warnings = values['rotate-credentials'] === true ? ['--rotate-credentials is accepted for compatibility and has no effect: credentials are always renewed'] : [];
  return { help: false, config: buildConfig(values, env), warnings };
}

/**
 * Reads flags through their declarations, each problem recorded rather than thrown. `fallback`:
 * where the value comes from when the flag is not given (the environment), ahead of the default.
 */
function flagReader(values: ServerValues, check: ReturnType<typeof collectProblems>['check']) {
  return <K extends ServerFlag>(name: K, fallback?: ServerValues[K]): FlagSetting<(typeof SERVER_FLAGS)[K]> | undefined =>
    check(() => readFlag(SERVER_FLAGS, name, values[name] ?? fallback));
}

function buildConfig(values: ServerValues, env: NodeJS.ProcessEnv): Config {
  const { problems, check } = collectProblems();
  const read = flagReader(values, check);

  const clusterName = read('cluster-name');
  if (clusterName === EXAMPLE_CLUSTER_NAME) problems.push(`--cluster-name "${clusterName}" is the example overlay's placeholder: set CLUSTER_NAME in your overlay's pod-identity-agent-settings to the cluster's name`);
  const region = read('region', env.AWS_REGION ?? env.AWS_DEFAULT_REGION);
  const upstream = read('upstream');
  // Unused with --upstream sts, where EKS Auth's variables must not be able to fail the start-up.
  const endpoint = region === undefined ? undefined : check(() => (upstream === 'sts' ? resolveEndpoint({ flag: undefined, env: {}, region }) : resolveEndpoint({ flag: values.endpoint, env, region })));
  const bindHosts = read('bind-hosts');
  const port = read('port');
  const podPort = read('pod-port');
  const probePort = read('probe-port');
  const probeFile = values['probe-file'];
  if (probeFile === '') problems.push('--probe-file is empty');
  const metricsAddress = read('metrics-address');
  const metricsPort = read('metrics-port');
  const retention = read('max-credential-retention-before-renewal');
  const maxCacheSize = read('max-cache-size');
  const maxServiceQps = read('max-service-qps');
  const shutdownTimeout = read('shutdown-timeout');
  const negativeCacheTtl = read('negative-cache-ttl');
  const audience = read('audience');
  const logLevel = read('verbosity');
  const tokenVerification = read('token-verification');
  const podBinding = read('pod-binding');
  const perClientPerSecond = read('max-client-miss-qps');
  const perClientBurst = read('max-client-miss-burst');
  const nodePerSecond = read('max-upstream-qps');
  const stateDir = read('state-dir');
  const nodeName = read('node-name', env.NODE_NAME === '' ? undefined : env.NODE_NAME);
  if (podBinding === 'on' && tokenVerification === 'none') problems.push('--pod-binding on needs verified tokens: not with --token-verification none');
  if (podBinding === 'on' && nodeName === undefined) problems.push('--pod-binding on needs the node name: --node-name or NODE_NAME');
  const startupTaint = read('startup-taint');
  if (startupTaint !== undefined && nodeName === undefined) problems.push('--startup-taint needs the node name: --node-name or NODE_NAME');
  const sts = upstream === 'sts' ? parseStsConfig(values, tokenVerification, { problems, check }) : undefined;
  if (upstream !== 'sts') {
    for (const flag of ['associations', 'associations-configmap', 'cluster-arn'] as const) if (values[flag] !== undefined) problems.push(`--${flag} applies only with --upstream sts`);
  }

  if (problems.length > 0) throw new ConfigError(problems);
  // Every value is defined once no problem was recorded.
  return Object.freeze({
    clusterName: clusterName!,
    region: region!,
    upstream: upstream!,
    endpoint: endpoint!,
    sts,
    bindHosts: Object.freeze(bindHosts!),
    port: port!,
    podPort,
    probePort: probePort!,
    probeFile,
    metricsAddress: metricsAddress!,
    metricsPort: metricsPort!,
    metrics: values['no-metrics'] !== true,
    maxCredentialRetentionMs: retention!,
    maxCacheSize: maxCacheSize!,
    maxServiceQps: maxServiceQps!,
    negativeCacheTtlMs: negativeCacheTtl!,
    shutdownTimeoutMs: shutdownTimeout!,
    audience: audience!,
    logLevel: logLevel!,
    logEveryRequest: values['log-every-request'] === true,
    tokenVerification: tokenVerification!,
    podBinding: podBinding!,
    nodeName,
    stateDir: stateDir!,
    startupTaint,
    missLimits: Object.freeze({ ...DEFAULT_MISS_LIMITS, perClientPerSecond: perClientPerSecond!, perClientBurst: perClientBurst!, nodePerSecond: nodePerSecond!, nodeBurst: nodePerSecond! }),
  });
}

function parseStsConfig(values: ServerValues, tokenVerification: Config['tokenVerification'] | undefined, { problems, check }: ReturnType<typeof collectProblems>): StsConfig {
  const read = flagReader(values, check);
  // Without verification the agent would assume any role for anyone able to write a JWT.
  if (tokenVerification === 'none') problems.push('--upstream sts needs tokens verified locally (--token-verification jwks, tokenreview or auto): with none, anyone could claim any service account\'s role');
  const file = values.associations;
  if (file === '') problems.push('--associations is empty');
  const configMap = read('associations-configmap');
  if (file === undefined && values['associations-configmap'] === undefined) problems.push('--upstream sts needs associations: --associations FILE and/or --associations-configmap NAMESPACE/NAME');
  const endpoint = values.endpoint === undefined ? undefined : check(() => parseEndpointUrl(values.endpoint!, '--endpoint'));
  const clusterArn = read('cluster-arn');
  return Object.freeze({ endpoint, associations: Object.freeze({ file, configMap }), clusterArn });
}
