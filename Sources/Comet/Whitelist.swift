import Foundation
import Logging
import Synchronization

/// goim's whitelist: connections whose mid is listed get every step of their life logged (auth, each packet read,
/// each reply and push written, close), to `whiteLog` when set, else to the process log at info level.
/// A debugging aid with no protocol effect.
final class Whitelist: Sendable {
    let mids: Set<Int64>
    private let logger: Logger
    private let file: Mutex<FileHandle?>

    init(mids: [Int64], path: String, logger: Logger) throws {
        self.mids = Set(mids.filter { $0 > 0 })
        self.logger = logger
        if !path.isEmpty && !self.mids.isEmpty {
            if !FileManager.default.fileExists(atPath: path) {
                guard FileManager.default.createFile(atPath: path, contents: nil) else {
                    throw CometError.whiteLog(path: path, reason: "cannot create the file")
                }
            }
            guard let handle = FileHandle(forWritingAtPath: path) else {
                throw CometError.whiteLog(path: path, reason: "cannot open the file for writing")
            }
            handle.seekToEndOfFile()
            file = Mutex(handle)
        } else {
            file = Mutex(nil)
        }
    }

    func contains(_ mid: Int64) -> Bool { !mids.isEmpty && mids.contains(mid) }

    /// One line for a whitelisted connection.
    func log(mid: Int64, key: String, connection: UInt64, _ event: @autoclosure () -> String) {
        let text = event()
        let written = file.withLock { handle -> Bool in
            guard let handle else { return false }
            let line = "\(Date()) mid:\(mid) key:\(key) conn:\(connection) \(text)\n"
            handle.write(Data(line.utf8))
            return true
        }
        if !written {
            logger.info("whitelist: \(text)", metadata: ["goim.mid": "\(mid)", "goim.key": "\(key)", "goim.conn": "\(connection)"])
        }
    }

    func close() {
        file.withLock { handle in
            try? handle?.close()
            handle = nil
        }
    }
}
