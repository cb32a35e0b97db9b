import t from 'tap';
import { MAX_RPC_SERIES, RpcStatsCollector, RpcStatsTable } from '../../src/stats/rpc-stats';

let n = 0;
const channel = () => `rpc-stats-test-${process.pid}-${++n}`;

async function delivered(table: RpcStatsTable, want: RegExp): Promise<string> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const text = table.render();
    if (want.test(text)) return text;
    if (Date.now() > deadline) throw new Error(`not rendered: ${want}\n${text}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

t.test('deltas from a collector are summed and rendered as Prometheus series', async (t) => {
  const name = channel();
  const table = new RpcStatsTable(name);
  const a = new RpcStatsCollector(name, 'dubbo');
  const b = new RpcStatsCollector(name, 'dubbo');
  t.teardown(() => { a.close(); b.close(); table.close(); });
  a.record('com.bank.Pay', 'transfer', 20, 0.0003);
  a.record('com.bank.Pay', 'transfer', 31, 0.7);
  b.record('com.bank.Pay', 'transfer', 20, 0.003);
  b.record('com.bank.Pay', 'notify', 'oneway', 0.0001);
  a.flush();
  b.flush();
  const text = await delivered(table, /method="notify"/);
  const l = 'interface="com.bank.Pay",method="transfer"';
  t.match(text, `sluice_dubbo_rq_total{${l}} 3\n`);
  t.match(text, `sluice_dubbo_rq_status_total{${l},status="20"} 2\n`);
  t.match(text, `sluice_dubbo_rq_status_total{${l},status="31"} 1\n`);
  // durations in seconds, the base unit (promtool refuses sluice_dubbo_rq_time_ms)
  t.match(text, `sluice_dubbo_rq_duration_seconds_bucket{${l},le="0.0005"} 1\n`, '0.3 ms in the first bucket');
  t.match(text, `sluice_dubbo_rq_duration_seconds_bucket{${l},le="0.005"} 2\n`, 'cumulative: 3 ms by le=0.005');
  t.match(text, `sluice_dubbo_rq_duration_seconds_bucket{${l},le="0.5"} 2\n`, '700 ms is above 0.5 s');
  t.match(text, `sluice_dubbo_rq_duration_seconds_bucket{${l},le="1"} 3\n`);
  t.match(text, `sluice_dubbo_rq_duration_seconds_bucket{${l},le="+Inf"} 3\n`);
  t.match(text, `sluice_dubbo_rq_duration_seconds_count{${l}} 3\n`);
  t.match(text, `sluice_dubbo_rq_duration_seconds_sum{${l}} 0.7033\n`);
  t.match(text, 'sluice_dubbo_rq_status_total{interface="com.bank.Pay",method="notify",status="oneway"} 1\n');
  t.match(text, '# TYPE sluice_dubbo_rq_duration_seconds histogram\n');
  t.notMatch(text, /_ms\b/, 'no series in milliseconds');
});

t.test('interface × method pairs beyond the cap are counted as other', async (t) => {
  const name = channel();
  const table = new RpcStatsTable(name);
  const c = new RpcStatsCollector(name, 'dubbo');
  t.teardown(() => { c.close(); table.close(); });
  for (let i = 0; i < MAX_RPC_SERIES + 5; i++) c.record(`svc.S${i}`, 'm', 20, 0.001);
  c.flush();
  const text = await delivered(table, /interface="other"/);
  t.match(text, 'sluice_dubbo_rq_total{interface="other",method="other"} 5\n');
  t.equal(text.split('\n').filter((l) => l.startsWith('sluice_dubbo_rq_total{')).length, MAX_RPC_SERIES + 1);
});
