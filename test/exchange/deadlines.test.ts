import t from 'tap';
import { addDeadline, clearDeadline, DeadlineList, type Timed } from '../../src/exchange/deadlines';

class Entry implements Timed {
  dlPrev: Timed | null = null;
  dlNext: Timed | null = null;
  dlAt = 0;
  dlList: DeadlineList | null = null;
  firedAt = -1;
  constructor(private readonly added = performance.now(), private readonly then?: () => void) {}
  onDeadline(): void { this.firedAt = performance.now() - this.added; this.then?.(); }
}

const until = (cond: () => boolean, ms: number) => new Promise<void>((resolve, reject) => {
  const start = performance.now();
  const poll = setInterval(() => {
    if (cond()) { clearInterval(poll); resolve(); } else if (performance.now() - start > ms) { clearInterval(poll); reject(new Error('timed out')); }
  }, 2);
});

t.test('a deadline fires once, no earlier than its duration; a cleared one never fires', async (t) => {
  const a = new Entry();
  const b = new Entry();
  const c = new Entry();
  addDeadline(a, 40, performance.now());
  addDeadline(b, 40, performance.now());
  addDeadline(c, 40, performance.now());
  t.equal(a.dlList!.size, 3);
  clearDeadline(b);
  t.equal(b.dlList, null, 'out of its list');
  t.equal(a.dlList!.size, 2);
  await until(() => a.firedAt >= 0 && c.firedAt >= 0, 2000);
  t.ok(a.firedAt >= 40, `fired after ${a.firedAt.toFixed(1)} ms, not before 40`);
  t.ok(c.firedAt >= 40);
  t.equal(a.dlList, null, 'a fired entry left its list');
  await new Promise((r) => setTimeout(r, 60));
  t.equal(b.firedAt, -1, 'the cleared entry did not fire');
  clearDeadline(a); // clearing after it fired does nothing
});

t.test('entries added after the timer was armed wait for their own deadline', async (t) => {
  const first = new Entry();
  addDeadline(first, 50, performance.now());
  await new Promise((r) => setTimeout(r, 30));
  const late = new Entry();
  addDeadline(late, 50, performance.now());
  await until(() => first.firedAt >= 0, 2000);
  t.equal(late.firedAt, -1, 'not due when the first one fired');
  t.not(late.dlList, null, 'still waiting');
  await until(() => late.firedAt >= 0, 2000);
  t.ok(late.firedAt >= 50, `fired after ${late.firedAt.toFixed(1)} ms`);
});

t.test('an entry added from a deadline callback, to the same list, fires too', async (t) => {
  const again = new Entry();
  const first = new Entry(performance.now(), () => addDeadline(again, 20, performance.now()));
  addDeadline(first, 20, performance.now());
  await until(() => again.firedAt >= 0, 2000);
  t.ok(first.firedAt >= 20);
  t.ok(again.firedAt >= 20);
});

t.test('durations have lists of their own', async (t) => {
  const slow = new Entry();
  const fast = new Entry();
  addDeadline(slow, 80, performance.now());
  addDeadline(fast, 10, performance.now());
  t.not(slow.dlList, fast.dlList);
  await until(() => fast.firedAt >= 0, 2000);
  t.equal(slow.firedAt, -1, 'the longer one still waits');
  clearDeadline(slow);
});

t.test('a list that emptied does not keep the thread alive', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const mod = require.resolve('../../src/exchange/deadlines');
  const script = `const d = require(${JSON.stringify(mod)}); const e = { dlPrev: null, dlNext: null, dlAt: 0, dlList: null, onDeadline() { process.exitCode = 3; } };
    d.addDeadline(e, 20000, performance.now()); d.clearDeadline(e);`;
  const start = performance.now();
  const r = spawnSync(process.execPath, ['-e', script], { timeout: 10_000 });
  t.equal(r.status, 0, 'exited by itself, without the deadline firing');
  t.ok(performance.now() - start < 5000, 'well before the 20 s timer');
});
