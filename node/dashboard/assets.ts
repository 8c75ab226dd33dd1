import { dashboardApp } from './client.js'

/**
 * The dashboard's static files, kept as strings so tsc alone builds them into
 * dist (no copy step, nothing to find on disk at runtime). The page shell
 * holds no farm data: it is served without the API token, and its script
 * asks the API (with the token) for everything it shows.
 */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>farmesh</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/ui/app.css">
<script type="module" src="/ui/app.js"></script>
</head>
<body>
<div id="login" class="overlay" hidden>
  <form id="login-form" class="card login">
    <h1>farmesh</h1>
    <p id="login-why"></p>
    <p class="muted small">Run <code>farmesh dashboard</code> on this host for a link that carries the token, or paste the token from <code>api.token</code> in the node's data directory.</p>
    <label>API token <input id="login-token" type="password" autocomplete="off" spellcheck="false"></label>
    <button class="btn primary" type="submit">Open the dashboard</button>
  </form>
</div>
<div id="app" hidden>
<header class="top">
  <div class="brand"><span class="logo">farmesh</span> <span class="muted">site</span> <strong id="site"></strong></div>
  <nav class="tabs">
    <a id="tab-queues" href="#/queues">Queues</a>
    <a id="tab-running" href="#/running">Running</a>
    <a id="tab-hosts" href="#/hosts">Hosts</a>
    <a id="tab-federation" href="#/federation" hidden>Federation</a>
  </nav>
  <div class="status"><span id="self"></span> · <span id="sched"></span> <span id="live" class="live off">connecting…</span></div>
</header>
<main>
<section id="view-queues" hidden>
  <div class="section-head"><h1>Queues</h1><span id="queue-sched" class="muted"></span></div>
  <p id="queues-empty" class="empty">No jobs yet. Submit one with <code>farmesh submit</code>.</p>
  ${['queued', 'active', 'done', 'failed', 'killed'].map(g => `<section id="group-${g}" class="group ${g}" hidden>
    <h2><span class="dot ${g}"></span>${g[0].toUpperCase()}${g.slice(1)} <span class="n"></span></h2>
    <table class="table jobs"><thead><tr><th class="num">#</th><th>Job</th><th>Priority</th><th>Progress</th><th>Hosts</th><th>User</th><th>When</th><th></th></tr></thead><tbody></tbody></table>
  </section>`).join('\n  ')}
</section>
<section id="view-running" hidden>
  <div class="section-head"><h1>Running</h1><span id="running-count" class="muted"></span></div>
  <table class="table"><thead><tr><th>Job</th><th>Frame</th><th>Host</th><th>Progress</th><th>Elapsed</th><th>Attempt</th><th>CPU · memory</th><th></th></tr></thead><tbody id="running-body"></tbody></table>
  <p id="running-empty" class="empty">Nothing is rendering right now.</p>
  <section id="recent" class="group" hidden>
    <h2>Recently finished</h2>
    <table class="table"><thead><tr><th>Job</th><th>Frame</th><th>Host</th><th>Time</th><th>CPU · memory</th><th>Attempt</th><th></th><th></th></tr></thead><tbody id="recent-body"></tbody></table>
  </section>
</section>
<section id="view-hosts" hidden>
  <div class="section-head"><h1>Hosts</h1><span id="hosts-count" class="muted"></span></div>
  <table class="table hosts"><thead><tr><th>Host</th><th>System</th><th>Renderers</th><th>Licenses</th><th>Slots</th><th>State</th><th>Health</th><th></th></tr></thead><tbody id="hosts-body"></tbody></table>
  <p id="hosts-empty" class="empty" hidden>No hosts yet.</p>
