import Foundation
import NIOCore

/// A recovery-aware client's opt-in, read from its op 7 JSON body beside goim's fields (or beside `token`):
/// `"recover": {"epoch": "<epoch>", "offset": <offset>}`. Such a client gets each room message's offset in the
/// packet's `seq`, and an op 8 body saying where it stands (`RecoveryReply`). With an epoch it also gets every
/// message of its room after `offset` that the room's history still holds, before the live ones. goim's clients
/// never send the field and see goim's bytes. See docs/protocol.md.
public struct RecoveryRequest: Sendable, Equatable {
    /// The room history's epoch the client last saw; empty: nothing to recover (a first connect).
    public var epoch: String
    /// The last offset the client received in that epoch.
    public var offset: UInt64
    /// `"recover": {…, "mid": {"epoch": "…", "offset": N}}`: the client also wants the pushes addressed to its user
    /// (mid) with offsets, and what its user's history holds after `offset` (history.mids). nil: it gets them as goim's.
    public var mid: StreamPosition?

    public init(epoch: String, offset: UInt64, mid: StreamPosition? = nil) {
        self.epoch = epoch
        self.offset = offset
        self.mid = mid
    }

    public var wantsRecovery: Bool { !epoch.isEmpty }

    /// The request in `body`, nil when the body has no top-level `"recover"` object. A byte scan first: the comet
    /// only forwards auth bodies to logic, and goim's bodies never name the field. A `recover` whose members are
    /// missing or of the wrong type counts as a first connect (offsets, nothing recovered).
    public static func parse(_ body: some Collection<UInt8>) -> RecoveryRequest? {
        let bytes = Array(body)
        let name = Array(#""recover""#.utf8)
        guard bytes.count > name.count, contains(name, in: bytes) else { return nil }
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any],
            let recover = object["recover"] as? [String: Any]
        else { return nil }
        let position = StreamPosition(recover)
        return RecoveryRequest(
            epoch: position.epoch, offset: position.offset, mid: (recover["mid"] as? [String: Any]).map(StreamPosition.init))
    }

    private static func contains(_ needle: [UInt8], in haystack: [UInt8]) -> Bool {
        guard haystack.count >= needle.count else { return false }
        for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
            if haystack[start..<start + needle.count].elementsEqual(needle) { return true }
        }
        return false
    }
}

/// Where a client stands in one stream with history: the epoch it last saw (empty: a first connect, nothing to
/// recover) and the last offset it received in it.
public struct StreamPosition: Sendable, Equatable {
    public var epoch: String
    public var offset: UInt64

    public init(epoch: String, offset: UInt64) {
        self.epoch = epoch
        self.offset = offset
    }

    public var wantsRecovery: Bool { !epoch.isEmpty }

    /// `{"epoch": "…", "offset": N}`; missing or mistyped members count as a first connect.
    init(_ object: [String: Any]) {
        epoch = object["epoch"] as? String ?? ""
        offset = 0
        if let number = object["offset"] as? NSNumber, let exact = UInt64(exactly: number.doubleValue) {
            offset = exact
        }
    }
}

/// A recovery-aware client's room change: op 12 with the JSON body
/// `{"room":"live://1001","recover":{"epoch":"…","offset":N}}` instead of goim's bare room id. The op 13 reply's body
/// is then a `RecoveryReply` (not an echo), and what the client missed in that room follows it. goim's clients send a
/// room id, which is never a JSON object.
public struct RoomChangeRequest: Sendable, Equatable {
    public var room: String
    public var recover: RecoveryRequest

    public init(room: String, recover: RecoveryRequest) {
        self.room = room
        self.recover = recover
    }

