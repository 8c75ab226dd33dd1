/**
 * Jobs end to end on a farm of three namespace hosts running real `farmesh
 * start` processes, driven only through the CLI (inside each host's
 * namespace, where its API listens):
 *
 *   A  licence povray-pro, povray             — the scheduler (lowest peer id, started first)
 *   B  licence povray-pro, povray             — also runs the test's mail server
 *   C  no licence, povray disabled            — submits most jobs; SMTP settings; restarted last
 *
 * The identities are made with `farmesh init` before the nodes start and
 * sorted, and A starts first, so A schedules. Every node has 2 slots.
 *
 * Needs root (namespaces), povray, blender and openssl; build first
 * (`npx tsc -p tsconfig.json`).
 */
import { execFile } from 'node:child_process';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodePng } from '../../node/renderers/png.js';
import { assertBuilt, Farm, FIXTURES, runCliJson, type FarmNode, type HostSummary } from '../harness/farm.js';
import {
  frameNames,
  jobView,
  listJobs,
  netnsInode,
  outputNames,
  processesWith,
  readOutput,
  submit,
  waitForJob,
  waitForJobEnd,
  type JobView,
} from '../harness/jobs.js';
import { createLan, netnsSupported, type Host, type Lan } from '../harness/netns.js';
import { waitFor } from '../harness/wait.js';
import { onPath } from '../harness/on-path.js';

const execFileAsync = promisify(execFile);


const SITE = `jobflow-${process.pid}`;
const LICENSE = 'povray-pro';
const SMTP_PORT = 2525;
const MAIL_TO = 'wrangler@studio.test';
/** The stand-in renderer for `command` jobs (see the fixture). */
const FRAME_JOB = path.join(FIXTURES, 'frame-job.mjs');

/** `--renderer command` running frame-job.mjs; `extra` go to the script (sleep=MS, fail-on=HOST, markers). */
function commandJob(...extra: string[]): string[] {
  return [
    FRAME_JOB,
    '--renderer', 'command',
    ...[process.execPath, '{scene}', '{output}', '{frame}', ...extra].flatMap((a) => ['--arg', a]),
  ];
}

const since = (t0: number) => `${((Date.now() - t0) / 1000).toFixed(1)} s`;

