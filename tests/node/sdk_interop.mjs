// Interop of lkserver's Python server SDK (`lkserver.api`) with the official Node server SDK.
//   node sdk_interop.mjs token KEY SECRET TOKEN          verify TOKEN, and mint one to verify in Python
//   node sdk_interop.mjs webhook-receive KEY SECRET BODY AUTH   WebhookReceiver.receive(BODY, AUTH)
//   node sdk_interop.mjs webhook-sign KEY SECRET BODY    the Authorization a server would send with BODY
// Prints one JSON object on stdout.
import { createHash } from 'node:crypto';
import { AccessToken, TokenVerifier, WebhookReceiver } from 'livekit-server-sdk';

const [mode, key, secret, ...rest] = process.argv.slice(2);
const out = {};

if (mode === 'token') {
  const [token] = rest;
  try {
    out.verified = await new TokenVerifier(key, secret).verify(token);
  } catch (e) {
    out.verifyError = String(e?.code ?? e?.name ?? e);
  }
  const at = new AccessToken(key, secret, { identity: 'node-alice', name: 'Node A', metadata: 'md', attributes: { k: 'v' }, ttl: '10m' });
  at.addGrant({ roomJoin: true, room: 'r', canPublish: false });
  at.addSIPGrant({ admin: true });
  out.minted = await at.toJwt();
} else if (mode === 'webhook-receive') {
  const [body, auth] = rest;
  try {
    const event = await new WebhookReceiver(key, secret).receive(body, auth);
    out.ok = true;
    out.event = event.toJson();
  } catch (e) {
    out.ok = false;
    out.error = String(e?.message ?? e);
  }
} else if (mode === 'webhook-sign') {
  const [body] = rest;
  const at = new AccessToken(key, secret, { ttl: '5m' });
  at.sha256 = createHash('sha256').update(body, 'utf8').digest('base64');
  out.auth = await at.toJwt();
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
console.log(JSON.stringify(out));
