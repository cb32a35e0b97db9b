/**
 * The identity in force, published by the main thread to every worker through shared memory, so
 * that all of them switch at once: a worker looks at the sequence number (one atomic load) before
 * each new handshake, and builds its secure contexts again when it changed. A worker started
 * later (one that replaces a dead one) reads the mailbox on its first handshake: nothing has to
 * be sent again.
 *
 *   tls.control (Int32 × 2)      [0] seq (odd while written)   [1] length
 *   tls.mailbox (Uint8 × 1 MiB)  msgpack of IdentityMessage
 *
 * Key material stays inside the process: the buffer is shared by threads, never written out.
 */
import { pack, unpack } from 'msgpackr';
import { SluiceError } from '../errors';
import { declareRegion, type SharedMemory } from '../shared/shared-memory';

export const IDENTITY_MAILBOX_BYTES = 1 << 20;
const CONTROL = declareRegion({ name: 'tls.control', kind: 'int32', count: 2 });
const MAILBOX = declareRegion({ name: 'tls.mailbox', kind: 'uint8', count: IDENTITY_MAILBOX_BYTES });
const SEQ = 0;
const LEN = 1;

export interface IdentityMessage {
  /** Counts identities installed since start; 0 is never published. */
  generation: number;
  /** SPIFFE ID without the scheme. */
  id: string;
  certPem: string;
  keyPem: string;
  caPem: string;
  /** 48 bytes for session tickets, shared by every worker so a ticket resumes on any of them; new with each identity. */
  ticketKeys: Uint8Array;
  /** tls.cipherSuites joined with ':' ('' for OpenSSL's default). */
  ciphers: string;
}

export class IdentityMailbox {
  private readonly control: Int32Array;
  private readonly bytes: Uint8Array;

  constructor(memory: SharedMemory) {
    this.control = memory.region(CONTROL);
    this.bytes = memory.region(MAILBOX);
  }

  /** Main thread only. */
  publish(m: IdentityMessage): void {
    const b = pack(m);
    if (b.length > this.bytes.length) throw new SluiceError('ERR_IDENTITY_TOO_LARGE', `the identity packs to ${b.length} bytes, more than ${this.bytes.length}`);
    const seq = Atomics.add(this.control, SEQ, 1) + 1;
    this.bytes.set(b, 0);
    Atomics.store(this.control, LEN, b.length);
    Atomics.store(this.control, SEQ, seq + 1);
  }

  get seq(): number {
    return Atomics.load(this.control, SEQ);
  }

  read(): { seq: number; value: IdentityMessage } | null {
    for (;;) {
      const before = Atomics.load(this.control, SEQ);
      if (before === 0) return null;
      if (before & 1) continue;
      const len = Atomics.load(this.control, LEN);
      const copy = Buffer.from(this.bytes.subarray(0, len));
      if (Atomics.load(this.control, SEQ) !== before) continue;
      return { seq: before, value: unpack(copy) as IdentityMessage };
    }
  }
}
