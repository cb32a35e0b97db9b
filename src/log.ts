/** The process log (not the access log): JSON lines on stderr. */
import pino from 'pino';

export const log = pino({ base: { pid: process.pid }, level: process.env.SLUICE_LOG_LEVEL ?? 'info' }, pino.destination(2));
