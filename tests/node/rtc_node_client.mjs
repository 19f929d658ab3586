// The official Node realtime SDK (@livekit/rtc-node) as a test client of lkserver.
//
//   node rtc_node_client.mjs URL TOKEN [--publish-audio HZ] [--publish-video WxH] [--simulcast]
//        [--seconds S] [--single-pc on|off|default] [--no-auto-subscribe] [--send-data TEXT]
//        [--data-topic T] [--rpc-method M] [--call-rpc IDENTITY:METHOD:PAYLOAD] [--mute-after S]
//        [--wait-for IDENTITY] [--simulate signal-reconnect|full-reconnect] [--simulate-after S]
//
// Mirrors tests/rtc/py_client.py: prints one JSON object on stdout with what it saw (events,
// remote participants, received audio per track with its spectral peak, decoded video frames per
// track by size, data messages, the RPC result). Exit code 0 unless the script itself broke;
// SDK failures are reported in `errors`.
import {
  AudioFrame,
  AudioSource,
  AudioStream,
  DisconnectReason,
  LocalAudioTrack,
  LocalVideoTrack,
  Room,
  RoomEvent,
  SimulateScenarioKind,
  TrackKind,
  TrackPublishOptions,
  TrackSource,
  VideoBufferType,
  VideoFrame,
  VideoSource,
  VideoStream,
  dispose,
} from '@livekit/rtc-node';

const SR = 48000;

function parseArgs(argv) {
  const a = {
    url: argv[0], token: argv[1], publishAudio: 0, publishVideo: '', simulcast: false, seconds: 6,
    singlePc: 'default', autoSubscribe: true, sendData: '', dataTopic: 't', rpcMethod: '',
    callRpc: '', muteAfter: 0, waitFor: '', simulate: '', simulateAfter: 2,
  };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i];
    const v = () => argv[++i];
    switch (k) {
      case '--publish-audio': a.publishAudio = +v(); break;
      case '--publish-video': a.publishVideo = v(); break;
      case '--simulcast': a.simulcast = true; break;
      case '--seconds': a.seconds = +v(); break;
      case '--single-pc': a.singlePc = v(); break;
      case '--no-auto-subscribe': a.autoSubscribe = false; break;
      case '--send-data': a.sendData = v(); break;
      case '--data-topic': a.dataTopic = v(); break;
      case '--rpc-method': a.rpcMethod = v(); break;
      case '--call-rpc': a.callRpc = v(); break;
      case '--mute-after': a.muteAfter = +v(); break;
      case '--wait-for': a.waitFor = v(); break;
      case '--simulate': a.simulate = v(); break;
      case '--simulate-after': a.simulateAfter = +v(); break;
      default: throw new Error(`unknown option ${k}`);
    }
  }
  return a;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** In-place iterative radix-2 FFT (re, im: Float64Array of a power-of-two length). */
function fft(re, im) {
  const n = re.length;
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      [re[i], re[j]] = [re[j], re[i]];
      [im[i], im[j]] = [im[j], im[i]];
    }
  }
  for (let len = 2; len <= n; len <<= 1) {
    const ang = (-2 * Math.PI) / len;
    const wr = Math.cos(ang), wi = Math.sin(ang);
    for (let i = 0; i < n; i += len) {
      let cr = 1, ci = 0;
      for (let k = 0; k < len / 2; k++) {
        const a = i + k, b = a + len / 2;
        const xr = re[b] * cr - im[b] * ci, xi = re[b] * ci + im[b] * cr;
        re[b] = re[a] - xr; im[b] = im[a] - xi;
        re[a] += xr; im[a] += xi;
        const t = cr * wr - ci * wi;
        ci = cr * wi + ci * wr;
        cr = t;
      }
    }
  }
}

/**
 * Spectral peak (Hz) and RMS of the received tone. Silent chunks (before the first packet, after a
 * mute or the publisher's departure, when the SDK keeps producing silence) are left out; of the
 * rest, the first quarter (jitter-buffer warm-up) is skipped and up to 2^16 samples analysed with
 * a Hann window.
 */
