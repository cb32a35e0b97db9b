/**
 * `sluice inject`: add Sluice to Kubernetes workloads.
 *
 * For every Pod, and every Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or
 * CronJob pod template, in a YAML stream of one or more documents (items of a
 * `kind: List`, or of any `...List`, included):
 *
 *   initContainers: [ sluice-init   (capture rules: NET_ADMIN + NET_RAW only, runs once),
 *                     sluice-proxy  (restartPolicy: Always — a native sidecar: the app
 *                                    starts only after its startupProbe on /ready passes),
 *                     ...the workload's own init containers ]
 *
 * Each application container's kubelet probes (httpGet, tcpSocket, grpc) are rewritten to
 * GET <health port>/app-health/<container>/<livez|readyz|startupz>, and the originals handed to
 * the proxy in SLUICE_APP_PROBES (src/main/app-probes.ts): with strict mTLS inbound, kubelet's
 * plaintext probe would otherwise be refused (sluice.io/rewrite-app-probes: "false" keeps them).
 *
 * Capture options come from pod annotations (sluice.io/...). Other documents pass
 * through untouched; a template that says sluice.io/inject: "false" is left alone;
 * injecting twice gives the same result as once. A workload that cannot be injected
 * (hostNetwork, a container running as the proxy's uid or gid, a bad annotation, no
 * containers) is passed through unchanged and reported in `skipped`; the rest are
 * injected. A stream that is not YAML, or a document that is not an object, is an error.
 */
import YAML from 'yaml';
import { SluiceError } from '../errors';
import { APP_HEALTH_PREFIX, PROBE_PATHS } from '../main/app-probes';

export const DEFAULT_IMAGE = 'sluice/proxy:0.1.0';
export const PROXY_UID = 1337;
export const HEALTH_PORT = 15020;

const TEMPLATE_KINDS = new Set(['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'Job']);

/** A workload passed through without injection, and why. */
export interface Skipped {
  /** `document 2 (Deployment payments)`, `document 1 (List) item 3 (Job backup)` */
  where: string;
  code: string;
  message: string;
}

export interface InjectResult {
  yaml: string;
  injected: number;
  skipped: Skipped[];
}

/** Pod annotation → the capture script's environment variable. */
export const CAPTURE_ANNOTATIONS: Readonly<Record<string, string>> = {
  'sluice.io/inbound-ports': 'SLUICE_INBOUND_PORTS',
  'sluice.io/exclude-inbound-ports': 'SLUICE_EXCLUDE_INBOUND_PORTS',
  'sluice.io/exclude-outbound-ports': 'SLUICE_EXCLUDE_OUTBOUND_PORTS',
  'sluice.io/include-outbound-cidrs': 'SLUICE_INCLUDE_OUTBOUND_CIDRS',
  'sluice.io/exclude-outbound-cidrs': 'SLUICE_EXCLUDE_OUTBOUND_CIDRS',
  'sluice.io/enable-ipv6': 'SLUICE_ENABLE_IPV6',
};

export interface InjectOptions {
  image?: string;
  /** Mounted into the proxy as its config (a ConfigMap name); none: the embedded default. */
  configMap?: string;
}

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : undefined;
}

const PORT_LIST = /^(\*|(\d{1,5})(,\s*\d{1,5})*)?$/;
const CIDR_LIST = /^(\*|[0-9a-fA-F.:/]+(,\s*[0-9a-fA-F.:/]+)*)?$/;

function checkAnnotation(name: string, value: string, where: string): void {
  const ok = name.endsWith('-ports') ? PORT_LIST.test(value)
    : name.endsWith('-cidrs') ? CIDR_LIST.test(value)
    : /^(true|false|1|0)$/.test(value);
  if (!ok) throw new SluiceError('ERR_INJECT_ANNOTATION', `${where}: annotation ${name}: "${value}" is not valid`);
}

function initContainer(image: string, annotations: Obj, where: string): Obj {
  const env: Obj[] = [
    { name: 'SLUICE_PROXY_UID', value: String(PROXY_UID) },
    { name: 'SLUICE_PROXY_GID', value: String(PROXY_UID) },
  ];
  for (const [annotation, variable] of Object.entries(CAPTURE_ANNOTATIONS)) {
    const v = str(annotations[annotation]);
    if (v === undefined) continue;
    checkAnnotation(annotation, v, where);
    env.push({ name: variable, value: v });
  }
  return {
    name: 'sluice-init',
    image,
    command: ['/opt/sluice/scripts/iptables/sluice-iptables.sh'],
    env,
    securityContext: {
      runAsUser: 0,
      runAsGroup: 0,
      runAsNonRoot: false,
      privileged: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] },
    },
    resources: { requests: { cpu: '10m', memory: '32Mi' }, limits: { cpu: '100m', memory: '64Mi' } },
  };
}

