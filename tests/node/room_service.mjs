// Every RoomService RPC through the official Node server SDK (npm `livekit-server-sdk`, JSON Twirp).
//   node room_service.mjs URL KEY SECRET PREFIX
// Prints one JSON object: {callName: {ok, value} | {ok: false, status, code, message}}.
import { RoomServiceClient, DataPacket_Kind, TwirpError } from 'livekit-server-sdk';

const [url, key, secret, prefix] = process.argv.slice(2);
const rs = new RoomServiceClient(url, key, secret);
const room = `${prefix}-room`;
const results = {};

async function call(name, fn) {
  try {
    const value = await fn();
    results[name] = { ok: true, value: value === undefined ? null : JSON.parse(JSON.stringify(value, (k, v) => (typeof v === 'bigint' ? v.toString() : v))) };
  } catch (e) {
    if (e instanceof TwirpError) results[name] = { ok: false, status: e.status, code: e.code, message: e.message };
    else results[name] = { ok: false, status: -1, code: 'client-error', message: String(e?.stack ?? e) };
  }
}

await call('createRoom', () => rs.createRoom({ name: room, emptyTimeout: 60, departureTimeout: 7, maxParticipants: 5, metadata: 'm1' }));
await call('createRoomAgain', () => rs.createRoom({ name: room, metadata: 'other' }));
await call('createRoomB', () => rs.createRoom({ name: `${room}-b` }));
await call('listRooms', () => rs.listRooms());
await call('listRoomsNames', () => rs.listRooms([room, 'does-not-exist']));
await call('updateRoomMetadata', () => rs.updateRoomMetadata(room, 'm2'));
await call('listParticipants', () => rs.listParticipants(room));
await call('getParticipant', () => rs.getParticipant(room, 'nobody'));
await call('removeParticipant', () => rs.removeParticipant(room, 'nobody'));
await call('updateParticipant', () => rs.updateParticipant(room, 'nobody', { metadata: 'x', permission: { canPublish: false, canSubscribe: true } }));
await call('mutePublishedTrack', () => rs.mutePublishedTrack(room, 'nobody', 'TR_x', true));
await call('updateSubscriptions', () => rs.updateSubscriptions(room, 'nobody', ['TR_x'], true));
await call('sendData', () => rs.sendData(room, new TextEncoder().encode('hello'), DataPacket_Kind.LOSSY, { topic: 't', destinationIdentities: ['a'] }));
await call('sendDataNoRoom', () => rs.sendData(`${room}-absent`, new TextEncoder().encode('hello'), DataPacket_Kind.RELIABLE));
await call('moveParticipant', () => rs.moveParticipant(room, 'nobody', `${room}-b`));
await call('forwardParticipant', () => rs.forwardParticipant(room, 'nobody', room));
await call('performRpc', async () => rs.rpc.request('RoomService', 'PerformRpc',
  { room, destinationIdentity: 'nobody', method: 'm', payload: 'p' }, await rs.authHeader({ roomAdmin: true, room })));
await call('deleteRoom', () => rs.deleteRoom(room));
await call('deleteRoomAgain', () => rs.deleteRoom(room));
await call('deleteRoomB', () => rs.deleteRoom(`${room}-b`));
await call('badKey', () => new RoomServiceClient(url, key, 'wrong-secret').listRooms());

console.log(JSON.stringify(results));
