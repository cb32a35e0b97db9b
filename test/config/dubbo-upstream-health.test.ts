/**
 * Config rules of the Dubbo upstream connection health fields (dubbo.upstreamProbeAfterMs,
 * dubbo.upstreamProbeTimeoutMs, dubbo.upstreamMaxConsecutiveTimeouts): defaults, and each bad
 * value refused with its path.
 */
import t from 'tap';
import { issuesOf } from '../helpers/config-issues';
import { buildConfig } from '../../src/config/config';


t.test('defaults: heartbeat after 1 s of silence with calls pending, 2 s to answer, 3 timeouts in a row', async (t) => {
  const d = buildConfig({}).dubbo;
  t.equal(d.upstreamProbeAfterMs, 1000);
  t.equal(d.upstreamProbeTimeoutMs, 2000);
  t.equal(d.upstreamMaxConsecutiveTimeouts, 3);
  const set = buildConfig({ dubbo: { upstreamProbeAfterMs: 100, upstreamProbeTimeoutMs: 250, upstreamMaxConsecutiveTimeouts: 1 } }).dubbo;
  t.same([set.upstreamProbeAfterMs, set.upstreamProbeTimeoutMs, set.upstreamMaxConsecutiveTimeouts], [100, 250, 1]);
});

t.test('bad values are refused with their path', async (t) => {
  const cases: Array<[Record<string, unknown>, string, RegExp]> = [
    [{ upstreamProbeAfterMs: 99 }, '/dubbo/upstreamProbeAfterMs', />= 100/],
    [{ upstreamProbeAfterMs: 1.5e3 + 0.5 }, '/dubbo/upstreamProbeAfterMs', /must be integer/],
    [{ upstreamProbeTimeoutMs: 0 }, '/dubbo/upstreamProbeTimeoutMs', />= 100/],
    [{ upstreamProbeTimeoutMs: '3s' }, '/dubbo/upstreamProbeTimeoutMs', /must be integer/],
    [{ upstreamMaxConsecutiveTimeouts: 0 }, '/dubbo/upstreamMaxConsecutiveTimeouts', />= 1/],
    [{ upstreamMaxConsecutiveTimeouts: 10_001 }, '/dubbo/upstreamMaxConsecutiveTimeouts', /<= 10000/],
    [{ upstreamProbeAfterMsec: 100 }, '/dubbo/upstreamProbeAfterMsec', /not a known field/],
  ];
  for (const [dubbo, path, msg] of cases) {
    const issues = issuesOf({ dubbo });
    t.same(issues.map((i) => i.path), [path], `${JSON.stringify(dubbo)}: one issue at ${path}`);
    t.match(issues[0]?.message ?? '', msg);
  }
});
