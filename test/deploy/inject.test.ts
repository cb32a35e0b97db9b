import t from 'tap';
import YAML from 'yaml';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { Pod } from 'kubernetes-models/v1/Pod';
import { injectYaml, PROXY_UID } from '../../src/deploy/inject';

const deployment = `
apiVersion: apps/v1
kind: Deployment
metadata: { name: payments, namespace: bank }
spec:
  replicas: 2
  selector: { matchLabels: { app: payments } }
  template:
    metadata:
      labels: { app: payments }
      annotations:
        sluice.io/exclude-outbound-ports: "3306,6379"
        sluice.io/exclude-outbound-cidrs: "10.96.0.0/12"
        sluice.io/inbound-ports: "8080"
    spec:
      initContainers:
        - { name: migrate, image: "payments:1", command: [migrate] }
      containers:
        - { name: app, image: "payments:1", ports: [ { containerPort: 8080 } ] }
`;

const statefulSetAndService = `
apiVersion: apps/v1
kind: StatefulSet
metadata: { name: ledger }
spec:
  serviceName: ledger
  selector: { matchLabels: { app: ledger } }
  template:
    metadata: { labels: { app: ledger } }
    spec:
      containers: [ { name: app, image: "ledger:2" } ]
---
apiVersion: v1
kind: Service
metadata: { name: ledger }
spec:
  selector: { app: ledger }
  ports: [ { port: 80, targetPort: 8080 } ]
---
apiVersion: v1
kind: Pod
metadata: { name: debug }
spec:
  containers: [ { name: sh, image: busybox } ]
`;

function docs(yaml: string): Record<string, any>[] {
  return YAML.parseAllDocuments(yaml).map((d) => d.toJS());
}

t.test('a Deployment gets the capture init container and the proxy as a native sidecar', async (t) => {
  const out = injectYaml(deployment, { image: 'registry.local/sluice:1' });
  t.equal(out.injected, 1);
  const [d] = docs(out.yaml);
  new Deployment(d).validate(); // throws if the object breaks the Kubernetes schema
  const spec = d.spec.template.spec;
  t.same(spec.initContainers.map((c: any) => c.name), ['sluice-init', 'sluice-proxy', 'migrate'], 'ours first, the app\'s own init containers after');
  const init = spec.initContainers[0];
  t.same(init.securityContext.capabilities, { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] });
  t.equal(init.securityContext.privileged, false);
  const env = Object.fromEntries(init.env.map((e: any) => [e.name, e.value]));
  t.equal(env.SLUICE_EXCLUDE_OUTBOUND_PORTS, '3306,6379');
  t.equal(env.SLUICE_EXCLUDE_OUTBOUND_CIDRS, '10.96.0.0/12');
  t.equal(env.SLUICE_INBOUND_PORTS, '8080');
  t.equal(env.SLUICE_PROXY_UID, String(PROXY_UID));
  const proxy = spec.initContainers[1];
  t.equal(proxy.restartPolicy, 'Always');
  t.equal(proxy.image, 'registry.local/sluice:1');
  t.equal(proxy.securityContext.runAsUser, PROXY_UID);
  t.equal(proxy.securityContext.runAsNonRoot, true);
  t.equal(proxy.readinessProbe.httpGet.path, '/ready');
  t.equal(proxy.startupProbe.httpGet.path, '/ready');
  t.ok(proxy.resources.requests.cpu && proxy.resources.requests.memory);
  t.same(spec.containers.map((c: any) => c.name), ['app'], 'the app containers are untouched');
  t.equal(d.spec.template.metadata.annotations['sluice.io/injected'], 'true');
});

const probed = `
apiVersion: apps/v1
kind: Deployment
metadata: { name: web }
spec:
  selector: { matchLabels: { app: web } }
  template:
    metadata: { labels: { app: web } }
    spec:
      containers:
        - name: web
          image: "web:1"
          ports: [ { name: http, containerPort: 8080 }, { name: grpc, containerPort: 9090 } ]
          livenessProbe: { httpGet: { path: /healthz, port: http, httpHeaders: [ { name: x-probe, value: "1" } ] }, periodSeconds: 3, timeoutSeconds: 2, failureThreshold: 4 }
          readinessProbe: { tcpSocket: { port: 8080 }, initialDelaySeconds: 5 }
          startupProbe: { grpc: { port: 9090, service: web } }
        - name: side
          image: "side:1"
          livenessProbe: { exec: { command: [ "true" ] } }
          readinessProbe: { httpGet: { host: 10.0.0.1, path: /up, port: 80 } }
`;

