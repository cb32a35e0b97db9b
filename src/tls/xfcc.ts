/**
 * The caller's identity, passed on to the application: in `x-forwarded-client-cert` (Envoy's
 * format, `By=<our SPIFFE ID>;URI=<the caller's>`) for HTTP, and as an attachment of the same
 * name for Dubbo providers. On inbound listeners whatever the caller sent under that name is
 * removed first, on plaintext connections too: only Sluice says who called.
 */
import type { HeaderOps } from '../exchange/filter';
import type { Direction } from '../config/config';

export const XFCC = 'x-forwarded-client-cert';

const STRIP_ONLY: HeaderOps = Object.freeze({ set: [], remove: [XFCC] });

/** The edit every request of a connection gets; computed once per connection. */
export function identityEdits(direction: Direction, principal: string | undefined, ownId: string | undefined): HeaderOps | null {
  if (principal !== undefined && ownId !== undefined) {
    return { set: [[XFCC, `By=spiffe://${ownId};URI=spiffe://${principal}`]], remove: [XFCC] };
  }
  return direction === 'inbound' ? STRIP_ONLY : null;
}
