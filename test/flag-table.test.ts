import { readFile } from 'node:fs/promises';
import t from 'tap';
import { ConfigError, INITIALIZE_FLAGS, INITIALIZE_USAGE, SERVER_FLAGS, SERVER_USAGE, parseInitializeArgs, parseServerArgs } from '../src/config/index.ts';
import { type FlagDeclaration, type FlagTable, parseArgsOptions, renderUsage, shownDefault } from '../src/config/flag-table.ts';

// The flag tables in code are the truth; the README's tables and the usage texts must agree with them.

const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
const commandLine = section(readme, '## Command line');

const COMMANDS = [
  { command: 'server', table: SERVER_FLAGS as FlagTable, usage: SERVER_USAGE, intro: '`pod-identity-agent server` takes' },
  { command: 'initialize', table: INITIALIZE_FLAGS as FlagTable, usage: INITIALIZE_USAGE, intro: '`pod-identity-agent initialize` takes' },
] as const;

function section(text: string, heading: string): string {
  const start = text.indexOf(`\n${heading}\n`);
  if (start < 0) throw new Error(`README has no "${heading}" section`);
  const end = text.indexOf('\n## ', start + 1);
  return text.slice(start, end < 0 ? undefined : end);
}

interface Row {
  readonly flag: string;
  readonly default: string;
}

/** The `| flag | default | meaning |` table after `intro`: its flag and default cells, backticks dropped from the default. */
function readmeTable(text: string, intro: string): Row[] {
  const start = text.indexOf(intro);
  if (start < 0) throw new Error(`README's Command line section has no "${intro}"`);
  const lines = text.slice(start).split('\n');
  const first = lines.findIndex((line) => line.startsWith('|'));
  const end = lines.findIndex((line, index) => index > first && !line.startsWith('|'));
  const [header, separator, ...rows] = lines.slice(first, end < 0 ? undefined : end);
  if (header !== '| flag | default | meaning |' || separator !== '|---|---|---|') throw new Error(`unexpected table header after "${intro}": ${header}`);
  return rows.map((row) => {
    const [flag = '', fallback = ''] = row.slice(1, -1).split('|').map((cell) => cell.trim());
    return { flag, default: fallback.replaceAll('`', '') };
  });
}

/** The flag cell the README should have: `-v`, `--verbosity`. */
function flagCell(name: string, flag: FlagDeclaration): string {
  return flag.short === undefined ? `\`--${name}\`` : `\`-${flag.short}\`, \`--${name}\``;
}

/** Usage entries: a line starting `  -`, then its continuation lines, whitespace folded. */
function usageEntries(usage: string): string[] {
  const entries: string[] = [];
  for (const line of usage.split('\n')) {
    if (/^ {2}-/.test(line)) entries.push(line.trim());
    else if (/^ {3,}\S/.test(line) && entries.length > 0) entries[entries.length - 1] += ` ${line.trim()}`;
  }
  return entries;
}

/** The long flag an entry is for: `-v, --verbosity LEVEL ...` is verbosity's. */
function entryFlag(entry: string): string | undefined {
  return /^(?:-\w, )?--([\w-]+)/.exec(entry)?.[1];
}

for (const { command, table, usage, intro } of COMMANDS) {
  t.test(`${command}: the README's table lists the flags in code, in order, with their defaults`, async (t) => {
    const rows = readmeTable(commandLine, intro);
    const expected = Object.entries(table).map(([name, flag]) => ({ flag: flagCell(name, flag), default: shownDefault(flag) ?? '' }));
    t.same(rows.map((row) => row.flag), expected.map((row) => row.flag), 'the same flags (and short forms), in the same order');
    for (const want of expected) {
      const row = rows.find((candidate) => candidate.flag === want.flag);
      if (row === undefined) t.fail(`${want.flag} is missing from the README's ${command} table`);
      else t.equal(row.default, want.default, `${want.flag}: the README's default is the declared one`);
    }
  });

  t.test(`${command}: the usage text shows every declared flag once, with its default`, async (t) => {
    const entries = usageEntries(usage);
    t.same(entries.map(entryFlag), Object.keys(table), 'one entry per flag, in the table\'s order');
    for (const [name, flag] of Object.entries(table)) {
      const entry = entries.find((candidate) => entryFlag(candidate) === name) ?? '';
      if (flag.short !== undefined) t.ok(entry.startsWith(`-${flag.short}, --${name}`), `${name}: -${flag.short} shown`);
      t.ok(entry.includes(flag.help), `${name}: its help`);
      const shown = shownDefault(flag);
      if (shown === undefined) t.notOk(entry.includes('(default'), `${name}: no default shown`);
      else if (shown === '(required)') t.ok(entry.endsWith('(required)'), `${name}: required`);
      else t.ok(entry.endsWith(`(default: ${shown})`), `${name}: default ${shown}`);
    }
    t.ok(usage.split('\n').every((line) => line.length <= 100), 'no line over 100 columns');
  });

  t.test(`${command}: parseArgs options are the table's`, async (t) => {
    const options = parseArgsOptions(table);
    t.same(Object.keys(options), [...Object.keys(table), 'help']);
    for (const [name, flag] of Object.entries(table)) {
      t.equal(options[name]?.type, flag.type, `${name}: type`);
      t.equal(options[name]?.short, flag.short, `${name}: short`);
      t.equal(options[name]?.multiple === true, flag.type === 'string' && flag.multiple === true, `${name}: multiple`);
    }
    t.same(options.help, { type: 'boolean', short: 'h' });
  });
}

