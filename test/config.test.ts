import { readFile } from 'node:fs/promises';
import t from 'tap';
import { parse } from 'yaml';
import { ConfigError, parseServerArgs } from '../src/config/index.ts';
import { EXAMPLE_CLUSTER_NAME } from '../src/config/server-config.ts';
import { formatDuration, parseDuration } from '../src/duration.ts';

const env = { AWS_REGION: 'us-west-2' };

function configOf(argv: string[], environment: NodeJS.ProcessEnv = env) {
  const parsed = parseServerArgs(argv, environment);
  if (parsed.config === undefined) throw new Error('expected a config');
  return parsed.config;
}

function problemsOf(argv: string[], environment: NodeJS.ProcessEnv = env): readonly string[] {
  try {
    parseServerArgs(argv, environment);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

t.test('defaults match the reference agent', async (t) => {
  const config = configOf(['--cluster-name', 'c1']);
  t.same(config.bindHosts, ['169.254.170.23', 'fd00:ec2::23']);
  t.equal(config.port, 80);
  t.equal(config.probePort, 2703);
  t.equal(config.metricsAddress, '0.0.0.0');
  t.equal(config.metricsPort, 2705);
  t.equal(config.maxCredentialRetentionMs, 3 * 3600_000);
  t.equal(config.maxCacheSize, 2000);
  t.equal(config.maxServiceQps, 3);
  t.equal(config.audience, 'pods.eks.amazonaws.com');
  t.equal(config.negativeCacheTtlMs, 10_000);
  t.equal(config.shutdownTimeoutMs, 20_000);
  t.equal(config.logLevel, 'info');
  t.equal(config.endpoint.url.href, 'https://eks-auth.us-west-2.api.aws/');
  t.equal(config.endpoint.source, 'region');
  t.ok(Object.isFrozen(config));
});

t.test('bind hosts: repeatable, comma separated, brackets optional, duplicates folded', async (t) => {
  const config = configOf(['--cluster-name=c1', '--bind-hosts', '127.0.0.1,[::1]', '--bind-hosts=::1', '--bind-hosts', '169.254.170.23']);
  t.same(config.bindHosts, ['127.0.0.1', '::1', '169.254.170.23']);
});

t.test('endpoint precedence: flag, AWS_ENDPOINT_URL_EKS_AUTH, AWS_ENDPOINT_URL, partition default', async (t) => {
  const all = { ...env, AWS_ENDPOINT_URL_EKS_AUTH: 'http://127.0.0.1:1', AWS_ENDPOINT_URL: 'http://127.0.0.1:2' };
  t.equal(configOf(['--cluster-name', 'c1', '--endpoint', 'http://127.0.0.1:3'], all).endpoint.url.port, '3');
  t.equal(configOf(['--cluster-name', 'c1'], all).endpoint.source, 'AWS_ENDPOINT_URL_EKS_AUTH');
  t.equal(configOf(['--cluster-name', 'c1'], { ...env, AWS_ENDPOINT_URL: 'http://127.0.0.1:2' }).endpoint.source, 'AWS_ENDPOINT_URL');
  t.equal(configOf(['--cluster-name', 'c1', '--region', 'cn-north-1']).endpoint.url.host, 'eks-auth.cn-north-1.api.amazonwebservices.com.cn');
  t.equal(configOf(['--cluster-name', 'c1'], { ...env, AWS_USE_FIPS_ENDPOINT: 'true' }).endpoint.url.host, 'eks-auth-fips.us-west-2.api.aws');
});

t.test('region: flag, then AWS_REGION, then AWS_DEFAULT_REGION', async (t) => {
  t.equal(configOf(['--cluster-name', 'c1', '--region', 'eu-west-1']).region, 'eu-west-1');
  t.equal(configOf(['--cluster-name', 'c1'], { AWS_DEFAULT_REGION: 'ap-south-1' }).region, 'ap-south-1');
  t.equal(configOf(['--cluster-name', 'c1'], { AWS_REGION: 'us-east-1', AWS_DEFAULT_REGION: 'ap-south-1' }).region, 'us-east-1');
});

t.test('every bad flag is named at once', async (t) => {
  const problems = problemsOf(['--cluster-name=-bad', '--port', '99999', '--probe-port', 'x', '--max-credential-retention-before-renewal', '3 hours', '--bind-hosts', 'example.com', '--max-cache-size=-1', '-v', 'loud'], {});
  t.match(problems.join('\n'), /--cluster-name "-bad" is not a valid EKS cluster name/);
  t.match(problems.join('\n'), /no region/);
  t.match(problems.join('\n'), /--port: "99999" is not a port number/);
  t.match(problems.join('\n'), /--probe-port: "x"/);
  t.match(problems.join('\n'), /"3 hours" is not a duration/);
  t.match(problems.join('\n'), /--bind-hosts: "example.com" is not an IP address/);
  t.match(problems.join('\n'), /--max-cache-size: "-1"/);
  t.match(problems.join('\n'), /--verbosity: "loud"/);
});

t.test('missing cluster name, long cluster name, unknown flag, bad endpoint', async (t) => {
  t.match(problemsOf([]), ['--cluster-name is required']);
  t.match(problemsOf(['--cluster-name', 'a'.repeat(101)]), [/not a valid EKS cluster name/]);
  t.ok(configOf(['--cluster-name', 'a'.repeat(100)]));
  t.match(problemsOf(['--cluster-name', 'c1', '--colour', 'red']), [/Unknown option '--colour'/]);
  t.match(problemsOf(['--cluster-name', 'c1', '--endpoint', 'ftp://x']), [/must be an http or https URL/]);
  t.match(problemsOf(['--cluster-name', 'c1', '--endpoint', 'not a url']), [/is not a URL/]);
  t.same(problemsOf(['--cluster-name', '']), ['--cluster-name is required'], 'an empty name counts as none');
  t.same(problemsOf(['--cluster-name', 'c1', '--region', '']), ['no region: set --region, AWS_REGION or AWS_DEFAULT_REGION'], 'an empty region too, whatever the environment says');
  t.same(problemsOf(['--cluster-name', 'c1'], { AWS_REGION: 'us-west-2x' }), ['region "us-west-2x" is not an AWS region name (like us-west-2)']);
});

t.test('the example overlay\'s placeholders do not start: the cluster name refused, the region not a region', async (t) => {
  // The values daemonset/example ships, as its copy renders them when nobody filled them in.
  const example = parse(await readFile(new URL('../daemonset/example/kustomization.yaml', import.meta.url), 'utf8')) as { configMapGenerator: { name: string; literals: string[] }[] };
  const literals = example.configMapGenerator.find((generator) => generator.name === 'pod-identity-agent-settings')?.literals ?? [];
  const settings = Object.fromEntries(literals.map((literal) => literal.split('=', 2) as [string, string]));
  t.equal(settings.CLUSTER_NAME, EXAMPLE_CLUSTER_NAME, 'the agent knows the example\'s cluster name');
  const placeholder = problemsOf(['--cluster-name', settings.CLUSTER_NAME!], { AWS_REGION: 'us-west-2' });
  t.same(placeholder, [`--cluster-name "${EXAMPLE_CLUSTER_NAME}" is the example overlay's placeholder: set CLUSTER_NAME in your overlay's pod-identity-agent-settings to the cluster's name`]);
  t.same(problemsOf(['--cluster-name', 'c1'], { AWS_REGION: settings.AWS_REGION }), [`region "${settings.AWS_REGION}" is not an AWS region name (like us-west-2)`]);
  t.equal(problemsOf(['--cluster-name', settings.CLUSTER_NAME!], { AWS_REGION: settings.AWS_REGION }).length, 2, 'both at once, in one line');
  for (const region of ['us-east-1', 'us-gov-west-1', 'cn-northwest-1', 'eu-central-2', 'ap-southeast-7', 'il-central-1', 'mx-central-1', 'us-isob-east-1', 'eusc-de-east-1']) {
    t.equal(configOf(['--cluster-name', 'c1', '--region', region]).region, region, `${region}: a region`);
  }
  for (const region of ['us-west', 'US-WEST-2', 'us_west_2', 'uswest2', 'us-west-2 ', 'eks-auth.us-west-2.api.aws', 'REGION']) {
    t.match(problemsOf(['--cluster-name', 'c1', '--region', region]), [/is not an AWS region name/], `${JSON.stringify(region)}: not a region`);
  }
});

t.test('node name: flag, then NODE_NAME; pod binding on needs one and verified tokens', async (t) => {
  t.equal(configOf(['--cluster-name', 'c1']).nodeName, undefined);
  t.equal(configOf(['--cluster-name', 'c1'], { ...env, NODE_NAME: 'n1' }).nodeName, 'n1');
  t.equal(configOf(['--cluster-name', 'c1', '--node-name', 'n2'], { ...env, NODE_NAME: 'n1' }).nodeName, 'n2');
  t.equal(configOf(['--cluster-name', 'c1', '--pod-binding', 'on'], { ...env, NODE_NAME: 'n1' }).podBinding, 'on');
  t.same(problemsOf(['--cluster-name', 'c1', '--pod-binding', 'on', '--token-verification', 'none'], { ...env, NODE_NAME: '' }), [
    '--pod-binding on needs verified tokens: not with --token-verification none',
    '--pod-binding on needs the node name: --node-name or NODE_NAME',
  ]);
  t.equal(configOf(['--cluster-name', 'c1']).tokenVerification, 'auto');
  t.equal(configOf(['--cluster-name', 'c1']).podBinding, 'auto');
  t.equal(configOf(['--cluster-name', 'c1']).stateDir, '/var/lib/pod-identity-agent');
  t.same(configOf(['--cluster-name', 'c1']).missLimits, { perIdentityPerSecond: 1, perIdentityBurst: 5, perClientPerSecond: 15, perClientBurst: 60, nodePerSecond: 1000, nodeBurst: 1000 });
  t.equal(configOf(['--cluster-name', 'c1', '--no-metrics']).metrics, false);
  t.equal(configOf(['--cluster-name', 'c1']).metrics, true);
});

t.test('verbosity: numbers like the reference, or level names', async (t) => {
  t.equal(configOf(['--cluster-name', 'c1', '-v', '0']).logLevel, 'fatal');
  t.equal(configOf(['--cluster-name', 'c1', '-v', '4']).logLevel, 'debug');
  t.equal(configOf(['--cluster-name', 'c1', '--verbosity', 'TRACE']).logLevel, 'trace');
});

t.test('--rotate-credentials is accepted with a warning; --help asks for usage', async (t) => {
  const parsed = parseServerArgs(['--cluster-name', 'c1', '--rotate-credentials'], env);
  t.match(parsed.warnings, [/no effect/]);
  t.equal(parseServerArgs(['--help'], {}).help, true);
});

t.test('Go-style durations', async (t) => {
  t.equal(parseDuration('3h'), 10_800_000);
  t.equal(parseDuration('1h30m'), 5_400_000);
  t.equal(parseDuration('1.5h'), 5_400_000);
  t.equal(parseDuration('90s'), 90_000);
  t.equal(parseDuration('250ms'), 250);
  t.equal(parseDuration('0'), 0);
  t.equal(parseDuration('0s'), 0);
  for (const bad of ['', '3', 'h', '-3h', '3 h', '3hours', '1h 30m']) t.equal(parseDuration(bad), undefined, bad);
  t.equal(formatDuration(10_800_000), '3h');
  t.equal(formatDuration(5_400_000), '1h30m');
  t.equal(formatDuration(1500), '1s500ms');
  t.equal(formatDuration(0), '0ms');
});

t.test('initialize flags: defaults, and every bad flag named at once', async (t) => {
  const { parseInitializeArgs } = await import('../src/config/index.ts');
  t.same(parseInitializeArgs([]).config, { ipv6: true, linkType: 'auto', redirectPort: undefined, procSys: '/proc/sys', watch: false, handoverDir: undefined, remove: false, logLevel: 'info' });
  t.same(parseInitializeArgs(['--no-ipv6', '--link-type', 'veth', '--redirect-port', '2704', '--watch', '--handover-dir', '/run/h']).config, { ipv6: false, linkType: 'veth', redirectPort: 2704, procSys: '/proc/sys', watch: true, handoverDir: '/run/h', remove: false, logLevel: 'info' });
  t.equal(parseInitializeArgs(['--remove']).config?.remove, true);
  const problems = (args: string[]): readonly string[] => {
    try {
      parseInitializeArgs(args);
      return [];
    } catch (error) {
      return (error as ConfigError).problems;
    }
  };
  t.same(problems(['--remove', '--watch']), ['--remove and --watch: one or the other']);
  t.match(problems(['--handover-dir', '/run/h', '--redirect-port', '2704']), [/--handover-dir: only with --watch/]);
  t.match(problems(['--handover-dir', '/run/h', '--watch']), [/--handover-dir: needs --redirect-port/]);
  t.ok(Object.isFrozen(parseInitializeArgs([]).config));
  t.equal(parseInitializeArgs(['-h']).help, true);
  try {
    parseInitializeArgs(['--link-type', 'bridge', '--redirect-port', '80', '-v', 'loud']);
    t.fail('expected a ConfigError');
  } catch (error) {
    t.match((error as ConfigError).problems, [/--link-type: "bridge"/, /other than 0 and 80/, /--verbosity: "loud"/]);
  }
});

t.test('--upstream sts: associations, endpoint and cluster ARN; verification required', async (t) => {
  t.equal(configOf(['--cluster-name', 'c1']).upstream, 'eks-auth', 'EKS Auth stays the default');
  t.equal(configOf(['--cluster-name', 'c1']).sts, undefined);
  const config = configOf(['--cluster-name', 'k3s-lab', '--upstream', 'sts', '--associations', '/etc/pia/associations.yaml', '--associations-configmap', 'kube-system/pod-identity-associations', '--cluster-arn', 'arn:aws:eks:us-west-2:111122223333:cluster/k3s-lab', '--endpoint', 'http://127.0.0.1:4566']);
  t.equal(config.upstream, 'sts');
  t.same(config.sts?.associations, { file: '/etc/pia/associations.yaml', configMap: { namespace: 'kube-system', name: 'pod-identity-associations' } });
  t.equal(config.sts?.clusterArn, 'arn:aws:eks:us-west-2:111122223333:cluster/k3s-lab');
  t.equal(config.sts?.endpoint?.href, 'http://127.0.0.1:4566/', '--endpoint names the STS endpoint in this mode');
  t.equal(config.endpoint.source, 'region', 'and not EKS Auth\'s');
  t.equal(configOf(['--cluster-name', 'c1', '--upstream', 'sts', '--associations', 'a.yaml']).sts?.endpoint, undefined, 'no --endpoint: the SDK resolves STS (AWS_ENDPOINT_URL_STS included)');
  t.ok(configOf(['--cluster-name', 'c1', '--upstream', 'sts', '--associations', 'a.yaml'], { ...env, AWS_ENDPOINT_URL_EKS_AUTH: 'not a url' }), 'EKS Auth\'s variables do not matter in this mode');

  t.same(problemsOf(['--cluster-name', 'c1', '--upstream', 'sts', '--token-verification', 'none', '--associations', 'a.yaml']), [
    '--upstream sts needs tokens verified locally (--token-verification jwks, tokenreview or auto): with none, anyone could claim any service account\'s role',
  ]);
  t.same(problemsOf(['--cluster-name', 'c1', '--upstream', 'sts', '--associations-configmap', 'nope', '--cluster-arn', 'arn:aws:iam::111122223333:role/x', '--endpoint', 'ftp://x']), [
    '--associations-configmap: "nope" is not NAMESPACE/NAME',
    '--endpoint: "ftp://x" must be an http or https URL',
    '--cluster-arn: "arn:aws:iam::111122223333:role/x" is not an EKS cluster ARN (arn:aws:eks:REGION:ACCOUNT:cluster/NAME)',
  ]);
  t.same(problemsOf(['--cluster-name', 'c1', '--upstream', 'sts']), ['--upstream sts needs associations: --associations FILE and/or --associations-configmap NAMESPACE/NAME']);
  t.same(problemsOf(['--cluster-name', 'c1', '--upstream', 'iam']), ['--upstream: "iam" is not one of eks-auth, sts']);
  t.same(problemsOf(['--cluster-name', 'c1', '--associations', 'a.yaml', '--cluster-arn', 'arn:aws:eks:us-west-2:111122223333:cluster/c1']), ['--associations applies only with --upstream sts', '--cluster-arn applies only with --upstream sts']);
});