function analyse(chunks) {
  const total = chunks.reduce((s, c) => s + c.length, 0);
  const loud = chunks.filter((c) => c.reduce((m, v) => Math.max(m, Math.abs(v)), 0) > 300);
  const toneSamples = loud.reduce((s, c) => s + c.length, 0);
  const pcm = new Float64Array(toneSamples);
  let off = 0;
  for (const c of loud) { pcm.set(c, off); off += c.length; }
  const tail = pcm.subarray(Math.floor(toneSamples / 4));
  let n = 1;
  while (n * 2 <= tail.length && n < 65536) n *= 2;
  if (tail.length < 1024) return { samples: total, tone_samples: toneSamples, peak_hz: 0, rms: 0 };
  const win = tail.subarray(0, n);
  const re = new Float64Array(n), im = new Float64Array(n);
  let sq = 0;
  for (let i = 0; i < n; i++) {
    re[i] = win[i] * (0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (n - 1)));
    sq += win[i] * win[i];
  }
  fft(re, im);
  let best = 1, bestMag = -1;
  for (let k = 1; k < n / 2; k++) {
    const m = re[k] * re[k] + im[k] * im[k];
    if (m > bestMag) { bestMag = m; best = k; }
  }
  return { samples: total, tone_samples: toneSamples, peak_hz: Math.round((best * SR / n) * 10) / 10,
           rms: Math.round(Math.sqrt(sq / n) * 10) / 10 };
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const out = { events: [], audio: {}, video: {}, data: [], rpc: null, errors: [], stage: 'connecting' };
  // a hung SDK call must not hang the test: report what happened so far and exit
  setTimeout(() => {
    out.errors.push(`watchdog: still in stage ${out.stage} after ${a.seconds + 25} s`);
    process.stdout.write(JSON.stringify(out) + '\n');
    process.exit(0);
  }, (a.seconds + 25) * 1000).unref();
  const t0 = performance.now();
  const ev = (event, extra = {}) =>
    out.events.push({ t: Math.round(performance.now() - t0) / 1000, event, ...extra });
  const audioChunks = {};
  const firstFrame = {};
  const loops = [];
  let running = true;

  const room = new Room();
  // the Rust core's log records (warnings and errors, and its info lines about the session) go
  // into the report: the Node SDK captures them but does not print them
  out.sdk_log = [];
  const onFfi = (e) => {
    if (e.message.case !== 'logs') return;
    for (const r of e.message.value.records) {
      if (r.level <= 2 && out.sdk_log.length < 200 && r.target?.startsWith('livekit')) {
        out.sdk_log.push(`${Math.round(performance.now() - t0) / 1000} ${['ERROR', 'WARN', 'INFO'][r.level]} ${r.target}: ${r.message?.slice(0, 500)}`);
      }
    }
  };

  async function readAudio(track, key) {
    const stream = new AudioStream(track, { sampleRate: SR, numChannels: 1 });
    const reader = stream.getReader();
    const buf = (audioChunks[key] = []);
    while (running) {
      const { done, value } = await reader.read();
      if (done) break;
      if (!(key in firstFrame)) firstFrame[key] = performance.now();
      buf.push(Int16Array.from(value.data));
    }
    reader.releaseLock();
  }

  async function readVideo(track, key) {
    const stream = new VideoStream(track);
    const reader = stream.getReader();
    const info = (out.video[key] = { frames: 0, sizes: {} });
    while (running) {
      const { done, value } = await reader.read();
      if (done) break;
      if (!(key in firstFrame)) firstFrame[key] = performance.now();
      info.frames += 1;
      const size = `${value.frame.width}x${value.frame.height}`;
      info.sizes[size] = (info.sizes[size] ?? 0) + 1;
    }
    reader.releaseLock();
  }

  room
    .on(RoomEvent.ParticipantConnected, (p) => ev('participant_connected', { identity: p.identity }))
    .on(RoomEvent.ParticipantDisconnected, (p) => ev('participant_disconnected', { identity: p.identity }))
    .on(RoomEvent.TrackSubscribed, (track, pub, p) => {
      const key = `${p.identity}/${pub.sid}`;
      ev('track_subscribed', { key, kind: track.kind });
      const reader = track.kind === TrackKind.KIND_AUDIO ? readAudio(track, key) : readVideo(track, key);
      loops.push(reader.catch((e) => out.errors.push(`read ${key}: ${e?.message ?? e}`)));
    })
    .on(RoomEvent.TrackMuted, (pub, p) => ev('track_muted', { identity: p.identity, sid: pub.sid }))
    .on(RoomEvent.TrackUnmuted, (pub, p) => ev('track_unmuted', { identity: p.identity, sid: pub.sid }))
    .on(RoomEvent.DataReceived, (payload, p, _kind, topic) =>
      out.data.push({ from: p?.identity ?? '', topic: topic ?? '', data: Buffer.from(payload).toString() }))
    .on(RoomEvent.ActiveSpeakersChanged, (speakers) =>
      ev('active_speakers', { identities: speakers.map((s) => s.identity) }))
    .on(RoomEvent.ParticipantMetadataChanged, (metadata, p) =>
      ev('metadata_changed', { identity: p.identity, metadata }))
    .on(RoomEvent.Disconnected, (reason) =>
      ev('disconnected', { reason: DisconnectReason[reason] ?? String(reason) }))
    .on(RoomEvent.Reconnecting, () => ev('reconnecting'))
    .on(RoomEvent.Reconnected, () => ev('reconnected'));

  // the SDK's RoomOptions type has no singlePeerConnection, but its options are spread into the
  // FFI's RoomOptions, which does (field single_peer_connection)
  const options = { autoSubscribe: a.autoSubscribe, dynacast: false };
  if (a.singlePc !== 'default') options.singlePeerConnection = a.singlePc === 'on';
  const tConnect = performance.now();
  try {
    await room.connect(a.url, a.token, options);
  } catch (e) {
    out.errors.push(`connect: ${e?.message ?? e}`);
    return out;
  }
  globalThis._ffiClientInstance?.on('ffi_event', onFfi);
  out.connect_ms = Math.round((performance.now() - tConnect) * 10) / 10;
  out.stage = 'connected';
  out.identity = room.localParticipant.identity;
  out.sid = room.localParticipant.sid;
  out.remote_at_join = [...room.remoteParticipants.keys()].sort();
  const local = room.localParticipant;

  if (a.rpcMethod) {
    local.registerRpcMethod(a.rpcMethod, async (data) => {
      ev('rpc_invoked', { caller: data.callerIdentity, payload: data.payload });
      return data.payload.toUpperCase();
    });
  }

  if (a.waitFor) {
    const deadline = performance.now() + 20000;
    while (!room.remoteParticipants.has(a.waitFor) && performance.now() < deadline) await sleep(50);
  }

  const publications = [];
  if (a.publishAudio) {
    const source = new AudioSource(SR, 1);
    const track = LocalAudioTrack.createAudioTrack('tone', source);
    const po = new TrackPublishOptions({ source: TrackSource.SOURCE_MICROPHONE });
    try {
      const pub = await local.publishTrack(track, po);
      publications.push({ pub, track });
      out.audio_sid = pub.sid;
    } catch (e) {
      out.errors.push(`publish audio: ${e?.message ?? e}`);
    }
    // captureFrame resolves once the SDK's queue has room, which paces this loop in real time
    loops.push((async () => {
      const n = SR / 100;
      let phase = 0;
      while (running) {
        const frame = AudioFrame.create(SR, 1, n);
        for (let i = 0; i < n; i++) {
          frame.data[i] = Math.round(12000 * Math.sin((2 * Math.PI * a.publishAudio * (phase + i)) / SR));
        }
        phase += n;
        await source.captureFrame(frame);
      }
    })().catch((e) => running && out.errors.push(`tone: ${e?.message ?? e}`)));
  }

  if (a.publishVideo) {
    const [w, h] = a.publishVideo.split('x').map(Number);
    const source = new VideoSource(w, h);
    const track = LocalVideoTrack.createVideoTrack('cam', source);
    const po = new TrackPublishOptions({ source: TrackSource.SOURCE_CAMERA, simulcast: a.simulcast });
    try {
      const pub = await local.publishTrack(track, po);
      publications.push({ pub, track });
      out.video_sid = pub.sid;
    } catch (e) {
      out.errors.push(`publish video: ${e?.message ?? e}`);
    }
    loops.push((async () => {
      const img = new Uint8Array(w * h * 4);
      const row = w * 4;
      for (let i = 0; running; i++) {
        // a moving pattern: a shifting background, a fixed quadrant, a noisy block every 10th frame.
        // Rows within each half are alike, so one row of each half is drawn and copied (a 720p
        // frame then costs a few ms, not the ~100 ms of a pixel loop)
        for (const y0 of [0, Math.ceil(h / 2)]) {
          for (let x = 0; x < w; x++) {
            const o = y0 * row + x * 4;
            img[o] = (i * 7 + x) % 255;
            img[o + 1] = y0 < h / 2 && x < w / 2 ? 200 : 0;
            img[o + 2] = 0;
            img[o + 3] = 255;
          }
          const y1 = y0 === 0 ? Math.ceil(h / 2) : h;
          for (let y = y0 + 1; y < y1; y++) img.copyWithin(y * row, y0 * row, (y0 + 1) * row);
        }
        if (i % 10 === 0) {
          for (let y = Math.ceil(h / 2); y < h; y++) {
            for (let x = Math.ceil(w / 2); x < w; x++) img[(y * w + x) * 4 + 2] = (x * 31 + y * 17 + i) % 255;
          }
        }
        source.captureFrame(new VideoFrame(img, w, h, VideoBufferType.RGBA));
        await sleep(1000 / 15);
      }
    })().catch((e) => running && out.errors.push(`video: ${e?.message ?? e}`)));
  }

  if (a.sendData) {
    loops.push((async () => {
      for (let i = 0; i < 10; i++) {
        await local.publishData(new TextEncoder().encode(`${a.sendData}-${i}`), { reliable: true, topic: a.dataTopic });
        await sleep(100);
      }
    })().catch((e) => out.errors.push(`send data: ${e?.message ?? e}`)));
  }

  if (a.callRpc) {
    const [dest, method, ...rest] = a.callRpc.split(':');
    loops.push((async () => {
      const deadline = performance.now() + 20000;
      while (!room.remoteParticipants.has(dest) && performance.now() < deadline) await sleep(50);
      await sleep(500);
      try {
        out.rpc = await local.performRpc({ destinationIdentity: dest, method, payload: rest.join(':') });
      } catch (e) {
        out.rpc = `error: ${e?.message ?? e}`;
      }
    })());
  }

  if (a.muteAfter && publications.length) {
    loops.push((async () => {
      await sleep(a.muteAfter * 1000);
      // @livekit/rtc-node has no public mute for local tracks; this is the request the Rust core
      // (shared with the Python SDK's LocalAudioTrack.mute()) takes, sent through the SDK's FFI client
      const ffi = globalThis._ffiClientInstance;
      ffi.request({ message: { case: 'localTrackMute',
                               value: { trackHandle: publications[0].track.ffi_handle.handle, mute: true } } });
      ev('muted_self', { sid: publications[0].pub.sid });
    })().catch((e) => out.errors.push(`mute: ${e?.message ?? e}`)));
  }

  if (a.simulate) {
    const kinds = { 'signal-reconnect': SimulateScenarioKind.SIMULATE_SIGNAL_RECONNECT,
                    'full-reconnect': SimulateScenarioKind.SIMULATE_FULL_RECONNECT,
                    'force-tcp': SimulateScenarioKind.SIMULATE_FORCE_TCP };
    loops.push((async () => {
      await sleep(a.simulateAfter * 1000);
      out.sid_before_simulate = room.localParticipant?.sid;
      try {
        out.stage = 'simulating';
        await room.simulateScenario(kinds[a.simulate]);
        out.stage = 'simulated';
        ev('simulated', { scenario: a.simulate });
      } catch (e) {
        out.errors.push(`simulate: ${e?.message ?? e}`);
      }
    })());
  }

  await sleep(a.seconds * 1000);
  out.stage = 'finishing';
  out.sid_final = room.localParticipant?.sid;
  out.remote_final = [...room.remoteParticipants.keys()].sort();
  out.connection_state = room.connectionState;
  for (const [key, chunks] of Object.entries(audioChunks)) {
    if (chunks.length) out.audio[key] = analyse(chunks);
  }
  out.first_frame_s = Object.fromEntries(
    Object.entries(firstFrame).map(([k, v]) => [k, Math.round(v - t0) / 1000]));
  running = false;
  out.stage = 'disconnecting';
  await Promise.race([room.disconnect().catch((e) => out.errors.push(`disconnect: ${e?.message ?? e}`)),
                      sleep(5000).then(() => out.errors.push('disconnect: no answer in 5 s'))]);
  out.stage = 'done';
  return out;
}

let report;
try {
  report = await main();
} catch (e) {
  process.stderr.write(`rtc_node_client: ${e?.stack ?? e}\n`);
  process.exit(2);
}
process.stdout.write(JSON.stringify(report) + '\n');
await Promise.race([dispose(), sleep(3000)]).catch(() => {});
process.exit(0);
