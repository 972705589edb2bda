import Foundation
import StackHarness
import TestSupport
import Testing

/// Logic's admin page (`/admin`) in headless Chromium against the process stack: it refuses to show anything without
/// the push token, then lists the comet with its connections, the busiest room and the rates, and its push form
/// reaches a client by room, by user id and by broadcast.
extension StackTests {
    @Test(
        "The admin page shows comets, online totals, busiest rooms and rates behind the push token, and pushes from its form",
        .enabled(if: chromium != nil, "chromium is not installed (apt-get install chromium; scripts/install-deps does)"),
        .startsServers)
    func adminPage() async throws {
        let token = "admin-\(UUID().uuidString)"
        var options = Stack.Options()
        options.logicEnvironment = ["GOIM_HTTPSERVER_PUSHTOKEN": token]
        try await Stack.run(options) { stack in
            let member = try await Member.connect("member", to: stack.comets[0], webSocket: false, mid: 501, room: "live://42")
            defer { Task { await member.close() } }
            let origin = "http://127.0.0.1:\(stack.logics[0].httpPort)"
            try await Self.withPage("\(origin)/admin", urlPrefix: origin) { page in
                func text(_ id: String) async throws -> String { try await page.evaluate("document.getElementById('\(id)').textContent") ?? "" }

                try await eventually("without the token the page says the API refused it") {
                    try await text("status").lowercased().contains("bearer")
                }
                #expect(try await text("comets") == "-")

                _ = try await page.evaluate(
                    "(() => { document.getElementById('token').value = '\(token)'; document.getElementById('login').requestSubmit(); })()")
                let comet = stack.comets[0].name
                try await eventually("the comet is listed with its connection", timeout: .seconds(20)) {
                    let row = try await page.evaluate(
                        "Array.from(document.querySelectorAll('#nodes tr')).map(r => r.textContent).join('|')") ?? ""
                    let (connections, comets) = (try await text("connections"), try await text("comets"))
                    return row.hasPrefix(comet) && connections == "1" && comets == "1"
                }
                try await eventually("the busiest room is live://42 with 1 member", timeout: .seconds(20)) {
                    try await text("topRooms") == "live://421"
                }

                func send(_ kind: String, _ target: String, _ message: String) async throws {
                    _ = try await page.evaluate("""
                        (() => { document.getElementById('kind').value = '\(kind)'; document.getElementById('target').value = '\(target)';
                          document.getElementById('message').value = '\(message)'; document.getElementById('pushResult').textContent = '';
                          document.getElementById('push').requestSubmit(); })()
                        """)
                    try await eventually("the \(kind) push is acknowledged") { try await text("pushResult") == "sent" }
                    try await member.receive(message)
                }
                try await send("room", "live://42", "admin to the room")
                try await send("mids", "501", "admin to mid 501")
                try await send("all", "", "admin to everyone")

                // Rates are deltas between two polls (every 2 s); deliveries come from the comets' registry records.
                try await eventually("push and delivery rates are shown", timeout: .seconds(20)) {
                    let (pushes, deliveries) = (try await text("pushRate"), try await text("deliveryRate"))
                    return Double(pushes) != nil && Double(deliveries) != nil
                }
                try await eventually("the comet's row counts its deliveries", timeout: .seconds(20)) {
                    let cells = try await page.evaluate(
                        "Array.from(document.querySelectorAll('#nodes tr td')).map(c => c.textContent).join('|')") ?? ""
                    return cells.split(separator: "|", omittingEmptySubsequences: false).dropFirst(6).first.flatMap { Int($0) }.map { $0 >= 3 } ?? false
                }
                // A bad room is refused in the page, before any request.
                _ = try await page.evaluate(
                    "(() => { document.getElementById('kind').value = 'room'; document.getElementById('target').value = 'no-type';"
                        + " document.getElementById('push').requestSubmit(); })()")
                try await eventually("the page explains the room form") { try await text("pushResult").hasPrefix("a room is type://id") }
            }
            // Without the token the summary is refused; the page itself carries no data.
            #expect(try await stack.get("/goim/admin/summary").code == -401)
            #expect(try await stack.get("/admin").status == 200)
        }
    }
}
