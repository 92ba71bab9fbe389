import { readFileSync } from 'node:fs';

// Read once from the package manifest so `version`, logs and metrics never disagree with the release.
const manifest = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

export const VERSION: string = manifest.version;
