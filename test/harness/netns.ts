/**
 * Fake LAN hosts built from Linux network namespaces, for integration tests.
 *
 * Layout of one LAN (nothing is added to the root namespace):
 *
 *   netns <id>-sw   bridge br0 (+ br1 while partitioned), ports h1..hN [, rtr]
 *   netns <id>-h1   lo, eth0 = 10.X.Y.1/24, route 224.0.0.0/4 dev eth0
 *   ...
 *
 * `<id>` is `fm<pid>-<n>`: the creating pid lets `reapStale` find namespaces
 * left behind by crashed runs. Interface names only need to be unique inside
 * their own namespace, so they are short fixed names (eth0, h1, br0) and can
 * never clash with a parallel test file or with the machine's real NICs.
 *
 * Requires root, iproute2 and util-linux `unshare` (plus `ping` for the tests).
 */
import { spawn, execFile, execFileSync, type ChildProcess, type StdioOptions } from 'node:child_process';
import { setMaxListeners } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export const NS_PREFIX = 'fm';
/** Interface name of every host's leg into its LAN. */
export const HOST_IFACE = 'eth0';
/** mDNS and friends need a multicast route, or sends fail with ENETUNREACH. */
const MULTICAST_NET = '224.0.0.0/4';
/** Host octet of the router leg in a LAN (hosts get .1 ... .N). */
const ROUTER_OCTET = 254;
/** How long spawned processes get between SIGTERM and SIGKILL on teardown. */
const KILL_GRACE_MS = 1500;
/** Cross-process subnet reservations (one O_EXCL file per /24). */
const SUBNET_LOCK_DIR = path.join(os.tmpdir(), 'farmesh-netns-subnets');

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

export interface ExecResult {
  stdout: string;
  stderr: string;
  /** Exit code; 128 + signal number if the process was killed by a signal. */
  code: number;
}

export interface ExecOptions {
  signal?: AbortSignal;
  /** Kill the command (whole process group) and reject after this long. */
  timeoutMs?: number;
  /** Merged over process.env. */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Written to the command's stdin, which is then closed. */
  input?: string;
}

export interface SpawnOpts {
  /** Merged over process.env (so PATH etc. survive). */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  stdio?: StdioOptions;
}