    /// Nil unless `body` is a JSON object with a string `room`; a missing or malformed `recover` is a first visit.
    public static func parse(_ body: some Collection<UInt8>) -> RoomChangeRequest? {
        guard body.first(where: { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\t") }) == UInt8(ascii: "{") else { return nil }
        guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
            let room = object["room"] as? String
        else { return nil }
        return RoomChangeRequest(room: room, recover: RecoveryRequest.parse(body) ?? RecoveryRequest(epoch: "", offset: 0))
    }
}

/// The op 8 body a recovery-aware client gets:
/// `{"key":"…","room":"live://1000","epoch":"…","offset":N,"recovering":true,"recovered":true}`.
/// `offset` is the room's last offset when the client joined: recovered messages end there, live ones follow it.
/// `key` only when the client asked for it (`"return_key": true`). `epoch` is empty when the room keeps no history.
public struct RecoveryReply: Sendable, Equatable {
    public var key: String?
    public var room: String
    public var epoch: String
    public var offset: UInt64
    /// The client asked to recover (its `recover` named an epoch).
    public var recovering: Bool
    /// ... and got every message it missed.
    public var recovered: Bool
    /// Where the client's user stream stands, when it asked (`recover.mid`): written as
    /// `"mid":{"epoch":"…","offset":N,"recovering":…,"recovered":…}` at the end of the body.
    public var mid: Mid?

    public struct Mid: Sendable, Equatable {
        public var epoch: String
        public var offset: UInt64
        public var recovering: Bool
        public var recovered: Bool

        public init(epoch: String, offset: UInt64, recovering: Bool, recovered: Bool) {
            self.epoch = epoch
            self.offset = offset
            self.recovering = recovering
            self.recovered = recovered
        }
    }

    public init(
        key: String?, room: String, epoch: String, offset: UInt64, recovering: Bool, recovered: Bool, mid: Mid? = nil
    ) {
        self.key = key
        self.room = room
        self.epoch = epoch
        self.offset = offset
        self.recovering = recovering
        self.recovered = recovered
        self.mid = mid
    }

    public var body: ByteBuffer {
        var out = Array("{".utf8)
        if let key {
            out += Array(#""key":"#.utf8)
            AuthBody.appendString(key, to: &out)
            out.append(UInt8(ascii: ","))
        }
        out += Array(#""room":"#.utf8)
        AuthBody.appendString(room, to: &out)
        out += Array(#","epoch":"#.utf8)
        AuthBody.appendString(epoch, to: &out)
        out += Array(#","offset":\#(offset),"recovering":\#(recovering),"recovered":\#(recovered)"#.utf8)
        if let mid {
            out += Array(#","mid":{"epoch":"#.utf8)
            AuthBody.appendString(mid.epoch, to: &out)
            out += Array(
                #","offset":\#(mid.offset),"recovering":\#(mid.recovering),"recovered":\#(mid.recovered)}"#.utf8)
        }
        out.append(UInt8(ascii: "}"))
        return ByteBuffer(bytes: out)
    }
}

/// Room messages with offsets: inner packets of an op 9 body whose `seq` is the message's offset.
public enum OffsetPackets {
    public struct Item: Sendable {
        public var offset: UInt64
        /// The whole inner packet (header and body).
        public var bytes: ByteBuffer

        public init(offset: UInt64, bytes: ByteBuffer) {
            self.offset = offset
            self.bytes = bytes
        }
    }

    /// The packets of `body` with their offsets, nil when the body is not a run of well-formed packets or a `seq` is
    /// not a positive offset.
    public static func split(_ body: ByteBuffer) -> [Item]? {
        var items: [Item] = []
        var index = body.readerIndex
        let end = body.writerIndex
        while index < end {
            guard let header = RawHeader(body, at: index), header.headerLength == PacketHeader.length,
                header.packetLength >= PacketHeader.length, Int(header.packetLength) <= end - index, header.sequence > 0
            else { return nil }
            let length = Int(header.packetLength)
            items.append(Item(offset: UInt64(header.sequence), bytes: body.getSlice(at: index, length: length)!))
            index += length
        }
        return items
    }

    /// A copy of `body` with every inner packet's `seq` set to 0: the bytes goim's clients get.
    public static func zeroingSequences(_ body: ByteBuffer) -> ByteBuffer {
        var copy = ByteBuffer()
        copy.reserveCapacity(body.readableBytes)
        copy.writeImmutableBuffer(body)
        var index = copy.readerIndex
        while let header = RawHeader(copy, at: index), header.packetLength >= PacketHeader.length {
            copy.setInteger(Int32(0), at: index + 12)
            index += Int(header.packetLength)
        }
        return copy
    }

    /// A copy of `body` with every packet's `seq` negated: a user stream's offsets reach the client as `-offset`, so
    /// that it can tell them from its room's (docs/protocol.md#user-history-swift-goim).
    public static func negatingSequences(_ body: ByteBuffer) -> ByteBuffer {
        var copy = ByteBuffer()
        copy.reserveCapacity(body.readableBytes)
        copy.writeImmutableBuffer(body)
        var index = copy.readerIndex
        while let header = RawHeader(copy, at: index), header.packetLength >= PacketHeader.length {
            copy.setInteger(0 &- header.sequence, at: index + 12)
            index += Int(header.packetLength)
        }
        return copy
    }

    /// One inner packet: ver 1, `operation`, seq = `offset`.
    public static func append(offset: UInt64, operation: Int32, body: some Collection<UInt8>, to buffer: inout ByteBuffer) {
        RawBatch.append(
            operation: Operation(operation), body: body, sequence: Int32(clamping: offset), to: &buffer)
    }
}
