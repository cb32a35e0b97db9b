/**
 * sluice start [--config FILE]   run the proxy (embedded default config without a file)
 * sluice validate FILE           check a config; print every error with its path
 */
import { ConfigError } from './errors';
import { defaultConfig, loadConfigFile, type SluiceConfig } from './config/config';
import { Sluice } from './sluice';
import { log } from './log';

const USAGE = `usage:
  sluice start [--config FILE]   run the proxy; without --config, the embedded default
                                 (capture outbound :15001, inbound :15006, admin 127.0.0.1:15000)
  sluice validate FILE           check a config file and print every error with its path
`;

function parseFlags(args: string[]): { config?: string; rest: string[]; error?: string } {
  const rest: string[] = [];
  let config: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--config' || a === '-c') {
      if (i + 1 >= args.length) return { rest, error: `${a} needs a file` };
      config = args[++i];
    } else if (a.startsWith('--config=')) {
      config = a.slice('--config='.length);
    } else if (a.startsWith('-')) {
      return { rest, error: `unknown option ${a}` };
    } else {
      rest.push(a);
    }
  }
  return { config, rest };
}

export async function main(argv: string[]): Promise<number | undefined> {
  const [cmd, ...args] = argv;
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(USAGE);
    return cmd ? 0 : 2;
  }
  const flags = parseFlags(args);
  if (flags.error) {
    process.stderr.write(`sluice: ${flags.error}\n${USAGE}`);
    return 2;
  }
  if (cmd === 'validate') {
    const file = flags.rest[0] ?? flags.config;
    if (!file) { process.stderr.write(`sluice validate: a config file is required\n${USAGE}`); return 2; }
    try {
      loadConfigFile(file);
      process.stdout.write(`${file}: valid\n`);
      return 0;
    } catch (err) {
      if (err instanceof ConfigError) { process.stderr.write(`${err.message}\n`); return 1; }
      throw err;
    }
  }
  if (cmd === 'start') {
    let config: SluiceConfig;
    try {
      config = flags.config ? loadConfigFile(flags.config) : defaultConfig();
    } catch (err) {
      if (err instanceof ConfigError) { process.stderr.write(`${err.message}\n`); return 1; }
      throw err;
    }
    let sluice: Sluice;
    let stopping = false;
    const stop = () => {
      if (stopping) return;
      stopping = true;
      log.info('draining');
      sluice.stop().then(() => process.exit(0), (err) => { log.error({ err }, 'stop failed'); process.exit(1); });
    };
    try {
      sluice = await Sluice.start({
        config, configPath: flags.config, debugEndpoints: process.env.SLUICE_DEBUG_ENDPOINTS === '1', onStopRequest: stop,
      });
    } catch (err) {
      process.stderr.write(`sluice: ${(err as Error).message}\n`);
      return 1;
    }
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    return undefined;
  }
  process.stderr.write(`sluice: unknown command "${cmd}"\n${USAGE}`);
  return 2;
}
