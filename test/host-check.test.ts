import t from 'tap';
import { createHostCheck } from '../src/server/host-check.ts';

t.test('Host header matching', async (t) => {
  const check = createHostCheck(['169.254.170.23', 'fd00:ec2::23'], 80);
  for (const ok of ['169.254.170.23', '169.254.170.23:80', '169.254.170.23:8080', '[fd00:ec2::23]', '[fd00:ec2::23]:80', 'fd00:ec2::23', '[FD00:EC2:0:0:0:0:0:23]']) {
    t.ok(check(ok), `accepts ${ok}`);
  }
  for (const bad of [undefined, '', '169.254.170.2', '169.254.170.23.example.com', 'localhost', 'user@169.254.170.23', '169.254.170.23/x', '[fd00:ec2::24]', '169.254.170.23:port', 'a'.repeat(400)]) {
    t.notOk(check(bad), `refuses ${String(bad)}`);
  }
});

t.test('accepted spellings outside the usual forms are remembered, boundedly, and refusals never are', async (t) => {
  const check = createHostCheck(['169.254.170.23'], 2704);
  // Twice each: the second answer comes from the remembered set and must agree with the parse.
  for (let port = 1; port <= 200; port += 1) {
    t.equal(check(`169.254.170.23:${port}`) && check(`169.254.170.23:${port}`), true, `port ${port}`);
    t.equal(check(`169.254.170.24:${port}`) || check(`169.254.170.24:${port}`), false, `another address, port ${port}`);
  }
});
