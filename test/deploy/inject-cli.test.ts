/**
 * `sluice inject` through the real CLI (`node bin/sluice.js inject`, manifest on stdin): what a
 * user piping manifests to kubectl sees on stdout, on stderr and in the exit status.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import t from 'tap';
import YAML from 'yaml';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { CronJob } from 'kubernetes-models/batch/v1/CronJob';
import { Job } from 'kubernetes-models/batch/v1/Job';
import { Pod } from 'kubernetes-models/v1/Pod';

const BIN = path.resolve(__dirname, '..', '..', '..', 'bin', 'sluice.js');

function inject(input: string, args: string[] = []) {
  const r = spawnSync(process.execPath, [BIN, 'inject', ...args], { input, encoding: 'utf8', timeout: 20_000 });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, docs: YAML.parseAllDocuments(r.stdout).map((d) => d.toJS()) as Record<string, any>[] };
}

const initNames = (spec: any): string[] => (spec.initContainers ?? []).map((c: any) => c.name);

function pod(name: string, podSecurity: string, containerSecurity = ''): string {
  return `apiVersion: v1
kind: Pod
metadata: { name: ${name} }
spec:
${podSecurity ? `  securityContext: ${podSecurity}\n` : ''}  containers:
    - name: app
      image: app:1
${containerSecurity ? `      securityContext: ${containerSecurity}\n` : ''}`;
}

const goodDeployment = `apiVersion: apps/v1
kind: Deployment
metadata: { name: web }
spec:
  selector: { matchLabels: { app: web } }
  template:
    metadata: { labels: { app: web } }
    spec:
      containers: [ { name: app, image: "web:1" } ]
`;

t.test('the proxy\'s uid or gid on the app is refused: pod level and container level', async (t) => {
  const cases: [string, string, RegExp][] = [
    ['pod runAsUser', pod('p1', '{ runAsUser: 1337 }'), /document 1 \(Pod p1\): container "app" would run as uid 1337 \(the pod's securityContext\.runAsUser\)/],
    ['pod runAsGroup', pod('p2', '{ runAsUser: 1000, runAsGroup: 1337 }'), /document 1 \(Pod p2\): container "app" would run as gid 1337 \(the pod's securityContext\.runAsGroup\)/],
    ['container runAsUser', pod('p3', '', '{ runAsUser: 1337 }'), /container "app" would run as uid 1337 \(its securityContext\.runAsUser\)/],
    ['container runAsGroup', pod('p4', '{ runAsUser: 1000 }', '{ runAsGroup: 1337 }'), /container "app" would run as gid 1337 \(its securityContext\.runAsGroup\)/],
  ];
  for (const [what, input, message] of cases) {
    const r = inject(input);
    t.equal(r.code, 3, `${what}: exit status says a workload was skipped`);
    t.match(r.stderr, message, what);
    t.match(r.stderr, /exempt from capture/, what);
    t.match(r.stderr, /0 workload\(s\) injected, 1 skipped/, what);
    t.same(r.docs, [YAML.parse(input)], `${what}: passed through unchanged, no proxy added`);
  }
});

t.test('an app init container running as the proxy\'s uid is refused too', async (t) => {
  const input = `kind: Pod
metadata: { name: p }
spec:
  initContainers: [ { name: migrate, image: m, securityContext: { runAsUser: 1337 } } ]
  containers: [ { name: app, image: a } ]
`;
  const r = inject(input);
  t.equal(r.code, 3);
  t.match(r.stderr, /container "migrate" would run as uid 1337/);
});

t.test('a container\'s own uid and gid win over the pod\'s 1337', async (t) => {
  const r = inject(pod('p', '{ runAsUser: 1337, runAsGroup: 1337 }', '{ runAsUser: 1000, runAsGroup: 1000 }'));
  t.equal(r.code, 0, r.stderr);
  t.match(r.stderr, /1 workload\(s\) injected\n$/);
  new Pod(r.docs[0]).validate();
  t.same(initNames(r.docs[0].spec), ['sluice-init', 'sluice-proxy']);
  t.equal(r.docs[0].spec.initContainers[1].securityContext.runAsUser, 1337, 'the proxy itself still runs as 1337');
});

t.test('one workload that cannot be injected does not stop the others', async (t) => {
  const input = [goodDeployment, pod('root-net', '{ runAsUser: 1337 }'), 'apiVersion: v1\nkind: Service\nmetadata: { name: web }\nspec: { ports: [ { port: 80 } ] }\n',
    goodDeployment.replace(/web/g, 'api'), 'kind: Pod\nmetadata: { name: hostnet }\nspec:\n  hostNetwork: true\n  containers: [ { name: a, image: b } ]\n'].join('---\n');
  const r = inject(input);
  t.equal(r.code, 3);
  t.equal(r.docs.length, 5, 'every document is written');
  t.same(initNames(r.docs[0].spec.template.spec), ['sluice-init', 'sluice-proxy']);
  t.same(initNames(r.docs[3].spec.template.spec), ['sluice-init', 'sluice-proxy']);
  new Deployment(r.docs[0]).validate();
  new Deployment(r.docs[3]).validate();
  const original = YAML.parseAllDocuments(input).map((d) => d.toJS());
  t.same(r.docs[1], original[1], 'the skipped Pod is unchanged');
  t.same(r.docs[2], original[2], 'the Service is unchanged');
  t.same(r.docs[4], original[4], 'the hostNetwork Pod is unchanged');
  const warnings = r.stderr.split('\n').filter((l) => l.includes('warning'));
  t.equal(warnings.length, 2, r.stderr);
  t.match(warnings[0], /^sluice inject: warning: skipped, passed through unchanged: document 2 \(Pod root-net\): /);
  t.match(warnings[1], /^sluice inject: warning: skipped, passed through unchanged: document 5 \(Pod hostnet\): hostNetwork/);
  t.match(r.stderr, /2 workload\(s\) injected, 2 skipped\n$/);
});

t.test('a CronJob is injected in its job template', async (t) => {
  const input = `apiVersion: batch/v1
kind: CronJob
metadata: { name: nightly }
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        metadata:
          annotations: { sluice.io/exclude-outbound-ports: "5432" }
        spec:
          restartPolicy: OnFailure
          containers: [ { name: report, image: "report:1" } ]
`;
  const r = inject(input, ['--image', 'registry.local/sluice:3']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stderr, /1 workload\(s\) injected/);
  const cj = r.docs[0];
  new CronJob(cj).validate();
  const tpl = cj.spec.jobTemplate.spec.template;
  t.same(initNames(tpl.spec), ['sluice-init', 'sluice-proxy']);
  t.equal(tpl.spec.initContainers[1].image, 'registry.local/sluice:3');
  t.equal(tpl.spec.initContainers[1].restartPolicy, 'Always', 'a native sidecar: the Job still completes');
  t.same(tpl.spec.initContainers[0].env.find((e: any) => e.name === 'SLUICE_EXCLUDE_OUTBOUND_PORTS'), { name: 'SLUICE_EXCLUDE_OUTBOUND_PORTS', value: '5432' });
  t.equal(tpl.metadata.annotations['sluice.io/injected'], 'true');
  t.equal(inject(r.stdout, ['--image', 'registry.local/sluice:3']).stdout, r.stdout, 'injecting twice changes nothing');
  const broken = inject('apiVersion: batch/v1\nkind: CronJob\nmetadata: { name: c }\nspec: { schedule: "* * * * *" }\n');
  t.equal(broken.code, 3);
  t.match(broken.stderr, /document 1 \(CronJob c\): has no spec\.jobTemplate/);
});

t.test('the items of a kind: List are injected, one bad item is skipped', async (t) => {
  const input = `apiVersion: v1
kind: List
items:
  - ${goodDeployment.trimEnd().split('\n').join('\n    ')}
  - apiVersion: batch/v1
    kind: Job
    metadata: { name: once }
    spec:
      template:
        spec:
          restartPolicy: Never
          securityContext: { runAsGroup: 1337 }
          containers: [ { name: job, image: "job:1" } ]
  - apiVersion: v1
    kind: ConfigMap
    metadata: { name: settings }
    data: { a: "1" }
  - apiVersion: v1
    kind: Pod
    metadata: { name: solo }
    spec:
      containers: [ { name: app, image: "solo:1" } ]
`;
  const r = inject(input);
  t.equal(r.code, 3, r.stderr);
  t.equal(r.docs.length, 1);
  const [list] = r.docs;
  t.equal(list.kind, 'List');
  const original = YAML.parse(input).items;
  t.equal(list.items.length, 4);
  new Deployment(list.items[0]).validate();
  t.same(initNames(list.items[0].spec.template.spec), ['sluice-init', 'sluice-proxy']);
  new Job(list.items[1]).validate();
  t.same(list.items[1], original[1], 'the Job running as gid 1337 is unchanged');
  t.same(list.items[2], original[2], 'the ConfigMap is unchanged');
  new Pod(list.items[3]).validate();
  t.same(initNames(list.items[3].spec), ['sluice-init', 'sluice-proxy']);
  t.match(r.stderr, /document 1 \(List\) item 2 \(Job once\): container "job" would run as gid 1337/);
  t.match(r.stderr, /2 workload\(s\) injected, 1 skipped/);
});

t.test('input that is not YAML: exit 1, nothing written', async (t) => {
  const r = inject(`${goodDeployment}---\nkind: Pod\n  bad: [\n`);
  t.equal(r.code, 1);
  t.equal(r.stdout, '');
  t.match(r.stderr, /^sluice inject: document 2: /);
});
