import Foundation
import HummingbirdTesting
import TestSupport
import StackHarness
import Testing

/// The browser demo (examples/web) in headless Chromium against the process stack, driven over the DevTools
/// protocol. In the serialized stack suite: Chromium alone keeps both cores busy while it starts.
extension StackTests {
    static let chromium: String? = ["chromium", "chromium-browser", "google-chrome"].lazy
        .compactMap { try? TestServers.locate($0) }.first

    static func repositoryPath(_ path: String) -> String {
        // Tests/StackTests/BrowserDemoTests.swift → repository root
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(path).path
    }

    @Test(
        "The browser demo shows room pushes and the online count, and its send box pushes through logic (CORS)",
        .enabled(if: chromium != nil, "chromium is not installed (apt-get install chromium; scripts/install-deps does)"),
        .startsServers)
    func browserDemo() async throws {
        let python = try TestServers.locate("python3")
        let webPort = TestServers.freePort()
        let origin = "http://127.0.0.1:\(webPort)"
        var options = Stack.Options()
        // live:// rooms keep history, as in the shipped configs: the page recovers what it missed while away.
        // Users keep history too: the page (mid 777) gets what was pushed to it while away.
        options.logicEnvironment = [
            "GOIM_HTTPSERVER_CORSORIGINS": origin, "GOIM_HISTORY_ROOMS": "live:100:10m", "GOIM_HISTORY_MIDS": "100:10m",
        ]
        options.jobEnvironment = ["GOIM_HISTORY_ROOMS": "live:100:10m", "GOIM_HISTORY_MIDS": "100:10m"]
        try await Stack.run(options) { stack in
            // The page is served as scripts/run-local serves it: python's static server, another origin than logic.
            let web = try TestServers.program(
                "web", path: python,
                arguments: ["-m", "http.server", "\(webPort)", "--bind", "127.0.0.1", "--directory", Self.repositoryPath("examples/web")],
                port: webPort)
            try await web.start()
            defer { web.stopInBackground() }

            let comet = stack.comets[0]
            let pageURL =
                "\(origin)/?host=127.0.0.1&wsPort=\(comet.webSocketPort)&apiPort=\(stack.logics[0].httpPort)&mid=777&heartbeat=1"
            try await Self.withPage(pageURL, urlPrefix: origin) { page in try await Self.drive(page, stack: stack) }
        }
    }

    /// Opens `url` in headless Chromium and runs `body` on it over the DevTools protocol; on failure the error carries
    /// the page's text and Chromium's log.
    static func withPage(_ url: String, urlPrefix: String, _ body: (DevToolsPage) async throws -> Void) async throws {
        let chromium = try #require(Self.chromium)
        let debugPort = TestServers.freePort()
        let profile = try TestServers.temporaryDirectory("chromium-profile")
        let browser = try TestServers.program(
            "chromium", path: chromium,
            arguments: [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--mute-audio",
                "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=\(debugPort)",
                "--user-data-dir=\(profile.path)", url,
            ],
            port: debugPort)
        try await browser.start(timeout: .seconds(60))
        defer {
            browser.stopInBackground()
            try? FileManager.default.removeItem(at: profile)
        }
        let target = try await Self.pageTarget(debugPort: debugPort, urlPrefix: urlPrefix)
        let page = try await DevToolsPage.connect(port: debugPort, path: target)
        do {
            try await body(page)
        } catch {
            let text = (try? await page.evaluate("document.body.innerText")) ?? "<page not readable>"
            await page.close()
            throw StackTestError(
                "\(error)\n---- page text ----\n\(text)\n---- chromium ----\n\(Self.withoutDBusNoise(browser.output).suffix(3000))")
        }
        await page.close()
    }

    /// Chromium's log without the lines about the missing D-Bus (always there in a container, never the problem).
    static func withoutDBusNoise(_ output: String) -> String {
        output.split(separator: "\n").filter { !$0.contains("dbus") && !$0.contains("DBus") }.joined(separator: "\n")
    }

    /// The DevTools WebSocket path of the page target showing `urlPrefix`, once Chromium lists it.
    static func pageTarget(debugPort: Int, urlPrefix: String) async throws -> String {
        var path: String?
        try await eventually("chromium lists the demo page as a DevTools target") {
            let body = try await TestClient.withClient(host: "127.0.0.1", port: debugPort) { client in
                try await client.get("/json/list").body.map { String(buffer: $0) } ?? ""
            }
            let targets = (try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [[String: Any]]) ?? []
            let page = targets.first { ($0["type"] as? String) == "page" && (($0["url"] as? String) ?? "").hasPrefix(urlPrefix) }
            guard let address = page?["webSocketDebuggerUrl"] as? String, let url = URL(string: address) else { return false }
            path = url.path
            return true
        }
        return try #require(path)
    }