describe.skipIf(!netnsSupported())('job flow on a three-host farm', () => {
  const farm = new Farm();
  farm.printLogsOnFailure();
  let lan: Lan | undefined;
  let hA: Host, hB: Host, hC: Host;
  let A: FarmNode, B: FarmNode, C: FarmNode;
  let scenes: string;
  let mailLog: string;

  beforeAll(async () => {
    assertBuilt();
    const t0 = Date.now();
    lan = await createLan({ hosts: 3 });
    [hA, hB, hC] = lan.hosts as [Host, Host, Host];
    await farm.withLogs('farm setup', async () => {
      // Identities first: the lowest peer id schedules, so give it to A.
      const dirs = await Promise.all(['x', 'y', 'z'].map((l) => farm.tempDir(`jobflow-${l}`)));
      const ids = await Promise.all(dirs.map((d) => runCliJson<{ peerId: string }>(hA, ['init', '--data', d])));
      const [dA, dB, dC] = dirs.map((d, i) => ({ d, id: ids[i]!.peerId })).sort((a, b) => (a.id < b.id ? -1 : 1)).map((x) => x.d) as [string, string, string];

      await writeFile(path.join(dA, 'licenses'), `${LICENSE}\n`);
      await writeFile(path.join(dB, 'licenses'), `# studio licences\n${LICENSE}\n`);

      // The mail server runs on B with a certificate only C trusts: a node
      // sends to a mail server off its own host only over TLS.
      const mail = await farm.tempDir('jobflow-mail');
      mailLog = path.join(mail, 'received.jsonl');
      const [key, cert] = [path.join(mail, 'key.pem'), path.join(mail, 'cert.pem')];
      await execFileAsync('openssl', [
        'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2',
        '-subj', '/CN=mail.studio.test', '-addext', `subjectAltName=IP:${hB.ip}`,
      ]);
      await writeFile(path.join(dC, 'config.json'), JSON.stringify({ smtp: { host: hB.ip, port: SMTP_PORT, from: 'farm@test' } }));
      const sink = hB.spawn(process.execPath, [path.join(FIXTURES, 'smtp-sink.mjs'), '--out', mailLog, '--port', String(SMTP_PORT), '--key', key, '--cert', cert]);
      let sinkOut = '';
      sink.stdout?.setEncoding('utf8').on('data', (d: string) => (sinkOut += d));
      sink.stderr?.setEncoding('utf8').on('data', (d: string) => (sinkOut += d));

      // A first, so A schedules whether the rule is "lowest peer id" (its
      // identity sorted first) or "longest uptime, sticky" (the election).
      const slots = ['--slots', '2'];
      A = await farm.start(hA, { site: SITE, dir: dA, label: 'A', args: slots });
      await waitFor(async () => (await A.hosts()).find((h) => h.scheduler)?.id === A.peerId, {
        timeoutMs: 20_000, intervalMs: 300, message: 'A to schedule its one-host site',
      });
      [B, C] = await Promise.all([
        farm.start(hB, { site: SITE, dir: dB, label: 'B', args: slots }),
        farm.start(hC, { site: SITE, dir: dC, label: 'C', args: [...slots, '--disable-renderer', 'povray'], env: { NODE_EXTRA_CA_CERTS: cert } }),
      ]);
      await waitFor(() => sinkOut.includes('listening'), { timeoutMs: 10_000, message: `smtp sink on ${hB.ip}; output: ${sinkOut}` });

      // Every node sees all three hosts (found by mDNS) and A as the scheduler.
      const all = [A.peerId, B.peerId, C.peerId].sort();
      for (const n of [A, B, C]) {
        await waitFor(
          async () => {
            const hosts = await n.hosts();
            const ids = hosts.map((h) => h.id).sort();
            return JSON.stringify(ids) === JSON.stringify(all) && hosts.find((h) => h.scheduler)?.id === A.peerId;
          },
          { timeoutMs: 30_000, intervalMs: 300, message: `${n.label} to list A, B, C with A scheduling` },
        );
      }
      scenes = await farm.tempDir('jobflow-scenes');
    });
    console.log(`farm of 3 up in ${since(t0)}: A ${A.peerId} B ${B.peerId} C ${C.peerId}`);
  }, 90_000);

  afterAll(async () => {
    await farm.destroy();
    await lan?.destroy();
  }, 60_000);

  it('starts with the fingerprints the tests rely on', async () => {
    const hosts = new Map((await C.hosts()).map((h) => [h.id, h] as [string, HostSummary & { licenses: string[] }]));
    const has = (id: string, r: string) => hosts.get(id)!.renderers.some((x) => x.name === r);
    expect(hosts.get(A.peerId)!.licenses).toEqual([LICENSE]);
    expect(hosts.get(B.peerId)!.licenses).toEqual([LICENSE]);
    expect(hosts.get(C.peerId)!.licenses).toEqual([]);
    expect([A, B].map((n) => has(n.peerId, 'povray'))).toEqual([true, true]);
    expect(has(C.peerId, 'povray')).toBe(false);
    for (const h of hosts.values()) expect(h.slots.total).toBe(2);
  });

  it.skipIf(!onPath('povray'))('renders a POV-Ray animation only on the licensed hosts, 24 PNGs back at the submitter', async () => {
    const dir = path.join(scenes, 'pov');
    await mkdir(path.join(dir, 'inc'), { recursive: true });
    // the include is referenced relatively, from a subdirectory
    await writeFile(path.join(dir, 'inc', 'look.inc'), [
      '#declare BallTexture = texture { pigment { color rgb <1, 0.3, 0.2> } finish { phong 0.6 } }',
      '#declare FloorTexture = texture { pigment { checker color rgb 1 color rgb 0.15 } }',
      '',
    ].join('\n'));
    await writeFile(path.join(dir, 'ball.pov'), [
      '#version 3.7;',
      '#include "inc/look.inc"',
      'global_settings { assumed_gamma 1.0 }',
      'camera { location <0, 1, -4> look_at <0, 0, 0> }',
      'light_source { <2, 4, -3> color rgb 1 }',
      'sphere { <clock * 3 - 1.5, 0, 0>, 0.6 texture { BallTexture } }',
      'plane { y, -1 texture { FloorTexture } }',
      '',
    ].join('\n'));

    const t0 = Date.now();
    const { id } = await submit(C, [
      path.join(dir, 'ball.pov'), path.join(dir, 'inc', 'look.inc'),
      '--renderer', 'povray', '--frames', '1-24', '--width', '64', '--height', '48',
      '--require', `license=${LICENSE}`, '--name', 'pov-ball',
    ]);
    const job = await waitForJobEnd(C, id, 120_000);
    console.log(`povray 24 frames: ${job.state} in ${since(t0)}`);
    expect(job.state, job.reason).toBe('done');

    expect(job.frames.map((f) => f.frame)).toEqual(Array.from({ length: 24 }, (_, i) => i + 1));
    const licensed = [A.peerId, B.peerId];
    for (const f of job.frames) {
      expect(f.state).toBe('done');
      expect(licensed, `frame ${f.frame} rendered on ${f.host}`).toContain(f.host);
    }

    // 24 valid 64x48 PNGs at the submitter, and the ball moves between frames
    expect(await outputNames(C, id)).toEqual(frameNames(1, 24));
    const images = await Promise.all(frameNames(1, 24).map(async (n) => decodePng(await readOutput(C, id, n))));
    for (const img of images) expect([img.width, img.height]).toEqual([64, 48]);
    for (let i = 1; i < images.length; i++) {
      expect(images[i]!.rgba.equals(images[i - 1]!.rgba), `frames ${i} and ${i + 1} are identical`).toBe(false);
    }

    // `farmesh fetch` copies them out, on the submitting host
    const fetched = path.join(scenes, 'pov-fetched');
    const r = await C.cliJson<{ files: number }>(['fetch', id, fetched]);
    expect(r.files).toBe(24);
    expect((await readdir(fetched)).sort()).toEqual(frameNames(1, 24));
  }, 150_000);

  // In the POV-Ray job above licence and renderer rule out the same host (C).
  // Here each rules C out on its own; C renders whatever it is allowed to
  // (see the kill test, where its slots are busy too).
  it.skipIf(!onPath('povray'))('keeps a licence requirement and a disabled renderer each off host C', async () => {
    const licenceOnly = await submit(C, [...commandJob('sleep=300'), '--frames', '1-8', '--require', `license=${LICENSE}`, '--name', 'licence-only']);
    const pov = path.join(scenes, 'plain.pov');
    await writeFile(pov, 'camera { location <0, 0, -3> look_at 0 }\nlight_source { <1, 2, -3> color rgb 1 }\nsphere { 0, 1 pigment { color rgb <clock, 0.5, 1> } }\n');
    const rendererOnly = await submit(C, [pov, '--renderer', 'povray', '--frames', '1-8', '--width', '32', '--height', '24', '--name', 'povray-anywhere']);
    for (const { id } of [licenceOnly, rendererOnly]) {
      const job = await waitForJobEnd(C, id, 60_000);
      expect(job.state, `${job.name}: ${job.reason}`).toBe('done');
      const hosts = new Set(job.frames.map((f) => f.host));
      expect([...hosts].sort(), job.name).toEqual([A.peerId, B.peerId].sort());
    }
  }, 90_000);

  it.skipIf(!onPath('blender'))('renders a 6-frame Blender Cycles job, 6 PNGs back at the submitter', async () => {
    const dir = path.join(scenes, 'blend');
    await mkdir(dir, { recursive: true });
    const blend = path.join(dir, 'cube.blend');
    // Denoising off: Debian's Blender is built without OpenImageDenoise.
    const makeBlend = [
      'import bpy, sys',
      'bpy.ops.wm.read_factory_settings(use_empty=True)',
      's = bpy.context.scene',
      "s.render.engine = 'CYCLES'",
      "s.cycles.device = 'CPU'",
      's.cycles.samples = 4',
      's.cycles.use_denoising = False',
      's.render.resolution_x = 64',
      's.render.resolution_y = 48',
      's.render.resolution_percentage = 100',
      's.frame_start = 1',
      's.frame_end = 6',
      'bpy.ops.mesh.primitive_cube_add(location=(0, 0, 0))',
      'cube = bpy.context.active_object',
      'cube.rotation_euler = (0, 0, 0)',
      "cube.keyframe_insert(data_path='rotation_euler', frame=1)",
      'cube.rotation_euler = (0, 0, 1.5)',
      "cube.keyframe_insert(data_path='rotation_euler', frame=6)",
      'bpy.ops.object.camera_add(location=(4, -4, 3), rotation=(1.1, 0, 0.785))',
      's.camera = bpy.context.active_object',
      "bpy.ops.object.light_add(type='SUN', location=(2, -2, 5))",
      'bpy.context.active_object.data.energy = 3',
      'bpy.ops.wm.save_as_mainfile(filepath=sys.argv[-1])',
    ].join('\n');
    await execFileAsync('blender', ['-b', '--factory-startup', '--python-expr', makeBlend, '--', blend], { timeout: 60_000 });

    const t0 = Date.now();
    const { id } = await submit(A, [blend, '--renderer', 'blender', '--frames', '1-6', '--name', 'cube']);
    const job = await waitForJobEnd(A, id, 120_000);
    console.log(`blender 6 frames: ${job.state} in ${since(t0)} on ${new Set(job.frames.map((f) => f.host)).size} host(s)`);
    expect(job.state, job.reason).toBe('done');
    expect(await outputNames(A, id)).toEqual(frameNames(1, 6));
    const images = await Promise.all(frameNames(1, 6).map(async (n) => decodePng(await readOutput(A, id, n))));
    for (const img of images) expect([img.width, img.height]).toEqual([64, 48]);
    expect(images[0]!.rgba.equals(images[5]!.rgba), 'the cube turns between frames 1 and 6').toBe(false);
  }, 150_000);

  it('dispatches every frame of a more urgent job before the queued frames of an earlier one', async () => {
    const t0 = Date.now();
    const long = await submit(A, [...commandJob('sleep=1500'), '--frames', '1-30', '--priority', '50', '--name', 'long']);
    // at once: the long job's first six frames fill every slot, 24 wait
    const urgent = await submit(A, [...commandJob('sleep=1500'), '--frames', '1-4', '--priority', '10', '--name', 'urgent']);
    const queuedAt = Date.now(); // the scheduler has queued the urgent job by now
    const [u, l] = await Promise.all([waitForJobEnd(A, urgent.id, 60_000), waitForJobEnd(A, long.id, 60_000)]);
    console.log(`priority: long ${l.state}, urgent ${u.state}, both in ${since(t0)}`);
    expect(u.state, u.reason).toBe('done');
    expect(l.state, l.reason).toBe('done');

    // When the scheduler sent each frame off. Where the view has no
    // dispatchedAt, the renderer's "started" report stands in: it follows the
    // dispatch within milliseconds, so it gets a margin.
    const margin = u.tasks[0]!.dispatchedAt != null ? 0 : 300;
    const sent = (t: JobView['tasks'][number]) => t.dispatchedAt ?? t.startedAt!;
    const rel = (t: JobView['tasks'][number]) => `${sent(t) - queuedAt} ms`;
    const longBefore = l.tasks.filter((t) => sent(t) < queuedAt - margin);
    const longAfter = l.tasks.filter((t) => sent(t) > queuedAt + margin);
    expect(longBefore.length, 'the long job had every slot when the urgent one came').toBeGreaterThanOrEqual(6);
    expect(longAfter.length, 'and most of it was still queued').toBeGreaterThanOrEqual(12);
    const lastUrgent = Math.max(...u.tasks.map(sent));
    const jumped = longAfter.filter((t) => sent(t) < lastUrgent - margin);
    expect(
      jumped.map((t) => `long frame ${t.frames[0]} sent at ${rel(t)}`),
      `urgent frames sent at ${u.tasks.map(rel).join(', ')} after the urgent job was queued`,
    ).toEqual([]);
    expect(u.finishedAt!).toBeLessThan(l.finishedAt!);
  }, 90_000);

  it('kill stops every render process of the job on every host within 2 s', async () => {
    const marker = `fmkill${process.pid}x${Date.now().toString(36)}`;
    const { id } = await submit(A, [...commandJob('sleep=120000', `marker=${marker}`), '--frames', '1-12', '--name', 'to-kill']);
    // six render processes (one per slot) on the three hosts
    const hostOf = new Map([hA, hB, hC].map((h) => [netnsInode(h), h.hostname]));
    const before = await waitFor(() => {
      const procs = processesWith(marker);
      return procs.length === 6 ? procs : false;
    }, { timeoutMs: 20_000, message: `six processes with ${marker}` });
    expect(new Set(before.map((p) => hostOf.get(p.netns))).size).toBe(3);
    expect((await jobView(A, id)).state).toBe('active');

    const tKill = Date.now();
    const r = await C.cli(['kill', id, '--json']); // from a host that is neither scheduler nor origin
    const acked = Date.now();
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ id, state: 'killed' });
    const gone = await waitFor(() => processesWith(marker).length === 0 && Date.now(), { timeoutMs: 10_000, intervalMs: 20, message: `processes with ${marker} to end` });
    console.log(`kill: CLI answered after ${acked - tKill} ms, last render process gone ${gone - tKill} ms after the kill command`);
    expect(gone - acked).toBeLessThanOrEqual(2000);

    const job = await jobView(A, id);
    expect(job.state).toBe('killed');
    expect(job.tasks.filter((t) => t.state === 'running' || t.state === 'queued')).toEqual([]);
    // and nothing of it is started again
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(processesWith(marker)).toEqual([]);
    expect((await jobView(A, id)).state).toBe('killed');
  }, 60_000);

  it('retries a frame that fails on one host on another host', async () => {
    const bad = { host: hB, node: B };
    const { id } = await submit(C, [...commandJob('sleep=500', `fail-on=${bad.host.hostname}`), '--frames', '1-12', '--name', 'picky']);
    const job = await waitForJobEnd(C, id, 60_000);
    expect(job.state, job.reason).toBe('done');

    const failedOnBad = job.tasks.filter((t) => t.errors.some((e) => e.startsWith(`${bad.node.peerId}:`)));
    expect(failedOnBad.length, 'some frames were dispatched to the bad host first').toBeGreaterThanOrEqual(1);
    for (const t of failedOnBad) {
      expect(t.attempts, `frame ${t.frames[0]}`).toBeGreaterThanOrEqual(2);
      expect(t.errors.join('\n')).toContain(`will not render on ${bad.host.hostname}`);
    }
    for (const f of job.frames) {
      expect(f.state).toBe('done');
      expect(f.host, `frame ${f.frame}`).not.toBe(bad.node.peerId);
    }
    // what arrived at the origin was written elsewhere too
    for (const name of frameNames(1, 12)) {
      const out = JSON.parse((await readOutput(C, id, name)).toString('utf8')) as { host: string };
      expect(out.host).not.toBe(bad.host.hostname);
    }
  }, 90_000);

  it('mails the notify address when a job completes', async () => {
    const { id } = await submit(C, [...commandJob(), '--frames', '1-2', '--name', 'mailed', '--notify', `mailto:${MAIL_TO}`]);
    const job = await waitForJobEnd(C, id, 60_000);
    expect(job.state, job.reason).toBe('done');
    const mail = await waitFor(
      async () => {
        const lines = (await readFile(mailLog, 'utf8').catch(() => '')).split('\n').filter(Boolean);
        return lines.map((l) => JSON.parse(l) as { from: string; to: string[]; secure: boolean; raw: string }).find((m) => m.raw.includes(id));
      },
      { timeoutMs: 20_000, intervalMs: 200, message: `a mail about job ${id} in ${mailLog}` },
    );
    expect(mail.to).toEqual([MAIL_TO]);
    expect(mail.from).toBe('farm@test');
    expect(mail.secure, 'sent over STARTTLS').toBe(true);
    expect(mail.raw).toMatch(/^Subject: \[farmesh\] job mailed done: 2\/2 frames/m);
  }, 60_000);

  it('refuses bad input at submit with exit code 2 naming the field, and queues nothing', async () => {
    const before = await listJobs(A);
    const scene = FRAME_JOB;
    const cases: Array<{ args: string[]; field: RegExp }> = [
      { args: [scene, '--renderer', 'nosuchrenderer', '--frames', '1-3', '--name', 'bad-renderer'], field: /^farmesh submit: renderer: .*nosuchrenderer/ },
      { args: [path.join(scenes, 'no', 'such.pov'), '--renderer', 'builtin', '--frames', '1-3', '--name', 'bad-scene'], field: /^farmesh submit: scene: .*such\.pov/ },
      { args: [scene, '--renderer', 'builtin', '--frames', '5-1', '--name', 'bad-frames'], field: /^farmesh submit: frames: .*5-1/ },
      { args: [scene, '--renderer', 'builtin', '--frames', '1-3', '--require', 'ram>=lots', '--name', 'bad-req'], field: /^farmesh submit: requirements\[0\]: .*lots/ },
      { args: [scene, '--renderer', 'builtin', '--frames', '1-3', '--priority', '5000', '--name', 'bad-priority'], field: /^farmesh submit: --priority: .*5000/ },
    ];
    for (const c of cases) {
      const r = await C.cli(['submit', ...c.args]);
      expect({ code: r.code, stderr: r.stderr.trim(), stdout: r.stdout }, c.args.join(' ')).toMatchObject({ code: 2, stdout: '' });
      expect(r.stderr).toMatch(c.field);
    }
    const after = await listJobs(A);
    expect(after.map((j) => j.id).sort()).toEqual(before.map((j) => j.id).sort());
    expect(after.filter((j) => j.name.startsWith('bad-'))).toEqual([]);
  }, 60_000);

  it('refuses a job no host can match, with the reason for each host, and queues nothing', async () => {
    const before = await listJobs(A);
    const r = await C.cli(['submit', ...commandJob(), '--frames', '1-3', '--require', 'cpus>=512', '--name', 'too-big']);
    console.log(`unmatchable job: exit ${r.code}: ${r.stderr.trim()}`);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/no host/);
    for (const h of [hA, hB, hC]) expect(r.stderr).toContain(h.hostname);
    expect(r.stderr).toMatch(/cpus/);
    const after = await listJobs(A);
    expect(after.map((j) => j.id).sort()).toEqual(before.map((j) => j.id).sort());
  }, 30_000);

  // Last: it restarts C.
  it('loses nothing when the submitting node restarts mid-job', async () => {
    const hosts = await A.hosts();
    expect(hosts.find((h) => h.scheduler)?.id, 'C must not be the scheduler: this is not a failover test').not.toBe(C.peerId);
    const t0 = Date.now();
    const { id } = await submit(C, [...commandJob('sleep=1500'), '--frames', '1-24', '--name', 'survivor']);
    await waitForJob(A, id, (j) => j.frames.filter((f) => f.state === 'done').length >= 4, { timeoutMs: 30_000, intervalMs: 200, message: 'a few frames done' });

    const stopped = await C.stop();
    expect(stopped.timedOut, 'C stops cleanly on SIGTERM').toBe(false);
    const mid: JobView = await jobView(A, id);
    console.log(`restart: C stopped at ${since(t0)} after ${stopped.ms} ms (exit ${stopped.code}); ${mid.frames.filter((f) => f.state === 'done').length}/24 done, state ${mid.state}`);
    expect(mid.state).not.toBe('done');

    C = await C.restart();
    console.log(`restart: C back at ${since(t0)}`);
    const job = await waitForJobEnd(C, id, 90_000);
    const doneAt = Date.now();
    console.log(`restart: job ${job.state} at ${since(t0)}; attempts ${job.tasks.map((t) => t.attempts).join(',')}`);
    for (const t of job.tasks.filter((t) => t.errors.length > 0)) console.log(`restart: frame ${t.frames[0]}: ${t.errors.join(' | ')}`);
    expect(job.state, job.reason).toBe('done');
    expect(job.frames.every((f) => f.state === 'done')).toBe(true);
    // the origin being away is no fault of the hosts that rendered meanwhile
    expect(job.excludedHosts).not.toContain(A.peerId);
    expect(job.excludedHosts).not.toContain(B.peerId);

    // Frames finished while C was away may still be on their way when the
    // job is done: their hosts keep the outputs and deliver them once C is
    // back. Every one must arrive.
    const undelivered = job.tasks.filter((t) => t.delivered === false).map((t) => t.frames[0]);
    const names = await waitFor(
      async () => {
        const n = await outputNames(C, id);
        return n.length >= 24 ? n : false;
      },
      { timeoutMs: 30_000, intervalMs: 200, message: `all 24 outputs of ${id} at C (undelivered when done: ${undelivered.join(',') || 'none'})` },
    );
    console.log(`restart: all outputs at C ${Date.now() - doneAt} ms after the job was done; frames undelivered then: ${undelivered.join(',') || 'none'}`);
    expect(names).toEqual(frameNames(1, 24));
    for (const [i, name] of frameNames(1, 24).entries()) {
      const out = JSON.parse((await readOutput(C, id, name)).toString('utf8')) as { frame: number };
      expect(out.frame).toBe(i + 1);
    }
    const fetched = await C.cliJson<{ files: number }>(['fetch', id, path.join(scenes, 'survivor')]);
    expect(fetched.files).toBe(24);
  }, 150_000);
});
