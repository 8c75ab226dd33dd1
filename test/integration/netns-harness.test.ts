/**
 * Proves the network-namespace harness: fake hosts can talk (unicast and
 * multicast), partitions and pulled cables cut them off, two LANs route
 * unicast but not multicast, and teardown leaves nothing behind, even when
 * the test process is killed.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createLan,
  createTwoLans,
  listNamespaces,
  netnsSupported,
  reapStale,
  type Host,
  type Lan,
  type TwoLans,
} from '../harness/netns.js';
import { waitFor } from '../harness/wait.js';

const MDNS_GROUP = '224.0.0.251';
const MDNS_PORT = 5353;
const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../..');

// Root is needed for namespaces; elsewhere skip rather than fail mysteriously.
describe.skipIf(!netnsSupported())('netns harness', { timeout: 30_000 }, () => {
  beforeAll(() => {
    try {
      execFileSync('ping', ['-V'], { stdio: 'ignore' });
    } catch {
      throw new Error('`ping` is missing: apt-get install iputils-ping');
    }
  });

  describe('one LAN', () => {
    let lan: Lan;
    let h1: Host, h2: Host, h3: Host;

    beforeAll(async () => {
      lan = await createLan({ hosts: 3 });
      [h1, h2, h3] = lan.hosts as [Host, Host, Host];
    });
    afterAll(() => lan?.destroy());

    it('gives each host its own subnet address', () => {
      expect(lan.subnet).toMatch(/^10\.\d+\.\d+\.0\/24$/);
      const prefix = lan.subnet.replace(/0\/24$/, '');
      expect(lan.hosts.map((h) => h.ip)).toEqual([`${prefix}1`, `${prefix}2`, `${prefix}3`]);
    });

    it('lets every host ping every other host', async () => {
      for (const from of lan.hosts) {
        for (const to of lan.hosts) {
          if (from !== to) expect(await canPing(from, to), `${from.hostname} -> ${to.ip}`).toBe(true);
        }
      }
    });

    it('gives each host its own hostname', async () => {
      const names = await Promise.all(lan.hosts.map(async (h) => (await h.exec('hostname')).stdout.trim()));
      expect(names).toEqual(lan.hosts.map((h) => h.hostname));
      expect(new Set(names).size).toBe(3);
      expect(names).not.toContain(os.hostname());
    });

    it('delivers multicast (mDNS group) from one host to the others', async () => {
      expect(await multicastReaches(h1, [h2, h3])).toEqual([true, true]);
    });

    it('partition cuts traffic between the groups and heal restores it', async () => {
      await lan.partition([h1], [h2, h3]);
      try {
        expect(await canPing(h1, h2)).toBe(false);
        expect(await canPing(h3, h1)).toBe(false);
        expect(await canPing(h2, h3)).toBe(true); // inside a group still fine
        expect(await multicastReaches(h2, [h1, h3], 1500)).toEqual([false, true]);
      } finally {
        await lan.heal();
      }
      expect(await canPing(h1, h2)).toBe(true);
      expect(await canPing(h3, h1)).toBe(true);
    });

    it('cableOut isolates a host and cableIn plugs it back', async () => {
      await h2.cableOut();
      try {
        expect(await canPing(h1, h2)).toBe(false);
        expect(await canPing(h1, h3)).toBe(true);
      } finally {
        await h2.cableIn();
      }
      // The port needs a moment to come back up (and ARP to resolve).
      await waitFor(() => canPing(h1, h2), { timeoutMs: 5000, message: 'h2 reachable after cableIn' });
    });
  });

  it('uses the given hostnames', async () => {
    const lan = await createLan({ hosts: ['alice', 'bob'] });
    try {
      const names = await Promise.all(lan.hosts.map(async (h) => (await h.exec('hostname')).stdout.trim()));
      expect(names).toEqual(['alice', 'bob']);
      expect(await canPing(lan.hosts[0]!, lan.hosts[1]!)).toBe(true);
    } finally {
      await lan.destroy();
    }
  });

  it('leaves nothing behind when creation is aborted midway', async () => {
    // Only this process's names: parallel test files create their own meanwhile.
    const mine = async () => (await listNamespaces()).filter((ns) => ns.startsWith(`fm${process.pid}-`));
    const before = new Set(await mine());
    const created = createLan({ hosts: 20, signal: AbortSignal.timeout(30) });
    await expect(created).rejects.toThrow(/abort|timeout/i);
    expect((await mine()).filter((ns) => !before.has(ns))).toEqual([]);
  });

  describe('two LANs joined by a router', () => {
    let net: TwoLans;

    beforeAll(async () => {
      net = await createTwoLans({ a: 2, b: 2 });
    });
    afterAll(() => net?.destroy());

    it('puts the LANs on distinct subnets', () => {
      expect(net.a.subnet).not.toBe(net.b.subnet);
    });

    it('routes unicast between the LANs', async () => {
      const [a1] = net.a.hosts as [Host];
      const [b1, b2] = net.b.hosts as [Host, Host];
      expect(await canPing(a1, b1)).toBe(true);
      expect(await canPing(b2, a1)).toBe(true);
    });

    it('keeps multicast inside each LAN', async () => {
      const [a1, a2] = net.a.hosts as [Host, Host];
      const [b1] = net.b.hosts as [Host];
      // a2 is the control: the datagram was really sent.
      expect(await multicastReaches(a1, [a2, b1], 1500)).toEqual([true, false]);
    });
  });

  it('destroy removes every namespace and kills every spawned process', async () => {
    const lan = await createLan({ hosts: 2 });
    const host = lan.hosts[0]!;
    const sleeper = host.spawn('sleep', ['300']);
    // A grandchild that escapes the process group: only the namespace sweep finds it.
    const escaper = host.spawn('sh', ['-c', 'setsid sleep 300 & echo $!; exec sleep 300']);
    const escapedPid = Number(await firstLine(escaper));
    const pids = [sleeper.pid!, escaper.pid!, escapedPid];
    expect(pids.every(isRunning)).toBe(true);
    expect(await ownNamespaces(lan.id)).toHaveLength(3); // switch + 2 hosts

    await lan.destroy();
    await lan.destroy(); // idempotent

    expect(await ownNamespaces(lan.id)).toEqual([]);
    expect(pids.filter(isRunning)).toEqual([]);
  });

  describe('when the test process dies', () => {
    let scriptDir: string;
    beforeAll(() => {
      scriptDir = fs.mkdtempSync(path.join(os.tmpdir(), 'farmesh-netns-crash-'));
    });
    afterAll(() => fs.rmSync(scriptDir, { recursive: true, force: true }));

    it('cleans up on SIGTERM via the exit hooks', async () => {
      const { child, info } = await startDoomedProcess(scriptDir);
      child.kill('SIGTERM');
      await exited(child);
      expect(await ownNamespaces(info.id)).toEqual([]);
      expect(isRunning(info.sleeper)).toBe(false);
    });

    it('reapStale cleans up after SIGKILL', async () => {
      const { child, info } = await startDoomedProcess(scriptDir);
      child.kill('SIGKILL'); // no hook can run
      await exited(child);
      expect(await ownNamespaces(info.id)).toHaveLength(2);

      const reaped = await reapStale();
      expect(reaped).toEqual(expect.arrayContaining([`${info.id}-sw`, `${info.id}-h1`]));
      expect(await ownNamespaces(info.id)).toEqual([]);
      await waitFor(() => !isRunning(info.sleeper), { timeoutMs: 2000, message: 'orphaned sleeper killed' });
    });
  });
});

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

async function canPing(from: Host, to: Host): Promise<boolean> {
  const { code } = await from.exec('ping', ['-c1', '-W1', to.ip]);
  return code === 0;
}

/** Namespaces of one LAN (they all start with its id). */
async function ownNamespaces(id: string): Promise<string[]> {
  return (await listNamespaces()).filter((ns) => ns.startsWith(`${id}-`));
}

