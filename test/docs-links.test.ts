import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import t from 'tap';

// Every relative link in the operator's documents points at a file that exists, and every #anchor at
// a heading that exists, so that moving a section cannot leave a dead link behind.

const ROOT = resolve(new URL('..', import.meta.url).pathname);
const DOCUMENTS = ['README.md', 'daemonset/README.md'];

/** The lines outside fenced code blocks. */
function prose(text: string): string[] {
  let fenced = false;
  return text.split('\n').filter((line) => {
    if (/^\s*```/.test(line)) {
      fenced = !fenced;
      return false;
    }
    return !fenced;
  });
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered. */
function anchors(text: string): Set<string> {
  const seen = new Map<string, number>();
  const result = new Set<string>();
  for (const line of prose(text)) {
    const heading = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line)?.[1];
    if (heading === undefined) continue;
    const slug = heading.toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
    const count = seen.get(slug) ?? 0;
    seen.set(slug, count + 1);
    result.add(count === 0 ? slug : `${slug}-${count}`);
  }
  return result;
}

/** Markdown links outside code: the target of each `[text](target)`. */
function links(text: string): string[] {
  return prose(text).flatMap((line) => [...line.replace(/`[^`]*`/g, '').matchAll(/\]\(([^)\s]+)\)/g)].map((match) => match[1]!));
}

t.test('the anchor rule is GitHub\'s', async (t) => {
  t.same([...anchors('# A b\n## `Code` here\n### 1. IAM\n## Upgrades: surge rollouts on a shared port\n## A b\n```\n# not a heading\n```\n')], ['a-b', 'code-here', '1-iam', 'upgrades-surge-rollouts-on-a-shared-port', 'a-b-1']);
});

for (const document of DOCUMENTS) {
  t.test(`${document}: every relative link and anchor resolves`, async (t) => {
    const path = join(ROOT, document);
    const text = await readFile(path, 'utf8');
    const found = links(text).filter((target) => !/^[a-z]+:/i.test(target));
    t.ok(found.length > 0, 'it has relative links to check');
    for (const target of found) {
      const [file = '', anchor] = target.split('#', 2);
      const linked = file === '' ? path : resolve(dirname(path), decodeURIComponent(file));
      const shown = `${target} (${relative(ROOT, linked) || '.'})`;
      if (!existsSync(linked)) {
        t.fail(`${shown}: no such file`);
        continue;
      }
      if (anchor === undefined) continue;
      if (!linked.endsWith('.md')) {
        t.fail(`${shown}: an anchor into a file that is not Markdown`);
        continue;
      }
      t.ok(anchors(await readFile(linked, 'utf8')).has(anchor), `${shown}: #${anchor} is a heading there`);
    }
  });
}
