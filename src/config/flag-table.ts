import { type ParseArgsOptionsConfig, parseArgs } from 'node:util';

// One declaration per flag: parseArgs' options, the usage text, the defaults and the README's
// tables all come from (or are tested against) these, so a flag is added in one place.

interface FlagCommon {
  readonly short?: string;
  readonly help: string;
}

/** A flag taking one value. */
export interface StringFlag extends FlagCommon {
  readonly type: 'string';
  readonly multiple?: false;
  /** The value's name in the usage text: `--port N`. */
  readonly value: string;
  /** The value used when the flag is absent, in command-line form: it goes through `parse` like a given one. */
  readonly default?: string;
  /** How the default is shown when it is not a literal: taken from the environment, or decided at run time. */
  readonly defaultText?: string;
  /** Set for a flag that must end up with a value (an empty one counts as none): the problem reported otherwise. */
  readonly required?: string;
  /** Given value (or default) to setting; throws with the problem to report. Without it the setting is the text. */
  readonly parse?: (value: string, flag: string) => unknown;
}

/** A flag that may be repeated, its values collected in order. */
export interface ListFlag extends FlagCommon {
  readonly type: 'string';
  readonly multiple: true;
  readonly value: string;
  readonly default?: readonly string[];
  readonly parse: (values: readonly string[], flag: string) => unknown;
}

/** A switch: off unless given. */
export interface BooleanFlag extends FlagCommon {
  readonly type: 'boolean';
}

export type FlagDeclaration = StringFlag | ListFlag | BooleanFlag;
export type FlagTable = Readonly<Record<string, FlagDeclaration>>;

/** What parseArgs hands back for a table: every flag optional, plus --help, which every command takes. */
export type FlagValues<F extends FlagTable> = {
  readonly [K in keyof F]?: F[K] extends BooleanFlag ? boolean : F[K] extends ListFlag ? string[] : string;
} & { readonly help?: boolean };

/** A flag's setting once read: its parser's result, else the text (or texts, or switch) given. */
export type FlagSetting<D> = D extends BooleanFlag
  ? boolean
  : D extends { readonly parse: (value: never, flag: string) => infer T }
    ? T
    : D extends ListFlag
      ? readonly string[]
      : string;

/** Thrown with every violation at once, so an operator fixes the manifest in one go. */
export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(`invalid configuration: ${problems.join('; ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

/** Runs each parse, recording its error instead of stopping at the first, so every bad flag is named at once. */
export function collectProblems(): { problems: string[]; check: <T>(parse: () => T) => T | undefined } {
  const problems: string[] = [];
  const check = <T>(parse: () => T): T | undefined => {
    try {
      return parse();
    } catch (error) {
      problems.push((error as Error).message);
      return undefined;
    }
  };
  return { problems, check };
}

/** node:util parseArgs options for a table, plus -h/--help. */
export function parseArgsOptions(table: FlagTable): ParseArgsOptionsConfig {
  const options: ParseArgsOptionsConfig = {};
  for (const [name, flag] of Object.entries(table)) {
    options[name] = {
      type: flag.type,
      ...(flag.short === undefined ? {} : { short: flag.short }),
      ...(flag.type === 'string' && flag.multiple === true ? { multiple: true } : {}),
    };
  }
  options.help = { type: 'boolean', short: 'h' };
  return options;
}

/** Parses argv strictly (unknown flags and positionals refused); parseArgs' complaint becomes a ConfigError. */
export function parseFlags<F extends FlagTable>(table: F, argv: readonly string[]): FlagValues<F> {
  try {
    return parseArgs({ args: [...argv], options: parseArgsOptions(table), strict: true, allowPositionals: false }).values as FlagValues<F>;
  } catch (error) {
    throw new ConfigError([(error as Error).message]);
  }
}

/**
 * A flag's setting: the given value, else its declared default, through its parser.
 * Undefined when there is neither (and the flag is not required).
 */
export function readFlag<F extends FlagTable, K extends keyof F & string>(table: F, name: K, given: FlagValues<F>[K] | undefined): FlagSetting<F[K]> | undefined {
  const flag: FlagDeclaration = table[name] as FlagDeclaration;
  const value = given ?? (flag.type === 'boolean' ? false : flag.default);
  if (flag.type === 'string' && flag.multiple !== true && flag.required !== undefined && (value === undefined || value === '')) throw new Error(flag.required);
  if (value === undefined) return undefined;
  const parse = flag.type === 'boolean' ? undefined : (flag.parse as ((value: unknown, flag: string) => unknown) | undefined);
  return (parse === undefined ? value : parse(value, `--${name}`)) as FlagSetting<F[K]>;
}

const REQUIRED = '(required)';

/** The default as the usage text and the README show it; undefined for a switch or a flag with no default. */
export function shownDefault(flag: FlagDeclaration): string | undefined {
  if (flag.type === 'boolean') return undefined;
  if (flag.multiple !== true && flag.defaultText !== undefined) return flag.defaultText;
  if (flag.multiple !== true && flag.required !== undefined) return REQUIRED;
  if (flag.default === undefined) return undefined;
  return typeof flag.default === 'string' ? flag.default : flag.default.join(',');
}

/** `-v, --verbosity LEVEL`: the flag as the usage text lists it. */
export function usageLabel(name: string, flag: FlagDeclaration): string {
  const names = flag.short === undefined ? `--${name}` : `-${flag.short}, --${name}`;
  return flag.type === 'boolean' ? names : `${names} ${flag.value}`;
}

/** The help text with the default after it, as one paragraph (wrapped by renderUsage). */
export function usageHelp(flag: FlagDeclaration): string {
  const shown = shownDefault(flag);
  if (shown === undefined) return flag.help;
  return shown === REQUIRED ? `${flag.help} ${REQUIRED}` : `${flag.help} (default: ${shown})`;
}

const USAGE_WIDTH = 100;
/** Wider labels get a line of their own rather than squeezing every flag's help. */
const LABEL_WIDTH_MAX = 26;

/** `head`, then one entry per flag: labels in one column, help wrapped in the next. */
export function renderUsage(head: string, table: FlagTable): string {
  const entries = Object.entries(table).map(([name, flag]) => ({ label: usageLabel(name, flag), help: usageHelp(flag) }));
  const labelWidth = Math.min(LABEL_WIDTH_MAX, Math.max(...entries.map(({ label }) => label.length)));
  const indent = ' '.repeat(2 + labelWidth + 2);
  const lines = entries.flatMap(({ label, help }) => {
    const wrapped = wrap(help, USAGE_WIDTH - indent.length).map((line) => `${indent}${line}`);
    if (label.length > labelWidth) return [`  ${label}`, ...wrapped];
    return [`  ${label.padEnd(labelWidth)}  ${wrapped[0]!.trimStart()}`, ...wrapped.slice(1)];
  });
  return `${head}\n${lines.join('\n')}\n`;
}

/** Greedy word wrap; a word longer than the width gets a line of its own. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line === '') line = word;
    else if (line.length + 1 + word.length <= width) line += ` ${word}`;
    else {
      lines.push(line);
      line = word;
    }
  }
  return [...lines, line];
}
