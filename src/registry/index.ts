/**
 * Service registries: endpoints for Dubbo interfaces and Spring Cloud services, read from
 * ZooKeeper on demand, for the services this sidecar's application actually calls.
 *
 * Usage (main thread):
 *
 *   const registries = new Registries(config, { stats, log });     // config.registries, config.registry
 *   const sub = registries.subscribe('dubbo', 'com.acme.Orders');   // first call: subscribes; later: a map lookup
 *   await sub.ready;                                                // first list, or ERR_REGISTRY_TIMEOUT
 *   sub.endpoints          // [{ address: '10.0.0.7:20880', weight: 100, labels: { group, version, ... }, source: 'zookeeper:zk' }]
 *   sub.dubboProviders(group, version)                              // Dubbo's own group/version rule
 *   sub.on('change', publishToWorkers);  sub.stale; sub.held
 *   sub.touch();                                                    // per request: keeps it subscribed
 *   await registries.close();
 *
 * Config: registryConfigSchema (spread into the schema), registryConfigIssues (semantic checks).
 * Stats: REGISTRY_FAMILIES, registrySeries(config.registries).
 */
export { Registries, type RegistriesDeps, type SubscriptionStatus } from './registries';
export { Subscription } from './subscription';
export {
  registryConfigSchema, registryConfigIssues, validateRegistryConfig, serviceNameProblem, SERVICE_KINDS,
  type RegistryConfig, type RegistrySettings, type RegistriesConfig, type ServiceKind,
} from './config';
export { REGISTRY_FAMILIES, registrySeries, MemoryStats, type StatsSink } from './stats';
export { RegistryError, realClock, type RegistryEndpoint, type Clock, type Logger, type RegistryErrorCode } from './types';
export { dubboMatches, warmupEnds, warmupWeight } from './dubbo-url';
export type { ZooKeeperRegistryStatus } from './zookeeper-registry';