t.test('the usage text is rendered from the table, not written by hand', async (t) => {
  const extra = { type: 'string', value: 'X', default: '42', help: 'a flag added in one place' } as const satisfies FlagDeclaration;
  const usage = renderUsage('Usage: test\n', { ...INITIALIZE_FLAGS, extra });
  t.match(usage, /^ {2}--extra X {2,}a flag added in one place \(default: 42\)$/m);
  t.match(renderUsage('Usage: test\n', { ...INITIALIZE_FLAGS, extra: { ...extra, default: '43' } }), /\(default: 43\)$/m);
  t.same(usageEntries(usage).slice(0, -1), usageEntries(INITIALIZE_USAGE), 'the other entries unchanged');
});

/** argv giving each defaulted flag its declared default explicitly. */
function defaultsAsArgv(table: FlagTable): string[] {
  return Object.entries(table).flatMap(([name, flag]) => {
    if (flag.type === 'boolean' || flag.default === undefined) return [];
    return typeof flag.default === 'string' ? [`--${name}`, flag.default] : flag.default.flatMap((value) => [`--${name}`, value]);
  });
}

t.test('the declared defaults are the values used', async (t) => {
  const env = { AWS_REGION: 'us-west-2' };
  t.same(parseServerArgs(['--cluster-name', 'c1', ...defaultsAsArgv(SERVER_FLAGS)], env), parseServerArgs(['--cluster-name', 'c1'], env), 'server');
  t.same(parseInitializeArgs(defaultsAsArgv(INITIALIZE_FLAGS)), parseInitializeArgs([]), 'initialize');
});

function problemsOf(parse: () => unknown): readonly string[] {
  try {
    parse();
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

t.test('parseArgs still refuses unknown flags, positionals and missing values; --help and -h ask for usage', async (t) => {
  const env = { AWS_REGION: 'us-west-2' };
  t.match(problemsOf(() => parseServerArgs(['--cluster-name', 'c1', '--colour', 'red'], env)), [/Unknown option '--colour'/]);
  t.match(problemsOf(() => parseServerArgs(['--cluster-name', 'c1', '--watch'], env)), [/Unknown option '--watch'/], 'initialize\'s flags are not the server\'s');
  t.match(problemsOf(() => parseServerArgs(['--cluster-name', 'c1', 'extra'], env)), [/Unexpected argument 'extra'/]);
  t.match(problemsOf(() => parseServerArgs(['--cluster-name'], env)), [/argument missing/]);
  t.match(problemsOf(() => parseInitializeArgs(['--colour'])), [/Unknown option '--colour'/]);
  t.match(problemsOf(() => parseInitializeArgs(['--port', '80'])), [/Unknown option '--port'/], 'nor the server\'s initialize\'s');
  t.match(problemsOf(() => parseInitializeArgs(['now'])), [/Unexpected argument 'now'/]);
  t.match(problemsOf(() => parseInitializeArgs(['--watch=yes'])), [/does not take an argument/]);
  for (const help of ['--help', '-h']) {
    t.equal(parseServerArgs([help], {}).help, true, `server ${help}`);
    t.equal(parseInitializeArgs([help]).help, true, `initialize ${help}`);
  }
});
