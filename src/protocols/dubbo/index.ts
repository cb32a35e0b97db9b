/**
 * Dubbo 2 (Hessian2) codec: pure, bytes in, frames and views out. See README.md in this folder.
 *
 *   DubboFrameDecoder ─▶ DubboFrame ─▶ DubboRequest.fromFrame  (service, version, method, paramTypes; lazy
 *                                   │                           attachments / group; arguments on demand)
 *                                   └▶ DubboResponse.fromFrame (status, error message, value, attachments)
 *   rewriteId(raw, id)   multiplexing: new upstream ids, in place
 *   localReply(...)      Dubbo's own error response for refused or failed calls
 */
export * from './dubbo-errors';
export * from './dubbo-frame';
export * from './dubbo-request';
export * from './dubbo-response';
export * from './dubbo-encode';
export { Hessian2Reader, MAX_DEPTH as HESSIAN2_MAX_DEPTH } from './hessian2-reader';
export type { HessianValue } from './hessian-js';
