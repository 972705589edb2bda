import NIOCore

/// Frames a TCP byte stream into packets (see ``NIOCore/ByteBuffer/readPacket(limits:)``).
/// A malformed header throws ``ProtocolError``; the connection should then be closed.
public struct PacketDecoder: ByteToMessageDecoder {
    public typealias InboundOut = Packet

    public let limits: PacketLimits

    public init(limits: PacketLimits = .goim) {
        self.limits = limits
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let packet = try buffer.readPacket(limits: limits) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(packet))
        return .continue
    }

    public mutating func decodeLast(
        context: ChannelHandlerContext,
        buffer: inout ByteBuffer,
        seenEOF: Bool
    ) throws -> DecodingState {
        // Complete packets still deliver; a partial one at EOF is dropped, as goim's read just ends.
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

/// Writes packets to a TCP stream.
public struct PacketEncoder: MessageToByteEncoder {
    public typealias OutboundIn = Packet

    public init() {}

    public func encode(data: Packet, out: inout ByteBuffer) throws {
        out.writePacket(data)
    }
}
