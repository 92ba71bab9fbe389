import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import { parseDuration } from '../duration.ts';
import type { LogLevel } from '../observability/logger.ts';
import { DEFAULT_MISS_LIMITS, type MissLimits } from '../cache/miss-limiter.ts';
import type { AssociationSources } from '../associations/watch.ts';
import { type ResolvedEndpoint, parseEndpointUrl, resolveEndpoint } from '../upstream/endpoint.ts';

/** The server's settings, validated once at start-up. */
export interface Config {
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
  readonly probePort: number;
  readonly metricsAddress: string;
  readonly metricsPort: number;
  /** False with --no-metrics: no metrics listener at all. */
  readonly metrics: boolean;
  readonly maxCredentialRetentionMs: number;
  readonly maxCacheSize: number;
  readonly maxServiceQps: number;
  readonly negativeCacheTtlMs: number;
  readonly shutdownTimeoutMs: number;
  readonly audience: string;
  readonly logLevel: LogLevel;
  /** auto: jwks when the API server answers (or keys are stored), else none with a warning. */
  readonly tokenVerification: 'auto' | 'jwks' | 'tokenreview' | 'none';
  /** auto: on when tokens are verified and the node name is known. */
  readonly podBinding: 'auto' | 'on' | 'off';
  readonly nodeName: string | undefined;
  readonly stateDir: string;
  readonly missLimits: MissLimits;
}

export interface StsConfig {
  /** --endpoint; undefined: the SDK's resolution (regional endpoint, AWS_ENDPOINT_URL_STS). */
  readonly endpoint: URL | undefined;
  readonly associations: AssociationSources;
  /** Sent as the eks-cluster-arn session tag when given. */
  readonly clusterArn: string | undefined;
}

export const DEFAULTS = {
  port: 80,
  bindHosts: ['169.254.170.23', '[fd00:ec2::23]'],
  probePort: 2703,
  metricsAddress: '0.0.0.0',
  metricsPort: 2705,
  maxCredentialRetention: '3h',
  maxCacheSize: 2000,
  maxServiceQps: 3,
  negativeCacheTtl: '10s',
  shutdownTimeout: '20s',
  audience: 'pods.eks.amazonaws.com',
  verbosity: 'info',
  stateDir: '/var/lib/pod-identity-agent',
} as const;

