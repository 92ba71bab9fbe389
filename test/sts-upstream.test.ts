import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fromHttp } from '@aws-sdk/credential-providers';
import t from 'tap';
import { createTokenIssuer } from './emulator/token-issuer.ts';
import { roleSessionName } from '../src/upstream/sts-client.ts';
import { resettingServer } from './helpers/local-servers.ts';
import { APP_ROLE, eventually, startStsCluster } from './helpers/sts-cluster.ts';

// Short backoff, and time limits no loaded machine reaches: these tests count STS calls, and a slow
// answer must not become an extra attempt.
const FAST_RETRY = { maxAttempts: 3, attemptTimeoutMs: 30_000, budgetMs: 60_000, backoffBaseMs: 5, backoffCapMs: 20 };
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}/;

t.test('AssumeRole with EKS\'s session name and transitive session tags; the pod gets the role\'s credentials', async (t) => {
  const policy = { Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: 's3:GetObject', Resource: '*' }] };
  const fixed = Date.now();
  const c = await startStsCluster(t, {
    associations: [{ namespace: 'default', serviceAccount: 'app', roleArn: APP_ROLE, externalId: 'lab-app-7', sessionDuration: '2h', policy }],
    roles: { [APP_ROLE]: { externalId: 'lab-app-7', maxSessionDurationSeconds: 4 * 3600 } },
    // STS's clock stands still (close to the real one, for SigV4): the expiry it grants is exact.
    stsNow: () => fixed,
  });
  const pod = c.addPod('web-5f7c9');
  const reply = await c.request(pod);
  t.equal(reply.status, 200, String(reply.json?.Code ?? 'credentials'));
  t.equal(c.sts.callCount, 1);
  const call = c.sts.calls[0]!;
  t.match(call, { status: 200, roleArn: APP_ROLE, durationSeconds: 7200, externalId: 'lab-app-7', policy: JSON.stringify(policy), accessKeyId: 'AKIANODEEXAMPLE00001' });
  t.match(call.roleSessionName, new RegExp(`^eks-lab-web-5f7c9-${UUID.source}$`), 'eks-<cluster>-<pod>-<uuid>');
  t.same(call.tags, [
    { key: 'eks-cluster-name', value: 'lab' },
    { key: 'kubernetes-namespace', value: 'default' },
    { key: 'kubernetes-service-account', value: 'app' },
    { key: 'kubernetes-pod-name', value: 'web-5f7c9' },
    { key: 'kubernetes-pod-uid', value: 'uid-web-5f7c9' },
  ]);
  t.same(call.transitiveTagKeys, call.tags.map((tag) => tag.key), 'every tag transitive, as EKS makes them');
  t.match(reply.json, { AccountId: '111122223333', AccessKeyId: /^ASIA/ });
  t.equal(Date.parse(reply.json!.Expiration as string), Math.floor(fixed / 1000) * 1000 + 7200_000, 'the association\'s session duration, 2 h');

  t.equal((await c.request(pod)).json?.AccessKeyId, reply.json?.AccessKeyId, 'the same cache as EKS Auth\'s: a hit');
  t.equal(c.sts.callCount, 1);
  const scrape = await c.agent.metrics.registry.metrics();
  t.match(scrape, /pod_identity_upstream_request_duration_seconds_count\{code="200"\} 1/);
  t.match(scrape, /pod_identity_associations\{source="file",state="valid"\} 1/);
  t.match(c.audit.lines.find((l) => l.msg === 'credential request'), { status: 200, cache: 'miss' });
});

t.test('the real JS SDK reads the STS-backed credentials like EKS Pod Identity ones', async (t) => {
  const c = await startStsCluster(t, { associations: [{ namespace: 'default', serviceAccount: 'app', roleArn: APP_ROLE }] });
  const pod = c.addPod('sdk-pod');
  t.equal((await c.request(pod)).status, 200, 'the pod is listed');
  const credentials = await fromHttp({ awsContainerCredentialsFullUri: c.credentialsUrl, awsContainerAuthorizationToken: await c.token(pod) })();
  t.match(credentials.accessKeyId, /^ASIA/);
  t.ok(credentials.expiration !== undefined && credentials.expiration.getTime() > Date.now() + 50 * 60_000, 'an hour, STS\'s default');
});