function proxyContainer(image: string, annotations: Obj, opts: InjectOptions, appProbes: Readonly<Record<string, unknown>>): Obj {
  const probe = { httpGet: { path: '/ready', port: HEALTH_PORT } };
  const c: Obj = {
    name: 'sluice-proxy',
    image,
    // a native sidecar: started before the app, kept running, stopped after it
    restartPolicy: 'Always',
    // kubelet probes come to the pod IP; the admin API stays on loopback, /ready alone is served here
    args: [...(opts.configMap ? ['start', '--config', '/etc/sluice/sluice.yaml'] : ['start']), '--health-address', `0.0.0.0:${HEALTH_PORT}`],
    ports: [
      { name: 'sluice-out', containerPort: 15001, protocol: 'TCP' },
      { name: 'sluice-in', containerPort: 15006, protocol: 'TCP' },
      { name: 'sluice-health', containerPort: HEALTH_PORT, protocol: 'TCP' },
    ],
    startupProbe: { ...probe, periodSeconds: 1, failureThreshold: 60 },
    readinessProbe: { ...probe, periodSeconds: 5 },
    securityContext: {
      runAsUser: PROXY_UID,
      runAsGroup: PROXY_UID,
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
    },
    resources: {
      requests: { cpu: str(annotations['sluice.io/proxy-cpu']) ?? '100m', memory: str(annotations['sluice.io/proxy-memory']) ?? '128Mi' },
      limits: { memory: str(annotations['sluice.io/proxy-memory-limit']) ?? '512Mi' },
    },
  };
  if (opts.configMap) c.volumeMounts = [{ name: 'sluice-config', mountPath: '/etc/sluice', readOnly: true }];
  if (Object.keys(appProbes).length > 0) c.env = [{ name: 'SLUICE_APP_PROBES', value: JSON.stringify(appProbes) }];
  return c;
}

/** Probe fields that say when and how often, kept on the rewritten probe as they were. */
const PROBE_TIMING = ['initialDelaySeconds', 'periodSeconds', 'timeoutSeconds', 'successThreshold', 'failureThreshold', 'terminationGracePeriodSeconds'];

/** A probe's port: a number, or the name of one of the container's ports. */
function probePort(c: Obj, port: unknown, where: string): number {
  if (typeof port === 'number' && Number.isInteger(port) && port >= 1 && port <= 65535) return port;
  if (typeof port === 'string' && /^\d{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65535) return Number(port);
  const named = (Array.isArray(c.ports) ? c.ports : []).find((p) => isObj(p) && p.name === port);
  if (isObj(named) && typeof named.containerPort === 'number') return named.containerPort;
  throw new SluiceError('ERR_INJECT_PROBE', `${where}: container "${String(c.name)}" has a probe on port ${JSON.stringify(port)}, which is no port number nor one of its named ports`);
}

/**
 * Rewrites the kubelet probes of the application containers to the proxy's health port, in
 * place; returns the originals by `<container>/<livez|readyz|startupz>`. A probe rewritten
 * before keeps its original from `previous` (the proxy's SLUICE_APP_PROBES): injecting twice
 * gives the same result. Probes with a host of their own (not the pod) and exec probes stay.
 */
function rewriteProbes(spec: Obj, previous: Readonly<Record<string, unknown>>, where: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const c of spec.containers as unknown[]) {
    if (!isObj(c) || typeof c.name !== 'string') continue;
    for (const [field, suffix] of PROBE_PATHS) {
      const p = c[field];
      if (!isObj(p)) continue;
      const key = `${c.name}/${suffix}`;
      const path = `${APP_HEALTH_PREFIX}${key}`;
      const g = isObj(p.httpGet) ? p.httpGet : null;
      if (g && g.path === path && Number(g.port) === HEALTH_PORT) {
        if (previous[key] === undefined) throw new SluiceError('ERR_INJECT_PROBE', `${where}: container "${c.name}" has a ${field} on ${path} but the proxy has no original for it`);
        out[key] = previous[key];
        continue;
      }
      let original: Obj;
      if (g) {
        if (g.host !== undefined) continue;
        original = { httpGet: { port: probePort(c, g.port, where), path: typeof g.path === 'string' ? g.path : '/', scheme: g.scheme === 'HTTPS' ? 'HTTPS' : 'HTTP',
          ...(Array.isArray(g.httpHeaders) && g.httpHeaders.length > 0 ? { httpHeaders: g.httpHeaders } : {}) } };
      } else if (isObj(p.tcpSocket)) {
        if (p.tcpSocket.host !== undefined) continue;
        original = { tcpSocket: { port: probePort(c, p.tcpSocket.port, where) } };
      } else if (isObj(p.grpc)) {
        original = { grpc: { port: probePort(c, p.grpc.port, where), ...(typeof p.grpc.service === 'string' ? { service: p.grpc.service } : {}) } };
      } else {
        continue; // exec: runs inside the container, no network
      }
      if (typeof p.timeoutSeconds === 'number') original.timeoutSeconds = p.timeoutSeconds;
      out[key] = original;
      const rewritten: Obj = { httpGet: { path, port: HEALTH_PORT, scheme: 'HTTP' } };
      for (const k of PROBE_TIMING) if (p[k] !== undefined) rewritten[k] = p[k];
      c[field] = rewritten;
    }
  }
  return out;
}

