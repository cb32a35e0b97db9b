/**
 * Reading CPU usage: cgroup v2 cpu.stat against cpu.max or the cpuset, and /proc/stat when the
 * cgroup has no cpu.stat; files given as text.
 */
import t from 'tap';
import { openCpuSource, parseCpuList, parseCpuMax, parseCpuStat, parseProcStat } from '../../../src/filters/adaptive/cpu-usage';

t.test('parsers', async (t) => {
  t.equal(parseCpuStat('usage_usec 1234\nuser_usec 1000\n'), 1234);
  t.equal(parseCpuStat('user_usec 1000\n'), null);
  t.equal(parseCpuStat(null), null);
  t.equal(parseCpuMax('max 100000\n'), null);
  t.equal(parseCpuMax('150000 100000\n'), 1.5);
  t.equal(parseCpuList('0-3,6\n'), 5);
  t.equal(parseCpuList(''), null);
  t.same(parseProcStat('cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n'), { busy: 150, total: 1000 });
  t.equal(parseProcStat('intr 1 2 3'), null);
});

t.test('cgroup: usage_usec over wall time and the quota', async (t) => {
  const files: Record<string, string> = { '/cg/cpu.stat': 'usage_usec 0\n', '/cg/cpu.max': '200000 100000\n' };
  const src = openCpuSource({ cgroup: '/cg', read: (f) => files[f] ?? null });
  t.equal(src.cores, 2);
  t.equal(src.describe, 'cgroup /cg');
  t.equal(src.sample(0), null, 'the first sample has nothing to compare with');
  files['/cg/cpu.stat'] = 'usage_usec 150000\n'; // 150 ms of CPU in 100 ms of 2 cores
  t.equal(src.sample(100), 0.75);
});

t.test('cgroup without a quota: cpuset, or cores from the config', async (t) => {
  const files: Record<string, string> = { '/cg/cpu.stat': 'usage_usec 0\n', '/cg/cpu.max': 'max 100000\n', '/cg/cpuset.cpus.effective': '1\n' };
  t.equal(openCpuSource({ cgroup: '/cg', read: (f) => files[f] ?? null }).cores, 1);
  t.equal(openCpuSource({ cgroup: '/cg', cores: 3, read: (f) => files[f] ?? null }).cores, 3);
});

t.test('no cgroup cpu.stat: the host from /proc/stat', async (t) => {
  const files: Record<string, string> = { '/proc/stat': 'cpu  100 0 0 900 0 0 0 0 0 0\n' };
  const src = openCpuSource({ cgroup: '/nowhere', read: (f) => files[f] ?? null });
  t.equal(src.describe, 'host /proc/stat');
  t.equal(src.sample(0), null);
  files['/proc/stat'] = 'cpu  400 0 0 1000 0 0 0 0 0 0\n';
  t.equal(src.sample(200), 0.75);
});
