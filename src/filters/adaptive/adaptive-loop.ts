/**
 * Adaptive limiting on the main thread: one timer samples the CPU and runs the controller for the
 * whole sidecar (workers only read what it writes), and its state for `/stats` and
 * `GET /protection`.
 */
import type { SharedMemory } from '../../shared/shared-memory';
import { series } from '../../stats/stats';
import { AdaptiveController, type ControllerView } from './controller';
import { openCpuSource, type CpuSource } from './cpu-usage';
import type { AdaptiveLimitConfig } from './index';
import { InterfaceTable } from './interface-table';

export interface AdaptiveView extends Partial<ControllerView> {
  enabled: boolean;
  mode: 'enforce' | 'shadow';
}

const FAMILIES: ReadonlyArray<readonly [string, 'gauge' | 'counter', string]> = [
  ['sluice_adaptive_cpu_usage_ratio', 'gauge', 'CPU used by the application (cgroup or host), a share of its cores, smoothed as the controller sees it'],
  ['sluice_adaptive_cpu_target_ratio', 'gauge', 'The CPU usage adaptive limiting keeps the application under'],
  ['sluice_adaptive_latency_ratio', 'gauge', 'Inbound latency over its learned baseline (plus latencyBufferMs), weighted by calls'],
  ['sluice_adaptive_overloaded', 'gauge', '1 while the controller lowers limits (usage over target or latency over tolerance)'],
  ['sluice_adaptive_interface_limit', 'gauge', 'Admitted concurrency of an interface (calls in flight across all workers); -1: no limit'],
  ['sluice_adaptive_interface_inflight', 'gauge', 'Calls of an interface in flight now'],
  ['sluice_adaptive_interface_cost_seconds', 'gauge', 'Learned CPU seconds per call of an interface'],
  ['sluice_adaptive_interface_latency_baseline_seconds', 'gauge', 'Learned latency of an interface when not overloaded'],
  ['sluice_adaptive_interface_requests_total', 'counter', 'Calls of an interface by decision (admitted, refused, shadow_refused), since this process started'],
];

export class AdaptiveLoop {
  private readonly table: InterfaceTable;
  private controller: AdaptiveController | null = null;
  private timer: NodeJS.Timeout | null = null;
  private config: AdaptiveLimitConfig | null = null;
  private cpuKey = '';

  constructor(memory: SharedMemory, private readonly openCpu: (c: AdaptiveLimitConfig['cpu']) => CpuSource = (c) => openCpuSource(c)) {
    this.table = new InterfaceTable(memory);
  }

  /** A config was published: start, reconfigure or stop the loop. */
  apply(config: AdaptiveLimitConfig | undefined): void {
    const enabled = config?.enabled === true;
    this.config = config ?? null;
    if (!enabled) {
      if (this.timer) { clearInterval(this.timer); this.timer = null; }
      this.controller?.liftAll();
      return;
    }
    const cpuKey = JSON.stringify(config.cpu);
    const cpu = cpuKey !== this.cpuKey ? this.openCpu(config.cpu) : undefined;
    this.cpuKey = cpuKey;
    if (this.controller) this.controller.configure(config, cpu);
    else this.controller = new AdaptiveController(this.table, cpu!, config);
    if (this.timer) clearInterval(this.timer);
    this.timer = setInterval(() => this.controller!.tick(performance.now()), config.intervalMs);
    this.timer.unref();
  }

  /** A worker died: the calls it had in flight leave the in-flight counts (they will never complete). */
  workerGone(gaugeRow: number): void {
    this.table.releaseShares(gaugeRow);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  view(): AdaptiveView {
    const c = this.config;
    const base = { enabled: c?.enabled === true, mode: c?.mode ?? 'enforce' };
    return c?.enabled && this.controller ? { ...base, ...this.controller.view() } : base;
  }

  /** Prometheus text of the controller and its interfaces (labels bounded by maxInterfaces). */
  render(): string {
    if (!this.config?.enabled || !this.controller) return '';
    const v = this.controller.view();
    const lines = new Map<string, string[]>(FAMILIES.map(([n]) => [n, []]));
    const put = (name: string, value: number, labels?: Record<string, string>) => lines.get(name)!.push(`${series(name, labels)} ${value}`);
    put('sluice_adaptive_cpu_usage_ratio', v.cpu.smoothed ?? 0);
    put('sluice_adaptive_cpu_target_ratio', v.cpu.target);
    put('sluice_adaptive_latency_ratio', v.latencyRatio ?? 0);
    put('sluice_adaptive_overloaded', v.state === 'overloaded' ? 1 : 0);
    for (const i of v.interfaces) {
      const l = { interface: i.name, class: i.class };
      put('sluice_adaptive_interface_limit', i.limit ?? -1, l);
      put('sluice_adaptive_interface_inflight', i.inflight, l);
      put('sluice_adaptive_interface_cost_seconds', i.costMs / 1000, l);
      put('sluice_adaptive_interface_latency_baseline_seconds', i.baselineMs / 1000, l);
      put('sluice_adaptive_interface_requests_total', i.completed, { ...l, decision: 'admitted' });
      put('sluice_adaptive_interface_requests_total', i.refused, { ...l, decision: 'refused' });
      put('sluice_adaptive_interface_requests_total', i.shadowRefused, { ...l, decision: 'shadow_refused' });
    }
    let out = '';
    for (const [name, kind, help] of FAMILIES) out += `# HELP ${name} ${help}\n# TYPE ${name} ${kind}\n${lines.get(name)!.join('\n')}\n`;
    return out;
  }
}
