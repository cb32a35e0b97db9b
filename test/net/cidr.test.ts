/**
 * Address ranges: IPv4 and IPv6, single addresses, IPv4-mapped IPv6 on either side, the edges of
 * a range, and the messages for ranges that are refused.
 */
import t from 'tap';
import { inRange, parseCidr, parseIp } from '../../src/net/cidr';

const within = (addr: string, range: string) => inRange(parseIp(addr)!, parseCidr(range));

t.test('IPv4 ranges: inside, the edges, outside', async (t) => {
  t.ok(within('10.0.0.0', '10.0.0.0/8'));
  t.ok(within('10.255.255.255', '10.0.0.0/8'));
  t.notOk(within('11.0.0.0', '10.0.0.0/8'));
  t.notOk(within('9.255.255.255', '10.0.0.0/8'));
  t.ok(within('127.0.0.2', '127.0.0.2/32'));
  t.notOk(within('127.0.0.3', '127.0.0.2/32'));
  t.ok(within('127.0.0.3', '127.0.0.2/31'), '/31: .2 and .3');
  t.notOk(within('127.0.0.4', '127.0.0.2/31'));
  t.ok(within('203.0.113.7', '0.0.0.0/0'), '/0 holds every IPv4 address');
  t.notOk(within('::1', '0.0.0.0/0'), 'but no IPv6 one');
  t.ok(within('192.168.1.130', '192.168.1.128/25'));
  t.notOk(within('192.168.1.127', '192.168.1.128/25'));
});

t.test('IPv6 ranges, across word boundaries', async (t) => {
  t.ok(within('2001:db8::1', '2001:db8::/32'));
  t.ok(within('2001:db8:ffff:ffff:ffff:ffff:ffff:ffff', '2001:db8::/32'));
  t.notOk(within('2001:db9::1', '2001:db8::/32'));
  t.ok(within('fd00:1:2:3:4:5:6:7', 'fd00::/8'));
  t.ok(within('::1', '::1/128'));
  t.notOk(within('::2', '::1/128'));
  t.ok(within('2001:db8:0:0:8000::1', '2001:db8::8000:0:0:0/65'));
  t.notOk(within('2001:db8:0:0:7fff::1', '2001:db8::8000:0:0:0/65'));
  t.notOk(within('10.0.0.1', '::/0'), 'an IPv4 address is in no IPv6 range but the mapped ones');
});

t.test('an IPv4-mapped IPv6 address is its IPv4 address, and a mapped range is the IPv4 range', async (t) => {
  t.ok(within('::ffff:10.1.2.3', '10.0.0.0/8'), 'a dual-stack listener reports IPv4 clients this way');
  t.notOk(within('::ffff:11.1.2.3', '10.0.0.0/8'));
  t.ok(within('10.1.2.3', '::ffff:10.0.0.0/104'));
  t.equal(parseCidr('::ffff:10.0.0.0/104').text, '10.0.0.0/8');
  t.ok(within('::ffff:a01:203', '10.1.2.3'), 'in hex groups too');
});

t.test('single addresses, and the canonical form', async (t) => {
  t.equal(parseCidr('10.1.2.3').text, '10.1.2.3/32');
  t.equal(parseCidr('2001:DB8::1').text, '2001:db8::1/128');
  t.equal(parseCidr('2001:db8:0:0:0:0:0:0/32').text, '2001:db8::/32');
  t.equal(parseIp('fe80::1%eth0'), null, 'a zone is no address a rule can name');
  t.equal(parseIp('not-an-address'), null);
});

t.test('refused ranges say why', async (t) => {
  const why = (s: string) => { try { parseCidr(s); return ''; } catch (err) { return (err as Error).message; } };
  t.match(why('10.0.0.0/33'), /prefix length must be 0-32/);
  t.match(why('2001:db8::/129'), /prefix length must be 0-128/);
  t.match(why('10.0.0.0/'), /prefix length/);
  t.match(why('10.0.0.0/8/8'), /prefix length/);
  t.match(why('10.0.0.256/8'), /not an IPv4 or IPv6 address/);
  t.match(why('10.0.0/8'), /not an IPv4 or IPv6 address/);
  t.match(why('example.com/8'), /not an IPv4 or IPv6 address/);
  t.match(why('fe80::%eth0/64'), /not an IPv4 or IPv6 address/);
  t.match(why('10.0.0.1/8'), /bits set past the \/8 prefix \(the range is 10\.0\.0\.0\/8\)/);
  t.match(why('2001:db8::1/32'), /the range is 2001:db8::\/32/);
  t.equal(why('10.0.0.0/8'), '');
});
