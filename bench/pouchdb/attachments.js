// Run: npm install && node --max-old-space-size=12000 attachments.js [MiB of the large attachment, default 256]
// express-pouchdb needs express 4 (with express 5 its routes answer HTML).
// PouchDB 9 attachments, measured like `peerlite bench --blobs` (plain HTTP, no TLS).
const { spawn } = require('child_process');
const fs = require('fs');
const PouchDB = require('pouchdb');
const MB = 1e6;
function rss(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return +s.match(/VmHWM:\s+(\d+)/)[1] * 1024 / MB;
}
function bytes(len, seed) {
  const b = Buffer.allocUnsafe(len);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < len; i += 4) { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; b.writeUInt32LE(x, Math.min(i, len - 4)); }
  return b;
}
(async () => {
  const dir = fs.mkdtempSync(require('os').tmpdir() + '/pouch-');
  fs.mkdirSync(dir + '/server');
  const srv = spawn('node', [__dirname + '/server.js', dir + '/server'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise(r => srv.stdout.on('data', d => { const m = String(d).match(/port (\d+)/); if (m) r(+m[1]); }));
  const remote = (name) => new PouchDB(`http://127.0.0.1:${port}/${name}`);
  const out = {};
  // 1,000 documents with their own 100 KiB attachment.
  const local = new PouchDB(dir + '/local');
  for (let i = 0; i < 1000; i += 100) {
    const docs = [];
    for (let j = i; j < i + 100; j++) docs.push({ _id: `small-${j}`, _attachments: { data: { content_type: 'application/octet-stream', data: bytes(100 << 10, j + 1) } } });
    await local.bulkDocs(docs);
  }
  let t = Date.now();
  await local.replicate.to(remote('small'));
  out.small_push_mb_per_s = 1000 * (100 << 10) / MB / ((Date.now() - t) / 1000);
  const fresh = new PouchDB(dir + '/fresh');
  t = Date.now();
  await fresh.replicate.from(remote('small'));
  out.small_pull_mb_per_s = 1000 * (100 << 10) / MB / ((Date.now() - t) / 1000);
  console.error("small attachments:", JSON.stringify(out));
  // One large attachment.
  const size = +(process.argv[2] || 256) << 20;
  try {
    const big = new PouchDB(dir + '/big');
    await big.put({ _id: 'large', _attachments: { data: { content_type: 'video/mp4', data: bytes(size, 7) } } });
    t = Date.now();
    await big.replicate.to(remote('large'));
    out.large_push_mb_per_s = size / MB / ((Date.now() - t) / 1000);
    const back = new PouchDB(dir + '/big-back');
    t = Date.now();
    await back.replicate.from(remote('large'));
    out.large_pull_mb_per_s = size / MB / ((Date.now() - t) / 1000);
  } catch (e) {
    out.large_error = String(e && (e.message || e));
  }
  out.large_mib = size >> 20;
  out.client_peak_rss_mb = rss(process.pid);
  out.server_peak_rss_mb = rss(srv.pid);
  console.log(JSON.stringify(out));
  srv.kill();
  fs.rmSync(dir, { recursive: true, force: true });
  process.exit(0);
})().catch(e => { console.error('ERR', e); process.exit(1); });
