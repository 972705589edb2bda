// swift-goim JavaScript client: goim's binary protocol over WebSocket, with heartbeats, reconnect with backoff and
// full jitter, address rotation, and room recovery with offsets (docs/sdk-js.md, docs/history.md).
// One ES module, no dependencies, no build step. Works against goim's comet too (without recovery).
//
//   import { GoIMClient } from './goim.js';
//   const client = new GoIMClient(['ws://127.0.0.1:3102/sub'], { auth: { mid: 1, room_id: 'live://1000', accepts: [1000] } });
//   client.addEventListener('message', (e) => console.log(e.detail.operation, e.detail.text(), e.detail.offset));
//   client.addEventListener('state', (e) => console.log(e.detail.state, e.detail.reason ?? '', e.detail.retryIn ?? ''));
//   client.connect();

/** goim's operations (docs/protocol.md). */
export const Op = Object.freeze({
  HEARTBEAT: 2, HEARTBEAT_REPLY: 3, AUTH: 7, AUTH_REPLY: 8, RAW: 9,
  CHANGE_ROOM: 12, CHANGE_ROOM_REPLY: 13, SUB: 14, SUB_REPLY: 15, UNSUB: 16, UNSUB_REPLY: 17,
  TOKEN_REFRESH: 18, TOKEN_REFRESH_REPLY: 19,
});

const HEADER = 16;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One packet: 16-byte big-endian header (packLen, headerLen 16, ver 1, op, seq) and the body. */
export function encodePacket(operation, sequence, body = new Uint8Array(0)) {
  const bytes = typeof body === 'string' ? encoder.encode(body) : body;
  const buffer = new ArrayBuffer(HEADER + bytes.length);
  const view = new DataView(buffer);
  view.setInt32(0, HEADER + bytes.length);
  view.setInt16(4, HEADER);
  view.setInt16(6, 1);
  view.setInt32(8, operation);
  view.setInt32(12, sequence);
  new Uint8Array(buffer, HEADER).set(bytes);
  return buffer;
}

/**
 * The packets of one WebSocket message: the packet itself, or each inner packet of an op 9 envelope. Returns
 * [{operation, version, sequence, body}]; malformed bytes end the list (a server never sends them).
 */
export function decodePackets(data) {
  const view = new DataView(data);
  const packets = [];
  if (data.byteLength < HEADER) return packets;
  const packLen = Math.min(view.getInt32(0), data.byteLength);
  const headerLen = view.getInt16(4);
  const operation = view.getInt32(8);
  if (headerLen < HEADER || headerLen > packLen) return packets;
  if (operation !== Op.RAW) {
    packets.push({ operation, version: view.getInt16(6), sequence: view.getInt32(12),
      body: new Uint8Array(data, headerLen, packLen - headerLen) });
    return packets;
  }
  for (let offset = headerLen; offset + HEADER <= packLen;) {
    const innerLen = view.getInt32(offset);
    const innerHeader = view.getInt16(offset + 4);
    if (innerLen < innerHeader || innerHeader < HEADER || offset + innerLen > packLen) break;
    packets.push({ operation: view.getInt32(offset + 8), version: view.getInt16(offset + 6),
      sequence: view.getInt32(offset + 12), body: new Uint8Array(data, offset + innerHeader, innerLen - innerHeader) });
    offset += innerLen;
  }
  return packets;
}

/** A delay in [0, min(max, base * 2^attempt)) milliseconds: exponential backoff with full jitter. */
export function backoffDelay(attempt, { base = 500, max = 15000 } = {}, random = Math.random) {
  return Math.floor(random() * Math.min(max, base * 2 ** Math.min(attempt, 30)));
}

/**
 * A connection to a comet that stays connected: it reconnects after any loss (to the next address of `urls`, after
 * a backoff with full jitter), sends heartbeats, notices a dead connection within one heartbeat interval, and, when the
 * room keeps history, recovers what was pushed while it was away, each message once, in order.
 *
 * Events (an EventTarget): `message` {operation, body, text(), json(), offset, room}, `state` {state, reason,
 * retryIn}, `standing` {room, epoch, offset, recovering, recovered} (op 8 / op 13 of a server with history),
 * `online` {count} (heartbeat replies), `reply` {operation, body} (op 13/15/17/19 and echoed business ops).
 */