t.test('application probes are rewritten to the health port, the originals handed to the proxy', async (t) => {
  const out = injectYaml(probed);
  t.equal(out.injected, 1, JSON.stringify(out.skipped));
  const [d] = docs(out.yaml);
  new Deployment(d).validate();
  const [web, side] = d.spec.template.spec.containers;
  t.same(web.livenessProbe, { httpGet: { path: '/app-health/web/livez', port: 15020, scheme: 'HTTP' }, periodSeconds: 3, timeoutSeconds: 2, failureThreshold: 4 }, 'timing kept');
  t.same(web.readinessProbe, { httpGet: { path: '/app-health/web/readyz', port: 15020, scheme: 'HTTP' }, initialDelaySeconds: 5 });
  t.same(web.startupProbe, { httpGet: { path: '/app-health/web/startupz', port: 15020, scheme: 'HTTP' } });
  t.same(side.livenessProbe, { exec: { command: ['true'] } }, 'exec probes stay');
  t.same(side.readinessProbe, { httpGet: { host: '10.0.0.1', path: '/up', port: 80 } }, 'a probe of another host stays');
  const proxy = d.spec.template.spec.initContainers[1];
  const env = proxy.env.find((e: any) => e.name === 'SLUICE_APP_PROBES');
  t.same(JSON.parse(env.value), {
    'web/livez': { httpGet: { port: 8080, path: '/healthz', scheme: 'HTTP', httpHeaders: [{ name: 'x-probe', value: '1' }] }, timeoutSeconds: 2 },
    'web/readyz': { tcpSocket: { port: 8080 } },
    'web/startupz': { grpc: { port: 9090, service: 'web' } },
  }, 'named ports resolved');
  t.equal(injectYaml(out.yaml).yaml, out.yaml, 'injecting twice gives the same manifest');

  const off = injectYaml(probed.replace('metadata: { labels: { app: web } }', 'metadata: { labels: { app: web }, annotations: { sluice.io/rewrite-app-probes: "false" } }'));
  const [o] = docs(off.yaml);
  t.same(o.spec.template.spec.containers, docs(probed)[0].spec.template.spec.containers, 'sluice.io/rewrite-app-probes: "false" keeps them');
  t.notOk(o.spec.template.spec.initContainers[1].env, 'and hands the proxy none');

  const badPort = injectYaml(probed.replace('port: http,', 'port: nope,'));
  t.equal(badPort.injected, 0);
  t.equal(badPort.skipped[0].code, 'ERR_INJECT_PROBE');
  t.match(badPort.skipped[0].message, /container "web" has a probe on port "nope", which is no port number nor one of its named ports/);
});

t.test('several documents: workloads injected, other kinds passed through', async (t) => {
  const out = injectYaml(statefulSetAndService);
  t.equal(out.injected, 2);
  const [ss, svc, pod] = docs(out.yaml);
  new StatefulSet(ss).validate();
  new Pod(pod).validate();
  t.equal(ss.spec.template.spec.initContainers.length, 2);
  t.same(svc, docs(statefulSetAndService)[1], 'the Service is unchanged');
  t.equal(pod.spec.initContainers[1].name, 'sluice-proxy');
});

t.test('injecting twice gives the same manifest as once', async (t) => {
  const once = injectYaml(deployment).yaml;
  t.equal(injectYaml(once).yaml, once);
});

t.test('sluice.io/inject: "false" leaves the workload alone', async (t) => {
  const src = deployment.replace('annotations:', 'annotations:\n        sluice.io/inject: "false"');
  const out = injectYaml(src);
  t.equal(out.injected, 0);
  t.same(docs(out.yaml)[0], docs(src)[0]);
});

