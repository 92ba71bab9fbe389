// The baseline: node:http answering a body of the agent's size with the agent's headers, nothing else.
// Plain JavaScript, so that Node loads no TypeScript support for it: a bare runtime's footprint.
import { createServer } from 'node:http';

// With a delay, it stands for an ideal agent whose every answer waits exactly one upstream call.
const [port, size, delayMs = 0] = process.argv.slice(2).map(Number);
const body = 'x'.repeat(size ?? 1000);
const answer = (res) => {
  res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': body.length });
  res.end(body);
};
const server = createServer((req, res) => {
  if (delayMs > 0 && req.url !== '/') setTimeout(answer, delayMs, res);
  else answer(res);
});
// Port 0: the system picks a free one; the one line on stdout says which.
server.listen(port ?? 0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`));
process.on('SIGTERM', () => process.exit(0));