export class GoIMClient extends EventTarget {
  /**
   * @param {string|string[]} urls comet WebSocket URLs, e.g. `ws://host:3102/sub` (rotated on reconnect)
   * @param {object} options see goim.d.ts
   */
  constructor(urls, options = {}) {
    super();
    this.urls = Array.isArray(urls) ? urls.slice() : [urls];
    if (this.urls.length === 0) throw new Error('GoIMClient: at least one URL');
    this.auth = options.auth ?? {};
    this.heartbeatSeconds = Math.max(1, options.heartbeat ?? 30);
    this.backoff = { base: options.backoff?.base ?? 500, max: options.backoff?.max ?? 15000 };
    this.recover = options.recover ?? true;
    // The user's stream too (pushes to its mid, when the server keeps user history): offline messages.
    this.recoverUser = options.recoverUser ?? this.recover;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.state = 'idle';
    this.epoch = '';
    this.lastOffset = 0;
    this.userEpoch = '';
    this.userOffset = 0;
    this.room = this.auth.room_id ?? '';
    // Where each room left off (epoch, offset), so that coming back to a room recovers what it missed meanwhile.
    this._positions = new Map();
    this._changing = null;
    this._socket = null;
    this._urlIndex = 0;
    this._attempt = 0;
    this._seq = 0;
    this._timer = null;
    this._retryTimer = null;
    this._awaitingHeartbeat = false;
    this._closedByUser = false;
  }

  /** Connects (and keeps reconnecting until `close()`). */
  connect() {
    this._closedByUser = false;
    if (this._socket || this._retryTimer) return;
    this._open();
  }

  /** Closes for good: no reconnect. */
  close() {
    this._closedByUser = true;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._stopHeartbeats();
    const socket = this._socket;
    this._socket = null;
    if (socket) socket.close(1000);
    this._setState('closed', 'closed by the application');
  }

  /** Sends a business packet (forwarded to logic's Receive); resolves nothing, the echo arrives as `reply`. */
  send(operation, body = new Uint8Array(0)) {
    return this._write(operation, body);
  }

  /**
   * Changes room (op 12). With recovery, the reply says where the new room stands (a `standing` event), and coming
   * back to a room this client was in gets what was pushed to it meanwhile (as long as its history holds it).
   */
  changeRoom(room) {
    const position = this._positions.get(room) ?? { epoch: '', offset: 0 };
    const body = this.recover ? JSON.stringify({ room, recover: position }) : room;
    if (!this._write(Op.CHANGE_ROOM, body)) return false;
    // Messages that arrive before op 13 still belong to the old room: the switch happens at the reply.
    this._changing = { room, position };
    return true;
  }

  /** Adds operations to the watch set (op 14). */
  sub(operations) { return this._write(Op.SUB, operations.join(',')); }

  /** Removes operations from the watch set (op 16). */
  unsub(operations) { return this._write(Op.UNSUB, operations.join(',')); }

  /** Sends a fresh token (op 18, swift-goim): the `reply` event carries op 19's answer. */
  refreshToken(token) { return this._write(Op.TOKEN_REFRESH, token); }

  // ---- internals ----

  _open() {
    this._retryTimer = null;
    this._changing = null;  // a change without its reply died with the connection: the auth names the room we are in
    const url = this.urls[this._urlIndex % this.urls.length];
    this._setState(this._attempt === 0 ? 'connecting' : 'reconnecting');
    let socket;
    try {
      socket = new this.WebSocket(url);
    } catch (error) {
      this._lost(`cannot open ${url}: ${error.message}`);
      return;
    }
    socket.binaryType = 'arraybuffer';
    this._socket = socket;
    socket.onopen = () => {
      const auth = { ...this.auth, room_id: this.room };
      if (this.recover || this.recoverUser) {
        auth.recover = this.recover ? { epoch: this.epoch, offset: this.lastOffset } : { epoch: '', offset: 0 };
        if (this.recoverUser) auth.recover.mid = { epoch: this.userEpoch, offset: this.userOffset };
      }
      socket.send(encodePacket(Op.AUTH, ++this._seq, JSON.stringify(auth)));
    };
    socket.onmessage = (event) => {
      if (event.data instanceof ArrayBuffer) for (const packet of decodePackets(event.data)) this._handle(packet);
    };
    socket.onclose = (event) => {
      if (this._socket !== socket) return;
      this._socket = null;
      this._lost(event.reason || `connection closed (code ${event.code})`);
    };
    socket.onerror = () => {};  // onclose follows with the reason
  }