t.test('a workload that cannot be injected is skipped with its reason, unchanged', async (t) => {
  const cases: [string, string, RegExp][] = [
    [deployment.replace('"3306,6379"', '"3306;rm -rf"'), 'ERR_INJECT_ANNOTATION', /exclude-outbound-ports/],
    ['kind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: true\n  containers: [{name: a, image: b}]\n', 'ERR_INJECT_HOST_NETWORK', /hostNetwork/],
    ['kind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: b, securityContext: {runAsUser: 1337}}]\n', 'ERR_INJECT_UID', /container "a" would run as uid 1337/],
    ['kind: Pod\nmetadata: {name: p}\nspec:\n  containers: []\n', 'ERR_INJECT_NO_CONTAINERS', /has no containers/],
    ['kind: Deployment\nmetadata: {name: d}\nspec: {}\n', 'ERR_INJECT_SHAPE', /has no spec\.template\.spec/],
  ];
  for (const [src, code, message] of cases) {
    const out = injectYaml(src);
    t.equal(out.injected, 0, code);
    t.equal(out.skipped.length, 1, code);
    t.equal(out.skipped[0].code, code);
    t.match(out.skipped[0].message, message);
    t.same(docs(out.yaml), docs(src), `${code}: passed through exactly as it came`);
  }
});

t.test('a stream that is not YAML, or not objects, is an error', async (t) => {
  t.throws(() => injectYaml('kind: Pod\n  bad: [\n'), { code: 'ERR_INJECT_YAML' });
  t.throws(() => injectYaml('just a string\n'), { code: 'ERR_INJECT_YAML', message: /document 1: not a Kubernetes object/ });
  t.throws(() => injectYaml('kind: List\nitems: [ 3 ]\n'), { code: 'ERR_INJECT_YAML', message: /item 1 is not a Kubernetes object/ });
});

t.test('the schema check can fail: a container without a name is invalid', async (t) => {
  const [d] = docs(injectYaml(deployment).yaml);
  delete d.spec.template.spec.initContainers[1].name;
  t.throws(() => new Deployment(d).validate());
});

t.test('the sluice inject command: file in, manifest out, errors as exit codes', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const { mkdtempSync, writeFileSync } = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const { BIN } = await import('../helpers/harness');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sluice-inject-'));
  const file = path.join(dir, 'deploy.yaml');
  writeFileSync(file, deployment);
  const ok = spawnSync(process.execPath, [BIN, 'inject', '-f', file, '--image', 'registry.local/sluice:2', '--config-map', 'sluice-config'], { encoding: 'utf8' });
  t.equal(ok.status, 0, ok.stderr);
  t.match(ok.stderr, /1 workload\(s\) injected/);
  const [d] = docs(ok.stdout);
  new Deployment(d).validate();
  const proxy = d.spec.template.spec.initContainers[1];
  t.equal(proxy.image, 'registry.local/sluice:2');
  t.same(proxy.args, ['start', '--config', '/etc/sluice/sluice.yaml', '--health-address', '0.0.0.0:15020']);
  t.same(d.spec.template.spec.volumes, [{ name: 'sluice-config', configMap: { name: 'sluice-config' } }]);
  // stdin works too
  const piped = spawnSync(process.execPath, [BIN, 'inject'], { input: deployment, encoding: 'utf8' });
  t.equal(piped.status, 0);
  t.equal(docs(piped.stdout).length, 1);
  const missing = spawnSync(process.execPath, [BIN, 'inject', '-f', path.join(dir, 'nope.yaml')], { encoding: 'utf8' });
  t.equal(missing.status, 1);
  t.match(missing.stderr, /cannot read .*nope\.yaml: ENOENT/);
  const host = spawnSync(process.execPath, [BIN, 'inject'], { input: 'kind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: true\n  containers: [{name: a, image: b}]\n', encoding: 'utf8' });
  t.equal(host.status, 3, 'written, but a workload was skipped');
  t.match(host.stderr, /hostNetwork pods cannot be captured/);
  t.equal(docs(host.stdout)[0].spec.initContainers, undefined, 'passed through without the proxy');
  const bad = spawnSync(process.execPath, [BIN, 'inject'], { input: 'kind: Pod\n  bad: [\n', encoding: 'utf8' });
  t.equal(bad.status, 1);
  t.equal(bad.stdout, '', 'nothing written');
  t.match(bad.stderr, /sluice inject: document 1: /);
});