    static func drive(_ page: DevToolsPage, stack: Stack) async throws {
        let comments = "Array.from(document.querySelectorAll('#comments li')).map(li => li.textContent).join('\\n')"
        try await eventually("the page authenticated on the comet (status connected)") {
            try await page.evaluate("document.getElementById('status').dataset.state") == "connected"
        }
        // The heartbeat reply's room count: the page is alone in live://1000.
        try await eventually("the online counter shows 1") {
            try await page.evaluate("document.getElementById('online').textContent") == "1"
        }

        // A push through the HTTP API appears on the page, as text (markup is not interpreted).
        let pushed = "hello from the test <b>not bold</b>"
        try await stack.push("/goim/push/room?operation=1000&type=live&room=1000", pushed)
        try await eventually("the pushed message is on the page") {
            try await page.evaluate(comments)?.contains(pushed) == true
        }
        #expect(try await page.evaluate("document.querySelectorAll('#comments b').length") == "0")

        // A mid push (the page accepts 1000-1002) and a broadcast reach it too.
        try await stack.push("/goim/push/mids?operation=1001&mids=777", "for mid 777")
        try await stack.push("/goim/push/all?operation=1002", "for everyone")
        try await eventually("the mid push and the broadcast are on the page") {
            let text = try await page.evaluate(comments) ?? ""
            return text.contains("for mid 777") && text.contains("for everyone")
        }

        // The send box posts to logic from the page's origin (CORS) and the message comes back through comet.
        let typed = "typed in the browser"
        _ = try await page.evaluate(
            "(() => { document.getElementById('send-text').value = '\(typed)'; document.getElementById('send-form').requestSubmit(); })()")
        try await eventually("the page's own message comes back") {
            try await page.evaluate(comments)?.contains(typed) == true
        }
        try await eventually("the send box reports success") {
            try await page.evaluate("document.getElementById('send-result').textContent") == "sent"
        }

        // Another member joins the room: the page's next heartbeat (every second here) shows 2.
        let other = try await Member.connect("other", to: stack.comets[0], webSocket: false, mid: 778, room: "live://1000")
        try await eventually("the online counter shows 2") {
            try await page.evaluate("document.getElementById('online').textContent") == "2"
        }
        await other.close()

        // The comet the page talks to dies; five messages are pushed to the room meanwhile; the comet comes back on the
        // same port, the page reconnects and shows each of the five once, in order, after what it had.
        let comet = stack.comets[0]
        await comet.process.kill9()
        try await eventually("the page sees the comet gone") {
            try await page.evaluate("document.getElementById('status').dataset.state") == "closed"
        }
        let missed = (1...5).map { "missed while away \($0)" }
        for message in missed { try await stack.push("/goim/push/room?operation=1000&type=live&room=1000", message) }
        try await stack.push("/goim/push/mids?operation=1001&mids=777", "offline message for mid 777")
        try await comet.process.start()
        try await eventually("the page reconnects and recovers the five messages and its offline message", timeout: .seconds(40)) {
            let text = try await page.evaluate(comments) ?? ""
            return missed.allSatisfy { text.contains($0) } && text.contains("offline message for mid 777")
        }
        try await stack.push("/goim/push/room?operation=1000&type=live&room=1000", "live again")
        try await eventually("a live message follows") { try await page.evaluate(comments)?.contains("live again") == true }
        let lines = (try await page.evaluate(comments) ?? "").split(separator: "\n").map(String.init)
        let shown = lines.compactMap { line in (missed + ["live again"]).first { line.hasSuffix($0) } }
        #expect(shown == missed + ["live again"], "the page shows \(shown)")
        #expect(lines.filter { $0.contains("#") }.count >= 7, "room messages show their offsets: \(lines)")
        // The user's stream: the mid push before the kill was offset 1, the one pushed while away offset 2, shown once.
        #expect(lines.filter { $0.contains("offline message for mid 777") }.count == 1, "\(lines)")
        #expect(lines.contains { $0.contains("mid #2") && $0.hasSuffix("offline message for mid 777") }, "\(lines)")
        #expect(try await page.evaluate("document.getElementById('history').textContent")?.hasPrefix("history ") == true)

        try await Self.checkClientLibrary(page)
    }

