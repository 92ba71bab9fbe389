// The configuration's public surface: nothing outside config/ imports its other files.
export { ConfigError } from './flag-table.ts';
export { type Config, type ParsedServerArgs, SERVER_USAGE, type StsConfig, parseServerArgs } from './server-config.ts';
export { SERVER_FLAGS } from './server-flags.ts';
export { INITIALIZE_FLAGS, INITIALIZE_USAGE, type InitializeConfig, parseInitializeArgs } from './initialize-config.ts';
