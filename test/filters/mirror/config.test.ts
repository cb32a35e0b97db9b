/** The mirror filter's config: what is refused, with its path. */
import t from 'tap';
import { buildConfig } from '../../../src/config/config';

const doc = (mirror: unknown) => ({
  listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'c' }],
  clusters: [{ name: 'c', endpoints: ['127.0.0.1:8080'] }, { name: 'shadow', endpoints: ['127.0.0.1:8081'] }],
  routes: [{ match: {}, action: { cluster: 'c' }, mirror }],
});

function errorOf(fn: () => unknown): Error | undefined {
  try { fn(); } catch (e) { return e as Error; }
  return undefined;
}

t.test('mirror config', async (t) => {
  t.same(buildConfig(doc({ cluster: 'shadow' })).routes[0].mirror, { cluster: 'shadow', percent: 100 }, 'percent defaults to 100');
  const refuse = (mirror: unknown, path: string, msg: RegExp) =>
    t.match(errorOf(() => buildConfig(doc(mirror))), { message: new RegExp(`${path}[\\s\\S]*${msg.source}`) }, path);
  refuse({ cluster: 'nowhere' }, '/routes/0/mirror/cluster', /unknown cluster "nowhere"/);
  refuse({}, '/routes/0/mirror/cluster', /is required/);
  refuse({ cluster: 'shadow', percent: 101 }, '/routes/0/mirror/percent', /<= 100/);
  refuse({ cluster: 'shadow', percent: -1 }, '/routes/0/mirror/percent', />= 0/);
});

t.test('a mirror section whose filter is not listed is checked, and has no effect', async (t) => {
  t.same(buildConfig({ ...doc({ cluster: 'shadow' }), filters: ['retry'] }).filters, ['retry']);
  t.match(errorOf(() => buildConfig({ ...doc({ cluster: 'nowhere' }), filters: ['retry'] })), { message: /\/routes\/0\/mirror\/cluster: unknown cluster "nowhere"/ });
  t.same(buildConfig({ ...doc(undefined), filters: [] }).filters, [], 'no filters at all is allowed');
  t.match(errorOf(() => buildConfig({ ...doc(undefined), filters: ['mirror', 'nosuch'] })), { message: /\/filters\/1/ }, 'unknown filter name');
});
