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
