/**
 * Federation between studios, end to end (issue 5): three sites of real
 * `farmesh start` processes on two namespace LANs joined by a router (mDNS
 * does not cross it, as between real studios):
 *
 *   LAN a   A1, A2  site alpha   (povray disabled: A cannot render POV-Ray itself)
 *           C1      site gamma   (one host, --no-mdns)
 *   LAN b   B1, B2  site beta    (povray, bubblewrap)
 *
 * A1 and B1 are their sites' gateways (the nodes that join/invite). The
 * main flow federates the sites through the CLI and outsources jobs from A
 * to B; the security part attacks B with sandboxed jobs, hostile bundles
 * over the real bundle protocol (test/fixtures/bundle-attack.mjs) and a
 * stranger peer (test/fixtures/federation-stranger.mjs).
 *
 * Needs root (namespaces), povray and a working bubblewrap; build first
 * (`npx tsc -p tsconfig.json`).
 */
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { povrayAdapter } from '../../node/renderers/povray.js';
import { runTask } from '../../node/renderers/run-task.js';
import { sandboxStatus } from '../../node/sandbox/bwrap.js';
import { assertBuilt, Farm, FIXTURES, type FarmNode } from '../harness/farm.js';
import { frameNames, outputDir, outputNames, waitForJobEnd, type JobView } from '../harness/jobs.js';
import { createTwoLans, netnsSupported, type NetnsNode, type TwoLans } from '../harness/netns.js';
import { waitFor } from '../harness/wait.js';
import { onPath } from '../harness/on-path.js';


const sandbox = await sandboxStatus();
const missing = [
  ...(netnsSupported() ? [] : ['root + iproute2 (network namespaces)']),
  ...(onPath('povray') ? [] : ['povray']),
  ...(sandbox.available ? [] : [`bubblewrap (${sandbox.reason ?? 'unavailable'})`]),
];
if (missing.length > 0) console.warn(`federation tests skipped: needs ${missing.join(', ')}`);

const TAG = `${process.pid}`;
const SITE_A = `alpha${TAG}`;
const SITE_B = `beta${TAG}`;
const SITE_C = `gamma${TAG}`;
const BUNDLE_ATTACK = path.join(FIXTURES, 'bundle-attack.mjs');
const STRANGER = path.join(FIXTURES, 'federation-stranger.mjs');

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface SiteEntry {
  siteId: string;
  name: string;
  state: 'active' | 'pending' | 'asked';
  addresses: string[];
}
interface Billing {
  id: string;
  outsourced: { siteId: string; sentFiles: number; bytesSent: number; bundleBytes?: number; pushMs?: number; remoteJobId?: string } | null;
  billing: { site: string; frames: number; hosts: Array<{ host: string; frames: number; cpuSeconds: number }>; bytesReceived: number; state: string } | null;
}

/** GET/POST the node's HTTP API from inside its namespace (where it listens), with its token. */
const API_SCRIPT = `
import { readFileSync } from 'node:fs';
const [dir, method, path, body] = process.argv.slice(1);
const info = JSON.parse(readFileSync(dir + '/api.json', 'utf8'));
const token = readFileSync(dir + '/api.token', 'utf8').trim();
const res = await fetch(info.url + path, { method, headers: { authorization: 'Bearer ' + token, 'content-type': 'application/json' }, body: body || undefined, signal: AbortSignal.timeout(15000) });
process.stdout.write(JSON.stringify({ status: res.status, body: await res.json().catch(() => null) }));
`;
async function api<T>(node: FarmNode, method: string, p: string, body?: unknown): Promise<T> {
  const r = await node.host.exec(process.execPath, ['--input-type=module', '-e', API_SCRIPT, node.dir, method, p, body === undefined ? '' : JSON.stringify(body)], { timeoutMs: 20_000 });
  if (r.code !== 0) throw new Error(`${method} ${p} on ${node.label}: exit ${r.code}: ${r.stderr}`);
  const { status, body: res } = JSON.parse(r.stdout) as { status: number; body: T };
  if (status >= 400) throw new Error(`${method} ${p} on ${node.label}: HTTP ${status}: ${JSON.stringify(res)}`);
  return res;
}

/** path → "size:sha256" (files) / "->target" (links) / "dir" under `root`, skipping `skip` (relative paths). */
function snapshot(root: string, skip: string[] = []): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string): void => {
    const abs = path.join(root, rel);
    for (const name of readdirSync(abs)) {
      const r = rel === '' ? name : `${rel}/${name}`;
      if (skip.some((s) => r === s || r.startsWith(`${s}/`))) continue;
      const p = path.join(root, r);
      let st;
      try {
        st = lstatSync(p);
      } catch {
        continue; // went away while we looked
      }
      if (st.isDirectory()) {
        out.set(`${r}/`, 'dir');
        walk(r);
      } else if (st.isSymbolicLink()) out.set(r, `->${readlinkSync(p)}`);
      else {
        try {
          out.set(r, `${st.size}:${sha256(readFileSync(p))}`);
        } catch {
          continue;
        }
      }
    }
  };
  walk('');
  return out;
}

function diff(before: Map<string, string>, after: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [k, v] of before) if (after.get(k) !== v) out.push(after.has(k) ? `changed ${k}` : `removed ${k}`);
  for (const k of after.keys()) if (!before.has(k)) out.push(`added ${k}`);
  return out;
}

/** Every file under `dir` (recursively), as paths relative to it. */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return [...snapshot(dir).entries()].filter(([k, v]) => !k.endsWith('/') && v !== 'dir').map(([k]) => k);
}

/** An 8x8 PNG checkerboard of two colours. */
function checker(a: [number, number, number], b: [number, number, number]): Buffer {
  const img = new PNG({ width: 8, height: 8 });
  for (let y = 0; y < 8; y++) for (let x = 0; x < 8; x++) img.data.set([...((x + y) % 2 === 0 ? a : b), 255], (y * 8 + x) * 4);
  return PNG.sync.write(img);
}

const pixels = (file: string): Buffer => PNG.sync.read(readFileSync(file)).data;

/** The last non-empty line of a command's stdout. */
const lastLine = (s: string): string => s.trim().split('\n').at(-1)?.trim() ?? '';

function fixtureLines(stdout: string): Array<Record<string, any>> {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, any>);
}

