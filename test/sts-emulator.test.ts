import t, { type Test } from 'tap';
import { AssumeRoleCommand, GetCallerIdentityCommand, STSClient, type AssumeRoleCommandInput } from '@aws-sdk/client-sts';
import { startStsEmulator, type StsEmulator, type StsEmulatorOptions } from './emulator/sts-emulator.ts';
import { requestRead } from './helpers/local-servers.ts';

const REGION = 'us-west-2';
const CALLER = { accessKeyId: 'AKIACALLEREXAMPLE001', secretAccessKey: 'caller-secret-access-key-000000000000000' };
const ROLE_ARN = 'arn:aws:iam::123456789012:role/team/app-role';
const PLAIN_ROLE_ARN = 'arn:aws:iam::123456789012:role/plain';
const POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}';

type Creds = { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
type SdkError = Error & { code?: string; $fault?: string; $metadata: { httpStatusCode?: number; requestId?: string } };

async function start(t: Test, overrides: Partial<StsEmulatorOptions> = {}): Promise<StsEmulator> {
  const emulator = await startStsEmulator({
    callerCredentials: [CALLER],
    region: REGION,
    accountId: '111122223333',
    roles: {
      [ROLE_ARN]: { maxSessionDurationSeconds: 7200, externalId: 'ext-123' },
      [PLAIN_ROLE_ARN]: {},
    },
    ...overrides,
  });
  t.teardown(() => emulator.close());
  return emulator;
}

function client(t: Test, emulator: StsEmulator, credentials: Creds = CALLER, region = REGION): STSClient {
  const sts = new STSClient({ region, endpoint: emulator.url, maxAttempts: 1, credentials });
  t.teardown(() => sts.destroy());
  return sts;
}

const assume = (sts: STSClient, input: Partial<AssumeRoleCommandInput> = {}) =>
  sts.send(new AssumeRoleCommand({ RoleArn: PLAIN_ROLE_ARN, RoleSessionName: 'session-1', ...input }));

async function failure(pending: Promise<unknown>): Promise<SdkError> {
  try {
    await pending;
  } catch (error) {
    return error as SdkError;
  }
  throw new Error('expected the call to fail');
}

t.test('AssumeRole with every parameter answers what the SDK expects and records the request', async (t) => {
  // The emulator's clock stands still (close to the real one, for SigV4): the expiry is exact.
  const fixed = Date.now();
  const emulator = await start(t, { now: () => fixed });
  const out = await assume(client(t, emulator), {
    RoleArn: ROLE_ARN,
    RoleSessionName: 'pod.default@node-a',
    DurationSeconds: 5400,
    ExternalId: 'ext-123',
    Policy: POLICY,
    Tags: [{ Key: 'kubernetes-namespace', Value: 'default' }, { Key: 'eks-cluster-name', Value: 'c1' }],
    TransitiveTagKeys: ['kubernetes-namespace'],
  });
  t.match(out.Credentials?.AccessKeyId, /^ASIA[A-Z0-9]{16}$/);
  t.equal(out.Credentials?.SecretAccessKey?.length, 40);
  t.ok((out.Credentials?.SessionToken?.length ?? 0) > 100);
  t.ok(out.Credentials?.Expiration instanceof Date, 'Expiration is parsed into a Date');
  const expiresAt = out.Credentials?.Expiration?.getTime() ?? 0;
  t.equal(expiresAt, Math.floor(fixed / 1000) * 1000 + 5400_000, 'Expiration is now + DurationSeconds');
  t.equal(out.AssumedRoleUser?.Arn, 'arn:aws:sts::123456789012:assumed-role/app-role/pod.default@node-a', 'role path is dropped');
  t.match(out.AssumedRoleUser?.AssumedRoleId, /^AROA[A-Z0-9]{17}:pod\.default@node-a$/);
  t.ok((out.PackedPolicySize ?? 0) >= 1 && (out.PackedPolicySize ?? 0) <= 100, 'PackedPolicySize is a percentage');
  t.match(out.$metadata, { httpStatusCode: 200, requestId: /^[0-9a-f-]{36}$/ });

  t.equal(emulator.callCount, 1);
  t.same(emulator.calls[0], {
    at: emulator.calls[0]?.at,
    status: 200,
    action: 'AssumeRole',
    accessKeyId: CALLER.accessKeyId,
    roleArn: ROLE_ARN,
    roleSessionName: 'pod.default@node-a',
    durationSeconds: 5400,
    externalId: 'ext-123',
    policy: POLICY,
    tags: [{ key: 'kubernetes-namespace', value: 'default' }, { key: 'eks-cluster-name', value: 'c1' }],
    transitiveTagKeys: ['kubernetes-namespace'],
  });
  const recorded = JSON.stringify(emulator.calls);
  for (const secret of [CALLER.secretAccessKey, out.Credentials?.SecretAccessKey, out.Credentials?.SessionToken]) {
    t.notOk(recorded.includes(secret ?? '<none>'), 'no secret or session token is recorded');
  }
});

t.test('defaults: one hour, no PackedPolicySize, fresh credentials each call', async (t) => {
  const fixed = Date.now();
  const emulator = await start(t, { now: () => fixed });
  const sts = client(t, emulator);
  const first = await assume(sts);
  const second = await assume(sts);
  t.equal(first.Credentials?.Expiration?.getTime(), Math.floor(fixed / 1000) * 1000 + 3600_000);
  t.equal(first.PackedPolicySize, undefined);
  t.equal(first.AssumedRoleUser?.Arn, 'arn:aws:sts::123456789012:assumed-role/plain/session-1');
  t.not(first.Credentials?.AccessKeyId, second.Credentials?.AccessKeyId);
  t.not(first.Credentials?.SessionToken, second.Credentials?.SessionToken);
  t.equal(first.AssumedRoleUser?.AssumedRoleId, second.AssumedRoleUser?.AssumedRoleId, 'role id is stable per role');
  t.match(emulator.calls[0], { status: 200, tags: [], transitiveTagKeys: [], at: fixed });
  t.notOk('durationSeconds' in (emulator.calls[0] ?? {}));
});

t.test('SigV4 failures carry STS error codes', async (t) => {
  const emulator = await start(t);
  const wrongSecret = await failure(assume(client(t, emulator, { ...CALLER, secretAccessKey: 'not-the-secret' })));
  t.match(wrongSecret, { name: 'SignatureDoesNotMatch', $fault: 'client', $metadata: { httpStatusCode: 403 } });
  t.match(wrongSecret.message, /signature we calculated does not match/);
  const unknownKey = await failure(assume(client(t, emulator, { ...CALLER, accessKeyId: 'AKIAUNKNOWN000000000' })));
  t.match(unknownKey, { name: 'InvalidClientTokenId', $metadata: { httpStatusCode: 403 } });
  const wrongRegion = await failure(assume(client(t, emulator, CALLER, 'eu-west-1')));
  t.match(wrongRegion, { name: 'SignatureDoesNotMatch', $metadata: { httpStatusCode: 403 } });
  t.match(emulator.calls, [{ status: 403, code: 'SignatureDoesNotMatch' }, { status: 403, code: 'InvalidClientTokenId' }, { status: 403 }]);
  t.notOk(emulator.calls.some((c) => c.accessKeyId !== undefined), 'key id recorded only once verified');
});

t.test('roles the caller may not assume are AccessDenied', async (t) => {
  const emulator = await start(t);
  const sts = client(t, emulator);
  const unknown = 'arn:aws:iam::123456789012:role/other';
  const error = await failure(assume(sts, { RoleArn: unknown }));
  t.match(error, { name: 'AccessDenied', $fault: 'client', $metadata: { httpStatusCode: 403, requestId: /^[0-9a-f-]{36}$/ } });
  t.equal(error.message, `User: arn:aws:iam::111122223333:user/agent is not authorized to perform: sts:AssumeRole on resource: ${unknown}`);

  const mismatch = await failure(assume(sts, { RoleArn: ROLE_ARN, ExternalId: 'ext-999' }));
  t.match(mismatch, { name: 'AccessDenied', message: /sts:AssumeRole on resource: arn:aws:iam::123456789012:role\/team\/app-role$/ });
  const missing = await failure(assume(sts, { RoleArn: ROLE_ARN }));
  t.match(missing, { name: 'AccessDenied', $metadata: { httpStatusCode: 403 } });
  t.match(emulator.calls.map((c) => [c.status, c.code, c.externalId]), [[403, 'AccessDenied', undefined], [403, 'AccessDenied', 'ext-999'], [403, 'AccessDenied', undefined]]);
});

t.test('a role without sts:TagSession refuses tagged sessions only', async (t) => {
  const emulator = await start(t, { roles: { [PLAIN_ROLE_ARN]: { allowTags: false } } });
  const sts = client(t, emulator);
  const error = await failure(assume(sts, { Tags: [{ Key: 'k', Value: 'v' }] }));
  t.match(error, { name: 'AccessDenied', message: /not authorized to perform: sts:TagSession on resource/, $metadata: { httpStatusCode: 403 } });
  t.ok(await assume(sts), 'untagged request still succeeds');
});

t.test('DurationSeconds is held to 900..43200 and to the role maximum', async (t) => {
  const emulator = await start(t);
  const sts = client(t, emulator);
  const overRole = await failure(assume(sts, { DurationSeconds: 7200 }));
  t.match(overRole, { name: 'ValidationError', $metadata: { httpStatusCode: 400 } });
  t.equal(overRole.message, 'The requested DurationSeconds exceeds the MaxSessionDuration set for this role.');
  t.ok(await assume(sts, { RoleArn: ROLE_ARN, ExternalId: 'ext-123', DurationSeconds: 7200 }), 'a role with a larger maximum allows it');
  const tooShort = await failure(assume(sts, { DurationSeconds: 899 }));
  t.equal(tooShort.message, "1 validation error detected: Value '899' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900");
  const tooLong = await failure(assume(sts, { DurationSeconds: 43_201 }));
  t.match(tooLong, { name: 'ValidationError', message: /less than or equal to 43200/ });
});

t.test('RoleArn and RoleSessionName shapes; echoed values survive XML escaping', async (t) => {
  const emulator = await start(t);
  const sts = client(t, emulator);
  const badArn = await failure(assume(sts, { RoleArn: 'arn:aws:iam::123456789012:user/someone' }));
  t.match(badArn, { name: 'ValidationError', message: 'Request ARN is invalid', $metadata: { httpStatusCode: 400 } });
  const shortArn = await failure(assume(sts, { RoleArn: 'arn:aws:iam' }));
  t.match(shortArn, { name: 'ValidationError', message: /at 'roleArn' failed to satisfy constraint: Member must have length greater than or equal to 20/ });
  const badName = await failure(assume(sts, { RoleSessionName: `a<b>&"c'` }));
  t.equal(badName.message, `1 validation error detected: Value 'a<b>&"c'' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*`);
  const both = await failure(assume(sts, { RoleSessionName: 'x', ExternalId: 'e' }));
  t.match(both.message, /^2 validation errors detected: .*'roleSessionName'.*; .*'externalId'/);
});

t.test('session tags: limits, duplicates and transitive keys', async (t) => {
  const emulator = await start(t);
  const sts = client(t, emulator);
  const transitive = await failure(assume(sts, { Tags: [{ Key: 'team', Value: 'a' }], TransitiveTagKeys: ['team', 'env'] }));
  t.match(transitive, { name: 'InvalidParameterValue', $fault: 'client', $metadata: { httpStatusCode: 400 } });
  t.equal(transitive.message, 'The specified transitive tag key must be included in the requested tags.');
  t.match(emulator.calls.at(-1), { code: 'InvalidParameterValue', tags: [{ key: 'team', value: 'a' }], transitiveTagKeys: ['team', 'env'] });
  t.ok(await assume(sts, { Tags: [{ Key: 'Team', Value: 'a' }], TransitiveTagKeys: ['team'] }), 'tag keys compare case-insensitively');

  const duplicate = await failure(assume(sts, { Tags: [{ Key: 'team', Value: 'a' }, { Key: 'TEAM', Value: 'b' }] }));
  t.match(duplicate, { name: 'InvalidParameterValue', message: /Duplicate tag keys/ });
  const many = Array.from({ length: 51 }, (_, i) => ({ Key: `k${i}`, Value: 'v' }));
  t.match(await failure(assume(sts, { Tags: many })), { name: 'ValidationError', message: /at 'tags' .*less than or equal to 50/ });
  t.ok(await assume(sts, { Tags: many.slice(0, 50) }), '50 tags are allowed');
  const longKey = await failure(assume(sts, { Tags: [{ Key: 'k'.repeat(129), Value: '' }] }));
  t.match(longKey, { name: 'ValidationError', message: /at 'tags\.1\.member\.key' .*less than or equal to 128/ });
  const longValue = await failure(assume(sts, { Tags: [{ Key: 'k', Value: 'v'.repeat(257) }] }));
  t.match(longValue, { name: 'ValidationError', message: /at 'tags\.1\.member\.value' .*less than or equal to 256/ });
  const packed = await assume(sts, { Tags: [{ Key: 'k', Value: '' }] });
  t.ok((packed.PackedPolicySize ?? 0) >= 1, 'tags alone produce a PackedPolicySize');
});

t.test('session policies must be JSON and small enough', async (t) => {
  const emulator = await start(t);
  const sts = client(t, emulator);
  const malformed = await failure(assume(sts, { Policy: '{"Version": ' }));
  t.match(malformed, { name: 'MalformedPolicyDocumentException', $metadata: { httpStatusCode: 400 } });
  t.match(malformed, { Code: 'MalformedPolicyDocument' }, 'modelled errors keep the wire code');
  const large = await failure(assume(sts, { Policy: JSON.stringify({ Statement: [], Pad: 'x'.repeat(2100) }) }));
  t.match(large, { name: 'PackedPolicyTooLargeException', message: /^Packed policy consumes \d+% of allotted space/ });
  t.match(emulator.calls.map((c) => c.code), ['MalformedPolicyDocument', 'PackedPolicyTooLarge']);
});

t.test('other actions are InvalidAction', async (t) => {
  const emulator = await start(t);
  const error = await failure(client(t, emulator).send(new GetCallerIdentityCommand({})));
  t.match(error, { name: 'InvalidAction', message: 'Could not find operation GetCallerIdentity for version 2011-06-15', $metadata: { httpStatusCode: 400 } });
  t.match(emulator.calls[0], { action: 'GetCallerIdentity', status: 400, code: 'InvalidAction', accessKeyId: CALLER.accessKeyId });
});

t.test('injected faults as the SDK surfaces them', async (t) => {
  const emulator = await start(t);
  const sts = client(t, emulator);

  emulator.inject({ kind: 'error', status: 400, code: 'Throttling', message: 'Rate exceeded' });
  t.match(await failure(assume(sts)), { name: 'Throttling', message: 'Rate exceeded', $fault: 'client', $metadata: { httpStatusCode: 400 } });
  emulator.inject({ kind: 'error', status: 500, code: 'InternalFailure' });
  t.match(await failure(assume(sts)), { name: 'InternalFailure', message: 'Injected InternalFailure', $fault: 'server', $metadata: { httpStatusCode: 500 } });
  emulator.inject({ kind: 'error', status: 503, code: 'ServiceUnavailable' });
  t.match(await failure(assume(sts)), { name: 'ServiceUnavailable', $fault: 'server', $metadata: { httpStatusCode: 503 } });

  emulator.inject({ kind: 'malformed' });
  const malformed = await failure(assume(sts));
  t.match(malformed, { message: /XML parse error[\s\S]*Deserialization error/, $metadata: { httpStatusCode: 200 } });

  emulator.inject({ kind: 'reset' });
  const reset = await failure(assume(sts));
  // The SDK's node handler renames ECONNRESET to TimeoutError so its retry strategy treats it as transient.
  t.match(reset, { name: 'TimeoutError', code: 'ECONNRESET' }, 'a network error, not a service error');
  t.equal(reset.$metadata.httpStatusCode, undefined);

  emulator.inject({ kind: 'expired-credentials' });
  const expired = await assume(sts);
  t.ok((expired.Credentials?.Expiration?.getTime() ?? Infinity) < Date.now(), 'Expiration is in the past');

  t.match(emulator.calls.map((c) => c.status), [400, 500, 503, 200, 0, 200]);
  t.match(emulator.calls.map((c) => c.code), ['Throttling', 'InternalFailure', 'ServiceUnavailable', undefined, undefined, undefined]);
  t.ok(emulator.calls.every((c) => c.accessKeyId === undefined && c.roleArn === PLAIN_ROLE_ARN), 'faults precede verification');
  t.ok(await assume(sts), 'faults are used up');
});

t.test('faults apply `times` times; latency delays; clearFaults drops the rest', async (t) => {
  const emulator = await start(t);
  const sts = client(t, emulator);
  emulator.inject({ kind: 'error', status: 403, code: 'AccessDenied' }, 2);
  t.match(await failure(assume(sts)), { name: 'AccessDenied' });
  t.match(await failure(assume(sts)), { name: 'AccessDenied' });
  t.ok(await assume(sts));

  emulator.inject({ kind: 'latency', ms: 150 });
  const started = performance.now();
  t.ok(await assume(sts), 'a delayed request still succeeds');
  // A lower bound only: load can lengthen the wait, never shorten the emulator's timer.
  t.ok(performance.now() - started >= 140, 'the answer was delayed');

  emulator.inject({ kind: 'error', status: 500, code: 'InternalFailure' }, 5);
  emulator.clearFaults();
  t.ok(await assume(sts));
});

t.test('close aborts a pending latency fault', async (t) => {
  const emulator = await startStsEmulator({ callerCredentials: [CALLER], region: REGION, roles: { [PLAIN_ROLE_ARN]: {} } });
  const sts = client(t, emulator);
  // Longer than the test may run: had close() waited for it, the test would time out.
  emulator.inject({ kind: 'latency', ms: 10 * 60_000 });
  const waiting = requestRead(emulator.port);
  const pending = failure(assume(sts));
  await waiting; // the request is in the handler, waiting out its delay
  await emulator.close();
  t.ok(await pending, 'the in-flight call fails');
  t.equal(emulator.callCount, 0, 'it was never answered');
});

t.test('raw HTTP: routes, body limit, missing signature, request id', async (t) => {
  const emulator = await start(t);
  const form = { 'content-type': 'application/x-www-form-urlencoded' };
  const get = await fetch(`${emulator.url}/`);
  t.equal(get.status, 405);
  t.equal(get.headers.get('allow'), 'POST');
  t.match(await get.text(), /<Code>MethodNotAllowed<\/Code>/);

  const other = await fetch(`${emulator.url}/v1/assume`, { method: 'POST', headers: form, body: 'Action=AssumeRole' });
  t.equal(other.status, 404);

  const big = await fetch(`${emulator.url}/`, { method: 'POST', headers: form, body: `Action=AssumeRole&Policy=${'x'.repeat(70_000)}` });
  t.equal(big.status, 413);
  const bigText = await big.text();
  t.match(bigText, /<Code>RequestEntityTooLarge<\/Code>/);
  t.equal(/<RequestId>([^<]+)<\/RequestId>/.exec(bigText)?.[1], big.headers.get('x-amzn-requestid'));

  const unsigned = await fetch(`${emulator.url}/`, { method: 'POST', headers: form, body: 'Action=AssumeRole&Version=2011-06-15' });
  t.equal(unsigned.status, 403);
  t.equal(unsigned.headers.get('content-type'), 'text/xml');
  const text = await unsigned.text();
  t.match(text, /^<ErrorResponse xmlns="https:\/\/sts\.amazonaws\.com\/doc\/2011-06-15\/">/);
  t.match(text, /<Type>Sender<\/Type>\s*<Code>MissingAuthenticationToken<\/Code>/);
  t.equal(/<RequestId>([^<]+)<\/RequestId>/.exec(text)?.[1], unsigned.headers.get('x-amzn-requestid'), 'body and header name one request id');
  t.match(emulator.calls.map((c) => c.status), [405, 404, 413, 403]);
});

t.test('options are checked up front', async (t) => {
  const base = { callerCredentials: [CALLER], region: REGION };
  await t.rejects(startStsEmulator({ ...base, roles: { 'arn:aws:iam::123456789012:user/u': {} } }), TypeError);
  await t.rejects(startStsEmulator({ ...base, roles: { [PLAIN_ROLE_ARN]: { maxSessionDurationSeconds: 900 } } }), RangeError);
});
