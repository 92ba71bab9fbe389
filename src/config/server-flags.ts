import { DEFAULT_MISS_LIMITS } from '../cache/miss-limiter.ts';
import type { FlagTable } from './flag-table.ts';
import {
  choice,
  count,
  parseAddress,
  parseAudience,
  parseBindHosts,
  parseClusterArn,
  parseClusterName,
  parseConfigMapRef,
  parseDurationFlag,
  parsePort,
  parseRegion,
  parseVerbosity,
} from './values.ts';

/**
 * `server`'s flags: the reference agent's names and defaults, plus this agent's own. In the README's
 * order; test/flag-table.test.ts holds the README's table to this one.
 */
export const SERVER_FLAGS = {
  'cluster-name': {
    type: 'string',
    value: 'NAME',
    required: '--cluster-name is required',
    help: 'EKS cluster name; with --upstream sts, any name in the same form, sent as the eks-cluster-name tag',
    parse: parseClusterName,
  },
  region: {
    type: 'string',
    value: 'REGION',
    defaultText: 'AWS_REGION, then AWS_DEFAULT_REGION',
    required: 'no region: set --region, AWS_REGION or AWS_DEFAULT_REGION',
    help: 'AWS region',
    parse: parseRegion,
  },
  upstream: {
    type: 'string',
    value: 'eks-auth|sts',
    default: 'eks-auth',
    help: 'who grants credentials: EKS Auth, or STS AssumeRole by the agent itself, for clusters outside EKS',
    parse: choice(['eks-auth', 'sts'] as const),
  },
  // No parser: which endpoint it names, and what else is consulted, depends on --upstream.
  endpoint: {
    type: 'string',
    value: 'URL',
    defaultText: 'AWS_ENDPOINT_URL_EKS_AUTH, then AWS_ENDPOINT_URL, then https://eks-auth.REGION.api.aws',
    help: 'EKS Auth endpoint; with --upstream sts, the STS endpoint, by default the SDK\'s (https://sts.REGION.amazonaws.com or AWS_ENDPOINT_URL_STS); for EKS Auth',
  },
  associations: {
    type: 'string',
    value: 'FILE',
    help: '--upstream sts: associations file (YAML or JSON), re-read within seconds of a change',
  },
  'associations-configmap': {
    type: 'string',
    value: 'NAMESPACE/NAME',
    help: '--upstream sts: associations ConfigMap, watched through the API server (each data key holds a document)',
    parse: parseConfigMapRef,
  },
  'cluster-arn': { type: 'string', value: 'ARN', help: '--upstream sts: also send the eks-cluster-arn tag', parse: parseClusterArn },
  port: { type: 'string', value: 'N', default: '80', help: 'credentials port', parse: parsePort },
  'pod-port': {
    type: 'string',
    value: 'N',
    defaultText: 'the --port',
    help: 'the port pods connect to, when the node redirects it to --port; /readyz checks each bind host there',
    parse: parsePort,
  },
  'bind-hosts': {
    type: 'string',
    multiple: true,
    value: 'LIST',
    default: ['169.254.170.23', '[fd00:ec2::23]'],
    help: 'addresses to serve on, repeatable or comma separated',
    parse: parseBindHosts,
  },
  'probe-port': { type: 'string', value: 'N', default: '2703', help: '/healthz and /readyz on localhost', parse: parsePort },
  'metrics-address': { type: 'string', value: 'ADDR', default: '0.0.0.0', help: 'metrics listen address', parse: parseAddress },
  'metrics-port': { type: 'string', value: 'N', default: '2705', help: '/metrics port', parse: parsePort },
  'no-metrics': { type: 'boolean', help: 'serve no metrics at all' },
  'max-credential-retention-before-renewal': {
    type: 'string',
    value: 'D',
    default: '3h',
    help: 'renew cached credentials at most this long after fetching them (0 disables caching)',
    parse: parseDurationFlag,
  },
  'max-cache-size': { type: 'string', value: 'N', default: '2000', help: 'cached identities (0 disables caching)', parse: count(0) },
  'max-service-qps': { type: 'string', value: 'N', default: '3', help: 'background renewals per second', parse: count(1) },
  'negative-cache-ttl': {
    type: 'string',
    value: 'D',
    default: '10s',
    help: 'how long an upstream refusal of a token is remembered and repeated without a new call (0 disables)',
    parse: parseDurationFlag,
  },
  audience: { type: 'string', value: 'AUD', default: 'pods.eks.amazonaws.com', help: 'token audience required', parse: parseAudience },
  'token-verification': {
    type: 'string',
    value: 'MODE',
    default: 'auto',
    defaultText: 'jwks if the API server answers (or keys are stored), else none',
    help: 'jwks, tokenreview or none',
    parse: choice(['auto', 'jwks', 'tokenreview', 'none'] as const),
  },
  'pod-binding': {
    type: 'string',
    value: 'on|off',
    default: 'auto',
    defaultText: 'on when tokens are verified and the node name is known',
    help: 'refuse tokens of pods not on this node, or replayed from another address',
    parse: choice(['auto', 'on', 'off'] as const),
  },
  'node-name': { type: 'string', value: 'NAME', defaultText: 'NODE_NAME', help: 'this node' },
  'state-dir': { type: 'string', value: 'DIR', default: '/var/lib/pod-identity-agent', help: 'where the last good issuer keys are kept' },
  'max-client-miss-qps': {
    type: 'string',
    value: 'N',
    default: String(DEFAULT_MISS_LIMITS.perClientPerSecond),
    help: 'misses needing the upstream one source address may start per second; hits are never limited',
    parse: count(1),
  },
  'max-client-miss-burst': { type: 'string', value: 'N', default: String(DEFAULT_MISS_LIMITS.perClientBurst), help: '... in a burst', parse: count(1) },
  'max-upstream-qps': {
    type: 'string',
    value: 'N',
    default: String(DEFAULT_MISS_LIMITS.nodePerSecond),
    help: 'misses needing the upstream the whole node may start per second',
    parse: count(1),
  },
  'shutdown-timeout': {
    type: 'string',
    value: 'D',
    default: '20s',
    help: 'on SIGTERM, how long in-flight requests may take before their connections are cut; keep it under the DaemonSet\'s 30 s grace period',
    parse: parseDurationFlag,
  },
  'log-every-request': {
    type: 'boolean',
    help: 'an info line for every request, cache hits included; by default hits are summarised, one line per identity per minute with their count',
  },
  verbosity: { type: 'string', short: 'v', value: 'LEVEL', default: 'info', help: '0-5 or fatal|error|warn|info|debug|trace', parse: parseVerbosity },
  // Accepted so manifests written for the reference agent keep working; rotation is always on here.
  'rotate-credentials': { type: 'boolean', help: 'accepted for compatibility; has no effect (renewal is always on)' },
} as const satisfies FlagTable;
