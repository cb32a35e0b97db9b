import t from 'tap';
import { LATENCY_BUCKETS_MS, MAX_RPC_SERIES, RpcStatsCollector, RpcStatsTable } from '../../src/stats/rpc-stats';

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
  a.record('com.bank.Pay', 'transfer', 20, 0.3);
  a.record('com.bank.Pay', 'transfer', 31, 700);
  b.record('com.bank.Pay', 'transfer', 20, 3);
  b.record('com.bank.Pay', 'notify', 'oneway', 0.1);
  a.flush();
  b.flush();
  const text = await delivered(table, /method="notify"/);
  const l = 'interface="com.bank.Pay",method="transfer"';
  t.match(text, `sluice_dubbo_rq_total{${l}} 3\n`);
  t.match(text, `sluice_dubbo_rq_status_total{${l},status="20"} 2\n`);
  t.match(text, `sluice_dubbo_rq_status_total{${l},status="31"} 1\n`);
  t.match(text, `sluice_dubbo_rq_time_ms_bucket{${l},le="0.5"} 1\n`, '0.3 ms in the first bucket');
  t.match(text, `sluice_dubbo_rq_time_ms_bucket{${l},le="5"} 2\n`, 'cumulative: 3 ms by le=5');
  t.match(text, `sluice_dubbo_rq_time_ms_bucket{${l},le="500"} 2\n`, '700 ms is above 500');
  t.match(text, `sluice_dubbo_rq_time_ms_bucket{${l},le="1000"} 3\n`);
  t.match(text, `sluice_dubbo_rq_time_ms_bucket{${l},le="+Inf"} 3\n`);
  t.match(text, `sluice_dubbo_rq_time_ms_count{${l}} 3\n`);
  t.match(text, `sluice_dubbo_rq_time_ms_sum{${l}} 703.3\n`);
  t.match(text, 'sluice_dubbo_rq_status_total{interface="com.bank.Pay",method="notify",status="oneway"} 1\n');
  t.match(text, '# TYPE sluice_dubbo_rq_time_ms histogram\n');
  t.equal(LATENCY_BUCKETS_MS.length, 14);
});

t.test('interface × method pairs beyond the cap are counted as other', async (t) => {
  const name = channel();
  const table = new RpcStatsTable(name);
  const c = new RpcStatsCollector(name, 'dubbo');
  t.teardown(() => { c.close(); table.close(); });
  for (let i = 0; i < MAX_RPC_SERIES + 5; i++) c.record(`svc.S${i}`, 'm', 20, 1);
  c.flush();
  const text = await delivered(table, /interface="other"/);
  t.match(text, 'sluice_dubbo_rq_total{interface="other",method="other"} 5\n');
  t.equal(text.split('\n').filter((l) => l.startsWith('sluice_dubbo_rq_total{')).length, MAX_RPC_SERIES + 1);
});
