import Hummingbird
import NIOCore

/// `GET /admin`: a one-page admin console (docs/operations.md). The page holds no data: it asks for the push token and
/// reads `GET /goim/admin/summary` with it every two seconds (comets, online totals, busiest rooms, push and delivery
/// rates), and sends pushes through goim's own `/goim/push/*` routes. Text from the server goes into the page with
/// `textContent` only.
enum AdminPage {
    static func response() -> Response {
        Response(
            status: .ok,
            headers: [
                .contentType: "text/html; charset=utf-8", .contentLength: String(html.utf8.count),
                .contentSecurityPolicy: "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
                .cacheControl: "no-store",
            ],
            body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <title>swift-goim admin</title>
        <style>
          body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
          h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin-top: 1.5em; }
          table { border-collapse: collapse; } td, th { border-bottom: 1px solid #ddd; padding: .25em .8em; text-align: left; }
          .figures span { display: inline-block; min-width: 11em; margin-right: 1em; }
          .figures b { font-size: 1.3em; }
          #status { color: #a00; } form > * { margin-right: .5em; }
        </style>
        </head>
        <body>
        <h1>swift-goim</h1>
        <form id="login"><label>Push token <input id="token" type="password" size="36"></label><button>Use</button>
          <span id="status"></span></form>

        <h2>Online</h2>
        <div class="figures">
          <span>connections <b id="connections">-</b></span><span>distinct IPs <b id="ips">-</b></span>
          <span>rooms <b id="rooms">-</b></span><span>comets <b id="comets">-</b></span>
        </div>
        <h2>Rates</h2>
        <div class="figures">
          <span>push requests/s <b id="pushRate">-</b></span><span>deliveries/s <b id="deliveryRate">-</b></span>
        </div>
        <h2>Comets</h2>
        <table><thead><tr><th>host</th><th>addresses</th><th>TCP</th><th>WebSocket</th><th>connections</th><th>IPs</th>
          <th>delivered</th><th>state</th></tr></thead><tbody id="nodes"></tbody></table>
        <h2>Busiest rooms</h2>
        <table><thead><tr><th>room</th><th>online</th></tr></thead><tbody id="topRooms"></tbody></table>

        <h2>Push</h2>
        <form id="push">
          <select id="kind"><option value="room">room</option><option value="mids">user ids (mids)</option>
            <option value="all">broadcast</option></select>
          <input id="target" placeholder="live://1000 or 1,2,3" size="24">
          <input id="operation" value="1000" size="6" title="operation">
          <input id="message" placeholder="message" size="30">
          <button>Send</button> <span id="pushResult"></span>
        </form>

        <script>
        "use strict";
        const $ = (id) => document.getElementById(id);
        let token = sessionStorage.getItem("goim-token") || "";
        let previous = null;

        function headers() { return token ? { Authorization: "Bearer " + token } : {}; }
        function cell(row, text) { const td = document.createElement("td"); td.textContent = String(text); row.appendChild(td); }

        async function refresh() {
          try {
            const reply = await fetch("/goim/admin/summary", { headers: headers() });
            const json = await reply.json();
            if (json.code !== 0) { $("status").textContent = json.message; return; }
            $("status").textContent = "";
            const data = json.data, now = Date.now();
            $("connections").textContent = data.online.conn_count;
            $("ips").textContent = data.online.ip_count;
            $("rooms").textContent = data.online.rooms;
            $("comets").textContent = data.nodes.length;
            const pushes = Object.values(data.push_requests).reduce((a, b) => a + b, 0);
            if (previous) {
              const seconds = (now - previous.at) / 1000;
              $("pushRate").textContent = ((pushes - previous.pushes) / seconds).toFixed(1);
              $("deliveryRate").textContent = (Math.max(0, data.delivered - previous.delivered) / seconds).toFixed(1);
            }
            previous = { at: now, pushes, delivered: data.delivered };
            const nodes = $("nodes"); nodes.replaceChildren();
            for (const node of data.nodes) {
              const row = document.createElement("tr");
              row.dataset.host = node.hostname;
              for (const value of [node.hostname, node.addrs.join(", "), node.tcp_ports.join(", "), node.ws_ports.join(", "),
                                   node.conn_count, node.ip_count, node.delivered, node.offline ? "offline" : "online"]) cell(row, value);
              nodes.appendChild(row);
            }
            const rooms = $("topRooms"); rooms.replaceChildren();
            for (const room of data.top_rooms) {
              const row = document.createElement("tr"); cell(row, room.room_id); cell(row, room.count); rooms.appendChild(row);
            }
          } catch (error) {
            $("status").textContent = "cannot reach logic: " + error;
          }
        }

        $("login").addEventListener("submit", (event) => {
          event.preventDefault();
          token = $("token").value.trim();
          sessionStorage.setItem("goim-token", token);
          previous = null;
          refresh();
        });

        $("push").addEventListener("submit", async (event) => {
          event.preventDefault();
          const kind = $("kind").value, target = $("target").value.trim();
          const query = new URLSearchParams({ operation: $("operation").value.trim() });
          if (kind === "room") {
            const match = /^([^:]+):\/\/(.+)$/.exec(target);
            if (!match) { $("pushResult").textContent = "a room is type://id, e.g. live://1000"; return; }
            query.set("type", match[1]); query.set("room", match[2]);
          } else if (kind === "mids") {
            const mids = target.split(/[\s,]+/).filter((x) => x);
            if (!mids.length) { $("pushResult").textContent = "give at least one user id"; return; }
            for (const mid of mids) query.append("mids", mid);
          }
          try {
            const reply = await fetch("/goim/push/" + kind + "?" + query, { method: "POST", headers: headers(), body: $("message").value });
            const json = await reply.json();
            $("pushResult").textContent = json.code === 0 ? "sent" : "refused: " + json.message;
          } catch (error) {
            $("pushResult").textContent = "failed: " + error;
          }
        });

        $("token").value = token;
        refresh();
        setInterval(refresh, 2000);
        </script>
        </body>
        </html>
        """#
}
