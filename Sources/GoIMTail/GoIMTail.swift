import ArgumentParser
import Foundation
import GoIMKit
import GoIMProtocol

/// `goim-tail --url ws://127.0.0.1:3102/sub --room live://1000`: prints a room's messages as they arrive, one per line
/// (`<offset> <operation> <body>`; `u<offset>` for a push to the user with history), connection states on standard error. GoIMKit's living example.
@main
struct GoIMTail: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "goim-tail",
        abstract: "Prints a goim room's messages: reconnects, heartbeats, and with room history resumes where it left off.")

    @Option(name: .customLong("url"), help: "Comet URL (tcp://host:3101, ws://host:3102/sub, wss://host:3103/sub); repeat for several, tried in turn.")
    var urls: [String] = ["ws://127.0.0.1:3102/sub"]

    @Option(help: "Room to join (type://id).")
    var room: String = "live://1000"

    @Option(help: "User id (mid) in the auth body.")
    var mid: Int64 = 0

    @Option(help: "Connection key (empty: the comet makes one).")
    var key: String = ""

    @Option(help: "Operations to receive besides room messages, comma-separated (goim's accepts).")
    var accepts: String = "1000,1001,1002"

    @Option(help: "Send these bytes as the auth body instead (a JWT, or an app's own format); --room etc. are then unused.")
    var token: String?

    @Option(help: "Heartbeat interval in seconds.")
    var heartbeat: Double = 30

    @Flag(help: "Do not ask for missed messages on reconnect.")
    var noRecover = false

    func run() async throws {
        let credentials: GoIMConfiguration.Credentials
        if let token {
            credentials = .token(Array(token.utf8))
        } else {
            let operations = accepts.split(separator: ",").compactMap { Int32($0.trimmingCharacters(in: .whitespaces)) }
            credentials = .authBody(AuthBody(mid: mid, key: key, roomID: room, platform: "goim-tail", accepts: operations))
        }
        var configuration = try GoIMConfiguration(urls: urls, credentials: credentials)
        configuration.heartbeat = .milliseconds(Int64(max(1, heartbeat) * 1000))
        configuration.recover = !noRecover
        let session = try GoIMSession(configuration)
        session.start()
        let states = Task {
            for await state in session.states { FileHandle.standardError.write(Data("goim-tail: \(state)\n".utf8)) }
        }
        for await message in session.messages {
            // One write per line, unbuffered: a pipe (`goim-tail | grep`) sees each message as it arrives.
            // A push to the user (its own history) shows its offset as u<offset>.
            let offset = message.stream == .user ? "u\(message.offset)" : "\(message.offset)"
            FileHandle.standardOutput.write(Data("\(offset) \(message.operation) \(message.text)\n".utf8))
        }
        await states.value
    }
}