/** The SLUICE_APP_PROBES of a proxy container injected before, or {}. */
function previousProbes(spec: Obj): Record<string, unknown> {
  const proxy = (Array.isArray(spec.initContainers) ? spec.initContainers : []).find((c) => isObj(c) && c.name === 'sluice-proxy');
  const env = isObj(proxy) && Array.isArray(proxy.env) ? proxy.env.find((e) => isObj(e) && e.name === 'SLUICE_APP_PROBES') : undefined;
  if (!isObj(env) || typeof env.value !== 'string') return {};
  try {
    const v = JSON.parse(env.value) as unknown;
    return isObj(v) ? v : {};
  } catch {
    return {};
  }
}

/**
 * The capture rules exempt the proxy's uid and gid (iptables --uid-owner / --gid-owner): a
 * container of the workload running as either would have its traffic bypass the proxy without
 * a word. A container's own securityContext wins over the pod's, as in Kubernetes.
 */
function checkIdentity(spec: Obj, where: string): void {
  const pod = isObj(spec.securityContext) ? spec.securityContext : {};
  const own = [
    ...(Array.isArray(spec.initContainers) ? spec.initContainers : []).filter((c) => !(isObj(c) && (c.name === 'sluice-init' || c.name === 'sluice-proxy'))),
    ...(spec.containers as unknown[]),
  ];
  for (const c of own) {
    const sc = isObj(c) && isObj(c.securityContext) ? c.securityContext : {};
    const name = isObj(c) ? String(c.name) : '?';
    for (const [field, what] of [['runAsUser', 'uid'], ['runAsGroup', 'gid']] as const) {
      const fromContainer = sc[field] !== undefined && sc[field] !== null;
      const value = fromContainer ? sc[field] : pod[field];
      if (Number(value) !== PROXY_UID) continue;
      const source = fromContainer ? `its securityContext.${field}` : `the pod's securityContext.${field}`;
      throw new SluiceError(what === 'uid' ? 'ERR_INJECT_UID' : 'ERR_INJECT_GID',
        `${where}: container "${name}" would run as ${what} ${PROXY_UID} (${source}), whose traffic is exempt from capture; give it another ${what}`);
    }
  }
}

/** Injects into one pod spec (with its metadata, for annotations), in place. */
function injectPod(meta: Obj, spec: Obj, opts: InjectOptions, where: string): boolean {
  const annotations = isObj(meta.annotations) ? meta.annotations : {};
  if (str(annotations['sluice.io/inject']) === 'false') return false;
  if (spec.hostNetwork === true) throw new SluiceError('ERR_INJECT_HOST_NETWORK', `${where}: hostNetwork pods cannot be captured (the rules would apply to the node)`);
  const containers = Array.isArray(spec.containers) ? spec.containers : null;
  if (!containers || containers.length === 0) throw new SluiceError('ERR_INJECT_NO_CONTAINERS', `${where}: has no containers`);
  checkIdentity(spec, where);
  const rewrite = str(annotations['sluice.io/rewrite-app-probes']);
  if (rewrite !== undefined && rewrite !== 'true' && rewrite !== 'false') {
    throw new SluiceError('ERR_INJECT_ANNOTATION', `${where}: annotation sluice.io/rewrite-app-probes: "${rewrite}" is not valid (true or false)`);
  }
  const appProbes = rewrite === 'false' ? {} : rewriteProbes(spec, previousProbes(spec), where);
  const image = opts.image ?? DEFAULT_IMAGE;
  const own = (Array.isArray(spec.initContainers) ? spec.initContainers : [])
    .filter((c) => !(isObj(c) && (c.name === 'sluice-init' || c.name === 'sluice-proxy')));
  spec.initContainers = [initContainer(image, annotations, where), proxyContainer(image, annotations, opts, appProbes), ...own];
  if (opts.configMap) {
    const vols = (Array.isArray(spec.volumes) ? spec.volumes : []).filter((v) => !(isObj(v) && v.name === 'sluice-config'));
    spec.volumes = [...vols, { name: 'sluice-config', configMap: { name: opts.configMap } }];
  }
  meta.annotations = { ...annotations, 'sluice.io/injected': 'true' };
  return true;
}