/** Thrown with every violation at once, so an operator fixes the manifest in one go. */
export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(`invalid configuration: ${problems.join('; ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

const OPTIONS = {
  'cluster-name': { type: 'string' },
  region: { type: 'string' },
  upstream: { type: 'string' },
  endpoint: { type: 'string' },
  associations: { type: 'string' },
  'associations-configmap': { type: 'string' },
  'cluster-arn': { type: 'string' },
  port: { type: 'string' },
  'bind-hosts': { type: 'string', multiple: true },
  'probe-port': { type: 'string' },
  'metrics-address': { type: 'string' },
  'metrics-port': { type: 'string' },
  'no-metrics': { type: 'boolean' },
  'max-credential-retention-before-renewal': { type: 'string' },
  'max-cache-size': { type: 'string' },
  'max-service-qps': { type: 'string' },
  'negative-cache-ttl': { type: 'string' },
  'shutdown-timeout': { type: 'string' },
  audience: { type: 'string' },
  'token-verification': { type: 'string' },
  'pod-binding': { type: 'string' },
  'node-name': { type: 'string' },
  'state-dir': { type: 'string' },
  'max-client-miss-qps': { type: 'string' },
  'max-client-miss-burst': { type: 'string' },
  'max-upstream-qps': { type: 'string' },
  verbosity: { type: 'string', short: 'v' },
  // Accepted so manifests written for the reference agent keep working; rotation is always on here.
  'rotate-credentials': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export const SERVER_USAGE = `Usage: pod-identity-agent server --cluster-name NAME [flags]

  --cluster-name NAME                        EKS cluster name (required; with --upstream sts, any
                                             name in the same form, sent as the eks-cluster-name tag)
  --region REGION                            AWS region (default: AWS_REGION, then AWS_DEFAULT_REGION)
  --upstream eks-auth|sts                    who grants credentials: EKS Auth (default), or STS
                                             AssumeRole by the agent itself, for clusters outside EKS
  --endpoint URL                             EKS Auth endpoint (default: AWS_ENDPOINT_URL_EKS_AUTH,
                                             AWS_ENDPOINT_URL, then https://eks-auth.REGION.api.aws);
                                             with --upstream sts, the STS endpoint (default: the SDK's,
                                             https://sts.REGION.amazonaws.com or AWS_ENDPOINT_URL_STS)
  --associations FILE                        --upstream sts: associations file (YAML or JSON), re-read
                                             within seconds of a change
  --associations-configmap NAMESPACE/NAME    --upstream sts: associations ConfigMap, watched through
                                             the API server (each data key holds a document)
  --cluster-arn ARN                          --upstream sts: also send the eks-cluster-arn tag
  --port N                                   credentials port (default 80)
  --bind-hosts LIST                          addresses to serve on, repeatable or comma separated
                                             (default 169.254.170.23,[fd00:ec2::23])
  --probe-port N                             /healthz and /readyz on localhost (default 2703)
  --metrics-address ADDR                     metrics listen address (default 0.0.0.0)
  --metrics-port N                           /metrics port (default 2705)
  --no-metrics                               serve no metrics at all
  --max-credential-retention-before-renewal D  renew cached credentials at most this long after
                                             fetching them (default 3h; 0 disables caching)
  --max-cache-size N                         cached identities (default 2000; 0 disables caching)
  --max-service-qps N                        background renewals per second (default 3)
  --negative-cache-ttl D                     how long an upstream refusal of a token is remembered
                                             and repeated without a new call (default 10s; 0 disables)
  --shutdown-timeout D                       on SIGTERM, how long in-flight requests may take before
                                             their connections are cut (default 20s, under the
                                             DaemonSet's 30 s grace period)
  --audience AUD                             token audience required (default pods.eks.amazonaws.com)
  --token-verification MODE                  jwks, tokenreview or none (default: jwks when the API
                                             server is reachable or keys are stored, else none)
  --pod-binding on|off                       refuse tokens of pods not on this node, or replayed from
                                             another address (default: on when tokens are verified)
  --node-name NAME                           this node (default NODE_NAME)
  --state-dir DIR                            where the last good issuer keys are kept
                                             (default /var/lib/pod-identity-agent)
  --max-client-miss-qps N                    misses needing the upstream one source address may start
                                             per second (default 15; hits are never limited)
  --max-client-miss-burst N                  ... in a burst (default 60)
  --max-upstream-qps N                       misses needing the upstream the whole node may start per
                                             second (default 1000)
  -v, --verbosity LEVEL                      0-5 or fatal|error|warn|info|debug|trace (default info)
`;

export interface ParsedServerArgs {
  readonly help: boolean;
  readonly config?: Config;
  readonly warnings: readonly string[];
}

/** Parses `server` flags; throws ConfigError naming every bad flag. */
export function parseServerArgs(argv: readonly string[], env: NodeJS.ProcessEnv): ParsedServerArgs {
  let values: ReturnType<typeof parseFlags>;
  try {
    values = parseFlags(argv);
  } catch (error) {
    throw new ConfigError([(error as Error).message]);
  }
  if (values.help === true) return { help: true, warnings: [] };
  const warnings = values['rotate-credentials'] === true ? ['--rotate-credentials is accepted for compatibility and has no effect: credentials are always renewed'] : [];
  return { help: false, config: buildConfig(values, env), warnings };
}

function parseFlags(argv: readonly string[]) {
  return parseArgs({ args: [...argv], options: OPTIONS, strict: true, allowPositionals: false }).values;
}

function buildConfig(values: ReturnType<typeof parseFlags>, env: NodeJS.ProcessEnv): Config {
  const { problems, check } = collectProblems();

  const clusterName = check(() => parseClusterName(values['cluster-name']));
  const region = check(() => parseRegion(values.region ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION));
  const upstream = check(() => parseChoice('--upstream', values.upstream ?? 'eks-auth', ['eks-auth', 'sts'] as const));
  // Unused with --upstream sts, where EKS Auth's variables must not be able to fail the start-up.
  const endpoint = region === undefined ? undefined : check(() => (upstream === 'sts' ? resolveEndpoint({ flag: undefined, env: {}, region }) : resolveEndpoint({ flag: values.endpoint, env, region })));
  const bindHosts = check(() => parseBindHosts(values['bind-hosts'] ?? DEFAULTS.bindHosts));
  const port = check(() => parsePort('--port', values.port, DEFAULTS.port));
  const probePort = check(() => parsePort('--probe-port', values['probe-port'], DEFAULTS.probePort));
  const metricsAddress = check(() => parseAddress('--metrics-address', values['metrics-address'] ?? DEFAULTS.metricsAddress));
  const metricsPort = check(() => parsePort('--metrics-port', values['metrics-port'], DEFAULTS.metricsPort));
  const retention = check(() => parseDurationFlag('--max-credential-retention-before-renewal', values['max-credential-retention-before-renewal'] ?? DEFAULTS.maxCredentialRetention));
  const maxCacheSize = check(() => parseCount('--max-cache-size', values['max-cache-size'], DEFAULTS.maxCacheSize, 0));
  const maxServiceQps = check(() => parseCount('--max-service-qps', values['max-service-qps'], DEFAULTS.maxServiceQps, 1));
  const shutdownTimeout = check(() => parseDurationFlag('--shutdown-timeout', values['shutdown-timeout'] ?? DEFAULTS.shutdownTimeout));
  const negativeCacheTtl = check(() => parseDurationFlag('--negative-cache-ttl', values['negative-cache-ttl'] ?? DEFAULTS.negativeCacheTtl));
  const audience = check(() => parseAudience(values.audience ?? DEFAULTS.audience));
  const logLevel = check(() => parseVerbosity(values.verbosity ?? DEFAULTS.verbosity));
  const tokenVerification = check(() => parseChoice('--token-verification', values['token-verification'] ?? 'auto', ['auto', 'jwks', 'tokenreview', 'none'] as const));
  const podBinding = check(() => parseChoice('--pod-binding', values['pod-binding'] ?? 'auto', ['auto', 'on', 'off'] as const));
  const perClientPerSecond = check(() => parseCount('--max-client-miss-qps', values['max-client-miss-qps'], DEFAULT_MISS_LIMITS.perClientPerSecond, 1));
  const perClientBurst = check(() => parseCount('--max-client-miss-burst', values['max-client-miss-burst'], DEFAULT_MISS_LIMITS.perClientBurst, 1));
  const nodePerSecond = check(() => parseCount('--max-upstream-qps', values['max-upstream-qps'], DEFAULT_MISS_LIMITS.nodePerSecond, 1));
  const nodeName = values['node-name'] ?? (env.NODE_NAME === '' ? undefined : env.NODE_NAME);
  if (podBinding === 'on' && tokenVerification === 'none') problems.push('--pod-binding on needs verified tokens: not with --token-verification none');
  if (podBinding === 'on' && nodeName === undefined) problems.push('--pod-binding on needs the node name: --node-name or NODE_NAME');
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
    probePort: probePort!,
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
    tokenVerification: tokenVerification!,
    podBinding: podBinding!,
    nodeName,
    stateDir: values['state-dir'] ?? DEFAULTS.stateDir,
    missLimits: Object.freeze({ ...DEFAULT_MISS_LIMITS, perClientPerSecond: perClientPerSecond!, perClientBurst: perClientBurst!, nodePerSecond: nodePerSecond!, nodeBurst: nodePerSecond! }),
  });
}

function parseStsConfig(values: ReturnType<typeof parseFlags>, tokenVerification: Config['tokenVerification'] | undefined, { problems, check }: ReturnType<typeof collectProblems>): StsConfig {
  // Without verification the agent would assume any role for anyone able to write a JWT.
  if (tokenVerification === 'none') problems.push('--upstream sts needs tokens verified locally (--token-verification jwks, tokenreview or auto): with none, anyone could claim any service account\'s role');
  const file = values.associations;
  if (file === '') problems.push('--associations is empty');
  const configMap = values['associations-configmap'] === undefined ? undefined : check(() => parseConfigMapRef(values['associations-configmap']!));
  if (file === undefined && values['associations-configmap'] === undefined) problems.push('--upstream sts needs associations: --associations FILE and/or --associations-configmap NAMESPACE/NAME');
  const endpoint = values.endpoint === undefined ? undefined : check(() => parseEndpointUrl(values.endpoint!, '--endpoint'));
  const clusterArn = values['cluster-arn'] === undefined ? undefined : check(() => parseClusterArn(values['cluster-arn']!));
  return Object.freeze({ endpoint, associations: Object.freeze({ file, configMap }), clusterArn });
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function parseConfigMapRef(value: string): { namespace: string; name: string } {
  const [namespace, name, extra] = value.split('/');
  if (namespace === undefined || name === undefined || extra !== undefined || !DNS_LABEL.test(namespace) || !DNS_SUBDOMAIN.test(name)) {
    throw new Error(`--associations-configmap: "${value}" is not NAMESPACE/NAME`);
  }
  return Object.freeze({ namespace, name });
}

const CLUSTER_ARN = /^arn:aws[a-z-]*:eks:[a-z0-9-]+:\d{12}:cluster\/[0-9A-Za-z][A-Za-z0-9_-]{0,99}$/;

function parseClusterArn(value: string): string {
  if (!CLUSTER_ARN.test(value)) throw new Error(`--cluster-arn: "${value}" is not an EKS cluster ARN (arn:aws:eks:REGION:ACCOUNT:cluster/NAME)`);
  return value;
}

/** Runs each parse, recording its error instead of stopping at the first, so every bad flag is named at once. */
function collectProblems(): { problems: string[]; check: <T>(parse: () => T) => T | undefined } {
  const problems: string[] = [];
  const check = <T>(parse: () => T): T | undefined => {
    try {
      return parse();
    } catch (error) {
      problems.push((error as Error).message);
      return undefined;
    }
  };
  return { problems, check };
}

const CLUSTER_NAME = /^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$/;

function parseClusterName(value: string | undefined): string {
  if (value === undefined || value === '') throw new Error('--cluster-name is required');
  if (!CLUSTER_NAME.test(value)) {
    throw new Error(`--cluster-name "${value}" is not a valid EKS cluster name (1-100 characters: letters, digits, - and _, starting with a letter or digit)`);
  }
  return value;
}

const REGION = /^[a-z]{2,4}(-[a-z]+)+-\d{1,2}$/;

function parseRegion(value: string | undefined): string {
  if (value === undefined || value === '') throw new Error('no region: set --region, AWS_REGION or AWS_DEFAULT_REGION');
  if (!REGION.test(value)) throw new Error(`region "${value}" is not an AWS region name (like us-west-2)`);
  return value;
}

function parseBindHosts(values: readonly string[]): string[] {
  const hosts = values.flatMap((value) => value.split(',')).map((host) => host.trim()).filter((host) => host !== '');
  if (hosts.length === 0) throw new Error('--bind-hosts is empty');
  const unbracketed = hosts.map((host) => parseAddress('--bind-hosts', host));
  return [...new Set(unbracketed)];
}

/** An IP literal, IPv6 with or without brackets, returned without brackets. */
function parseAddress(flag: string, value: string): string {
  const bare = value.startsWith('[') && value.endsWith(']') ? value.slice(1, -1) : value;
  if (isIP(bare) === 0) throw new Error(`${flag}: "${value}" is not an IP address`);
  return bare;
}

function parsePort(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  // 0 asks the kernel for a free port: useful for tests, never a production setting.
  if (!/^\d{1,5}$/.test(value) || Number(value) > 65535) throw new Error(`${flag}: "${value}" is not a port number (0-65535)`);
  return Number(value);
}

function parseCount(flag: string, value: string | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  if (!/^\d{1,9}$/.test(value) || Number(value) < min) throw new Error(`${flag}: "${value}" is not a whole number >= ${min}`);
  return Number(value);
}

function parseDurationFlag(flag: string, value: string): number {
  const ms = parseDuration(value);
  if (ms === undefined) throw new Error(`${flag}: "${value}" is not a duration (like 3h, 90m or 45s)`);
  return ms;
}

function parseAudience(value: string): string {
  if (value.trim() === '') throw new Error('--audience is empty');
  return value;
}

function parseChoice<T extends string>(flag: string, value: string, choices: readonly T[]): T {
  const choice = choices.find((candidate) => candidate === value);
  if (choice === undefined) throw new Error(`${flag}: "${value}" is not one of ${choices.join(', ')}`);
  return choice;
}

const LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'];

/** The reference takes a number; names are accepted too. 0 is the quietest. */
function parseVerbosity(value: string): LogLevel {
  if (/^\d+$/.test(value)) return LEVELS[Math.min(Number(value), LEVELS.length - 1)] as LogLevel;
  const level = LEVELS.find((name) => name === value.toLowerCase());
  if (level === undefined) throw new Error(`--verbosity: "${value}" is not 0-5 or one of ${LEVELS.join(', ')}`);
  return level;
}

/** `initialize`: flags for the node set-up. */
export interface InitializeConfig {
  readonly ipv6: boolean;
  readonly linkType: 'auto' | 'dummy' | 'veth';
  readonly redirectPort: number | undefined;
  readonly watch: boolean;
  readonly logLevel: LogLevel;
}

export const INITIALIZE_USAGE = `Usage: pod-identity-agent initialize [flags]

Gives this node the link pod-id-link0 with 169.254.170.23/32 and fd00:ec2::23/128 and routes to them.
Idempotent; needs NET_ADMIN only.

  --no-ipv6                 skip fd00:ec2::23
  --link-type TYPE          auto (dummy, else a veth pair where the kernel has no dummy), dummy or veth
  --redirect-port N         redirect TCP port 80 of the addresses to N (nftables), for an agent that
                            runs unprivileged on port N
  --watch                   keep the node's set-up in place for as long as this runs, repairing what other programs remove (until SIGTERM)
  -v, --verbosity LEVEL     as for server
`;

export function parseInitializeArgs(argv: readonly string[]): { help: boolean; config?: InitializeConfig } {
  let values;
  try {
    values = parseArgs({
      args: [...argv],
      options: {
        'no-ipv6': { type: 'boolean' },
        'link-type': { type: 'string' },
        'redirect-port': { type: 'string' },
        watch: { type: 'boolean' },
        verbosity: { type: 'string', short: 'v' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    throw new ConfigError([(error as Error).message]);
  }
  if (values.help === true) return { help: true };
  const { problems, check } = collectProblems();
  const linkType = check(() => parseChoice('--link-type', values['link-type'] ?? 'auto', ['auto', 'dummy', 'veth'] as const));
  const redirectPort = check(() => {
    if (values['redirect-port'] === undefined) return undefined;
    const port = parsePort('--redirect-port', values['redirect-port'], 0);
    if (port === 0 || port === 80) throw new Error('--redirect-port must be a port other than 0 and 80');
    return port;
  });
  const logLevel = check(() => parseVerbosity(values.verbosity ?? DEFAULTS.verbosity));
  if (problems.length > 0) throw new ConfigError(problems);
  return { help: false, config: Object.freeze({ ipv6: values['no-ipv6'] !== true, linkType: linkType!, redirectPort, watch: values.watch === true, logLevel: logLevel! }) };
}
