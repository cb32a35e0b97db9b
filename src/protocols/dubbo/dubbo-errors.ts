/**
 * Errors of the Dubbo codec. Every refusal of peer bytes is a DubboProtocolError (a ProtocolError with
 * a stable `code`); it carries the frame header when one was read, so the caller can still answer the
 * call it belonged to with a Dubbo response (see localReply in dubbo-encode.ts) before closing.
 */
import { ProtocolError, SluiceError } from '../../errors';
import type { DubboHeader } from './dubbo-frame';

/** Stable error codes. Tests assert them; operators grep for them. */
export const DubboErrorCode = {
  /** First two bytes of a frame are not 0xda 0xbb. */
  BAD_MAGIC: 'ERR_DUBBO_BAD_MAGIC',
  /** Serialization id (flag & 0x1f) not in the allowed set (default: Hessian2 only). */
  SERIALIZATION: 'ERR_DUBBO_SERIALIZATION',
  /** Body length in the header exceeds the limit; raised before any body byte is buffered. */
  PAYLOAD_TOO_LARGE: 'ERR_DUBBO_PAYLOAD_TOO_LARGE',
  /** The Hessian2 body is not what Dubbo writes (truncated, bad tag, bad descriptor, ...). */
  BAD_BODY: 'ERR_DUBBO_BAD_BODY',
} as const;
export type DubboErrorCode = (typeof DubboErrorCode)[keyof typeof DubboErrorCode];

/** Thrown (synchronously, at construction) for invalid codec options: a bug of ours, not the peer's. */
export const ERR_DUBBO_INVALID_OPTION = 'ERR_DUBBO_INVALID_OPTION';

// Dubbo response statuses used for answers to refused frames (values from Response.java).
const BAD_REQUEST = 40;
const BAD_RESPONSE = 50;

export class DubboProtocolError extends ProtocolError {
  override readonly code: DubboErrorCode;
  /** Header of the offending frame, or null when the error came before a whole header was read. */
  readonly header: DubboHeader | null;
  /**
   * Dubbo status to answer with: BAD_REQUEST (40) when the offending frame is a request (or unknown),
   * BAD_RESPONSE (50) when it is a response from an upstream (the downstream caller gets that status).
   */
  readonly replyStatus: number;

  constructor(code: DubboErrorCode, message: string, header: DubboHeader | null = null) {
    super(code, message, code === DubboErrorCode.PAYLOAD_TOO_LARGE ? 413 : header && !header.isRequest ? 502 : 400);
    this.name = 'DubboProtocolError';
    this.code = code;
    this.header = header;
    this.replyStatus = header && !header.isRequest ? BAD_RESPONSE : BAD_REQUEST;
  }
}

export function invalidOption(message: string): SluiceError {
  return new SluiceError(ERR_DUBBO_INVALID_OPTION, message);
}