function podTemplate(spec: unknown, where: string, at: string): { meta: Obj; spec: Obj } {
  const template = isObj(spec) ? spec.template : undefined;
  if (!isObj(template) || !isObj(template.spec)) throw new SluiceError('ERR_INJECT_SHAPE', `${where}: has no ${at}.template.spec`);
  if (!isObj(template.metadata)) template.metadata = {};
  return { meta: template.metadata as Obj, spec: template.spec };
}

/**
 * Injects into one Kubernetes object, in place; returns how many pod specs it injected.
 * Throws SluiceError when the workload cannot be injected (the caller keeps the original).
 */
function injectObject(value: Obj, opts: InjectOptions, where: string): number {
  const kind = str(value.kind);
  if (kind === 'Pod') {
    if (!isObj(value.spec)) throw new SluiceError('ERR_INJECT_SHAPE', `${where}: has no spec`);
    if (!isObj(value.metadata)) value.metadata = {};
    return injectPod(value.metadata as Obj, value.spec, opts, where) ? 1 : 0;
  }
  if (kind && TEMPLATE_KINDS.has(kind)) {
    const t = podTemplate(value.spec, where, 'spec');
    return injectPod(t.meta, t.spec, opts, where) ? 1 : 0;
  }
  if (kind === 'CronJob') {
    const jobTemplate = isObj(value.spec) ? value.spec.jobTemplate : undefined;
    if (!isObj(jobTemplate)) throw new SluiceError('ERR_INJECT_SHAPE', `${where}: has no spec.jobTemplate`);
    const t = podTemplate(jobTemplate.spec, where, 'spec.jobTemplate.spec');
    return injectPod(t.meta, t.spec, opts, where) ? 1 : 0;
  }
  return 0;
}

function describe(value: Obj): string {
  const kind = str(value.kind);
  const name = isObj(value.metadata) ? str(value.metadata.name) : undefined;
  return name === undefined ? kind ?? 'no kind' : `${kind ?? 'no kind'} ${name}`;
}

/** Injects into every workload of a YAML stream; returns the new stream and what was skipped. */
export function injectYaml(text: string, opts: InjectOptions = {}): InjectResult {
  const docs = YAML.parseAllDocuments(text);
  let injected = 0;
  const skipped: Skipped[] = [];
  // Works on a copy: a workload that fails half way is passed through exactly as it came.
  const attempt = (value: Obj, where: string): Obj => {
    const copy = structuredClone(value);
    try {
      injected += injectObject(copy, opts, where);
      return copy;
    } catch (err) {
      if (!(err instanceof SluiceError)) throw err;
      skipped.push({ where, code: err.code, message: err.message });
      return value;
    }
  };
  const out: string[] = [];
  docs.forEach((doc, i) => {
    if (doc.errors.length) throw new SluiceError('ERR_INJECT_YAML', `document ${i + 1}: ${doc.errors[0].message}`);
    let value: unknown = doc.toJS();
    if (value === null || value === undefined) return;
    if (!isObj(value)) throw new SluiceError('ERR_INJECT_YAML', `document ${i + 1}: not a Kubernetes object`);
    const where = `document ${i + 1} (${describe(value)})`;
    const kind = str(value.kind);
    if (kind !== undefined && kind.endsWith('List') && Array.isArray(value.items)) {
      value.items = value.items.map((item: unknown, j: number) => {
        if (!isObj(item)) throw new SluiceError('ERR_INJECT_YAML', `${where}: item ${j + 1} is not a Kubernetes object`);
        return attempt(item, `${where} item ${j + 1} (${describe(item)})`);
      });
    } else {
      value = attempt(value, where);
    }
    out.push(YAML.stringify(value, { lineWidth: 0 }));
  });
  return { yaml: out.join('---\n'), injected, skipped };
}