/** Alive and not a zombie (our init may not reap orphans promptly). */
function isRunning(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

const RECEIVER = `
const sock = require('dgram').createSocket({ type: 'udp4', reuseAddr: true });
sock.on('message', (msg) => console.log('got ' + msg));
sock.bind(${MDNS_PORT}, '0.0.0.0', () => {
  sock.addMembership('${MDNS_GROUP}');
  console.log('ready');
});`;

const SENDER = `
const sock = require('dgram').createSocket('udp4');
sock.bind(() => {
  sock.setMulticastTTL(255); // mDNS's TTL: routers must still not forward it
  sock.send(process.argv[1], ${MDNS_PORT}, '${MDNS_GROUP}', (err) => {
    if (err) throw err;
    sock.close();
  });
});`;

/**
 * Starts a multicast listener on each receiver, sends one datagram from
 * `sender`, and reports per receiver whether it arrived within `waitMs`.
 */
async function multicastReaches(sender: Host, receivers: Host[], waitMs = 3000): Promise<boolean[]> {
  const token = `hello-${Math.random().toString(36).slice(2)}`;
  const listeners = receivers.map((host) => listen(host));
  try {
    await Promise.all(listeners.map((l) => l.ready));
    const sent = await sender.exec(process.execPath, ['-e', SENDER, token], { timeoutMs: 5000 });
    expect(sent.code, sent.stderr).toBe(0);
    const gotIt = (l: Listener) => l.output().includes(`got ${token}`);
    // Wait for all to arrive (or the deadline, for the ones that must not).
    await waitFor(() => listeners.every(gotIt), { timeoutMs: waitMs, message: 'multicast delivered' }).catch(() => undefined);
    return listeners.map(gotIt);
  } finally {
    for (const l of listeners) l.proc.kill('SIGKILL');
  }
}

interface Listener {
  proc: ChildProcess;
  ready: Promise<void>;
  output(): string;
}

function listen(host: Host): Listener {
  const proc = host.spawn(process.execPath, ['-e', RECEIVER]);
  let out = '';
  let err = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const ready = waitFor(() => out.includes('ready') || (proc.exitCode !== null && Promise.reject(new Error(err))), {
    timeoutMs: 5000,
    intervalMs: 20,
    message: `multicast listener on ${host.hostname}`,
  }).then(() => undefined);
  return { proc, ready, output: () => out };
}

function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(out.slice(0, nl).trim());
    });
    child.once('exit', () => reject(new Error(`exited before printing a line: ${out}`)));
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

interface DoomedInfo {
  id: string;
  sleeper: number;
}

/**
 * Runs the harness in a separate process (via vite-node, which runs the .ts
 * directly) that builds a LAN, starts a process in it, and waits to be killed.
 */
async function startDoomedProcess(dir: string): Promise<{ child: ChildProcess; info: DoomedInfo }> {
  const script = path.join(dir, `doomed-${Date.now()}.ts`);
  fs.writeFileSync(
    script,
    `import { createLan } from ${JSON.stringify(path.join(here, '../harness/netns.ts'))};
const lan = await createLan({ hosts: 1 });
const sleeper = lan.hosts[0]!.spawn('sleep', ['300'], { stdio: 'ignore' });
console.log(JSON.stringify({ id: lan.id, sleeper: sleeper.pid }));
setInterval(() => {}, 1000);
`,
  );
  const viteNode = path.join(repoRoot, 'node_modules/vite-node/vite-node.mjs');
  const child = spawn(process.execPath, [viteNode, script], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const info = JSON.parse(await firstLine(child)) as DoomedInfo;
    return { child, info };
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
}