    /// clients/js/goim.js on its own, in the page: packets, the backoff's bounds, and a dead connection noticed within
    /// one heartbeat interval (a fake WebSocket that answers op 7 and never op 2).
    static func checkClientLibrary(_ page: DevToolsPage) async throws {
        let script = #"""
            import('./goim.js').then(async (m) => {
              const results = {};
              const packet = m.decodePackets(m.encodePacket(1000, 7, 'hi'))[0];
              results.packet = packet.operation === 1000 && packet.sequence === 7 && new TextDecoder().decode(packet.body) === 'hi';
              const bounds = { base: 500, max: 15000 };
              results.backoff = m.backoffDelay(0, bounds, () => 0.999) < 500 && m.backoffDelay(0, bounds, () => 0) === 0
                && m.backoffDelay(3, bounds, () => 0.5) === 2000 && m.backoffDelay(20, bounds, () => 0.999) >= 14900
                && m.backoffDelay(20, bounds, () => 0.999) < 15000;
              class SilentComet {
                constructor() { this.readyState = 0; setTimeout(() => { this.readyState = 1; this.onopen(); }, 10); }
                send(data) {
                  const [sent] = m.decodePackets(data);
                  if (sent.operation === m.Op.AUTH) {
                    setTimeout(() => this.onmessage({ data: m.encodePacket(m.Op.AUTH_REPLY, sent.sequence) }), 10);
                  }
                }
                close() { this.readyState = 3; }
              }
              const client = new m.GoIMClient('ws://silent.invalid/sub', { heartbeat: 1, WebSocket: SilentComet, backoff: { base: 60000 } });
              const states = [];
              const started = performance.now();
              const lost = new Promise((resolve) => client.addEventListener('state', ({ detail }) => {
                states.push(detail.state);
                if (detail.state === 'disconnected') resolve(detail.reason);
              }));
              client.connect();
              results.reason = await lost;
              results.detectedWithin = Math.round(performance.now() - started);
              client.close();
              results.states = states.join(',');

              // Coming back to a room recovers from where the client left it; messages that arrive before op 13 still
              // count for the old room. A fake comet answers op 12 with the standing of the room asked for.
              const changes = [];
              class RoomComet {
                constructor() { this.readyState = 0; setTimeout(() => { this.readyState = 1; this.onopen(); }, 5); }
                later(op, seq, body, delay) { setTimeout(() => this.onmessage({ data: m.encodePacket(op, seq, body) }), delay); }
                send(data) {
                  const [p] = m.decodePackets(data);
                  const text = new TextDecoder().decode(p.body);
                  if (p.operation === m.Op.AUTH) {
                    this.later(m.Op.AUTH_REPLY, p.sequence, JSON.stringify({ room: 'live://a', epoch: 'ea', offset: 0, recovering: false, recovered: false }), 1);
                    this.later(1000, 1, 'a1', 2);
                    this.later(1000, 2, 'a2', 3);
                  } else if (p.operation === m.Op.CHANGE_ROOM) {
                    const change = JSON.parse(text);
                    changes.push(change);
                    const a = change.room === 'live://a';
                    if (!a) this.later(1000, 3, 'a3 in flight', 1);  // live://a's, sent before the comet saw op 12
                    this.later(m.Op.CHANGE_ROOM_REPLY, p.sequence, JSON.stringify({ room: change.room, epoch: a ? 'ea' : 'eb', offset: a ? 5 : 0, recovering: !!change.recover.epoch, recovered: true }), 2);
                    if (a) { this.later(1000, 4, 'a4', 3); this.later(1000, 5, 'a5', 4); }
                  }
                }
                close() { this.readyState = 3; }
              }
              const roomClient = new m.GoIMClient('ws://rooms.invalid/sub', { auth: { mid: 1, room_id: 'live://a' }, heartbeat: 60, WebSocket: RoomComet });
              const got = [];
              roomClient.addEventListener('message', ({ detail }) => got.push(`${detail.text()}@${detail.offset}`));
              const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
              roomClient.connect();
              await pause(50);
              roomClient.changeRoom('live://b');
              await pause(50);
              roomClient.changeRoom('live://a');
              await pause(50);
              roomClient.close();
              results.roomMessages = got.join(',');
              results.comeBack = JSON.stringify(changes[1]?.recover);

              // The user's stream: op 8's mid member, offsets as -seq, kept apart from the room's, deduplicated; the
              // next auth asks from where it left off.
              const auths = [];
              class UserComet {
                constructor() { this.readyState = 0; setTimeout(() => { this.readyState = 1; this.onopen(); }, 5); }
                later(op, seq, body, delay) { setTimeout(() => this.onmessage({ data: m.encodePacket(op, seq, body) }), delay); }
                send(data) {
                  const [p] = m.decodePackets(data);
                  if (p.operation !== m.Op.AUTH) return;
                  auths.push(JSON.parse(new TextDecoder().decode(p.body)).recover);
                  this.later(m.Op.AUTH_REPLY, p.sequence, JSON.stringify({ room: 'live://a', epoch: 'ea', offset: 0, recovering: false, recovered: false, mid: { epoch: 'eu', offset: 0, recovering: false, recovered: false } }), 1);
                  this.later(1000, 1, 'room1', 2);
                  this.later(1000, -1, 'user1', 3);
                  this.later(1000, -2, 'user2', 4);
                  this.later(1000, -2, 'user2 again', 5);
                  this.later(1000, 0, 'broadcast', 6);
                }
                close() { this.readyState = 3; }
              }
              const userClient = new m.GoIMClient('ws://users.invalid/sub', { auth: { mid: 9, room_id: 'live://a' }, heartbeat: 60, WebSocket: UserComet });
              const userGot = [];
              userClient.addEventListener('message', ({ detail }) => userGot.push(`${detail.text()}@${detail.stream}:${detail.offset}`));
              userClient.connect();
              await pause(50);
              results.userMessages = userGot.join(',');
              results.userPosition = `${userClient.userEpoch}:${userClient.userOffset}`;
              results.userAuth = JSON.stringify(auths[0]);
              userClient.close();

              // op 8 with an empty epoch (the comet could not read history): the position stays, so the next reconnect
              // recovers from it; a new epoch starts the offsets anew.
              const kept = new m.GoIMClient('ws://kept.invalid/sub', { auth: { mid: 2, room_id: 'live://a' }, heartbeat: 60 });
              kept.epoch = 'e1'; kept.lastOffset = 7; kept.userEpoch = 'u1'; kept.userOffset = 3;
              const standing = (value) => kept._standing(new TextEncoder().encode(JSON.stringify(value)));
              standing({ room: 'live://a', epoch: '', offset: 0, recovering: true, recovered: false, mid: { epoch: '', offset: 0, recovering: true, recovered: false } });
              results.emptyEpoch = `${kept.epoch}:${kept.lastOffset} ${kept.userEpoch}:${kept.userOffset}`;
              standing({ room: 'live://a', epoch: 'e2', offset: 0, recovering: true, recovered: false, mid: { epoch: 'u2', offset: 0, recovering: true, recovered: false } });
              results.newEpoch = `${kept.epoch}:${kept.lastOffset} ${kept.userEpoch}:${kept.userOffset}`;
              return JSON.stringify(results);
            })
            """#
        let text = try #require(try await page.evaluate(script))
        let results = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(results["packet"] as? Bool == true, "\(results)")
        #expect(results["backoff"] as? Bool == true, "\(results)")
        #expect(results["reason"] as? String == "missed heartbeat reply", "\(results)")
        // Heartbeat at connect and after 1 s; the unanswered first is noticed at the second tick: within 1 interval
        // after the connection's first heartbeat (plus scheduling slack on a loaded machine).
        let detected = try #require(results["detectedWithin"] as? Int)
        #expect(detected >= 900 && detected < 5000, "\(results)")
        #expect(results["states"] as? String == "connecting,connected,disconnected,closed", "\(results)")
        #expect(results["roomMessages"] as? String == "a1@1,a2@2,a3 in flight@3,a4@4,a5@5", "\(results)")
        #expect(results["comeBack"] as? String == #"{"epoch":"ea","offset":3}"#, "\(results)")
        #expect(results["userMessages"] as? String == "room1@room:1,user1@user:1,user2@user:2,broadcast@null:0", "\(results)")
        #expect(results["userPosition"] as? String == "eu:2", "\(results)")
        #expect(results["userAuth"] as? String == #"{"epoch":"","offset":0,"mid":{"epoch":"","offset":0}}"#, "\(results)")
        #expect(results["emptyEpoch"] as? String == "e1:7 u1:3", "\(results)")
        #expect(results["newEpoch"] as? String == "e2:0 u2:0", "\(results)")
    }
}
