/**
 * `sluice inject`: add Sluice to Kubernetes workloads.
 *
 * For every Pod, and every Deployment, StatefulSet, DaemonSet, ReplicaSet or
 * Job pod template, in a YAML stream of one or more documents:
 *
 *   initContainers: [ sluice-init   (capture rules: NET_ADMIN + NET_RAW only, runs once),
 *                     sluice-proxy  (restartPolicy: Always — a native sidecar: the app
 *                                    starts only after its startupProbe on /ready passes),
 *                     ...the workload's own init containers ]
 *
 * Capture options come from pod annotations (sluice.io/...). Other documents pass
 * through untouched; a template that says sluice.io/inject: "false" is left alone;
 * injecting twice gives the same result as once.
 */
import YAML from 'yaml';
import { SluiceError } from '../errors';

export const DEFAULT_IMAGE = 'sluice/proxy:0.1.0';
export const PROXY_UID = 1337;
export const HEALTH_PORT = 15020;

const TEMPLATE_KINDS = new Set(['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'Job']);

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

function proxyContainer(image: string, annotations: Obj, opts: InjectOptions): Obj {
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
  return c;
}

/** Injects into one pod spec (with its metadata, for annotations), in place. */
function injectPod(meta: Obj, spec: Obj, opts: InjectOptions, where: string): boolean {
  const annotations = isObj(meta.annotations) ? meta.annotations : {};
  if (str(annotations['sluice.io/inject']) === 'false') return false;
  if (spec.hostNetwork === true) throw new SluiceError('ERR_INJECT_HOST_NETWORK', `${where}: hostNetwork pods cannot be captured (the rules would apply to the node)`);
  const containers = Array.isArray(spec.containers) ? spec.containers : null;
  if (!containers || containers.length === 0) throw new SluiceError('ERR_INJECT_NO_CONTAINERS', `${where}: has no containers`);
  for (const c of containers) {
    if (isObj(c) && isObj(c.securityContext) && c.securityContext.runAsUser === PROXY_UID) {
      throw new SluiceError('ERR_INJECT_UID', `${where}: container "${String(c.name)}" runs as uid ${PROXY_UID}, whose traffic is exempt from capture`);
    }
  }
  const image = opts.image ?? DEFAULT_IMAGE;
  const own = (Array.isArray(spec.initContainers) ? spec.initContainers : [])
    .filter((c) => !(isObj(c) && (c.name === 'sluice-init' || c.name === 'sluice-proxy')));
  spec.initContainers = [initContainer(image, annotations, where), proxyContainer(image, annotations, opts), ...own];
  if (opts.configMap) {
    const vols = (Array.isArray(spec.volumes) ? spec.volumes : []).filter((v) => !(isObj(v) && v.name === 'sluice-config'));
    spec.volumes = [...vols, { name: 'sluice-config', configMap: { name: opts.configMap } }];
  }
  meta.annotations = { ...annotations, 'sluice.io/injected': 'true' };
  return true;
}

/** Injects into every workload of a YAML stream; returns the new stream. */
export function injectYaml(text: string, opts: InjectOptions = {}): { yaml: string; injected: number } {
  const docs = YAML.parseAllDocuments(text);
  let injected = 0;
  const out: string[] = [];
  docs.forEach((doc, i) => {
    if (doc.errors.length) throw new SluiceError('ERR_INJECT_YAML', `document ${i + 1}: ${doc.errors[0].message}`);
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) return;
    if (!isObj(value)) throw new SluiceError('ERR_INJECT_YAML', `document ${i + 1}: not a Kubernetes object`);
    const kind = str(value.kind);
    const name = isObj(value.metadata) ? str(value.metadata.name) ?? '?' : '?';
    const where = `document ${i + 1} (${kind ?? 'no kind'} ${name})`;
    if (kind === 'Pod') {
      if (!isObj(value.spec)) throw new SluiceError('ERR_INJECT_SHAPE', `${where}: has no spec`);
      if (!isObj(value.metadata)) value.metadata = {};
      if (injectPod(value.metadata as Obj, value.spec, opts, where)) injected++;
    } else if (kind && TEMPLATE_KINDS.has(kind)) {
      const spec = value.spec;
      const template = isObj(spec) ? spec.template : undefined;
      if (!isObj(template) || !isObj(template.spec)) throw new SluiceError('ERR_INJECT_SHAPE', `${where}: has no spec.template.spec`);
      if (!isObj(template.metadata)) template.metadata = {};
      if (injectPod(template.metadata as Obj, template.spec, opts, where)) injected++;
    }
    out.push(YAML.stringify(value, { lineWidth: 0 }));
  });
  return { yaml: out.join('---\n'), injected };
}
