// Checks captured webhook requests with the official Node receiver (npm `livekit-server-sdk`).
//   node webhook_verify_many.mjs FILE
// FILE: JSON [{body, auth, key, secret}] (body as received, auth = the Authorization header).
// Prints one JSON array, one entry per request: {ok, event, id, room, json} or {ok: false, error}.
import { readFileSync } from 'node:fs';
import { WebhookReceiver } from 'livekit-server-sdk';

const requests = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const results = [];
for (const { body, auth, key, secret } of requests) {
  try {
    const ev = await new WebhookReceiver(key, secret).receive(body, auth);
    results.push({ ok: true, event: ev.event, id: ev.id, room: ev.room?.name ?? null, json: ev.toJson() });
  } catch (e) {
    results.push({ ok: false, error: String(e?.message ?? e) });
  }
}
console.log(JSON.stringify(results));