describe.skipIf(missing.length > 0)('federation between sites on two LANs', () => {
  const farm = new Farm();
  farm.printLogsOnFailure();
  let lans: TwoLans | undefined;
  let A1: FarmNode, A2: FarmNode, B1: FarmNode, B2: FarmNode, C1: FarmNode;
  let siteA = '', siteB = '', siteC = '';
  let work = ''; // scenes and textures on A: under /tmp, which B's sandbox replaces with its own empty tmpfs
  const servers: ChildProcess[] = [];
  const figures: string[] = [];
  const report = (line: string) => {
    figures.push(line);
    console.log(`[federation] ${line}`);
  };

  const bPeers = () => [B1.peerId, B2.peerId];
  const siteOf = async (n: FarmNode) => (await n.cliJson<{ siteId: string | null }>(['site'])).siteId;
  const fedList = (n: FarmNode) => n.cliJson<SiteEntry[]>(['federation', 'list']);
  const billing = (id: string) => api<Billing>(A1, 'GET', `/v1/jobs/${id}/billing`);
  const waitBilling = (id: string, timeoutMs = 30_000) =>
    waitFor(async () => {
      const b = await billing(id);
      return b.billing != null && b.outsourced != null ? b : false;
    }, { timeoutMs, intervalMs: 700, message: `billing of job ${id}` });

  beforeAll(async () => {
    assertBuilt();
    lans = await createTwoLans({ a: 3, b: 2 });
    const [a1, a2, c1] = lans.a.hosts;
    const [b1, b2] = lans.b.hosts;
    await farm.withLogs('starting the sites', async () => {
      const noPov = ['--disable-renderer', 'povray'];
      [A1, A2, B1, B2, C1] = await Promise.all([
        farm.start(a1!, { site: SITE_A, args: noPov, quiet: false, label: 'A1' }),
        farm.start(a2!, { site: SITE_A, args: noPov, label: 'A2' }),
        farm.start(b1!, { site: SITE_B, quiet: false, label: 'B1' }),
        farm.start(b2!, { site: SITE_B, label: 'B2' }),
        farm.start(c1!, { site: SITE_C, args: ['--no-mdns'], quiet: false, label: 'C1' }),
      ]);
      // each site's identity is created by its elected scheduler and handed to the other members
      [siteA, siteB, siteC] = await Promise.all(
        [A1, B1, C1].map((n) => waitFor(() => siteOf(n).then((id) => id ?? false), { timeoutMs: 30_000, intervalMs: 500, message: `${n.label} site id` })),
      );
      await Promise.all(
        [A1, B1].map((n) => waitFor(async () => (await n.hosts()).length === 2, { timeoutMs: 20_000, intervalMs: 500, message: `${n.label} sees both hosts of its site` })),
      );
    });
    work = await farm.tempDir('fedwork');
  });

  afterAll(async () => {
    for (const s of servers) if (s.exitCode === null && s.signalCode === null) s.kill('SIGKILL');
    await farm.destroy();
    await lans?.destroy();
    if (figures.length > 0) console.log(`\n[federation] figures:\n  ${figures.join('\n  ')}`);
  });

  // ------------------------------------------------------------------ 1. joining sites

  it('joins A and B with an invite; C asks with add, B approves, then removes it', async () => {
    const inv = await B1.cli(['federation', 'invite', '--expires', '1h']);
    expect(inv.code, inv.stderr).toBe(0);
    const token = lastLine(inv.stdout);
    expect(token).toMatch(/^fmi1\.\S+$/);

    const joined = await A1.cli(['federation', 'join', token]);
    expect(joined.code, joined.stderr).toBe(0);
    expect(joined.stdout).toContain(siteB);
    const [la, lb] = await Promise.all([fedList(A1), fedList(B1)]);
    expect(la.map((s) => [s.siteId, s.name, s.state])).toEqual([[siteB, SITE_B, 'active']]);
    expect(lb.map((s) => [s.siteId, s.name, s.state])).toEqual([[siteA, SITE_A, 'active']]);

    // an invite is single-use, and an expired one is refused
    const reused = await C1.cli(['federation', 'join', token]);
    expect(reused.code).not.toBe(0);
    const shortInv = await B1.cli(['federation', 'invite', '--expires', '1s']);
    expect(shortInv.code, shortInv.stderr).toBe(0);
    await sleep(1500);
    const expired = await C1.cli(['federation', 'join', lastLine(shortInv.stdout)]);
    expect(expired.code).not.toBe(0);
    report(`invite reuse refused: ${lastLine(reused.stderr)} | expired invite refused: ${lastLine(expired.stderr)}`);
    expect((await fedList(B1)).map((s) => s.siteId)).not.toContain(siteC);
    expect(await fedList(C1)).toEqual([]);

    // C asks B (knowing only its address), B approves
    const bAddr = await B1.lanAddress();
    const asked = await C1.cliJson<SiteEntry>(['federation', 'add', bAddr]);
    expect([asked.siteId, asked.state]).toEqual([siteB, 'asked']);
    const pending = await B1.cliJson<SiteEntry[]>(['federation', 'pending']);
    expect(pending.map((s) => [s.siteId, s.name, s.state])).toEqual([[siteC, SITE_C, 'pending']]);
    const approved = await B1.cliJson<SiteEntry>(['federation', 'approve', SITE_C]);
    expect([approved.siteId, approved.state]).toEqual([siteC, 'active']);
    expect((await fedList(C1)).map((s) => [s.siteId, s.state])).toEqual([[siteB, 'active']]);
    expect((await fedList(B1)).map((s) => [s.siteId, s.state]).sort()).toEqual([[siteA, 'active'], [siteC, 'active']].sort());
    expect(await B1.cliJson<SiteEntry[]>(['federation', 'pending'])).toEqual([]);

    // removal is mutual
    const removed = await B1.cliJson<{ removed: boolean }>(['federation', 'remove', SITE_C]);
    expect(removed.removed).toBe(true);
    expect((await fedList(B1)).map((s) => s.siteId)).toEqual([siteA]);
    await waitFor(async () => (await fedList(C1)).length === 0, { timeoutMs: 10_000, intervalMs: 500, message: 'C forgets B' });
    // A is untouched by B's business with C
    expect((await fedList(A1)).map((s) => [s.siteId, s.state])).toEqual([[siteB, 'active']]);

    // every member of a site knows its federations, not only the gateway that made them; C's removal spread too
    const t0 = Date.now();
    await waitFor(async () => JSON.stringify((await fedList(A2)).map((s) => [s.siteId, s.state])) === JSON.stringify([[siteB, 'active']]), { timeoutMs: 10_000, intervalMs: 200, message: 'A2 knows B' });
    await waitFor(async () => JSON.stringify((await fedList(B2)).map((s) => [s.siteId, s.state])) === JSON.stringify([[siteA, 'active']]), { timeoutMs: 10_000, intervalMs: 200, message: 'B2 knows A, and that C was removed' });
    report(`federations known by the other members (A2, B2) ${Date.now() - t0} ms after the last change`);
  });

  // ------------------------------------------------------------------ 2.-4. outsourcing

  let scene = '';
  let wood = '';
  let stone = '';
  let firstPov: { id: string; bytes: number; inputs: number } | undefined;
  const povArgs = (frames: string, remote: string) => [
    'submit', scene, wood, stone, '--renderer', 'povray', '--frames', frames, '--width', '64', '--height', '48', '--name', 'fed-pov', '--remote', remote,
  ];

  it('outsources a 24-frame POV-Ray job to B: every frame back at A, identical to a local render, textures found by their absolute path', async () => {
    // the scene names its textures by absolute paths on A; on B they exist only through the sandbox's path mapping
    await mkdir(path.join(work, 'scene'), { recursive: true });
    await mkdir(path.join(work, 'tex'), { recursive: true });
    wood = path.join(work, 'tex', 'wood.png');
    stone = path.join(work, 'tex', 'stone.png');
    scene = path.join(work, 'scene', 'shot.pov');
    await writeFile(wood, checker([170, 110, 40], [90, 50, 20]));
    await writeFile(stone, checker([200, 200, 200], [60, 60, 70]));
    await writeFile(
      scene,
      `#version 3.7;
global_settings { assumed_gamma 1.0 }
camera { location <0, 1.2, -4> look_at <0, 0, 0> }
light_source { <2, 4, -3> color rgb 1 }
sphere { <clock * 2.4 - 1.2, 0, 0>, 0.8 pigment { image_map { png "${wood}" } scale 1.6 translate <-0.8, -0.8, 0> } finish { ambient 0.3 } }
plane { y, -0.8 pigment { image_map { png "${stone}" } rotate x*90 scale 1.5 } finish { ambient 0.3 } }
`,
    );

    // the local reference (A's hosts cannot render POV-Ray, so straight through the adapter), meanwhile
    const refDir = path.join(work, 'reference');
    await mkdir(refDir);
    const reference = runTask(povrayAdapter, {
      scene, inputDir: path.dirname(scene), outputDir: refDir, start: 1, end: 24, clockStart: 1, clockEnd: 24, width: 64, height: 48, outputPattern: 'frame_####.png',
    });

    const t0 = Date.now();
    const sub = await A1.cliJson<{ id: string; outsourcedTo: string | null }>(povArgs('1-24', SITE_B));
    const submitMs = Date.now() - t0;
    expect(sub.outsourcedTo).toBe(siteB);
    const done = await waitForJobEnd(A1, sub.id, 120_000);
    expect(done.state).toBe('done');
    expect(await outputNames(A1, sub.id)).toEqual(frameNames(1, 24));
    // every frame was rendered by one of B's hosts
    expect(done.frames).toHaveLength(24);
    for (const f of done.frames) {
      expect(f.state).toBe('done');
      expect(bPeers()).toContain(f.host);
    }

    const ref = await reference;
    expect(ref.ok, ref.logTail.join('\n')).toBe(true);
    for (const name of frameNames(1, 24)) {
      expect(pixels(path.join(outputDir(A1, sub.id), name)).equals(pixels(path.join(refDir, name))), `${name} matches the local render`).toBe(true);
    }
    expect(pixels(path.join(refDir, 'frame_0001.png')).equals(pixels(path.join(refDir, 'frame_0024.png')))).toBe(false);

    // billing came back; B's view of the job says when its first frame started
    const bill = await waitBilling(sub.id);
    expect(bill.outsourced!.siteId).toBe(siteB);
    expect(bill.outsourced!.sentFiles).toBe(3);
    expect(bill.billing!.state).toBe('done');
    expect(bill.billing!.frames).toBe(24);
    expect(bill.billing!.site).toBe(siteB);
    const remoteId = bill.outsourced!.remoteJobId!;
    expect(remoteId).toBeTruthy();
    const remote = await B1.cliJson<JobView>(['job', remoteId]);
    const starts = remote.tasks.map((t) => t.startedAt).filter((t): t is number => t != null);
    const dispatches = remote.tasks.map((t) => t.dispatchedAt).filter((t): t is number => t != null);
    const firstStart = Math.min(...starts);
    report(`POV job ${sub.id} -> ${remoteId} at B: submit returned after ${submitMs} ms; first remote dispatch +${Math.min(...dispatches) - t0} ms, first remote frame started +${firstStart - t0} ms after submit; all 24 frames at A +${(done.finishedAt ?? Date.now()) - t0} ms`);
    report(`POV job billing: ${JSON.stringify(bill.billing!.hosts)}; bundle ${bill.outsourced!.bytesSent} bytes, ${bill.outsourced!.sentFiles} files sent`);
    expect(A1.output).toMatch(new RegExp(`job ${sub.id} outsourced to ${SITE_B}: \\d+ bytes in \\d+ ms, 3 of 3 inputs sent`));
    firstPov = { id: sub.id, bytes: bill.outsourced!.bytesSent, inputs: 3 };

    // B's gateway keeps A's files apart: its origin store holds A's inputs and A's job only
    const origins = path.join(B1.dir, 'origins');
    expect(readdirSync(origins).sort()).toEqual(['.intake', siteA].sort());
    const blobs = filesUnder(path.join(origins, siteA, 'blobs')).map((f) => path.basename(f)).filter((n) => /^[0-9a-f]{64}$/.test(n));
    const want = [scene, wood, stone].map((f) => sha256(readFileSync(f))).sort();
    expect(blobs.sort()).toEqual(want);
    expect(readdirSync(path.join(origins, siteA, 'jobs'))).toEqual([sub.id]);
    expect(filesUnder(path.join(origins, siteA, 'jobs', sub.id, 'in')).sort()).toEqual(['shot.pov', 'stone.png', 'wood.png']);

    // control: the same absolute path, the texture not among the job's files: B's renderers cannot see A's file
    const bare = path.join(work, 'scene', 'bare.pov');
    await writeFile(bare, (await readFile(scene, 'utf8')).replace(/plane \{[^\n]*\n/, ''));
    const ctl = await A1.cliJson<{ id: string; outsourcedTo: string | null }>(['submit', bare, '--renderer', 'povray', '--frames', '1', '--width', '64', '--height', '48', '--remote', SITE_B, '--max-attempts', '1']);
    const ctlBill = await waitBilling(ctl.id, 60_000);
    expect(ctlBill.billing!.state).toBe('failed');
    const ctlView = await B1.cliJson<JobView>(['job', ctlBill.outsourced!.remoteJobId!]);
    const why = ctlView.tasks.flatMap((t) => t.errors).join(' ');
    report(`control without the texture in the job: failed at B: ${why.slice(0, 300)}`);
    expect(why).toMatch(/Cannot find image file/);
    await A1.cli(['kill', ctl.id]); // A took it back to render itself, but has no POV-Ray
  });

  it('sends only the changed file when the same job is submitted again with one texture changed', async () => {
    expect(firstPov, 'needs the first POV job').toBeDefined();
    await writeFile(stone, checker([30, 160, 220], [250, 240, 90]));
    const sub = await A1.cliJson<{ id: string; outsourcedTo: string | null }>(povArgs('1-24', SITE_B));
    expect(sub.outsourcedTo).toBe(siteB);
    const done = await waitForJobEnd(A1, sub.id, 120_000);
    expect(done.state).toBe('done');
    expect(await outputNames(A1, sub.id)).toEqual(frameNames(1, 24));
    const bill = await waitBilling(sub.id);
    expect(bill.outsourced!.sentFiles).toBe(1);
    expect(A1.output).toMatch(new RegExp(`job ${sub.id} outsourced to ${SITE_B}: ${bill.outsourced!.bundleBytes} bytes in \\d+ ms, 1 of 3 inputs sent`));
    expect(bill.outsourced!.bytesSent).toBeLessThan(firstPov!.bytes);
    report(`POV re-submission with stone.png changed: ${bill.outsourced!.bytesSent} bytes (1 of 3 files) vs ${firstPov!.bytes} bytes the first time`);
    // the new texture was used
    expect(pixels(path.join(outputDir(A1, sub.id), 'frame_0001.png')).equals(pixels(path.join(outputDir(A1, firstPov!.id), 'frame_0001.png')))).toBe(false);
  });

  it('--remote auto outsources what A cannot render; --remote never keeps it local and unschedulable', async () => {
    const auto = await A1.cliJson<{ id: string; outsourcedTo: string | null }>(povArgs('1-2', 'auto'));
    expect(auto.outsourcedTo).toBe(siteB);
    const done = await waitForJobEnd(A1, auto.id, 60_000);
    expect(done.state).toBe('done');
    for (const f of done.frames) expect(bPeers()).toContain(f.host);

    const never = await A1.cli(povArgs('1-2', 'never'));
    expect(never.code).not.toBe(0);
    expect(never.stderr).toMatch(new RegExp(`no host of site ${SITE_A} can render this job`));
    expect(never.stderr).toMatch(/povray/);
    report(`--remote never: exit ${never.code}: ${lastLine(never.stderr)}`);

    // auto with a renderer A has stays at home
    const sceneJson = path.join(work, 'scene', 'ball.json');
    await writeFile(sceneJson, JSON.stringify({
      version: 1, width: 32, height: 24, background: [0.2, 0.3, 0.5],
      camera: { keyframes: [{ frame: 1, position: [0, 1, 5], lookAt: [0, 0, 0], fov: 45 }] },
      lights: [{ position: [3, 6, 4], color: [1, 1, 1], intensity: 1 }],
      objects: [{ type: 'sphere', center: [0, 0, 0], radius: 1, color: [0.8, 0.2, 0.1] }],
    }));
    const home = await A1.cliJson<{ id: string; outsourcedTo: string | null }>(['submit', sceneJson, '--renderer', 'builtin', '--frames', '1-2', '--remote', 'auto']);
    expect(home.outsourcedTo).toBeNull();
    const homeDone = await waitForJobEnd(A1, home.id, 60_000);
    expect(homeDone.state).toBe('done');
    for (const f of homeDone.frames) expect([A1.peerId, A2.peerId]).toContain(f.host);
  });

  // ------------------------------------------------------------------ 5. a hostile job in B's sandbox

  it('outsources a job submitted on a member that is not the gateway', async () => {
    const dir = path.join(work, 'member');
    await mkdir(dir, { recursive: true });
    const runSh = path.join(dir, 'run.sh');
    await writeFile(runSh, 'echo "from a member" > "$1"\n');
    const sub = await A2.cliJson<{ id: string; outsourcedTo: string | null }>(['submit', runSh, '--renderer', 'command', '--arg', '/bin/sh', '--arg', '{scene}', '--arg', '{output}', '--frames', '1-3', '--remote', SITE_B]);
    expect(sub.outsourcedTo).toBe(siteB);
    const done = await waitForJobEnd(A2, sub.id, 60_000);
    expect(done.state).toBe('done');
    expect(await outputNames(A2, sub.id)).toEqual(frameNames(1, 3));
    const view = await A2.cliJson<JobView>(['job', sub.id]);
    expect(view.frames.every((f) => bPeers().includes(f.host as string)), JSON.stringify(view.frames)).toBe(true);
  });

  it('shows remote progress and log tails at the origin, and a kill there stops the remote frames within 5 s and deletes their store', async () => {
    const dir = path.join(work, 'slow');
    await mkdir(dir, { recursive: true });
    const runSh = path.join(dir, 'slow.sh');
    await writeFile(runSh, 'echo "slow frame starting"\nfor i in $(seq 1 120); do echo "step $i"; sleep 0.5; done\necho done > "$1"\n');
    const sub = await A1.cliJson<{ id: string; outsourcedTo: string | null }>(['submit', runSh, '--renderer', 'command', '--arg', '/bin/sh', '--arg', '{scene}', '--arg', '{output}', '--frames', '1-2', '--remote', SITE_B]);
    expect(sub.outsourcedTo).toBe(siteB);
    // B's frames, with the lines they print, are visible at A
    const seen = await waitFor(async () => {
      const v = await A1.cliJson<any>(['job', sub.id]);
      const t = v.tasks.find((x: any) => x.state === 'running' && bPeers().includes(x.host) && x.logTail.some((l: string) => /step \d+/.test(l)));
      return t ?? false;
    }, { timeoutMs: 30_000, intervalMs: 300, message: 'remote log lines at A' });
    report(`remote frame at A: host ${seen.host.slice(-8)}, log tail ${JSON.stringify(seen.logTail.slice(-2))}`);
    const bill = await billing(sub.id);
    const rid = bill.outsourced!.remoteJobId!;
    const intake = [B1, B2].find((n) => n.peerId === (bill.outsourced as any).remotePeer)!;
    expect(intake, 'the node of B that took the bundle').toBeDefined();
    const store = path.join(intake.dir, 'origins', siteA, 'jobs', sub.id);
    expect(existsSync(store)).toBe(true);

    const t0 = Date.now();
    const killed = await A1.cli(['kill', sub.id]);
    expect(killed.code, killed.stderr).toBe(0);
    const stoppedAt = await waitFor(async () => {
      const v = await intake.cliJson<any>(['job', rid]);
      return v.state === 'killed' && !v.tasks.some((x: any) => x.state === 'running') && !existsSync(store) ? Date.now() : false;
    }, { timeoutMs: 15_000, intervalMs: 100, message: 'the remote job stopped and its store deleted' });
    report(`kill at A -> remote job ${rid} killed, no frame running, store deleted at B: ${stoppedAt - t0} ms`);
    expect(stoppedAt - t0).toBeLessThan(5_000);
  });

  it('lets every escape attempt of a job outsourced to B fail, changing nothing of B outside its output', async () => {
    // another origin's store on each of B's hosts
    const fakeSite = `site-${'abcdefghijklmnopqrstuvwxyz234567'.split('').sort(() => Math.random() - 0.5).join('')}`;
    const secret = Buffer.from(`OTHER-ORIGIN-SECRET-${randomBytes(4).toString('hex')}`);
    const otherBlob = (b: FarmNode) => path.join(b.dir, 'origins', fakeSite, 'blobs', sha256(secret).slice(0, 2), sha256(secret));
    for (const b of [B1, B2]) {
      await mkdir(path.dirname(otherBlob(b)), { recursive: true });
      await writeFile(otherBlob(b), secret);
    }
    const canary = await farm.tempDir('canary');
    await writeFile(path.join(canary, 'keep.txt'), 'host file');
    const marker = `farmesh-escape-${randomBytes(4).toString('hex')}`;

    // a TCP server in each of B's namespaces
    const port = 20_000 + Math.floor(Math.random() * 30_000);
    let connections = 0;
    for (const b of [B1, B2]) {
      const s = b.host.spawn(process.execPath, ['-e', `require('net').createServer(s => { console.log('CONNECTION'); s.destroy() }).listen(${port}, '0.0.0.0', () => console.log('LISTENING'))`]);
      servers.push(s);
      await new Promise<void>((resolve, reject) => {
        s.stdout!.setEncoding('utf8').on('data', (d: string) => {
          if (d.includes('LISTENING')) resolve();
          connections += d.split('CONNECTION').length - 1;
        });
        s.once('exit', (c) => reject(new Error(`server exited ${c}`)));
      });
    }
    const ipOf = (n: FarmNode) => (n.host as NetnsNode & { ip: string }).ip;
    const bApi = (n: FarmNode) => JSON.parse(readFileSync(path.join(n.dir, 'api.json'), 'utf8')).url as string;
    const libp2pPort = async (n: FarmNode) => Number(/\/tcp\/(\d+)/.exec(await n.lanAddress())![1]);
    const probe = {
      marker,
      bDirs: [B1.dir, B2.dir],
      otherBlobs: [otherBlob(B1), otherBlob(B2)],
      ownOrigin: path.join(B1.dir, 'origins', siteA),
      canary,
      targets: [
        ...[B1, B2].map((n) => ({ host: ipOf(n), port })),
        { host: '127.0.0.1', port },
        { host: lans!.router.ipB, port },
        ...(await Promise.all([B1, B2].map(async (n) => ({ host: ipOf(n), port: await libp2pPort(n) })))),
        ...[B1, B2].map((n) => { const u = new URL(bApi(n)); return { host: u.hostname, port: Number(u.port) }; }),
        { host: ipOf(A1), port: await libp2pPort(A1) },
      ],
    };
    const script = `
const fs = require('fs'), net = require('net'), path = require('path')
const P = ${JSON.stringify(probe)}
const out = process.argv[2]
const r = {}
const attempt = (name, fn) => { try { fn(); r[name] = 'SUCCEEDED' } catch (e) { r[name] = 'failed: ' + (e.code || e.message) } }
const visible = (dir, name) => { if (!fs.readdirSync(dir).includes(name)) throw new Error('not visible') }
P.otherBlobs.forEach((b, i) => attempt('read another origin\\'s blob on B' + (i + 1), () => fs.readFileSync(b)))
attempt('list B1 origins', () => visible(path.dirname(P.ownOrigin), path.basename(P.ownOrigin)))
attempt('read own origin store on B1', () => { if (fs.readdirSync(path.join(P.ownOrigin, 'blobs')).length === 0) throw new Error('empty') })
attempt('read /etc/shadow', () => fs.readFileSync('/etc/shadow'))
attempt('read /etc/passwd', () => fs.readFileSync('/etc/passwd'))
P.bDirs.forEach((d, i) => {
  for (const f of ['site-keys.json', 'identity.key', 'api.token', 'federation.json']) attempt('read B' + (i + 1) + ' ' + f, () => fs.readFileSync(path.join(d, f)))
  attempt('list B' + (i + 1) + ' data dir', () => visible(d, 'identity.key'))
  attempt('write into B' + (i + 1) + ' data dir', () => fs.writeFileSync(path.join(d, P.marker), 'x'))
  attempt('replace B' + (i + 1) + ' site keys', () => fs.writeFileSync(path.join(d, 'site-keys.json'), 'x'))
})
attempt('read a host /tmp file', () => fs.readFileSync(path.join(P.canary, 'keep.txt')))
attempt('write into host /tmp', () => fs.writeFileSync(path.join(P.canary, P.marker), 'x'))
attempt('write into the inputs', () => fs.writeFileSync(path.join(process.cwd(), P.marker), 'x'))
attempt('overwrite the scene', () => fs.writeFileSync(__filename, 'x'))
attempt('write into the job dir', () => fs.writeFileSync(path.join(process.cwd(), '..', P.marker), 'x'))
attempt('write into another origin', () => fs.writeFileSync(path.join(path.dirname(P.otherBlobs[0]), P.marker), 'x'))
attempt('write to /', () => fs.writeFileSync('/' + P.marker, 'x'))
attempt('write to /usr', () => fs.writeFileSync('/usr/' + P.marker, 'x'))
attempt('write to /etc', () => fs.writeFileSync('/etc/' + P.marker, 'x'))
attempt('see host processes', () => { if (fs.readdirSync('/proc').filter(n => /^\\d+$/.test(n)).length < 10) throw new Error('own pid namespace') })
attempt('new user namespace', () => require('child_process').execFileSync('unshare', ['-Ur', 'true'], { stdio: 'pipe' }))
const connect = (t) => new Promise(resolve => {
  const s = net.connect({ host: t.host, port: t.port, timeout: 2000 })
  s.on('connect', () => { s.destroy(); resolve('SUCCEEDED') })
  s.on('timeout', () => { s.destroy(); resolve('failed: timeout') })
  s.on('error', e => resolve('failed: ' + e.code))
})
;(async () => {
  for (const t of P.targets) r['connect to ' + t.host + ':' + t.port] = await connect(t)
  fs.writeFileSync(out, JSON.stringify(r, null, 2))
})()
`;
    await mkdir(path.join(work, 'escape'), { recursive: true });
    const probeFile = path.join(work, 'escape', 'probe.cjs');
    await writeFile(probeFile, script);

    const sensitive = (b: FarmNode) => ['identity.key', 'site-keys.json', 'api.token', 'api.json'].map((f) => path.join(b.dir, f));
    const hashAll = (files: string[]) => files.map((f) => `${f}:${existsSync(f) ? sha256(readFileSync(f)) : 'absent'}`);
    const before = {
      files: hashAll([...sensitive(B1), ...sensitive(B2)]),
      other: [B1, B2].map((b) => snapshot(path.join(b.dir, 'origins', fakeSite))),
      canary: snapshot(canary),
    };

    // one probe pinned to each of B's hosts (B1 is the gateway holding the origin stores), and a job
    // whose "output" is a symbolic link to B's site keys, for the node to read outside the sandbox
    const submitOn = (b: FarmNode, args: string[]) =>
      A1.cliJson<{ id: string; outsourcedTo: string | null }>(['submit', ...args, '--remote', SITE_B, '--host', b.peerId, '--max-attempts', '1']);
    const probeJob = (b: FarmNode) => submitOn(b, [probeFile, '--renderer', 'command', '--arg', process.execPath, '--arg', '{scene}', '--arg', '{output}', '--frames', '1', '--name', `escape-${b.label}`]);
    const linkScript = path.join(work, 'escape', 'link.sh');
    await writeFile(linkScript, 'ln -s "$1" "$2"\n');
    const subs = await Promise.all([probeJob(B1), probeJob(B2)]);
    const link = await submitOn(B2, [linkScript, '--renderer', 'command', '--arg', '/bin/sh', '--arg', '{scene}', '--arg', path.join(B2.dir, 'site-keys.json'), '--arg', '{output}', '--frames', '1', '--name', 'escape-link']);
    for (const sub of [...subs, link]) expect(sub.outsourcedTo).toBe(siteB);
    const privateWrite = (name: string) => /^(write into|replace) B\d/.test(name);
    for (const [i, sub] of subs.entries()) {
      const b = [B1, B2][i]!;
      const done = await waitForJobEnd(A1, sub.id, 90_000);
      expect(done.state, JSON.stringify(done.tasks)).toBe('done');
      expect(done.frames[0]!.host).toBe(b.peerId);
      const result = JSON.parse(await readFile(path.join(outputDir(A1, sub.id), 'frame_0001.png'), 'utf8')) as Record<string, string>;
      report(`sandbox escape attempts of a job from A on ${b.label}:\n    ${Object.entries(result).map(([k, v]) => `${k}: ${v}`).join('\n    ')}`);
      expect(Object.keys(result).length).toBeGreaterThanOrEqual(30);
      // the data directories live under /tmp here, which the sandbox replaces with its own tmpfs: a write
      // "into" them lands there and dies with the sandbox (checked on the host below); everything else fails
      const succeeded = Object.entries(result).filter(([, v]) => !v.startsWith('failed'));
      expect(succeeded.filter(([k]) => !privateWrite(k))).toEqual([]);
      // the job's input on B1 is unchanged
      const copy = path.join(B1.dir, 'origins', siteA, 'jobs', sub.id, 'in', 'probe.cjs');
      expect(sha256(readFileSync(copy))).toBe(sha256(Buffer.from(script)));
    }
    expect(connections).toBe(0);

    // the symlinked "output" never leaves B: the frame fails there and A receives nothing. (A then takes the
    // job back to render it itself, by design; pinned to B2 it cannot run at A, so it is killed below.)
    const linkBill = await waitBilling(link.id, 60_000);
    expect(linkBill.billing!.state).toBe('failed');
    const linkView = await B1.cliJson<JobView>(['job', linkBill.outsourced!.remoteJobId!]);
    expect(linkView.state).toBe('failed');
    expect(linkView.tasks[0]!.errors.join(' ')).toMatch(/refused outputs: frame_0001\.png \(a symbolic link\)/);
    expect(await outputNames(A1, link.id)).toEqual([]);
    const linkAtA = await A1.cliJson<JobView>(['job', link.id]);
    expect(linkAtA.state).not.toBe('done');
    report(`symlinked output to B2's site keys: failed at B (${linkView.tasks[0]!.errors.join(' ')}); A got no output; A's job is now ${linkAtA.state}${linkAtA.reason != null ? ` (${linkAtA.reason})` : ''}`);
    await A1.cli(['kill', link.id]);

    // nothing of B changed outside the jobs' outputs
    expect(hashAll([...sensitive(B1), ...sensitive(B2)])).toEqual(before.files);
    expect([B1, B2].map((b) => snapshot(path.join(b.dir, 'origins', fakeSite)))).toEqual(before.other);
    expect(snapshot(canary)).toEqual(before.canary);
    for (const p of ['/', '/usr', '/etc', B1.dir, B2.dir, canary]) expect(existsSync(path.join(p, marker)), `${p}/${marker}`).toBe(false);
    for (const b of [B1, B2]) expect([...snapshot(b.dir).keys()].filter((k) => k.includes(marker))).toEqual([]);
  });

  // ------------------------------------------------------------------ 6. hostile bundles

  it('refuses malformed, traversing, linking, oversized, wrongly signed, replayed and foreign bundles, writing nothing outside its intake', async () => {
    const bAddr = await B1.lanAddress();
    const intake = 'origins/.intake';
    // what may change while B idles: the job database and logs (checked separately below)
    const before = snapshot(B1.dir, [intake]);
    const refusedCases = [
      'random-bytes', 'truncated', 'flipped-byte', 'not-a-tar', 'no-manifest', 'manifest-not-json', 'bad-job-spec', 'wrong-recipient',
      'manifest-path-dotdot', 'manifest-path-absolute', 'tar-entry-dotdot', 'tar-entry-absolute', 'original-dotdot', 'job-input-dotdot',
      'symlink-entry', 'hardlink-entry', 'symlink-first', 'directory-entry',
      'file-over-declared-size', 'declared-file-too-large', 'manifest-too-large', 'header-offset-over-limit', 'bytes-after-final-chunk', 'partial-then-close',
      'signed-by-other-key', 'signature-garbage', 'manifest-altered-after-signing', 'origin-not-federated', 'expired', 'header-mismatch',
    ];
    const run = await A1.host.exec(process.execPath, [BUNDLE_ATTACK, '--target', bAddr, '--keys', path.join(A1.dir, 'site-keys.json'), '--cases', refusedCases.join(',')], { timeoutMs: 150_000 });
    const lines = fixtureLines(run.stdout);
    expect(lines.at(-1), run.stderr).toEqual({ done: true });
    expect(lines[0]).toMatchObject({ case: 'hello', reply: { state: 'active', site: siteB } });
    const byCase = new Map(lines.filter((l) => l.case != null).map((l) => [l.case as string, l]));
    const table: string[] = [];
    for (const c of refusedCases) {
      const l = byCase.get(c);
      expect(l, `case ${c} ran`).toBeDefined();
      table.push(`${c}: ${l!.reply != null ? JSON.stringify(l!.reply) : `stream ${l!.error}`}`);
    }
    report(`hostile bundles at B1:\n    ${table.join('\n    ')}`);
    // stream-level refusals (no reply possible before a header is accepted)
    const streamLevel = new Set(['header-offset-over-limit']);
    const expectReason: Record<string, RegExp> = {
      'random-bytes': /malformed-header/, 'flipped-byte': /decrypt-failed/, 'not-a-tar': /malformed-tar|missing-manifest/,
      'no-manifest': /missing-manifest/, 'manifest-not-json': /malformed-manifest/, 'bad-job-spec': /unknown field|bogus/, 'wrong-recipient': /wrong-recipient/,
      'manifest-path-dotdot': /bad-path/, 'manifest-path-absolute': /bad-path/, 'tar-entry-dotdot': /bad-path/, 'tar-entry-absolute': /bad-path|unexpected-file/,
      'original-dotdot': /bad-path/, 'job-input-dotdot': /inputs\[1\]\.path/, 'symlink-entry': /bad-entry-type/, 'hardlink-entry': /bad-entry-type/,
      'symlink-first': /missing-manifest/, 'directory-entry': /bad-entry-type/, 'file-over-declared-size': /size-mismatch/, 'declared-file-too-large': /file-too-large/,
      'manifest-too-large': /manifest-too-large/, 'bytes-after-final-chunk': /trailing-data/, 'signed-by-other-key': /bad-signature/, 'signature-garbage': /bad-signature/,
      'manifest-altered-after-signing': /bad-signature/, 'origin-not-federated': /untrusted-origin/, expired: /expired/, 'header-mismatch': /does not match its header/,
    };
    for (const c of refusedCases) {
      const l = byCase.get(c)!;
      if (streamLevel.has(c)) {
        expect(l.error, `${c}: the stream is reset`).toBeDefined();
        continue;
      }
      // a stream that ends early is kept for a resume: the receiver cannot tell a cut link from a short bundle
      if (c === 'partial-then-close' || c === 'truncated') {
        expect(l.reply).toMatchObject({ ok: false, resumeAt: expect.any(Number), reason: expect.stringMatching(/incomplete/) });
        expect(l.reply.resumeAt).toBeGreaterThan(0);
        continue;
      }
      expect(l.reply, `${c}: ${JSON.stringify(l)}`).toMatchObject({ ok: true, accepted: false });
      expect(l.reply.reason, c).toMatch(expectReason[c]!);
    }

    // nothing written outside the intake directory (the job database is let off: it may compact while B idles)
    const after = snapshot(B1.dir, [intake]);
    const changes = diff(before, after);
    report(`B1 data dir changes outside the intake while refusing: ${changes.join(', ') || 'none'}`);
    expect(changes.filter((d) => !/^\S+ db\//.test(d))).toEqual([]);
    const leftovers = snapshot(path.join(B1.dir, intake));
    const leftBytes = [...leftovers.values()].filter((v) => v !== 'dir' && !v.startsWith('->')).reduce((s, v) => s + Number(v.split(':')[0]), 0);
    report(`B1 intake after the refused bundles: ${[...leftovers.keys()].filter((k) => !k.endsWith('/')).join(', ') || '(empty)'} (${leftBytes} bytes)`);

    // a valid bundle is taken once; the same bytes again are a replay
    const replay = await A1.host.exec(process.execPath, [BUNDLE_ATTACK, '--target', bAddr, '--keys', path.join(A1.dir, 'site-keys.json'), '--cases', 'valid-then-replay,partial-then-resume'], { timeoutMs: 60_000 });
    const rl = fixtureLines(replay.stdout);
    // a push cut off half-way resumes from the receiver's offset and is taken
    const partial = rl.find((l) => l.case === 'partial')?.reply;
    expect(partial, replay.stdout).toMatchObject({ ok: false, resumeAt: expect.any(Number) });
    expect(partial.resumeAt).toBeGreaterThan(0);
    expect(rl.find((l) => l.case === 'partial-then-resume')?.reply, replay.stdout).toMatchObject({ ok: true, accepted: true });
    expect(rl.find((l) => l.case === 'valid')?.reply, replay.stdout).toMatchObject({ ok: true, accepted: true });
    const again = rl.find((l) => l.case === 'valid-then-replay')?.reply;
    expect(again, replay.stdout).toMatchObject({ ok: true, accepted: false });
    expect(again.reason).toMatch(/replayed/);

    // a site B does not federate with gets nowhere
    const stranger = await A1.host.exec(process.execPath, [BUNDLE_ATTACK, '--target', bAddr, '--stranger'], { timeoutMs: 60_000 });
    const sl = fixtureLines(stranger.stdout);
    expect(sl.find((l) => l.case === 'stranger-hello')?.error, stranger.stdout).toMatch(/not a federated site/);
    expect(sl.find((l) => l.case === 'stranger-bundle')?.error, stranger.stdout).toBeDefined();
    report(`non-federated site: hello ${sl.find((l) => l.case === 'stranger-hello')?.error}; bundle push ${sl.find((l) => l.case === 'stranger-bundle')?.error}`);

    // and B keeps serving A
    const runSh = path.join(work, 'after', 'run.sh');
    await mkdir(path.dirname(runSh), { recursive: true });
    await writeFile(runSh, 'echo ok > "$1"\n');
    const sub = await A1.cliJson<{ id: string; outsourcedTo: string | null }>(['submit', runSh, '--renderer', 'command', '--arg', '/bin/sh', '--arg', '{scene}', '--arg', '{output}', '--frames', '1-2', '--remote', SITE_B]);
    expect(sub.outsourcedTo).toBe(siteB);
    const done = await waitForJobEnd(A1, sub.id, 60_000);
    expect(done.state).toBe('done');
    expect(await outputNames(A1, sub.id)).toEqual(frameNames(1, 2));
  });

  it('binds a job\'s inputs to the files its bundle signed: a blob B holds for someone else cannot be named by hash', async () => {
    // B's own studio submits a job with a secret file: its bytes sit in B1's blob store
    const dir = path.join(work, 'bsecret');
    await mkdir(dir, { recursive: true });
    const secret = Buffer.from(`B-STUDIO-SECRET-${randomBytes(6).toString('hex')}\n`);
    await writeFile(path.join(dir, 'secret.txt'), secret);
    await writeFile(path.join(dir, 'run.sh'), '# B job\necho ok > "$1"\n');
    const local = await B1.cliJson<{ id: string }>(['submit', path.join(dir, 'run.sh'), path.join(dir, 'secret.txt'), '--renderer', 'command', '--arg', '/bin/sh', '--arg', '{scene}', '--arg', '{output}', '--frames', '1']);
    expect((await waitForJobEnd(B1, local.id, 60_000)).state).toBe('done');

    // A (whose keys the fixture holds) sends a job whose description claims that hash for one of its inputs
    const run = await A1.host.exec(process.execPath, [BUNDLE_ATTACK, '--target', await B1.lanAddress(), '--keys', path.join(A1.dir, 'site-keys.json'), '--cases', 'steal-by-hash,scene-outside-inputs', '--steal', `${sha256(secret)}:${secret.byteLength}`], { timeoutMs: 60_000 });
    const lines = fixtureLines(run.stdout);
    const steal = lines.find((l) => l.case === 'steal-by-hash');
    const sceneCase = lines.find((l) => l.case === 'scene-outside-inputs');
    expect(steal?.reply, run.stdout + run.stderr).toBeDefined();
    if (steal!.reply.accepted === true) {
      // show what the job would have sent to its origin
      const rid = steal!.reply.remoteJobId as string;
      const end = await waitForJobEnd(B1, rid, 60_000);
      const outFile = path.join(B1.dir, 'outputs', rid, 'frame_0001.png');
      const got = existsSync(outFile) ? readFileSync(outFile) : Buffer.alloc(0);
      report(`steal-by-hash ACCEPTED: remote job ${rid} ${end.state}; its output ${got.equals(secret) ? 'IS B\'s secret file' : `is ${JSON.stringify(got.toString().slice(0, 80))}`}`);
    } else report(`steal-by-hash refused: ${steal!.reply.reason}`);
    expect(steal!.reply).toMatchObject({ ok: true, accepted: false });
    expect(steal!.reply.reason).toMatch(/stolen\.txt/);

    // a scene outside the job's inputs (defence in depth: the sandbox would hide the host's file anyway)
    if (sceneCase?.reply?.accepted === true) {
      const end = await waitForJobEnd(B1, sceneCase.reply.remoteJobId as string, 60_000);
      report(`scene outside the inputs ACCEPTED by B; the job ${end.state} in the sandbox: ${end.tasks[0]?.errors.join(' ').slice(0, 200)}`);
      expect(end.state).toBe('failed');
    } else report(`scene outside the inputs: ${JSON.stringify(sceneCase)}`);
  });

  // ------------------------------------------------------------------ 7. strangers

  it('resets every federation stream of a peer without a session, and refuses its hello', async () => {
    const run = await A1.host.exec(process.execPath, [STRANGER, '--target', await B1.lanAddress()], { timeoutMs: 90_000 });
    const lines = fixtureLines(run.stdout);
    expect(lines.at(-1), run.stderr).toEqual({ done: true });
    report(`stranger at B1:\n    ${lines.filter((l) => l.step != null).map((l) => `${l.step}: ${l.outcome} (${typeof l.detail === 'string' ? l.detail : JSON.stringify(l.detail)}, ${l.ms} ms)`).join('\n    ')}`);
    const step = (s: string) => lines.find((l) => l.step === s);
    for (const s of ['', '-after-hello', '-after-add'].flatMap((x) => ['federation', 'bundle', 'remote-output'].map((p) => p + x))) {
      expect(step(s)?.outcome, `${s}: ${JSON.stringify(step(s))}`).toBe('reset');
      expect(step(s)!.ms).toBeLessThan(5_000);
    }
    expect(step('hello-unknown-site')).toMatchObject({ outcome: 'refused', detail: expect.stringMatching(/not a federated site/) });
    expect(step('hello-foreign-proof')).toMatchObject({ outcome: 'refused', detail: expect.stringMatching(/proof/) });
    // its request to federate waits for B's operator (and is dropped here)
    const add = step('add-request');
    expect(add).toMatchObject({ outcome: 'reply', detail: { state: 'pending' } });
    expect((await B1.cliJson<SiteEntry[]>(['federation', 'pending'])).map((s) => s.siteId)).toContain(add!.detail.site);
    expect((await B1.cliJson<{ removed: boolean }>(['federation', 'remove', add!.detail.site])).removed).toBe(true);

    // anyone may ask to federate, but the requests waiting for approval are capped (32)
    const before = (await B1.cliJson<SiteEntry[]>(['federation', 'pending'])).length;
    const flood = await A1.host.exec(process.execPath, [STRANGER, '--target', await B1.lanAddress(), '--add-flood', '40'], { timeoutMs: 120_000 });
    const fl = fixtureLines(flood.stdout).find((l) => l.step === 'add-flood');
    expect(fl, flood.stdout + flood.stderr).toBeDefined();
    expect(fl!.detail.pending + fl!.detail.refused).toBe(40);
    expect(fl!.detail.pending).toBe(32 - before);
    expect(fl!.detail.lastError).toMatch(/too many requests/);
    expect((await B1.cliJson<SiteEntry[]>(['federation', 'pending'])).length).toBe(32);
    report(`40 federation requests from strangers: ${fl!.detail.pending} filed (cap 32, ${before} already waiting), ${fl!.detail.refused} refused: ${fl!.detail.lastError}`);
  });

  // ------------------------------------------------------------------ measure: dedup of a 100-file job

  it('re-sends one file of 100 when one changed (bytes measured)', async () => {
    const dir = path.join(work, 'hundred');
    await mkdir(path.join(dir, 'assets'), { recursive: true });
    const runSh = path.join(dir, 'run.sh');
    await writeFile(runSh, '# the 100-file job\necho ok > "$1"\n');
    for (let i = 0; i < 100; i++) await writeFile(path.join(dir, 'assets', `a${String(i).padStart(3, '0')}.bin`), randomBytes(8 * 1024));
    const args = ['submit', runSh, path.join(dir, 'assets'), '--renderer', 'command', '--arg', '/bin/sh', '--arg', '{scene}', '--arg', '{output}', '--frames', '1', '--remote', SITE_B];
    const first = await A1.cliJson<{ id: string }>(args);
    expect((await waitForJobEnd(A1, first.id, 60_000)).state).toBe('done');
    const b1 = (await billing(first.id)).outsourced!;
    await writeFile(path.join(dir, 'assets', 'a042.bin'), randomBytes(8 * 1024));
    const second = await A1.cliJson<{ id: string }>(args);
    expect((await waitForJobEnd(A1, second.id, 60_000)).state).toBe('done');
    const b2 = (await billing(second.id)).outsourced!;
    expect(b1.sentFiles).toBe(101);
    expect(b2.sentFiles).toBe(1);
    const ratio = b2.bytesSent / b1.bytesSent;
    report(`100-file job: first bundle ${b1.bytesSent} bytes (101 files), after changing 1 file ${b2.bytesSent} bytes (1 file) = ${(ratio * 100).toFixed(1)} % of the first`);
    expect(ratio).toBeLessThan(0.1);
  });
});
