/**
 * The thread's deadline lists (src/worker/deadlines.ts): entries fall due in order, never before
 * their time, a cancelled one never, one that is added again counts from then, and a handler
 * that throws does not keep the others from theirs.
 */
import t from 'tap';
import { DeadlineList, deadlineList, type Deadline } from '../../src/worker/deadlines';

class Entry implements Deadline {
  dueAt = NaN;
  prevDue: Deadline | null = null;
  nextDue: Deadline | null = null;
  dueList: DeadlineList | null = null;
  firedAfter = -1;
  constructor(readonly name: string, readonly fired: string[], private readonly from = performance.now(), private readonly fail = false) {}
  onDue(): void {
    this.firedAfter = performance.now() - this.from;
    this.fired.push(this.name);
    if (this.fail) throw new Error(`${this.name} failed`);
  }
}

function until(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const check = () => {
      if (cond()) resolve();
      else if (Date.now() > end) reject(new Error('timed out'));
      else setTimeout(check, 5);
    };
    check();
  });
}

t.test('entries fall due in the order they were added, none before its time', async (t) => {
  const list = new DeadlineList(40);
  const fired: string[] = [];
  const a = new Entry('a', fired);
  list.add(a);
  await new Promise((r) => setTimeout(r, 15));
  const b = new Entry('b', fired);
  list.add(b);
  t.equal(list.size, 2);
  await until(() => fired.length === 2, 2000);
  t.same(fired, ['a', 'b']);
  t.ok(a.firedAfter >= 40, `a after ${a.firedAfter.toFixed(1)} ms`);
  t.ok(b.firedAfter >= 40, `b after ${b.firedAfter.toFixed(1)} ms`);
  t.equal(list.size, 0, 'fired entries leave the list');
  t.equal(a.dueList, null);
  t.equal(a.nextDue, null);
});

t.test('a cancelled entry never falls due, wherever it was in the list; the others still do', async (t) => {
  const list = new DeadlineList(30);
  const fired: string[] = [];
  const entries = ['a', 'b', 'c', 'd'].map((n) => new Entry(n, fired));
  for (const e of entries) list.add(e);
  list.cancel(entries[0]); // the head
  list.cancel(entries[2]); // the middle
  list.cancel(entries[2]); // twice: nothing more happens
  t.equal(list.size, 2);
  await until(() => fired.length === 2, 2000);
  await new Promise((r) => setTimeout(r, 50));
  t.same(fired, ['b', 'd']);
  t.equal(entries[0].dueList, null, 'a cancelled entry keeps no reference into the list');
  t.equal(entries[0].prevDue, null);
});

t.test('an entry added again counts from then, in its new list', async (t) => {
  const short = new DeadlineList(20);
  const long = new DeadlineList(80);
  const fired: string[] = [];
  const from = performance.now();
  const e = new Entry('moved', fired, from);
  short.add(e);
  long.add(e);
  t.equal(short.size, 0, 'it left the first list');
  t.equal(long.size, 1);
  await until(() => fired.length === 1, 2000);
  t.ok(e.firedAfter >= 80, `after ${e.firedAfter.toFixed(1)} ms, the longer deadline`);
});

t.test('the list empties and refills: the timer is armed again', async (t) => {
  const list = new DeadlineList(10);
  const fired: string[] = [];
  list.add(new Entry('first', fired));
  await until(() => fired.length === 1, 2000);
  await new Promise((r) => setTimeout(r, 30));
  const e = new Entry('second', fired);
  list.add(e);
  await until(() => fired.length === 2, 2000);
  t.ok(e.firedAfter >= 10);
});

t.test('an entry whose neighbour was cancelled after the timer was armed still falls due on time', async (t) => {
  const list = new DeadlineList(30);
  const fired: string[] = [];
  const a = new Entry('a', fired);
  list.add(a);
  await new Promise((r) => setTimeout(r, 20));
  const b = new Entry('b', fired);
  list.add(b);
  list.cancel(a); // the timer was armed for a; it fires, finds b not yet due, and re-arms
  await until(() => fired.length === 1, 2000);
  t.same(fired, ['b']);
  t.ok(b.firedAfter >= 30, `b after ${b.firedAfter.toFixed(1)} ms`);
});

t.test('a handler that throws does not keep the others from falling due', async (t) => {
  const list = new DeadlineList(10);
  const fired: string[] = [];
  list.add(new Entry('throws', fired, performance.now(), true));
  list.add(new Entry('after', fired));
  await until(() => fired.length === 2, 2000);
  t.same(fired, ['throws', 'after']);
});

t.test('one list per duration in a thread', async (t) => {
  t.equal(deadlineList(1234), deadlineList(1234));
  t.not(deadlineList(1234), deadlineList(1235));
  t.equal(deadlineList(1234).ms, 1234);
});
