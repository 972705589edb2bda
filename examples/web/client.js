// swift-goim browser demo: a live room over goim's binary protocol (WebSocket, /sub) through the JavaScript client
// (clients/js/goim.js: heartbeats, reconnect with backoff, room recovery), plus a send box that posts through logic's
// HTTP push API. No build step, no dependencies.
import { GoIMClient } from './goim.js';

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

const $ = (id) => document.getElementById(id);

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

// The backoff starts at 1 s so that a comet restart is seen at once; the client adds jitter.
const client = new GoIMClient([wsURL], {
  auth: { mid, room_id: `${roomType}://${room}`, platform: 'web', accepts },
  heartbeat: heartbeatSeconds,
  backoff: { base: 1000, max: 15000 },
});
client.addEventListener('state', ({ detail }) => {
  switch (detail.state) {
    case 'connected': setStatus('connected', `connected as mid ${mid}`); break;
    case 'disconnected': setStatus('closed', `disconnected (${detail.reason}); retrying in ${(detail.retryIn / 1000).toFixed(1)} s`); break;
    default: setStatus('connecting', `${detail.state}…`);
  }
});
client.addEventListener('online', ({ detail }) => { $('online').textContent = detail.count; });
// Where the room stands after each (re)connect: room messages pushed while away come next, each once, in order.
client.addEventListener('standing', ({ detail }) => {
  if ((detail.recovering && !detail.recovered) || (detail.mid?.recovering && !detail.mid.recovered)) {
    addComment('some messages pushed while disconnected are no longer in the history', '', true);
  }
  $('history').textContent = detail.epoch ? `history ${detail.epoch.slice(0, 8)}… at #${detail.offset}` : 'no history';
});
client.addEventListener('message', ({ detail }) => {
  if (detail.operation < 1000) return;
  // Room messages show their offset in the room, pushes to this user (offline messages) theirs in the user's stream.
  const offset = detail.offset > 0 ? ` ${detail.stream === 'user' ? 'mid ' : ''}#${detail.offset}` : '';
  addComment(detail.text(), `${new Date().toLocaleTimeString()} op ${detail.operation}${offset}`);
});

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
client.connect();
