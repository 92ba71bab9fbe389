// The baseline: node:http answering a body of the agent's size with the agent's headers, nothing else.
// Plain JavaScript, so that Node loads no TypeScript support for it: a bare runtime's footprint.
import { createServer } from 'node:http';

// With a delay, it stands for an ideal agent whose every answer waits exactly one upstream call.
// A fourth argument, JSON, gives it server options (the agent's own, to tell their cost from the agent's code).
const [port, size, delayMs = 0] = process.argv.slice(2, 5).map(Number);
const { listen: listenOptions = {}, ...serverOptions } = JSON.parse(process.argv[5] ?? '{}');
const body = 'x'.repeat(size ?? 1000);
const answer = (res) => {
  res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': body.length });
  res.end(body);
};
const server = createServer(serverOptions, (req, res) => {
  if (delayMs > 0 && req.url !== '/') setTimeout(answer, delayMs, res);
  else answer(res);
});
// Port 0: the system picks a free one; the one line on stdout says which.
server.listen({ port: port ?? 0, host: '127.0.0.1', ...listenOptions }, () => process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`));
process.on('SIGTERM', () => process.exit(0));