</section>
<section id="view-job" hidden>
  <nav class="crumbs"><a href="#/queues">Queues</a> › <span id="job-id" class="mono"></span></nav>
  <p id="job-loading" class="muted">Loading…</p>
  <p id="job-error" class="error" hidden></p>
  <div id="job-body" hidden>
    <div class="card job-head">
      <div class="title-row"><h1 id="job-name"></h1><span id="job-badges" class="badges"></span></div>
      <div id="job-meta" class="muted"></div>
      <div class="jobbar"><span id="jp-done" class="seg done"></span><span id="jp-running" class="seg running"></span><span id="jp-failed" class="seg failed"></span></div>
      <div class="prog-row"><span id="job-progress-text"></span><span id="job-eta" class="muted"></span></div>
      <p id="job-reason" class="error" hidden></p>
      <div class="toolbar">
        <button id="btn-hold" class="btn" type="button">Hold</button>
        <span class="pri-group"><label for="job-pri">Priority</label><input id="job-pri" type="number" min="0" max="1000" title="lower is more urgent"><button id="btn-pri" class="btn" type="button">Set</button></span>
        <button id="btn-retry" class="btn" type="button">Retry failed</button>
        <button id="btn-kill" class="btn danger" type="button">Kill job</button>
      </div>
    </div>
    <div class="job-grid">
      <div class="card grid-card">
        <div class="grid-head">
          <div class="legend"><span class="sw queued"></span>queued <span class="sw held"></span>held <span class="sw running"></span>running <span class="sw done"></span>done <span class="sw failed"></span>failed <span class="sw retried"></span>retried</div>
          <label class="small muted">Go to frame <input id="goto" type="number" class="goto"></label>
        </div>
        <div id="grid-box"></div>
      </div>
      <aside id="detail" class="card detail"></aside>
    </div>
  </div>
</section>
<section id="view-federation" hidden>
  <div class="section-head"><h1>Federation</h1></div>
  <p class="empty">Federation between sites is not available in this release.</p>