/** Something that runs commands inside a namespace: a host or a router. */
export interface NetnsNode {
  /** Network namespace name (for `ip netns exec`). */
  readonly name: string;
  /** What `hostname` / os.hostname() report inside this node. */
  readonly hostname: string;
  exec(cmd: string, args?: string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Starts a tracked process in its own process group; killed on destroy. */
  spawn(cmd: string, args?: string[], opts?: SpawnOpts): ChildProcess;
}

export interface Host extends NetnsNode {
  readonly ip: string;
  /** The host's interface into the LAN (inside its namespace). */
  readonly iface: string;
  /** Simulates pulling the network cable: the switch port goes down. */
  cableOut(signal?: AbortSignal): Promise<void>;
  cableIn(signal?: AbortSignal): Promise<void>;
}

export interface Lan {
  /** `fm<pid>-<n>`: prefix of every namespace of this LAN. */
  readonly id: string;
  /** e.g. `10.23.7.0/24`. */
  readonly subnet: string;
  readonly hosts: Host[];
  /**
   * Cuts layer 2 (unicast and multicast) between groups `a` and `b`: the ports
   * of `b` move to a second bridge. Hosts in neither group (and a router leg)
   * stay with `a`. Replaces any earlier partition.
   */
  partition(a: Host[], b: Host[], signal?: AbortSignal): Promise<void>;
  heal(signal?: AbortSignal): Promise<void>;
  /** Kills every process started in the LAN and deletes its namespaces. Idempotent. */
  destroy(): Promise<void>;
}

export interface Router extends NetnsNode {
  /** Router addresses in LAN a and LAN b (the hosts' default gateways). */
  readonly ipA: string;
  readonly ipB: string;
}

export interface TwoLans {
  a: Lan;
  b: Lan;
  router: Router;
  destroy(): Promise<void>;
}

export interface CreateLanOptions {
  /** A host count, or one hostname per host. */
  hosts: number | string[];
  /** Aborts creation (whatever was built so far is torn down). */
  signal?: AbortSignal;
}

// ---------------------------------------------------------------------------
// Registry of everything this process created, for crash-safe teardown
// ---------------------------------------------------------------------------

const registry = {
  /** Namespaces, in creation order (switches first, so delete in reverse). */
  namespaces: new Set<string>(),
  /** Process-group ids of spawned children. */
  groups: new Set<number>(),
  /** Subnet lock files. */
  locks: new Set<string>(),
};

let hooksInstalled = false;

/**
 * Last-resort cleanup for when afterAll never runs. Everything here must be
 * synchronous: on 'exit' and on a fatal signal there is no event loop left.
 */
function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', cleanupSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = () => {
      cleanupSync();
      // Our listener suppressed Node's default "die on signal". If nobody else
      // (e.g. vitest) handles it, re-raise so the process still dies as asked.
      if (process.listenerCount(sig) === 1) {
        process.removeListener(sig, onSignal);
        process.kill(process.pid, sig);
      }
    };
    process.on(sig, onSignal);
  }
  // A monitor does not swallow the error the way an 'uncaughtException'
  // listener would. Only clean up if the process is about to die: under
  // vitest an uncaught error fails the test but the worker (and the LANs
  // other tests in the file still use) lives on.
  process.on('uncaughtExceptionMonitor', () => {
    if (process.listenerCount('uncaughtException') === 0) cleanupSync();
  });
  // A vitest fork whose parent was killed loses its IPC channel but keeps
  // running (spinning at 100% CPU) forever, and its LANs with it. With no
  // channel it can never report again, so clean up and end it (by signal:
  // vitest stubs process.exit in workers). The timer is unref'd: a fork that
  // is exiting normally anyway is not held up.
  if (process.send) {
    process.on('disconnect', () => {
      cleanupSync();
      setTimeout(() => process.kill(process.pid, 'SIGTERM'), 1000).unref();
    });
  }
}

/** Synchronously kills everything we started and deletes our namespaces. */
export function cleanupSync(): void {
  for (const pgid of registry.groups) signalGroup(pgid, 'SIGKILL');
  registry.groups.clear();
  const namespaces = [...registry.namespaces].reverse();
  for (const ns of namespaces) killNamespacePidsSync(ns);
  for (const ns of namespaces) {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
  registry.namespaces.clear();
  for (const lock of registry.locks) releaseLock(lock);
  registry.locks.clear();
}

function killNamespacePidsSync(ns: string): void {
  try {
    const out = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    for (const pid of parsePids(out)) signalPid(pid, 'SIGKILL');
  } catch {
    // namespace already gone
  }
}

// ---------------------------------------------------------------------------
// Small process / command helpers
// ---------------------------------------------------------------------------

async function ip(args: string[], signal?: AbortSignal): Promise<string> {
  signal?.throwIfAborted();
  try {
    const { stdout } = await execFileAsync('ip', args, { signal, encoding: 'utf8' });
    return stdout;
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    const e = error as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')} failed: ${(e.stderr || e.message).trim()}`, { cause: error });
  }
}

function parsePids(text: string): number[] {
  return text.split(/\s+/).filter(Boolean).map(Number).filter(Number.isInteger);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function groupAlive(pgid: number): boolean {
  return pidAlive(-pgid);
}

function signalPid(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already exited
  }
}

function signalGroup(pgid: number, sig: NodeJS.Signals): void {
  signalPid(-pgid, sig);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) return false;
    await sleep(25);
  }
  return true;
}

/**
 * argv that runs `cmd` in namespace `ns` with hostname `hostname`. Hostnames
 * live in UTS namespaces, not network ones, so each command gets a fresh UTS
 * namespace with the host's name. `ip netns exec`, `unshare` and `sh` all exec
 * in place, so the spawned pid *is* the command's pid.
 */
