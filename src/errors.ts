/**
 * One error class with a stable `code`. Config errors carry every bad path;
 * protocol errors carry the status a codec should answer with.
 */
export class SluiceError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'SluiceError';
    this.code = code;
  }
}

export interface ConfigIssue {
  path: string;
  message: string;
}

export class ConfigError extends SluiceError {
  readonly issues: readonly ConfigIssue[];
  constructor(issues: ConfigIssue[], source = 'config') {
    super('ERR_CONFIG_INVALID',
      `${source} is invalid:\n` + issues.map((i) => `  ${i.path || '/'}: ${i.message}`).join('\n'));
    this.issues = issues;
  }
}

/** A peer sent bytes we refuse. `status` is the HTTP status to answer with, if any. */
export class ProtocolError extends SluiceError {
  readonly status: number;
  constructor(code: string, message: string, status = 400) {
    super(code, message);
    this.status = status;
  }
}
