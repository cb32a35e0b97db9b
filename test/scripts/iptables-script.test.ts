/**
 * The capture script, run for real inside network namespaces this test creates.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import t from 'tap';
import { ROOT } from '../helpers/harness';

const SCRIPT = path.join(ROOT, 'scripts', 'iptables', 'sluice-iptables.sh');
const CLEAN = path.join(ROOT, 'scripts', 'iptables', 'sluice-iptables-clean.sh');
const tag = `${process.pid % 10000}`;

function sh(ns: string, cmd: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync('ip', ['netns', 'exec', ns, ...cmd], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 30_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function rules(ns: string, tool = 'iptables'): string {
  return sh(ns, [tool, '-t', 'nat', '-S']).out;
}

/** A namespace with lo up and a veth to a peer namespace, so it has an address of its own. */
function makePod(t: { teardown(fn: () => void): void }, name: string): string {
  const ns = `sl-ipt-${name}-${tag}`;
  const peer = `${ns}-p`;
  execFileSync('ip', ['netns', 'add', ns]);
  execFileSync('ip', ['netns', 'add', peer]);
  t.teardown(() => {
    spawnSync('ip', ['netns', 'del', ns]);
    spawnSync('ip', ['netns', 'del', peer]);
  });
  const a = `vi${name.slice(0, 4)}${tag}`.slice(0, 15);
  const b = `vp${name.slice(0, 4)}${tag}`.slice(0, 15);
  execFileSync('ip', ['link', 'add', a, 'netns', ns, 'type', 'veth', 'peer', 'name', b, 'netns', peer]);
  sh(ns, ['ip', 'link', 'set', 'lo', 'up']);
  sh(ns, ['ip', 'addr', 'add', '10.231.0.2/24', 'dev', a]);
  sh(ns, ['ip', 'link', 'set', a, 'up']);
  sh(peer, ['ip', 'addr', 'add', '10.231.0.3/24', 'dev', b]);
  sh(peer, ['ip', 'link', 'set', b, 'up']);
  return ns;
}


t.test('install is idempotent, removal leaves the namespace as it was', async (t) => {
  const ns = makePod(t, 'idem');
  const before = rules(ns);
  const first = sh(ns, [SCRIPT, '-k', '-o', '3306', '-x', '10.96.0.0/12']);
  t.equal(first.code, 0, first.err);
  const once = rules(ns);
  t.match(once, /-A OUTPUT -p tcp -j SLUICE_OUTPUT/);
  t.match(once, /-A PREROUTING -p tcp -j SLUICE_INBOUND/);
  t.match(once, /-A SLUICE_OUTPUT -m owner --uid-owner 1337 -j RETURN/);
  t.match(once, /-A SLUICE_OUTPUT -m owner --gid-owner 1337 -j RETURN/);
  t.match(once, /-A SLUICE_OUTPUT -p tcp -m tcp --dport 3306 -j RETURN/);
  t.match(once, /-A SLUICE_OUTPUT -d 10.96.0.0\/12 -j RETURN/);
  t.match(once, /-A SLUICE_REDIRECT -p tcp -j REDIRECT --to-ports 15001/);
  t.match(once, /-A SLUICE_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006/);
  t.equal(sh(ns, [SCRIPT, '-k', '-o', '3306', '-x', '10.96.0.0/12']).code, 0);
  t.equal(rules(ns), once, 'a second run leaves the same rules');
  const clean = sh(ns, [CLEAN]);
  t.equal(clean.code, 0, clean.err);
  t.equal(rules(ns), before, 'every rule and chain is gone');
  t.equal(sh(ns, [CLEAN]).code, 0, 'removing twice is fine');
});

t.test('options as environment variables are the same as flags', async (t) => {
  const ns = makePod(t, 'env');
  sh(ns, [SCRIPT, '-k', '-p', '16001', '-z', '16006', '-u', '2000', '-g', '2001', '-b', '8080,9090', '-o', '25']);
  const byFlags = rules(ns);
  sh(ns, [CLEAN]);
  sh(ns, [SCRIPT], {
    SLUICE_SELF_CHECK: '0', SLUICE_OUTBOUND_PORT: '16001', SLUICE_INBOUND_PORT: '16006', SLUICE_PROXY_UID: '2000',
    SLUICE_PROXY_GID: '2001', SLUICE_INBOUND_PORTS: '8080,9090', SLUICE_EXCLUDE_OUTBOUND_PORTS: '25',
  });
  t.equal(rules(ns), byFlags);
  t.match(byFlags, /--dport 8080 -j SLUICE_IN_REDIRECT/);
  t.match(byFlags, /--uid-owner 2000/);
  t.match(byFlags, /REDIRECT --to-ports 16001/);
});

t.test('dry run prints the rules and changes nothing', async (t) => {
  const ns = makePod(t, 'dry');
  const before = rules(ns);
  const r = sh(ns, [SCRIPT, '-n', '-6']);
  t.equal(r.code, 0, r.err);
  t.match(r.out, /iptables -t nat -A SLUICE_REDIRECT -p tcp -j REDIRECT --to-ports 15001/);
  t.match(r.out, /ip6tables -t nat -A SLUICE_OUTPUT -d ::1\/128 -j RETURN/);
  t.equal(rules(ns), before);
});

t.test('IPv6 rules with -6, removed by the clean script', async (t) => {
  const ns = makePod(t, 'v6');
  const before6 = rules(ns, 'ip6tables');
  t.equal(sh(ns, [SCRIPT, '-k', '-6']).code, 0);
  t.match(rules(ns, 'ip6tables'), /-A SLUICE_OUTPUT -d ::1\/128 -j RETURN/);
  sh(ns, [CLEAN]);
  t.equal(rules(ns, 'ip6tables'), before6);
});

t.test('bad options are refused before anything changes', async (t) => {
  const ns = makePod(t, 'bad');
  const before = rules(ns);
  for (const [args, msg] of [
    [['-p', 'abc'], /outbound port "abc" is not a port/],
    [['-o', '80,99999'], /"99999" is not a port/],
    [['-x', '10.0.0.0/8,nonsense'], /"nonsense" is not an address range/],
    [['-u', 'root'], /uid "root" is not a number/],
    [['-q'], /unknown option -q/],
  ] as const) {
    const r = sh(ns, [SCRIPT, ...args]);
    t.equal(r.code, 2, `${args.join(' ')} exits 2`);
    t.match(r.err, msg);
  }
  t.equal(rules(ns), before);
});

t.test('self-check: passes when capture works, fails closed when it does not', async (t) => {
  const ns = makePod(t, 'chk');
  const ok = sh(ns, [SCRIPT]);
  t.equal(ok.code, 0, ok.err + ok.out);
  t.match(ok.out, /capture works: a connection to 10\.231\.0\.2:15999 arrived at :15001/);
  sh(ns, [CLEAN]);
  // capturing only a range the probe is not in: traffic to the probe bypasses the proxy
  const bad = sh(ns, [SCRIPT, '-i', '192.0.2.0/24']);
  t.equal(bad.code, 1);
  t.match(bad.err + bad.out, /capture is not working/);
  t.match(bad.err, /self-check failed/);
});