const run = promisify(execFile);
const botocore = await run('python3', ['-c', 'import botocore; print(botocore.__version__)']).then(
  ({ stdout }) => stdout.trim(),
  () => undefined,
);

t.test(`botocore ${botocore ?? ''} reads the STS-backed credentials too`, { skip: botocore === undefined ? 'python3 with botocore is not installed' : false }, async (t) => {
  const c = await startStsCluster(t, { associations: [{ namespace: 'default', serviceAccount: 'app', roleArn: APP_ROLE }] });
  const pod = c.addPod('py-pod');
  t.equal((await c.request(pod)).status, 200, 'the pod is listed');
  const token = await c.token(pod);
  const env = { PATH: process.env.PATH ?? '', HOME: '/nonexistent', AWS_CONTAINER_CREDENTIALS_FULL_URI: c.credentialsUrl, AWS_CONTAINER_AUTHORIZATION_TOKEN: token, AWS_EC2_METADATA_DISABLED: 'true' };
  const script = [
    'import json, botocore.session',
    'c = botocore.session.get_session().get_credentials()',
    'f = c.get_frozen_credentials()',
    'print(json.dumps({"method": c.method, "access_key": f.access_key, "has_token": bool(f.token)}))',
  ].join('\n');
  const { stdout } = await run('python3', ['-c', script], { env });
  t.match(JSON.parse(stdout), { method: 'container-role', access_key: /^ASIA/, has_token: true });
});

t.test('disableSessionTags sends no tags; --cluster-arn adds eks-cluster-arn', async (t) => {
  const other = 'arn:aws:iam::111122223333:role/other';
  const c = await startStsCluster(t, {
    associations: [
      { namespace: 'default', serviceAccount: 'app', roleArn: APP_ROLE },
      { namespace: 'default', serviceAccount: 'quiet', roleArn: other, disableSessionTags: true },
    ],
    roles: { [APP_ROLE]: {}, [other]: { allowTags: false } },
    args: ['--cluster-arn', 'arn:aws:eks:us-west-2:111122223333:cluster/lab'],
  });
  t.equal((await c.request(c.addPod('tagged'))).status, 200);
  t.same(c.sts.calls[0]?.tags[0], { key: 'eks-cluster-arn', value: 'arn:aws:eks:us-west-2:111122223333:cluster/lab' });
  t.equal(c.sts.calls[0]?.tags.length, 6, 'all six of EKS\'s tags');
  t.equal((await c.request(c.addPod('untagged', 'quiet'))).status, 200, 'a role that does not allow sts:TagSession works without tags');
  t.same(c.sts.calls[1]?.tags, []);
  t.same(c.sts.calls[1]?.transitiveTagKeys, []);
});

t.test('no association: 404 ResourceNotFoundException like EKS Auth, without calling STS', async (t) => {
  const c = await startStsCluster(t, { associations: [{ namespace: 'default', serviceAccount: 'app', roleArn: APP_ROLE }] });
  const reply = await c.request(c.addPod('lonely', 'unassociated'));
  t.equal(reply.status, 404);
  t.same(reply.json, { Code: 'ResourceNotFoundException', Message: 'no pod identity association for service account default/unassociated in cluster lab' });
  t.equal(c.sts.callCount, 0);
  t.equal((await c.request(c.addPod('lonely-2', 'app', 'other-ns'))).json?.Code, 'ResourceNotFoundException', 'the namespace is part of the match');
});

t.test('an unverified token is refused before any association is looked up or STS called', async (t) => {
  const c = await startStsCluster(t, { associations: [{ namespace: 'default', serviceAccount: 'app', roleArn: APP_ROLE }] });
  const pod = c.addPod('web');
  t.equal((await c.request(pod)).status, 200, 'the real token works');
  const forger = await createTokenIssuer();
  const forged = await forger.issue({ namespace: 'default', serviceAccount: 'app', podName: 'web', podUid: 'uid-web' });
  c.audit.secrets.add(forged);
  const reply = await c.send({ authorization: forged });
  t.equal(reply.status, 401);
  t.equal(reply.json?.Code, 'TokenSignatureInvalid');
  t.equal(c.sts.callCount, 1, 'only the real token reached STS');
});

