// The dependency floor: the agent's runtime dependencies imported, nothing of the agent's own code
// run, and node:http answering as bench/bare-server.js does. bench/startup.ts bundles it the way
// `npm run build` bundles the agent, so that the agent's start-up and idle memory can be split into
// what the runtime plus its required dependencies cost and what the agent itself adds.
// Left out: @aws-sdk/client-sts and yaml, which the agent loads only with --upstream sts.
import { createServer } from 'node:http';
// The parts of client-node the agent imports (src/k8s/): the rest of it is dropped from both bundles (build.ts).
import { HttpMethod, KubeConfig, RequestContext } from '@kubernetes/client-node';
import * as credentialProviders from '@aws-sdk/credential-providers';
import * as hashNode from '@smithy/hash-node';
import * as signatureV4 from '@smithy/signature-v4';
import * as jose from 'jose';
import * as pino from 'pino';
import * as promClient from 'prom-client';
import * as undici from 'undici';

// Held, so that the bundler cannot drop an import as unused.
globalThis.dependencies = [HttpMethod, KubeConfig, RequestContext, credentialProviders, hashNode, signatureV4, jose, pino, promClient, undici];

const [port, size] = process.argv.slice(2).map(Number);
// Without a port: imported, and gone (to make the compile cache, as the image's build does for the agent).
if (port === undefined) process.exit(0);
const body = 'x'.repeat(size ?? 1000);
const server = createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': body.length });
  res.end(body);
});
server.listen(port ?? 0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`));
process.on('SIGTERM', () => process.exit(0));
