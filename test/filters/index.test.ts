/**
 * The filter registry: the default chain, the stats families the filters declare (full names,
 * labelled by route), and the per-route series the main thread allocates for a config.
 */
import t from 'tap';
import { buildConfig } from '../../src/config/config';
import { DEFAULT_FILTERS, FILTER_MODULES, createFilters, filterSeries } from '../../src/filters';
import { FAMILIES } from '../../src/stats/stats';
import { envFor } from './fake-context';

const doc = (filters?: string[]) => ({
  admin: { address: '127.0.0.1:0' },
  listeners: [{ name: 'app', address: '127.0.0.1:9001', cluster: 'web' }],
  clusters: [{ name: 'web', endpoints: [{ address: '127.0.0.1:8080', labels: { v: '1' } }, { address: '127.0.0.1:8081', labels: { v: '2' } }] }],
  routes: [
    { name: 'faulty', action: { cluster: 'web' }, fault: { delay: { ms: 5 } } },
    {
      action: { split: [{ cluster: 'web', labels: { v: '1' }, weight: 1 }, { cluster: 'web', labels: { v: '1' }, weight: 2 }, { cluster: 'web', weight: 1 }] },
      fault: { abort: { status: 503 } },
    },
    { name: 'plain', action: { cluster: 'web' } },
  ],
  ...(filters ? { filters } : {}),
});

t.test('the default chain and the families the filters declare', async (t) => {
  t.same(DEFAULT_FILTERS, ['authz', 'ratelimit', 'adaptive', 'headers', 'fault', 'split', 'mirror', 'retry']);
  t.same(FILTER_MODULES.map((m) => m.name), DEFAULT_FILTERS);
  const declared = FAMILIES.filter((f) => f.by === 'route').map((f) => `${f.name} ${f.kind}`);
  t.same(declared, ['sluice_fault_aborts_total counter', 'sluice_fault_delays_total counter', 'sluice_split_rq_total counter']);
});

t.test('series per route that uses a listed filter, named as the router names routes', async (t) => {
  const series = filterSeries(buildConfig(doc())).map((s) => `${s.name}${JSON.stringify(s.labels)}`);
  t.same(series, [
    'sluice_fault_aborts_total{"route":"faulty"}',
    'sluice_fault_delays_total{"route":"faulty"}',
    'sluice_fault_aborts_total{"route":"routes[1]"}',
    'sluice_fault_delays_total{"route":"routes[1]"}',
    'sluice_split_rq_total{"route":"routes[1]","cluster":"web","subset":"v=1"}',
    'sluice_split_rq_total{"route":"routes[1]","cluster":"web","subset":""}',
  ], 'two entries on one subset count in one series; a route without the sections has none');
  const noFault = filterSeries(buildConfig(doc(['split']))).map((s) => s.name);
  t.same(noFault, ['sluice_split_rq_total', 'sluice_split_rq_total'], 'an unlisted filter counts nothing');
});

t.test('the chain a config names is created in its order', async (t) => {
  const config = buildConfig(doc(['split', 'headers']));
  t.same(createFilters(config.filters, envFor(config)).map((f) => f.name), ['split', 'headers']);
});