t.test('STS throttling is retried and then answered as EKS Auth\'s ThrottlingException 429', async (t) => {
  const c = await startStsCluster(t, { associations: [{ namespace: 'default', serviceAccount: 'app', roleArn: APP_ROLE }], retry: FAST_RETRY });
  const pod = c.addPod('web');
  c.sts.inject({ kind: 'error', status: 400, code: 'Throttling', message: 'Rate exceeded' }, 1);
  t.equal((await c.request(pod)).status, 200, 'one throttled attempt, then success');
  t.equal(c.sts.callCount, 2);
  t.match(await c.agent.metrics.registry.metrics(), /pod_identity_upstream_retries_total\{code="ThrottlingException"\} 1/);

  const other = c.addPod('web-2');
  c.sts.inject({ kind: 'error', status: 400, code: 'Throttling', message: 'Rate exceeded' }, 10);
  const reply = await c.request(other);
  t.equal(reply.status, 429);
  t.equal(reply.json?.Code, 'ThrottlingException');
  t.equal(reply.json?.Message, 'STS refused AssumeRole for arn:aws:iam::111122223333:role/app with Throttling');
  t.match(c.audit.lines.findLast((l) => l.msg === 'credential request'), { code: 'ThrottlingException', detail: 'Rate exceeded' }, 'STS\'s own words are logged');
  t.equal(c.sts.callCount, 2 + FAST_RETRY.maxAttempts, 'within the retry policy');
  c.sts.clearFaults();
  t.equal((await c.request(other)).status, 200, 'retryable: not remembered as a verdict');
});

t.test('access denied (the role does not trust the agent) is EKS Auth\'s AccessDeniedException 400, remembered briefly', async (t) => {
  const untrusting = 'arn:aws:iam::111122223333:role/untrusting';
  const c = await startStsCluster(t, { associations: [{ namespace: 'default', serviceAccount: 'app', roleArn: untrusting }] });
  const pod = c.addPod('web');
  const reply = await c.request(pod);
  t.equal(reply.status, 400);
  t.equal(reply.json?.Code, 'AccessDeniedException');
  t.equal(reply.json?.Message, 'STS refused AssumeRole for arn:aws:iam::111122223333:role/untrusting with AccessDenied: the role must trust the agent\'s role with sts:AssumeRole and sts:TagSession (and the external id, where set)');
  t.notMatch(reply.text, /444455556666|user\/agent/, 'the agent\'s own identity, which STS names, is not shown to the pod');
  t.match(c.audit.lines.findLast((l) => l.msg === 'credential request'), { detail: /User: arn:aws:iam::444455556666:user\/agent is not authorized to perform: sts:AssumeRole/ }, 'but is logged for the operator');
  t.equal((await c.request(pod)).json?.Code, 'AccessDeniedException');
  t.equal(c.sts.callCount, 1, 'the SDK\'s retries of a refusal cost no second call');
});

t.test('STS 5xx, a reset and a malformed answer map like EKS Auth\'s, and the agent recovers', async (t) => {
  const c = await startStsCluster(t, { associations: [{ namespace: 'default', serviceAccount: 'app', roleArn: APP_ROLE }], retry: { ...FAST_RETRY, maxAttempts: 1 } });
  const cases = [
    [{ kind: 'error', status: 500, code: 'InternalFailure' }, 500, 'InternalServerException'],
    [{ kind: 'error', status: 503, code: 'ServiceUnavailable' }, 503, 'ServiceUnavailableException'],
    [{ kind: 'reset' }, 503, 'UpstreamUnavailable'],
    [{ kind: 'malformed' }, 502, 'UpstreamInvalidResponse'],
    [{ kind: 'expired-credentials' }, 502, 'UpstreamCredentialsExpired'],
  ] as const;
  for (const [i, [fault, status, code]] of cases.entries()) {
    c.sts.inject(fault, 1);
    const reply = await c.request(c.addPod(`p${i}`));
    t.equal(reply.status, status, code);
    t.equal(reply.json?.Code, code, String(reply.json?.Message));
  }
  t.match((await c.request(c.addPod('p-reset'))).status, 200, 'recovered');
});