function nsArgv(ns: string, hostname: string, cmd: string, args: string[]): string[] {
  const setHostname = 'hostname "$1" && shift && exec "$@"';
  return ['netns', 'exec', ns, 'unshare', '--uts', 'sh', '-c', setHostname, 'sh', hostname, cmd, ...args];
}

// ---------------------------------------------------------------------------
// Nodes (hosts and routers)
// ---------------------------------------------------------------------------

class Node implements NetnsNode {
  /** Process groups started here that may still have members. */
  private readonly groups = new Set<number>();
  /** Direct children not yet reaped. */
  private readonly children = new Set<ChildProcess>();

  constructor(
    readonly name: string,
    readonly hostname: string,
  ) {}

  spawn(cmd: string, args: string[] = [], opts: SpawnOpts = {}): ChildProcess {
    const child = spawn('ip', nsArgv(this.name, this.hostname, cmd, args), {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      stdio: opts.stdio ?? 'pipe',
      // Own process group, so teardown can kill the command *and* its children.
      detached: true,
    });
    const pgid = child.pid;
    if (pgid === undefined) return child; // spawn failed; 'error' will follow
    registry.groups.add(pgid);
    this.groups.add(pgid);
    this.children.add(child);
    child.once('exit', () => {
      this.children.delete(child);
      // Forget the group once empty, so a recycled pid is never killed later.
      if (!groupAlive(pgid)) {
        registry.groups.delete(pgid);
        this.groups.delete(pgid);
      }
    });
    return child;
  }

  exec(cmd: string, args: string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    opts.signal?.throwIfAborted();
    const child = this.spawn(cmd, args, { env: opts.env, cwd: opts.cwd });
    return collect(child, `${cmd} ${args.join(' ')} in ${this.name}`, opts);
  }

  /** SIGTERM, grace period, SIGKILL, then sweep anything left in the namespace. */
  async killAll(): Promise<void> {
    const groups = [...this.groups];
    const children = [...this.children];
    for (const pgid of groups) signalGroup(pgid, 'SIGTERM');
    const exited = await until(() => groups.every((pgid) => !groupAlive(pgid)), KILL_GRACE_MS);
    if (!exited) for (const pgid of groups) signalGroup(pgid, 'SIGKILL');
    // Stragglers that escaped their group (setsid) are still in the namespace.
    await until(async () => {
      const pids = parsePids(await ip(['netns', 'pids', this.name]).catch(() => ''));
      for (const pid of pids) signalPid(pid, 'SIGKILL');
      return pids.length === 0;
    }, 2000);
    // Wait for Node to reap our direct children, so their pids are truly gone.
    await until(() => children.every((c) => c.exitCode !== null || c.signalCode !== null), 2000);
    for (const pgid of groups) {
      registry.groups.delete(pgid);
      this.groups.delete(pgid);
    }
  }
}

export function collect(child: ChildProcess, what: string, opts: ExecOptions): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdin?.on('error', () => undefined); // EPIPE if the command ignores stdin
    child.stdin?.end(opts.input ?? '');

    let failure: Error | undefined;
    const stop = (error: Error) => {
      failure ??= error;
      signalGroup(child.pid!, 'SIGKILL');
    };
    const timer =
      opts.timeoutMs === undefined
        ? undefined
        : setTimeout(() => stop(new Error(`timed out after ${opts.timeoutMs} ms: ${what}`)), opts.timeoutMs);
    const onAbort = () => stop(opts.signal!.reason as Error);
    opts.signal?.addEventListener('abort', onAbort, { once: true });

    const finish = () => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
    };
    child.once('error', (error) => {
      finish();
      reject(error);
    });
    child.once('close', (code, sig) => {
      finish();
      if (failure) {
        (failure as Error & { stdout?: string; stderr?: string }).stdout = stdout;
        (failure as Error & { stdout?: string; stderr?: string }).stderr = stderr;
        reject(failure);
        return;
      }
      resolve({ stdout, stderr, code: code ?? 128 + (sig ? os.constants.signals[sig] : 0) });
    });
  });
}

class NetnsHost extends Node implements Host {
  readonly iface = HOST_IFACE;

