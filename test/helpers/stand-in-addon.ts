// Runs inside the test's "node" network namespace as the EKS Pod Identity Agent add-on does on the
// host network: binds 169.254.170.23:80 and [fd00:ec2::23]:80 itself (no redirect), probes on
// 127.0.0.1:2703 and metrics on 0.0.0.0:2705. Answers every credential request with credentials of
// its own (the AccessKeyId given as its argument, so a client can tell who served it), prints `served N` every
// 100 ms, and on SIGTERM stops as a server does: no new connections, in-flight requests answered,
// idle keep-alive connections closed.
import { type Server, createServer } from 'node:http';

const [ADDON_KEY] = process.argv.slice(2) as [string];
let served = 0;
let stopping = false;
const credentials = JSON.stringify({ AccessKeyId: ADDON_KEY, SecretAccessKey: 'stand-in', Token: 'stand-in', AccountId: '111122223333', Expiration: new Date(Date.now() + 3_600_000).toISOString() });

const endpoint = () =>
  createServer((request, response) => {
    if (request.url !== '/v1/credentials') {
      response.writeHead(404).end();
      return;
    }
    served++;
    // Stopping: answered, then closed, so that a keep-alive client's next request opens a new connection.
    if (stopping) response.setHeader('connection', 'close');
    response.writeHead(200, { 'content-type': 'application/json' }).end(credentials);
  });
const servers: Server[] = [];
const listen = (server: Server, port: number, host: string) =>
  new Promise<void>((resolve, reject) => {
    servers.push(server);
    server.once('error', reject).listen({ port, host }, resolve);
  });
await listen(endpoint(), 80, '169.254.170.23');
await listen(endpoint(), 80, 'fd00:ec2::23');
await listen(createServer((_, response) => response.end('ok')), 2703, '127.0.0.1');
await listen(createServer((_, response) => response.end('# stand-in\n')), 2705, '0.0.0.0');
setInterval(() => process.stdout.write(`served ${served}\n`), 100);
process.on('SIGTERM', () => {
  stopping = true;
  for (const server of servers) {
    server.close();
    server.closeIdleConnections();
  }
  // Should a connection stay open (a drain deadline, as any server has), the stand-in says so and goes.
  const deadline = setTimeout(() => {
    process.stdout.write('drain deadline: closing the remaining connections\n');
    for (const server of servers) server.closeAllConnections();
  }, 5000);
  void Promise.all(servers.map((server) => new Promise((resolve) => server.once('close', resolve)))).then(() => {
    clearTimeout(deadline);
    process.stdout.write(`served ${served}\nstopped\n`);
    process.exit(0);
  });
});
process.stdout.write('listening\n');
