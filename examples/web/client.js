// swift-goim browser demo: a live room over goim's binary protocol (WebSocket, /sub) plus a send box that posts
// through logic's HTTP push API. No build step, no dependencies.
//
// Packet: 16-byte big-endian header (packLen int32, headerLen int16 = 16, ver int16, op int32, seq int32) + body.
'use strict';

const OP = { HEARTBEAT: 2, HEARTBEAT_REPLY: 3, AUTH: 7, AUTH_REPLY: 8, RAW: 9 };
const HEADER = 16;

const params = new URLSearchParams(location.search);
const host = params.get('host') || location.hostname || '127.0.0.1';
const wsURL = params.get('ws') || `ws://${host}:${params.get('wsPort') || 3102}/sub`;
const apiURL = (params.get('api') || `http://${host}:${params.get('apiPort') || 3111}`).replace(/\/+$/, '');
const roomType = params.get('type') || 'live';
const room = params.get('room') || '1000';
const mid = Number(params.get('mid') || Math.floor(Math.random() * 1e9) + 1);
const pushToken = params.get('token') || '';
const heartbeatSeconds = Math.max(1, Number(params.get('heartbeat') || 30));
const accepts = [1000, 1001, 1002];

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const $ = (id) => document.getElementById(id);

function packet(op, seq, body = new Uint8Array(0)) {
  const buffer = new ArrayBuffer(HEADER + body.length);
  const view = new DataView(buffer);
  view.setInt32(0, HEADER + body.length);
  view.setInt16(4, HEADER);
  view.setInt16(6, 1);
  view.setInt32(8, op);
  view.setInt32(12, seq);
  new Uint8Array(buffer, HEADER).set(body);
  return buffer;
}

// Calls onPacket(op, ver, seq, body) for the packet in `data`, or for each inner packet of an op 9 envelope.
function readPackets(data, onPacket) {
  const view = new DataView(data);
  if (data.byteLength < HEADER) return;
  const packLen = Math.min(view.getInt32(0), data.byteLength);
  const headerLen = view.getInt16(4);
  const op = view.getInt32(8);
  if (headerLen < HEADER || headerLen > packLen) return;  // malformed: ignore
  if (op !== OP.RAW) {
    onPacket(op, view.getInt16(6), view.getInt32(12), new Uint8Array(data, headerLen, Math.max(0, packLen - headerLen)));
    return;
  }
  for (let offset = headerLen; offset + HEADER <= packLen;) {
    const innerLen = view.getInt32(offset);
    const innerHeader = view.getInt16(offset + 4);
    if (innerLen < innerHeader || innerHeader < HEADER || offset + innerLen > packLen) break;  // malformed: stop
    onPacket(view.getInt32(offset + 8), view.getInt16(offset + 6), view.getInt32(offset + 12),
             new Uint8Array(data, offset + innerHeader, innerLen - innerHeader));
    offset += innerLen;
  }
}

// ---- the page ----

function setStatus(state, text) {
  $('status').dataset.state = state;
  $('status').textContent = text;
}

function addComment(text, meta, system = false) {
  const list = $('comments');
  const item = document.createElement('li');
  if (system) item.className = 'system';
  if (meta) {
    const span = document.createElement('span');
    span.className = 'meta';
    span.textContent = meta;
    item.append(span);
  }
  item.append(document.createTextNode(text));  // text only: a pushed message can never inject markup
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.append(item);
  while (list.children.length > 500) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

// ---- the connection ----

let socket = null;
let heartbeatTimer = null;
let seq = 0;
let retryDelay = 1000;
// Room history (docs/history.md): the epoch and last offset seen. A reconnect sends them in `recover`, and the comet
// sends what was pushed to the room meanwhile, then the live messages; an offset already shown is skipped.
let epoch = '';
let lastOffset = 0;

function send(op, body) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(packet(op, ++seq, body));
}

function connect() {
  setStatus('connecting', 'connecting…');
  socket = new WebSocket(wsURL);
  socket.binaryType = 'arraybuffer';
  socket.onopen = () => {
    const auth = { mid, room_id: `${roomType}://${room}`, platform: 'web', accepts, recover: { epoch, offset: lastOffset } };
    send(OP.AUTH, encoder.encode(JSON.stringify(auth)));
  };
  socket.onmessage = (event) => {
    if (!(event.data instanceof ArrayBuffer)) return;
    readPackets(event.data, (op, ver, packetSeq, body) => {
      switch (op) {
        case OP.AUTH_REPLY:
          retryDelay = 1000;
          setStatus('connected', `connected as mid ${mid}`);
          standing(body);
          send(OP.HEARTBEAT);  // at once, so the online counter shows without waiting a period
          clearInterval(heartbeatTimer);
          heartbeatTimer = setInterval(() => send(OP.HEARTBEAT), heartbeatSeconds * 1000);
          break;
        case OP.HEARTBEAT_REPLY:
          if (body.length >= 4) $('online').textContent = new DataView(body.buffer, body.byteOffset, 4).getInt32(0);
          break;
        default:
          if (op < 1000) break;
          // Room messages of a room with history carry their offset in seq; key/mid pushes and broadcasts have 0.
          if (packetSeq > 0) {
            if (packetSeq <= lastOffset) break;  // already shown (it came in the recovery and live)
            lastOffset = packetSeq;
          }
          addComment(decoder.decode(body), `${new Date().toLocaleTimeString()} op ${op}${packetSeq > 0 ? ` #${packetSeq}` : ''}`);
      }
    });
  };
  socket.onclose = () => {
    clearInterval(heartbeatTimer);
    setStatus('closed', `disconnected; retrying in ${retryDelay / 1000} s`);
    setTimeout(connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 15000);
  };
}

// The op 8 body of a recovery-aware client: {"room","epoch","offset","recovering","recovered"} (empty from a goim
// server: then there is no history to recover).
function standing(body) {
  if (body.length === 0) return;
  let reply;
  try { reply = JSON.parse(decoder.decode(body)); } catch { return; }
  if (reply.epoch !== epoch) {
    // Another epoch: the room's history started again (or this is the first connect); its offsets start anew.
    if (epoch && reply.recovering) addComment('history was lost: messages pushed while disconnected may be missing', '', true);
    epoch = reply.epoch || '';
    lastOffset = 0;
  } else if (reply.recovering && !reply.recovered) {
    addComment('some messages pushed while disconnected are no longer in the history', '', true);
  }
  $('history').textContent = epoch ? `history ${epoch.slice(0, 8)}… at #${reply.offset}` : 'no history';
}

// ---- sending through the HTTP API ----

$('send-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = $('send-text');
  const text = input.value.trim();
  if (!text) return;
  const url = `${apiURL}/goim/push/room?operation=1000&type=${encodeURIComponent(roomType)}&room=${encodeURIComponent(room)}`;
  const headers = pushToken ? { Authorization: `Bearer ${pushToken}` } : {};
  try {
    // The body is the message as it is (text/plain: no CORS preflight unless a token is sent).
    const response = await fetch(url, { method: 'POST', body: text, headers });
    const reply = await response.json();
    if (reply.code === 0) {
      input.value = '';
      $('send-result').textContent = 'sent';
    } else {
      $('send-result').textContent = `not sent: ${reply.code} ${reply.message}`;
    }
  } catch (error) {
    $('send-result').textContent = `cannot reach ${apiURL} (${error.message}); is logic's httpServer.corsOrigins set for this page?`;
  }
});

$('room-name').textContent = `${roomType}://${room}`;
$('endpoint').textContent = `${wsURL} · ${apiURL}`;
connect();
