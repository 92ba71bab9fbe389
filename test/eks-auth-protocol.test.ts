import t from 'tap';
import { buildAssumeRoleRequest, parseAssumeRoleResponse } from '../src/upstream/eks-auth-protocol.ts';
import { isAgentError } from '../src/errors.ts';

const ok = {
  subject: { namespace: 'default', serviceAccount: 's3-sa' },
  audience: 'pods.eks.amazonaws.com',
  podIdentityAssociation: { associationArn: 'arn:aws:eks:us-west-2:123456789012:podidentityassociation/c1/a-1', associationId: 'a-1' },
  assumedRoleUser: { arn: 'arn:aws:sts::123456789012:assumed-role/role-name/eks-c1-pod', assumeRoleId: 'AROAEXAMPLE:eks-c1-pod' },
  credentials: { sessionToken: 'session', secretAccessKey: 'secret', accessKeyId: 'ASIAEXAMPLE', expiration: 1795000000 },
};

function respond(status: number, body: unknown, headers: Record<string, string> = {}) {
  return { status, headers: { 'x-amzn-requestid': 'req-1', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) };
}

function failure(status: number, body: unknown, headers: Record<string, string> = {}) {
  try {
    parseAssumeRoleResponse(respond(status, body, headers));
  } catch (error) {
    if (isAgentError(error)) return { status: error.status, code: error.code, message: error.message, retryable: error.retryable, id: error.upstreamRequestId };
    throw error;
  }
  throw new Error('expected a failure');
}

t.test('request: POST /clusters/{name}/assume-role-for-pod-identity with a JSON token', async (t) => {
  const request = buildAssumeRoleRequest(new URL('https://eks-auth.us-west-2.api.aws'), 'c1', 'a.b.c', 'ua/1');
  t.equal(request.method, 'POST');
  t.equal(request.path, '/clusters/c1/assume-role-for-pod-identity');
  t.equal(request.headers.host, 'eks-auth.us-west-2.api.aws');
  t.equal(request.headers['content-type'], 'application/json');
  t.same(JSON.parse(request.body), { token: 'a.b.c' });
  const proxied = buildAssumeRoleRequest(new URL('http://127.0.0.1:8080/prefix/'), 'c1', 'a.b.c', 'ua/1');
  t.equal(proxied.path, '/prefix/clusters/c1/assume-role-for-pod-identity');
  t.equal(proxied.port, 8080);
  t.equal(proxied.headers.host, '127.0.0.1:8080');
});

t.test('success: credentials, epoch-seconds expiration, account from the role ARN', async (t) => {
  const result = parseAssumeRoleResponse(respond(200, ok));
  t.same(result.credentials, { accessKeyId: 'ASIAEXAMPLE', secretAccessKey: 'secret', sessionToken: 'session', accountId: '123456789012', expiresAt: 1795000000_000 });
  t.equal(result.requestId, 'req-1');
  const noArn = parseAssumeRoleResponse(respond(200, { ...ok, assumedRoleUser: undefined }));
  t.equal(noArn.credentials.accountId, undefined, 'a missing ARN omits the account rather than failing');
  const iso = parseAssumeRoleResponse(respond(200, { ...ok, credentials: { ...ok.credentials, expiration: '2026-11-25T12:00:00Z' } }));
  t.equal(iso.credentials.expiresAt, Date.parse('2026-11-25T12:00:00Z'));
});

t.test('invalid 200 answers are UpstreamInvalidResponse (502)', async (t) => {
  t.match(failure(200, 'not json'), { status: 502, code: 'UpstreamInvalidResponse', id: 'req-1' });
  t.match(failure(200, { ...ok, credentials: undefined }), { status: 502, code: 'UpstreamInvalidResponse' });
  t.match(failure(200, { ...ok, credentials: { ...ok.credentials, expiration: 'never' } }), { status: 502 });
  t.match(failure(200, { ...ok, credentials: { ...ok.credentials, secretAccessKey: 7 } }), { status: 502 });
});

t.test('errors keep their EKS Auth status and name, wherever the name was put', async (t) => {
  t.match(failure(400, { message: 'denied' }, { 'x-amzn-errortype': 'AccessDeniedException:http://internal.amazon.com/coral/' }), {
    status: 400,
    code: 'AccessDeniedException',
    message: 'denied',
    retryable: false,
  });
  t.match(failure(404, { __type: 'com.amazonaws.eksauth#ResourceNotFoundException', message: 'no association' }), { status: 404, code: 'ResourceNotFoundException', retryable: false });
  t.match(failure(429, { code: 'ThrottlingException', Message: 'slow down' }), { status: 429, code: 'ThrottlingException', message: 'slow down', retryable: true });
  t.match(failure(500, ''), { status: 500, code: 'InternalServerException', retryable: true });
  t.match(failure(503, { __type: 'ServiceUnavailableException' }), { status: 503, code: 'ServiceUnavailableException', retryable: true });
  t.match(failure(403, { __type: 'bad name with spaces' }), { status: 403, code: 'UpstreamError', retryable: false }, 'unsafe names are not echoed');
  t.match(failure(302, ''), { status: 502, code: 'UpstreamInvalidResponse' });
  t.equal(failure(400, { message: 'x'.repeat(5000) }).message.length, 512, 'long messages are cut');
});