  constructor(
    name: string,
    hostname: string,
    readonly ip: string,
    /** This host's port on the switch (inside the switch namespace). */
    readonly port: string,
    private readonly switchNs: string,
  ) {
    super(name, hostname);
  }

  async cableOut(signal?: AbortSignal): Promise<void> {
    // Down on the switch side: the host sees carrier loss but keeps its
    // addresses and routes (setting eth0 itself down would flush the routes).
    await ip(['-n', this.switchNs, 'link', 'set', this.port, 'down'], signal);
  }

  async cableIn(signal?: AbortSignal): Promise<void> {
    await ip(['-n', this.switchNs, 'link', 'set', this.port, 'up'], signal);
  }
}

class NetnsRouter extends Node implements Router {
  constructor(
    name: string,
    readonly ipA: string,
    readonly ipB: string,
  ) {
    super(name, name);
  }
}

// ---------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------

async function addNamespace(ns: string, signal?: AbortSignal): Promise<void> {
  await ip(['netns', 'add', ns], signal);
  registry.namespaces.add(ns);
  await ip(['-n', ns, 'link', 'set', 'lo', 'up'], signal);
}

/** Deletes a namespace after killing whatever still runs in it. */
async function deleteNamespace(ns: string): Promise<void> {
  await until(async () => {
    const pids = parsePids(await ip(['netns', 'pids', ns]).catch(() => ''));
    for (const pid of pids) signalPid(pid, 'SIGKILL');
    return pids.length === 0;
  }, 2000);
  await ip(['netns', 'del', ns]).catch(() => undefined); // already gone is fine
  registry.namespaces.delete(ns);
}

let lanCounter = 0;

/**
 * Claims a LAN id by creating its switch namespace: `ip netns add` fails if the
 * name exists, so this is atomic across processes (and across vitest worker
 * threads, which share a pid).
 */
async function claimLanId(signal?: AbortSignal): Promise<string> {
  for (;;) {
    const id = `${NS_PREFIX}${process.pid}-${++lanCounter}`;
    try {
      await ip(['netns', 'add', `${id}-sw`], signal);
    } catch (error) {
      if (/exists/i.test(String(error))) continue;
      throw error;
    }
    registry.namespaces.add(`${id}-sw`);
    return id;
  }
}

/** Lists namespace names (`ip netns list` prints "name (id: N)"). */
export async function listNamespaces(signal?: AbortSignal): Promise<string[]> {
  const out = await ip(['netns', 'list'], signal);
  return out
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean);
}

/**
 * Deletes namespaces (and kills their processes) and subnet locks left by
 * earlier runs whose creating process is dead. Names must look like
 * `<prefix><pid>-...`; namespaces of live processes are never touched.
 * Returns the deleted namespace names.
 */