</section>
</main>
</div>
<div id="tip" class="tip" hidden></div>
<div id="lightbox" class="lightbox" hidden><figure><img alt="full-size frame"><figcaption></figcaption></figure></div>
<div id="toast" role="status" aria-live="polite"></div>
</body>
</html>
`

export const DASHBOARD_CSS = `:root {
  --bg: #0e1116; --panel: #161b22; --panel2: #1c2230; --border: #2b3340; --text: #e6e9ef; --muted: #95a0b2;
  --accent: #6aa8ff; --queued: #4a5262; --held: #b7791f; --running: #3b82f6; --run-bg: #1d3566; --done: #22a55a;
  --failed: #e5484d; --killed: #9b6bd6; --cell-text: #0b0e13; --warn: #e3a23b; --ok: #3fbf6f;
  color-scheme: dark;
}
* { box-sizing: border-box; }
html, body { margin: 0; background: var(--bg); color: var(--text); font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12.5px; }
h1 { font-size: 20px; margin: 0; font-weight: 600; }
h2 { font-size: 15px; margin: 22px 0 8px; font-weight: 600; display: flex; align-items: center; gap: 8px; }
h2 .n { color: var(--muted); font-weight: 400; }
h3 { margin: 0 0 10px; font-size: 16px; }
h4 { margin: 16px 0 6px; font-size: 13px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
[hidden] { display: none !important; }
.muted { color: var(--muted); }
.small { font-size: 12px; }
.num { font-variant-numeric: tabular-nums; }
.empty { color: var(--muted); padding: 24px; text-align: center; border: 1px dashed var(--border); border-radius: 8px; }
.error { color: #ffb4b4; background: #3a1619; border: 1px solid #6b2328; padding: 8px 12px; border-radius: 6px; }
.top { display: flex; align-items: center; gap: 24px; padding: 0 24px; height: 52px; background: var(--panel); border-bottom: 1px solid var(--border); position: sticky; top: 0; z-index: 5; }
.brand { white-space: nowrap; }
.logo { font-weight: 700; letter-spacing: .02em; color: #fff; margin-right: 6px; }
.tabs { display: flex; gap: 4px; height: 100%; }
.tabs a { display: flex; align-items: center; padding: 0 14px; color: var(--muted); border-bottom: 2px solid transparent; }
.tabs a:hover { color: var(--text); text-decoration: none; }
.tabs a.active { color: var(--text); border-bottom-color: var(--accent); }
.status { margin-left: auto; color: var(--muted); font-size: 12.5px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.live { margin-left: 10px; padding: 2px 8px; border-radius: 10px; font-size: 11.5px; }
.live.on { background: #123321; color: #7fe0a2; }
.live.on::before { content: "● "; }
.live.off { background: #3a2a12; color: #f3c46b; }
main { padding: 20px 24px 48px; max-width: 1500px; margin: 0 auto; }
.section-head { display: flex; align-items: baseline; gap: 16px; margin-bottom: 12px; }
.card { background: var(--panel); border: 1px solid var(--border); border-radius: 10px; padding: 16px; }
.table { width: 100%; border-collapse: collapse; background: var(--panel); border: 1px solid var(--border); border-radius: 10px; overflow: hidden; }
.table th { text-align: left; font-weight: 500; color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; padding: 9px 12px; background: var(--panel2); border-bottom: 1px solid var(--border); }
.table td { padding: 9px 12px; border-bottom: 1px solid var(--border); vertical-align: middle; }
.table tr:last-child td { border-bottom: 0; }
.table tbody tr:hover { background: #1a202b; }
.table td.actions { text-align: right; white-space: nowrap; }
.badges { display: inline-flex; gap: 6px; margin-left: 8px; vertical-align: middle; }
.badges.block { display: flex; flex-wrap: wrap; margin: 4px 0 0; }
.badges .badge { white-space: nowrap; }
.host-cell { min-width: 170px; }
.slots-cell { white-space: nowrap; }
table.jobs { table-layout: fixed; }
table.jobs th:nth-child(1) { width: 44px; } table.jobs th:nth-child(2) { width: 22%; } table.jobs th:nth-child(3) { width: 110px; }
table.jobs th:nth-child(4) { width: 22%; } table.jobs th:nth-child(8) { width: 110px; }
table.jobs td { overflow: hidden; text-overflow: ellipsis; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 11.5px; font-weight: 500; background: var(--panel2); color: var(--text); border: 1px solid var(--border); }
.badge.queued { background: #2a303b; }
.badge.running, .badge.active { background: #16284a; color: #9cc3ff; border-color: #24467f; }
.badge.done, .badge.ok { background: #123321; color: #7fe0a2; border-color: #1d5a36; }
.badge.failed { background: #3a1619; color: #ff9ea1; border-color: #6b2328; }
.badge.killed { background: #2c1f40; color: #cfb0f5; border-color: #4c3570; }
.badge.warn { background: #3a2a12; color: #f3c46b; border-color: #6a4a16; }
.badge.sched { background: #1d2b45; color: #a9c8ff; border-color: #2d4370; }
.badge.self { background: #262d3a; color: var(--muted); }
.badge.muted { color: var(--muted); }
.chip { display: inline-block; margin: 2px 4px 2px 0; padding: 1px 7px; border-radius: 4px; background: var(--panel2); border: 1px solid var(--border); font-size: 12px; white-space: nowrap; }
.chip.lic { border-color: #4c3570; color: #cfb0f5; }
.dot { width: 10px; height: 10px; border-radius: 50%; display: inline-block; background: var(--queued); }
.dot.active { background: var(--running); } .dot.done { background: var(--done); } .dot.failed { background: var(--failed); } .dot.killed { background: var(--killed); }
.bar { display: inline-block; width: 120px; height: 8px; background: #252c38; border-radius: 4px; overflow: hidden; vertical-align: middle; margin-right: 8px; }
.bar .fill { display: block; height: 100%; width: 0; background: var(--done); transition: width .3s; }
.bar.run .fill { background: var(--running); }
.bar.slots { width: 70px; }
.bar.slots .fill { background: var(--running); }
.prog-cell { white-space: nowrap; }
.health { white-space: nowrap; font-size: 12.5px; }
.health::before { content: "●"; margin-right: 6px; }
.health.ok::before { color: var(--ok); } .health.warn::before { color: var(--warn); } .health.bad::before { color: var(--failed); }
.health.bad { color: #ff9ea1; }
.sys { font-size: 13px; min-width: 200px; }
.btn { font: inherit; font-size: 13px; padding: 5px 12px; border-radius: 6px; border: 1px solid var(--border); background: var(--panel2); color: var(--text); cursor: pointer; margin-left: 6px; }
.btn:hover:not(:disabled) { border-color: #3d4757; background: #232a38; }
.btn:disabled { opacity: .45; cursor: default; }
.btn.small { padding: 3px 9px; font-size: 12px; }
.btn.primary { background: #2457a8; border-color: #2f6bd0; }
.btn.danger { color: #ff9ea1; border-color: #5a2428; }
.btn.danger:hover:not(:disabled) { background: #3a1619; }
.btn.armed { background: #8f1f24; color: #fff; border-color: #c0353b; }
input[type=number], input[type=password] { font: inherit; background: #0f141b; color: var(--text); border: 1px solid var(--border); border-radius: 6px; padding: 4px 8px; }
input.pri { width: 74px; }
input:focus { outline: 2px solid #2f6bd0; outline-offset: 0; }
.crumbs { margin-bottom: 12px; color: var(--muted); }
.job-head { margin-bottom: 16px; }
.title-row { display: flex; align-items: center; gap: 4px; margin-bottom: 4px; }
.jobbar { display: flex; height: 12px; background: #252c38; border-radius: 6px; overflow: hidden; margin: 14px 0 8px; }
.jobbar .seg { display: block; height: 100%; width: 0; transition: width .3s; }
.seg.done { background: var(--done); } .seg.running { background: var(--running); } .seg.failed { background: var(--failed); }
.prog-row { display: flex; justify-content: space-between; gap: 16px; flex-wrap: wrap; }
.toolbar { display: flex; align-items: center; gap: 6px; margin-top: 14px; flex-wrap: wrap; }
.toolbar .btn { margin-left: 0; }
.pri-group { display: inline-flex; align-items: center; gap: 6px; margin: 0 8px; color: var(--muted); }
.pri-group input { width: 80px; }
.job-grid { display: grid; grid-template-columns: minmax(0, 1fr) 360px; gap: 16px; align-items: start; }
@media (max-width: 1000px) { .job-grid { grid-template-columns: 1fr; } }
.grid-head { display: flex; justify-content: space-between; align-items: center; margin-bottom: 12px; gap: 12px; flex-wrap: wrap; }
.legend { display: flex; align-items: center; gap: 6px; color: var(--muted); font-size: 12.5px; flex-wrap: wrap; }
.sw { width: 12px; height: 12px; border-radius: 2px; display: inline-block; margin-left: 8px; }
.sw:first-child { margin-left: 0; }
.sw.queued { background: var(--queued); } .sw.held { background: var(--held); } .sw.running { background: linear-gradient(to top, var(--running) 55%, var(--run-bg) 55%); }
.sw.done { background: var(--done); } .sw.failed { background: var(--failed); }
.sw.retried { background: linear-gradient(225deg, #fff 30%, var(--done) 30%); }
.goto { width: 90px; margin-left: 6px; }
#grid-box { width: 100%; min-height: 40px; }
canvas.grid { display: block; cursor: pointer; image-rendering: pixelated; }
.detail { position: sticky; top: 68px; max-height: calc(100vh - 90px); overflow: auto; }
.detail dl { display: grid; grid-template-columns: 90px 1fr; gap: 6px 10px; margin: 0; }
.detail dt { color: var(--muted); }
.detail dd { margin: 0; overflow-wrap: anywhere; }
.detail .actions { margin-top: 14px; }
.detail .actions .btn { margin-left: 0; }
.errors { margin: 0; padding-left: 18px; color: #ff9ea1; font-size: 12.5px; overflow-wrap: anywhere; }
pre.log { background: #0b0e13; border: 1px solid var(--border); border-radius: 6px; padding: 8px 10px; font-size: 11.5px; line-height: 1.4; max-height: 260px; overflow: auto; white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; }
.thumb-box { margin-top: 14px; }
.thumb-box.loading { height: 120px; display: flex; align-items: center; justify-content: center; color: var(--muted); font-size: 12.5px; background: #0b0e13; border: 1px dashed var(--border); border-radius: 6px; }
img.thumb { display: block; max-width: 100%; border-radius: 6px; border: 1px solid var(--border); cursor: zoom-in; background: #000; min-height: 40px; }
.tip { position: fixed; z-index: 20; pointer-events: none; background: #0b0e13; border: 1px solid var(--border); color: var(--text); padding: 5px 9px; border-radius: 6px; font-size: 12.5px; white-space: nowrap; box-shadow: 0 4px 14px rgba(0,0,0,.4); }
.lightbox { position: fixed; inset: 0; z-index: 30; background: rgba(5,7,10,.88); display: flex; align-items: center; justify-content: center; cursor: zoom-out; overflow: auto; }
.lightbox figure { margin: auto; padding: 24px; text-align: center; }
.lightbox img { max-width: none; border-radius: 4px; box-shadow: 0 10px 40px rgba(0,0,0,.6); }
.lightbox figcaption { color: var(--muted); margin-top: 10px; }
.overlay { position: fixed; inset: 0; display: flex; align-items: center; justify-content: center; background: var(--bg); z-index: 40; }
.login { width: 420px; display: flex; flex-direction: column; gap: 14px; }
.login label { display: flex; flex-direction: column; gap: 6px; color: var(--muted); }
.login .btn { margin-left: 0; align-self: flex-start; }
#toast { position: fixed; right: 20px; bottom: 20px; z-index: 35; background: #1d2b45; border: 1px solid #2d4370; color: var(--text); padding: 10px 14px; border-radius: 8px; max-width: 480px; opacity: 0; transform: translateY(10px); transition: opacity .2s, transform .2s; pointer-events: none; }
#toast.show { opacity: 1; transform: none; }
#toast.error { background: #3a1619; border-color: #6b2328; }
`

export const DASHBOARD_JS = `// farmesh dashboard\n(${dashboardApp.toString()})()\n`
