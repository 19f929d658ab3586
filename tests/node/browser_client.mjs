// livekit-client (the official browser SDK) in Debian's headless chromium as a test client of
// lkserver.
//
//   node browser_client.mjs URL SPEC_JSON
//
// SPEC = { "tone": HZ (the fake microphone plays this sine; 0 = chromium's own beep),
//          "participants": [ { "token": JWT, "seconds": S, "startAfter": S, "v0": bool,
//                              "publish": "av"|"a"|"v"|"", "simulcast": bool, "sendData": TEXT,
//                              "dataTopic": T, "rpcMethod": M, "callRpc": "ID:METHOD:PAYLOAD",
//                              "muteAfter": S, "waitFor": ID, "simulate": SCENARIO,
//                              "simulateAfter": S, "autoSubscribe": bool,
//                              "room": NAME, "waitActive": [IDENTITY, ...],
//                              media quality: "camera", "fps", "adaptiveStream", "dynacast", "videoSize",
//                              "resizeVideo", "videoQuality", "layerActive", "videoSamples",
//                              "senderStats", "degradationPreference" (see index.html) }, ... ],
//          "api": { "key": K, "secret": S } }
// waitActive delays a participant until those participants are ACTIVE in `room` per the server's
// RoomService (their transport connected, so reliable data reaches them).
//
// Serves tests/browser/index.html and livekit-client's UMD bundle from a local HTTP server,
// launches one chromium (never downloads one: /usr/bin/chromium) with a fake camera and a fake
// microphone that plays a WAV tone generated here, opens one page per participant and runs
// window.lkTest.run(options) in each. Prints one JSON line: {"participants": [report, ...]}
// (see index.html for a report's fields). Exit code 0 unless the harness itself broke.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RoomServiceClient } from 'livekit-server-sdk';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const PAGE = path.join(here, '..', 'browser', 'index.html');
const UMD = path.join(here, 'node_modules', 'livekit-client', 'dist', 'livekit-client.umd.js');
const CHROMIUM = process.env.LKSERVER_CHROMIUM || '/usr/bin/chromium';

/** A mono 16-bit 48 kHz WAV of `seconds` of a sine at `hz` (integer hz: the loop is seamless). */
function toneWav(hz, seconds = 2) {
  const sr = 48000, n = sr * seconds;
  const b = Buffer.alloc(44 + n * 2);
  b.write('RIFF', 0); b.writeUInt32LE(36 + n * 2, 4); b.write('WAVE', 8);
  b.write('fmt ', 12); b.writeUInt32LE(16, 16); b.writeUInt16LE(1, 20); b.writeUInt16LE(1, 22);
  b.writeUInt32LE(sr, 24); b.writeUInt32LE(sr * 2, 28); b.writeUInt16LE(2, 32); b.writeUInt16LE(16, 34);
  b.write('data', 36); b.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) b.writeInt16LE(Math.round(12000 * Math.sin((2 * Math.PI * hz * i) / sr)), 44 + i * 2);
  return b;
}

function serve() {
  const srv = http.createServer((req, res) => {
    const p = new URL(req.url, 'http://x').pathname;
    if (p === '/' || p === '/index.html') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(fs.readFileSync(PAGE));
    } else if (p === '/livekit-client.umd.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(fs.readFileSync(UMD));
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(srv)));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const ACTIVE = 2;  // livekit.ParticipantInfo.State.ACTIVE

async function waitActive(url, api, room, identities) {
  const rs = new RoomServiceClient(url.replace(/^ws/, 'http'), api.key, api.secret);
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline) {
    const parts = await rs.listParticipants(room).catch(() => []);
    const active = new Set(parts.filter((p) => p.state === ACTIVE).map((p) => p.identity));
    if (identities.every((i) => active.has(i))) return;
    await sleep(100);
  }
  throw new Error(`not active in ${room}: ${identities}`);
}

async function main() {
  const [url, specText] = process.argv.slice(2);
  const spec = JSON.parse(specText);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lk-browser-'));
  const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run', '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream', '--autoplay-policy=no-user-gesture-required'];
  if (spec.tone) {
    const wav = path.join(tmp, `tone-${spec.tone}.wav`);
    fs.writeFileSync(wav, toneWav(spec.tone));
    args.push(`--use-file-for-fake-audio-capture=${wav}`);
  }
  const srv = await serve();
  const origin = `http://127.0.0.1:${srv.address().port}`;
  const browser = await chromium.launch({ executablePath: CHROMIUM, args });
  const t0 = Date.now();
  try {
    const runs = spec.participants.map(async (p, i) => {
      await sleep((p.startAfter || 0) * 1000);
      if (p.waitActive) await waitActive(url, spec.api, p.room, p.waitActive);
      const ctx = await browser.newContext({ permissions: ['camera', 'microphone'] });
      const page = await ctx.newPage();
      const console_ = [];
      page.on('console', (m) => {
        if (console_.length < 80 && m.type() !== 'debug') console_.push(`${m.type()}: ${m.text().slice(0, 2000)}`);
      });
      page.on('pageerror', (e) => console_.push(`pageerror: ${e}`));
      const websockets = [];   // signalling paths the page opened (/rtc/v1, /rtc)
      page.on('websocket', (ws) => websockets.push(new URL(ws.url()).pathname));
      await page.goto(`${origin}/index.html`);
      let report;
      try {
        report = await page.evaluate((o) => window.lkTest.run(o), { url, ...p });
      } catch (e) {
        report = { errors: [`page: ${e.message}`], events: [], video: {}, audio: {}, data: [] };
      }
      report.index = i;
      report.console = console_;
      report.websockets = websockets;
      report.started_s = (Date.now() - t0) / 1000;
      await ctx.close();
      return report;
    });
    const participants = await Promise.all(runs);
    process.stdout.write(JSON.stringify({ participants }) + '\n');
  } finally {
    await browser.close();
    srv.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().then(() => process.exit(0), (e) => {
  process.stderr.write(`browser_client: ${e?.stack ?? e}\n`);
  process.exit(2);
});
