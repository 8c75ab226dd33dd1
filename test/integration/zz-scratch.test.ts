import { afterAll, it } from 'vitest';
import { createLan, type Lan } from '../harness/netns.js';
import { Farm, FIXTURES } from '../harness/farm.js';
import path from 'node:path';
import { writeFile } from 'node:fs/promises';

let lan: Lan; const farm = new Farm();
afterAll(async () => { await farm.destroy(); await lan?.destroy(); });
it('scratch', async () => {
  lan = await createLan({ hosts: 4 });
  const [h1, h2, h3, h4] = lan.hosts;
  const secret = 'a'.repeat(64);
  const t0 = Date.now();
  const dirs = await Promise.all([1,2,3].map(i => farm.tempDir('p'+i)));
  for (const d of dirs.slice(0,2)) await writeFile(path.join(d, 'site.secret'), secret + '\n', { mode: 0o600 });
  const [p1, p2, p3] = await Promise.all([h1, h2, h3].map((h, i) => farm.start(h!, { site: 'priv', dir: dirs[i], quiet: false })));
  console.log('ready', Date.now() - t0, [p1, p2, p3].map(n => n.readyAt - n.spawnedAt));
  const w = p1.watchHosts();
  await new Promise(r => setTimeout(r, 8000));
  console.log(JSON.stringify(w.events));
  console.log(await p1.hostIds(), await p3.hostIds(), p1.peerId, p2.peerId, p3.peerId);
  const target = await p1.lanAddress();
  for (const hs of ['skip', 'public', 'b'.repeat(64), secret]) {
    const r = await h4!.exec(process.execPath, [path.join(FIXTURES, 'membership-probe.mjs'), '--target', target, '--site', 'priv', '--hostname', 'fake-x', '--handshake', hs, '--hold-ms', '2000']);
    console.log(hs, r.code, r.stdout, r.stderr.slice(0, 2000));
    console.log((await p1.hosts()).map(h => h.hostname));
  }
  console.log(JSON.stringify(w.events));
  farm.printLogs('scratch');
}, 120_000);