  _handle(packet) {
    switch (packet.operation) {
      case Op.AUTH_REPLY:
        this._attempt = 0;
        this._standing(packet.body);
        this._setState('connected');
        this._startHeartbeats();
        break;
      case Op.HEARTBEAT_REPLY:
        this._awaitingHeartbeat = false;
        if (packet.body.length >= 4) {
          const count = new DataView(packet.body.buffer, packet.body.byteOffset, 4).getInt32(0);
          this.dispatchEvent(new CustomEvent('online', { detail: { count } }));
        }
        break;
      case Op.CHANGE_ROOM_REPLY:
        if (this._changing) {
          if (this.room) this._positions.set(this.room, { epoch: this.epoch, offset: this.lastOffset });
          ({ room: this.room, position: { epoch: this.epoch, offset: this.lastOffset } } = this._changing);
          this._changing = null;
        }
        if (packet.body[0] === 0x7b /* { */) this._standing(packet.body);
        this._emit('reply', { operation: packet.operation, body: packet.body });
        break;
      case Op.SUB_REPLY: case Op.UNSUB_REPLY: case Op.TOKEN_REFRESH_REPLY:
        this._emit('reply', { operation: packet.operation, body: packet.body });
        break;
      default: {
        // A room message of a room with history carries its offset in seq (> 0), a push to this client's user with
        // history minus its offset (< 0); other pushes have 0.
        let offset = 0;
        let stream = null;
        if (packet.sequence > 0) {
          offset = packet.sequence;
          stream = 'room';
          if (offset <= this.lastOffset) return;  // already delivered (recovered, then live)
          this.lastOffset = offset;
        } else if (packet.sequence < 0) {
          offset = -packet.sequence;
          stream = 'user';
          if (offset <= this.userOffset) return;
          this.userOffset = offset;
        }
        const body = packet.body;
        this._emit('message', {
          operation: packet.operation, body, offset, stream, room: this.room,
          text: () => decoder.decode(body), json: () => JSON.parse(decoder.decode(body)),
        });
      }
    }
  }

  /**
   * op 8 / op 13 of a server with history: {room, epoch, offset, recovering, recovered}, and op 8's `mid` {epoch,
   * offset, recovering, recovered} for the user's stream. goim's op 8 is empty.
   */
  _standing(body) {
    if (body.length === 0 || body[0] !== 0x7b) return;
    let standing;
    try { standing = JSON.parse(decoder.decode(body)); } catch { return; }
    if (typeof standing.epoch !== 'string') return;
    // An empty epoch means the server could not read the room's history this time (`recovered` is false): keep the
    // position, so that the next reconnect recovers from where this client really is, not from the history's start.
    if (standing.epoch !== '' && standing.epoch !== this.epoch) {
      // Another epoch (a first connect, or the room's history started again): its offsets start anew.
      this.epoch = standing.epoch;
      this.lastOffset = 0;
    }
    if (typeof standing.room === 'string' && standing.room) this.room = standing.room;
    const user = standing.mid;
    if (user && typeof user.epoch === 'string' && user.epoch !== '' && user.epoch !== this.userEpoch) {
      this.userEpoch = user.epoch;
      this.userOffset = 0;
    }
    this._emit('standing', standing);
  }

  _startHeartbeats() {
    this._stopHeartbeats();
    const beat = () => {
      // No reply to the previous heartbeat within a whole interval: the connection is dead (a NAT dropped it, the
      // comet hangs). Close it; onclose reconnects.
      if (this._awaitingHeartbeat) {
        const socket = this._socket;
        this._socket = null;
        if (socket) socket.close(4000, 'missed heartbeat reply');
        this._lost('missed heartbeat reply');
        return;
      }
      this._awaitingHeartbeat = true;
      this._write(Op.HEARTBEAT);
    };
    beat();
    this._timer = setInterval(beat, this.heartbeatSeconds * 1000);
  }

  _stopHeartbeats() {
    clearInterval(this._timer);
    this._timer = null;
    this._awaitingHeartbeat = false;
  }

  _lost(reason) {
    this._stopHeartbeats();
    if (this._closedByUser) return;
    this._urlIndex += 1;
    const retryIn = backoffDelay(this._attempt, this.backoff);
    this._attempt += 1;
    this._setState('disconnected', reason, retryIn);
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this._open(), retryIn);
  }

  _write(operation, body = new Uint8Array(0)) {
    const socket = this._socket;
    if (!socket || socket.readyState !== 1 /* OPEN */) return false;
    socket.send(encodePacket(operation, ++this._seq, body));
    return true;
  }

  _setState(state, reason, retryIn) {
    this.state = state;
    this._emit('state', { state, reason, retryIn });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