export async function reapStale(prefix = NS_PREFIX, signal?: AbortSignal): Promise<string[]> {
  const pattern = new RegExp(`^${escapeRegExp(prefix)}(\\d+)-`);
  const stale = (await listNamespaces(signal)).filter((ns) => {
    const pid = Number(pattern.exec(ns)?.[1] ?? NaN);
    return Number.isInteger(pid) && pid !== process.pid && !pidAlive(pid);
  });
  // Hosts first, then switches, so no veth outlives its bridge for long.
  stale.sort((x, y) => Number(x.endsWith('-sw')) - Number(y.endsWith('-sw')));
  for (const ns of stale) await deleteNamespace(ns);
  reapStaleLocks();
  return stale;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

let reaped: Promise<unknown> | undefined;
/** Reaps crashed runs once per process, before the first LAN is built. */
function reapOnce(): Promise<unknown> {
  reaped ??= reapStale().catch(() => undefined);
  return reaped;
}

// ---------------------------------------------------------------------------
// Subnets
// ---------------------------------------------------------------------------

interface Subnet {
  /** First three octets, e.g. `10.23.7`. */
  prefix: string;
  lock: string;
}

let subnetCounter = 0;

/**
 * Reserves a 10.X.Y.0/24 that no root-namespace route overlaps and no other
 * harness instance holds. The starting point is derived from pid + counter so
 * parallel workers rarely even contend for the same lock file.
 */
async function allocateSubnet(signal?: AbortSignal): Promise<Subnet> {
  const taken = await rootRoutes(signal);
  fs.mkdirSync(SUBNET_LOCK_DIR, { recursive: true });
  const start = (process.pid * 131 + ++subnetCounter * 17) % 65536;
  for (let i = 0; i < 65536; i++) {
    const n = (start + i) % 65536;
    const prefix = `10.${n >> 8}.${n & 255}`;
    if (taken.some((route) => overlaps(route, `${prefix}.0/24`))) continue;
    const lock = path.join(SUBNET_LOCK_DIR, `${prefix}.lock`);
    try {
      fs.writeFileSync(lock, String(process.pid), { flag: 'wx' });
    } catch {
      continue; // held by someone else (or stale: reapStale removes those)
    }
    registry.locks.add(lock);
    return { prefix, lock };
  }
  throw new Error('no free 10.X.Y.0/24 subnet');
}

function releaseLock(lock: string): void {
  try {
    fs.unlinkSync(lock);
  } catch {
    // already gone
  }
  registry.locks.delete(lock);
}

function reapStaleLocks(): void {
  let files: string[];
  try {
    files = fs.readdirSync(SUBNET_LOCK_DIR);
  } catch {
    return;
  }
  for (const file of files) {
    const lock = path.join(SUBNET_LOCK_DIR, file);
    try {
      const pid = Number(fs.readFileSync(lock, 'utf8'));
      if (pid !== process.pid && !pidAlive(pid)) fs.unlinkSync(lock);
    } catch {
      // raced with its owner or another reaper
    }
  }
}

/** Destinations of every IPv4 route in the root namespace, as CIDRs. */
async function rootRoutes(signal?: AbortSignal): Promise<string[]> {
  const routeTypes = new Set(['unicast', 'local', 'broadcast', 'multicast', 'unreachable', 'blackhole', 'prohibit', 'throw', 'anycast', 'nat']);
  const out = await ip(['-4', 'route', 'show', 'table', 'all'], signal);
  return out
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .map((words) => (routeTypes.has(words[0] ?? '') ? words[1] : words[0]))
    .filter((dest): dest is string => !!dest && dest !== 'default' && /^\d/.test(dest));
}

function overlaps(a: string, b: string): boolean {
  const [netA, lenA] = parseCidr(a);
  const [netB, lenB] = parseCidr(b);
  const len = Math.min(lenA, lenB);
  const mask = len === 0 ? 0 : (~0 << (32 - len)) >>> 0;
  return ((netA & mask) >>> 0) === ((netB & mask) >>> 0);
}

function parseCidr(cidr: string): [number, number] {
  const [addr = '', len = '32'] = cidr.split('/');
  const value = addr.split('.').reduce((acc, octet) => ((acc << 8) | Number(octet)) >>> 0, 0);
  return [value, Number(len)];
}

// ---------------------------------------------------------------------------
// LANs
// ---------------------------------------------------------------------------

const HOSTNAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i;

/** Checked before anything is built, so bad input costs no teardown. */
function validateHosts(hosts: number | string[]): void {
  const count = typeof hosts === 'number' ? hosts : hosts.length;
  if (!Number.isInteger(count) || count < 1 || count >= ROUTER_OCTET) {
    throw new Error(`a LAN needs 1..${ROUTER_OCTET - 1} hosts, got ${count}`);
  }
  if (typeof hosts === 'number') return;
  for (const name of hosts) if (!HOSTNAME_RE.test(name)) throw new Error(`invalid hostname: ${JSON.stringify(name)}`);
  if (new Set(hosts).size !== hosts.length) throw new Error(`duplicate hostnames: ${hosts.join(', ')}`);
}

/** Default hostnames equal the namespace names: unique across parallel runs. */
function hostnamesFor(id: string, hosts: number | string[]): string[] {
  return typeof hosts === 'number' ? Array.from({ length: hosts }, (_, i) => `${id}-h${i + 1}`) : hosts;
}

class NetnsLan implements Lan {
  readonly hosts: NetnsHost[] = [];
  /** Every namespace of this LAN, switch first. */
  private readonly namespaces: string[];
  /** br1 exists once the LAN has been partitioned. */
  private hasSecondBridge = false;
  private destroying: Promise<void> | undefined;

  constructor(
    readonly id: string,
    private readonly net: Subnet,
  ) {
    this.namespaces = [this.switchNs];
  }

  get switchNs(): string {
    return `${this.id}-sw`;
  }

  get subnet(): string {
    return `${this.net.prefix}.0/24`;
  }

  address(octet: number): string {
    return `${this.net.prefix}.${octet}`;
  }

  /** Builds the bridge; the switch namespace itself was made by claimLanId. */
  async buildSwitch(signal?: AbortSignal): Promise<void> {
    await ip(['-n', this.switchNs, 'link', 'set', 'lo', 'up'], signal);
    await addBridge(this.switchNs, 'br0', signal);
  }

  async addHost(index: number, hostname: string, signal?: AbortSignal): Promise<NetnsHost> {
    const ns = `${this.id}-h${index}`;
    const port = `h${index}`;
    const addr = this.address(index);
    this.namespaces.push(ns);
    await addNamespace(ns, signal);
    await plugIn(this.switchNs, port, ns, HOST_IFACE, signal);
    await ip(['-n', ns, 'addr', 'add', `${addr}/24`, 'dev', HOST_IFACE], signal);
    await ip(['-n', ns, 'link', 'set', HOST_IFACE, 'up'], signal);
    await ip(['-n', ns, 'route', 'add', MULTICAST_NET, 'dev', HOST_IFACE], signal);
    const host = new NetnsHost(ns, hostname, addr, port, this.switchNs);
    this.hosts[index - 1] = host;
    return host;
  }

  async partition(a: Host[], b: Host[], signal?: AbortSignal): Promise<void> {
    const own = (h: Host) => this.hosts.includes(h as NetnsHost);
    if (![...a, ...b].every(own)) throw new Error('partition: host is not on this LAN');
    if (a.some((h) => b.includes(h))) throw new Error('partition: groups overlap');
    await this.heal(signal);
    if (!this.hasSecondBridge) {
      await addBridge(this.switchNs, 'br1', signal);
      this.hasSecondBridge = true;
    }
    for (const host of b as NetnsHost[]) {
      await ip(['-n', this.switchNs, 'link', 'set', host.port, 'master', 'br1'], signal);
    }
  }

  async heal(signal?: AbortSignal): Promise<void> {
    if (!this.hasSecondBridge) return;
    for (const host of this.hosts) {
      await ip(['-n', this.switchNs, 'link', 'set', host.port, 'master', 'br0'], signal);
    }
  }

  destroy(): Promise<void> {
    this.destroying ??= this.teardown();
    return this.destroying;
  }

  private async teardown(): Promise<void> {
    await Promise.all(this.hosts.filter(Boolean).map((h) => h.killAll()));
    // Reverse order: hosts before the switch namespace that names the LAN.
    for (const ns of [...this.namespaces].reverse()) await deleteNamespace(ns);
    releaseLock(this.net.lock);
  }
}

async function addBridge(ns: string, name: string, signal?: AbortSignal): Promise<void> {
  await ip(['-n', ns, 'link', 'add', name, 'type', 'bridge'], signal);
  // A dumb switch: flood all multicast instead of relying on IGMP snooping.
  await ip(['-n', ns, 'link', 'set', name, 'type', 'bridge', 'mcast_snooping', '0'], signal);
  await ip(['-n', ns, 'link', 'set', name, 'up'], signal);
}

/** Creates a veth `port` on the switch's br0 whose peer `iface` lands in `ns`. */
async function plugIn(switchNs: string, port: string, ns: string, iface: string, signal?: AbortSignal): Promise<void> {
  await ip(['-n', switchNs, 'link', 'add', port, 'type', 'veth', 'peer', 'name', iface, 'netns', ns], signal);
  await ip(['-n', switchNs, 'link', 'set', port, 'master', 'br0', 'up'], signal);
}

/**
 * Hosts are built in parallel, each `ip` call listening on the signal; a
 * follower signal keeps Node's listener-leak warning off the caller's signal.
 */
function manyListenerSignal(signal?: AbortSignal): AbortSignal | undefined {
  if (!signal) return undefined;
  const follower = AbortSignal.any([signal]);
  setMaxListeners(1000, follower);
  return follower;
}

/** Builds a LAN; see the file comment for its layout. */
export async function createLan(opts: CreateLanOptions): Promise<Lan> {
  return buildLan(opts);
}

async function buildLan({ hosts, signal: callerSignal }: CreateLanOptions): Promise<NetnsLan> {
  callerSignal?.throwIfAborted();
  const signal = manyListenerSignal(callerSignal);
  validateHosts(hosts);
  installExitHooks();
  await reapOnce();
  const net = await allocateSubnet(signal);
  let id: string;
  try {
    id = await claimLanId(signal);
  } catch (error) {
    releaseLock(net.lock);
    throw error;
  }
  const lan = new NetnsLan(id, net);
  try {
    await lan.buildSwitch(signal);
    const names = hostnamesFor(id, hosts);
    // allSettled: on failure, no half-built host may still be adding
    // namespaces while destroy() runs.
    const results = await Promise.allSettled(names.map((hostname, i) => lan.addHost(i + 1, hostname, signal)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    return lan;
  } catch (error) {
    await lan.destroy();
    throw error;
  }
}

/**
 * Two LANs joined by a router namespace that forwards unicast between them.
 * The kernel does not route multicast without a multicast routing daemon, so
 * mDNS stays inside each LAN, as across real studio sites.
 */
export async function createTwoLans(opts: { a: number | string[]; b: number | string[]; signal?: AbortSignal }): Promise<TwoLans> {
  const { signal } = opts;
  const lans: NetnsLan[] = [];
  let routerNs: string | undefined;
  const destroy = async () => {
    if (routerNs) await deleteNamespace(routerNs);
    await Promise.all(lans.map((lan) => lan.destroy()));
  };
  try {
    const a = await buildLan({ hosts: opts.a, signal });
    lans.push(a);
    const b = await buildLan({ hosts: opts.b, signal });
    lans.push(b);
    routerNs = `${a.id}-rt`;
    const router = new NetnsRouter(routerNs, a.address(ROUTER_OCTET), b.address(ROUTER_OCTET));
    await addNamespace(routerNs, signal);
    await addRouterLeg(a, routerNs, 'lana', router.ipA, signal);
    await addRouterLeg(b, routerNs, 'lanb', router.ipB, signal);
    await router.exec('sh', ['-c', 'echo 1 > /proc/sys/net/ipv4/ip_forward'], { signal }).then(expectOk);
    const destroyAll = async () => {
      await router.killAll();
      await destroy();
    };
    let destroying: Promise<void> | undefined;
    return { a, b, router, destroy: () => (destroying ??= destroyAll()) };
  } catch (error) {
    await destroy();
    throw error;
  }
}

async function addRouterLeg(lan: NetnsLan, routerNs: string, iface: string, addr: string, signal?: AbortSignal): Promise<void> {
  await plugIn(lan.switchNs, 'rtr', routerNs, iface, signal);
  await ip(['-n', routerNs, 'addr', 'add', `${addr}/24`, 'dev', iface], signal);
  await ip(['-n', routerNs, 'link', 'set', iface, 'up'], signal);
  for (const host of lan.hosts) {
    await ip(['-n', host.name, 'route', 'add', 'default', 'via', addr], signal);
  }
}

function expectOk(result: ExecResult): ExecResult {
  if (result.code !== 0) throw new Error(`command failed (${result.code}): ${result.stderr.trim()}`);
  return result;
}

/** True when this process can build namespaces (root + iproute2 + unshare). */
export function netnsSupported(): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' });
    execFileSync('unshare', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
