/**
 * Dubbo peers as `node -e` scripts, for processes that must run inside a network namespace
 * (an application of a pod-like namespace), built on the independent dubbo-remoting package.
 */

/** The path dubbo-remoting is required from, the first argument of every script here. */
export const REMOTING = require.resolve('dubbo-remoting');

/**
 * argv: remoting-path host port name [from]. Answers "<name>:<method>:<arg>" (with " from=<peer
 * address>" when the fifth argument is "from"); a provider named "@xfcc" answers every call with
 * its x-forwarded-client-cert attachment instead ("none" without one).
 */
export const DUBBO_PROVIDER = `
const net = require('net');
const [mod, host, port, name, from] = process.argv.slice(1);
const remoting = require(mod);
net.createServer((sock) => {
  sock.on('error', () => sock.destroy());
  const enc = remoting.encoder({});
  const dec = remoting.decoder({});
  enc.pipe(sock);
  sock.pipe(dec);
  dec.on('error', () => sock.destroy());
  dec.on('heartbeat', (hb) => enc.writeHeartbeatAck(hb));
  dec.on('request', (req) => {
    const d = req.data;
    const props = d.attachments || d.requestProps || {};
    const v = name === '@xfcc' ? String(props['x-forwarded-client-cert'] || 'none')
      : name + ':' + d.methodName + ':' + d.args[0] + (from === 'from' ? ' from=' + sock.remoteAddress : '');
    enc.writeResponse(req, { appResponse: { $class: 'java.lang.String', $: v }, isError: false });
  });
}).listen(Number(port), host, () => console.log('listening'));
`;

/**
 * argv: remoting-path host port signature count. \`count\` calls in turn over one connection, then
 * prints one JSON line: [{status, value | error}, ...]; gives up after 20 s.
 */
export const DUBBO_CONSUMER = `
const net = require('net');
const [mod, host, port, signature, count] = process.argv.slice(1);
const remoting = require(mod);
const out = [];
const done = () => { console.log(JSON.stringify(out)); process.exit(0); };
setTimeout(() => { out.push({ status: -2, error: 'consumer timeout' }); done(); }, 20000).unref();
const sock = net.connect(Number(port), host);
sock.on('error', (e) => { out.push({ status: -1, error: String(e.message) }); done(); });
const enc = remoting.encoder({});
const dec = remoting.decoder({});
enc.pipe(sock);
sock.pipe(dec);
let id = 1;
const next = () => {
  if (id > Number(count)) { done(); return; }
  enc.writeRequest(id, { serverSignature: signature, methodName: 'transfer', args: [{ $class: 'java.lang.String', $: 'c' + id }], requestProps: {}, timeout: 5000 });
};
dec.on('response', (r) => {
  out.push(r.data.error ? { status: 1, error: String(r.data.error.message || r.data.error) } : { status: 20, value: r.data.appResponse });
  id++;
  next();
});
sock.on('connect', next);
`;