t.test('associations file edited while running: added, changed and removed take effect within seconds', async (t) => {
  const v2 = 'arn:aws:iam::111122223333:role/app-v2';
  const c = await startStsCluster(t, { associations: [], roles: { [APP_ROLE]: {}, [v2]: {} } });
  const pod = c.addPod('web');
  t.equal((await c.request(pod)).json?.Code, 'ResourceNotFoundException');

  await c.writeAssociations([{ namespace: 'default', serviceAccount: 'app', roleArn: APP_ROLE }, { namespace: 'default', serviceAccount: 'app2', roleArn: 'not-an-arn' }]);
  await eventually(async () => (await c.request(pod)).status === 200, 'the new association');
  t.equal(c.sts.calls.at(-1)?.roleArn, APP_ROLE);
  t.match(c.audit.lines.find((l) => l.msg === 'association refused'), { level: 'warn', problem: /entry 2 \(default\/app2\): roleArn "not-an-arn" is not an IAM role ARN/ });
  const calls = c.sts.callCount;
  t.equal((await c.request(pod)).status, 200);
  t.equal(c.sts.callCount, calls, 'cached');

  await c.writeAssociations([{ namespace: 'default', serviceAccount: 'app', roleArn: v2 }]);
  await eventually(() => c.agent.cache.size === 0, 'the old role\'s credentials dropped');
  t.equal((await c.request(pod)).status, 200);
  t.equal(c.sts.calls.at(-1)?.roleArn, v2, 'the new role, at once rather than at the next renewal');
  t.match(await c.agent.metrics.registry.metrics(), /pod_identity_cache_evictions_total\{reason="association_changed"\} 1/);

  await c.writeAssociations([]);
  await eventually(async () => (await c.request(pod)).json?.Code === 'ResourceNotFoundException', 'the association removed');
});

t.test('the STS endpoint follows the SDK: AWS_ENDPOINT_URL_STS without --endpoint', async (t) => {
  const saved = process.env.AWS_ENDPOINT_URL_STS;
  t.teardown(() => {
    if (saved === undefined) delete process.env.AWS_ENDPOINT_URL_STS;
    else process.env.AWS_ENDPOINT_URL_STS = saved;
  });
  const c = await startStsCluster(t, {
    associations: [{ namespace: 'default', serviceAccount: 'app', roleArn: APP_ROLE }],
    endpointFlag: false,
    beforeAgent: (sts) => {
      process.env.AWS_ENDPOINT_URL_STS = sts.url;
    },
  });
  t.equal((await c.request(c.addPod('web'))).status, 200);
  t.equal(c.sts.callCount, 1, 'the emulator named by AWS_ENDPOINT_URL_STS was called');
});

t.test('the agent will not start in STS mode without a way to verify tokens', async (t) => {
  const { buildAgent } = await import('../src/agent.ts');
  const { parseServerArgs } = await import('../src/config/index.ts');
  const { createLogger } = await import('../src/observability/logger.ts');
  const config = parseServerArgs(['--cluster-name', 'lab', '--region', 'us-west-2', '--upstream', 'sts', '--associations', '/nonexistent', '--bind-hosts', '127.0.0.1', '--port', '0', '--probe-port', '0', '--no-metrics'], {}).config!;
  const agent = buildAgent(config, { logger: createLogger({ level: 'fatal' }), credentialProvider: async () => ({ accessKeyId: 'a', secretAccessKey: 'b' }), kubernetes: null });
  await t.rejects(agent.listen(), { message: /--upstream sts needs tokens verified locally/ });
});

t.test('session names stay within STS\'s 64 characters and keep the whole UUID', async (t) => {
  const uuid = '0f8fad5b-d9cb-469f-a165-70867728950e';
  t.equal(roleSessionName('c1', 'web', uuid), `eks-c1-web-${uuid}`);
  const long = roleSessionName('a-very-long-cluster-name-for-testing', 'payments-api-7d9f5b6c4-x2x9z', uuid);
  t.equal(long.length, 64);
  t.equal(long, `eks-a-very-payments-api-7d9-${uuid}`, 'the cluster name is cut first (it is in the tags), then the pod name');
  t.equal(roleSessionName('production-eu', 'api-0', uuid), `eks-production-eu-api-0-${uuid}`, 'short names are whole');
  t.equal(roleSessionName('c1', 'a-pod-name-that-is-very-long-indeed', uuid), `eks-c1-a-pod-name-that-is-v-${uuid}`);
  t.match(roleSessionName('c1', 'web'), /^eks-c1-web-[0-9a-f-]{36}$/);
});

t.test('associations from a ConfigMap watched through the API server, next to the file', async (t) => {
  const fromConfigMap = 'arn:aws:iam::111122223333:role/from-configmap';
  const c = await startStsCluster(t, {
    associations: [{ namespace: 'default', serviceAccount: 'app', roleArn: APP_ROLE }],
    roles: { [APP_ROLE]: {}, [fromConfigMap]: {} },
    args: ['--associations-configmap', 'kube-system/pod-identity-associations'],
  });
  const worker = c.addPod('worker', 'worker', 'jobs');
  t.equal((await c.request(worker)).json?.Code, 'ResourceNotFoundException', 'no ConfigMap yet: nothing for jobs/worker');
  const ready = await fetch(c.readyzUrl).then((r) => r.json() as Promise<{ ready: boolean; checks: { associations?: unknown } }>);
  t.match(ready, { ready: true, checks: { associations: { ok: true } } }, 'every source read: a missing ConfigMap counts as read, and empty');

  c.api.setConfigMap('kube-system', 'pod-identity-associations', {
    'team-jobs.yaml': `associations:\n  - namespace: jobs\n    serviceAccount: worker\n    roleArn: ${fromConfigMap}\n`,
    'team-web.yaml': `associations:\n  - namespace: default\n    serviceAccount: app\n    roleArn: ${fromConfigMap}\n`,
    'broken.yaml': 'associations: [',
  });
  await eventually(async () => (await c.request(worker)).status === 200, 'the ConfigMap\'s association');
  t.equal(c.sts.calls.at(-1)?.roleArn, fromConfigMap);
  t.match(c.audit.lines.find((l) => l.msg === 'association refused'), { problem: /configmap kube-system\/pod-identity-associations key team-web\.yaml entry 1 \(default\/app\): ignored, file .* entry 1 already associates this service account/ }, 'the file wins a duplicate, and says so');
  t.match(c.audit.lines.find((l) => l.msg === 'associations could not be read; the last good ones stay in force'), { source: 'configmap kube-system/pod-identity-associations', error: /key broken\.yaml: not valid YAML or JSON/ });
  t.equal((await c.request(c.addPod('web'))).status, 200);
  t.equal(c.sts.calls.at(-1)?.roleArn, APP_ROLE, 'default/app keeps the file\'s role');
  const gauge = await c.agent.metrics.registry.getSingleMetricAsString('pod_identity_associations');
  for (const [source, state, count] of [['file', 'valid', 1], ['file', 'refused', 0], ['configmap', 'valid', 1], ['configmap', 'refused', 1]] as const) {
    t.match(gauge, new RegExp(`source="${source}",state="${state}"\\} ${count}(\\n|$)`), `${source} ${state}: ${count}, the duplicate counted where it is written`);
  }

  c.api.deleteConfigMap('kube-system', 'pod-identity-associations');
  await eventually(async () => (await c.request(worker)).json?.Code === 'ResourceNotFoundException', 'the deleted ConfigMap\'s associations gone');
  t.ok(c.api.requests.some((r) => r.path === '/api/v1/namespaces/kube-system/configmaps' && r.query.fieldSelector === 'metadata.name=pod-identity-associations'), 'only that ConfigMap is read');
});

t.test('until every associations source is read, an unknown service account is 503 AssociationsUnavailable, not a 404', async (t) => {
  const { createStsClient, requireAssociation } = await import('../src/upstream/sts-client.ts');
  const { Agent } = await import('undici');
  const dispatcher = new Agent();
  t.teardown(() => dispatcher.destroy());
  // STS of the test's own, resetting any connection: none may be made.
  const sts = await resettingServer(t);
  const lookup = { complete: false, find: () => undefined };
  const client = requireAssociation(lookup, 'lab')(createStsClient({ region: 'us-west-2', endpoint: new URL(sts.url), clusterName: 'lab', clusterArn: undefined, associations: lookup, credentials: async () => ({ accessKeyId: 'a', secretAccessKey: 'b' }), dispatcher, userAgent: 'test' }));
  const identity = { namespace: 'jobs', serviceAccount: 'worker', podName: 'w', podUid: 'u' };
  await t.rejects(client.exchange({ token: 'x', identity }), { code: 'AssociationsUnavailable', status: 503, retryable: true });
  lookup.complete = true;
  await t.rejects(client.exchange({ token: 'x', identity }), { code: 'ResourceNotFoundException', status: 404, retryable: false });
  await t.rejects(client.exchange({ token: 'x', identity: undefined }), { code: 'InternalError' }, 'never an unverified token');
  t.equal(sts.connections, 0, 'STS was never called');
});
