#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOEmbedded
import NIOPosix
import Synchronization
import TestSupport
import Testing

@testable import Comet

extension CometSuite {
    @Suite("Direct writes to client sockets")
    struct DirectWriterTests {
        /// A listening server, a client connected to it, and the server's side of that connection.
        static func acceptedPair() async throws -> (server: any Channel, client: RawClient, child: any Channel) {
            let accepted = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: (any Channel).self)
            // Not reading: NIO then cannot see the client's EOF and close the socket under the test.
            let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .childChannelOption(.autoRead, value: false)
                .childChannelInitializer { channel in
                    accepted.succeed(channel)
                    return channel.eventLoop.makeSucceededVoidFuture()
                }
                .bind(host: "127.0.0.1", port: 0).get()
            let client = try await RawClient.connect(port: server.localAddress!.port!)
            return (server, client, try await accepted.futureResult.get())
        }

        /// The ports of a socket (ours or its peer's), from the kernel.
        static func port(of descriptor: CInt, peer: Bool) -> Int? {
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let result = withUnsafeMutablePointer(to: &storage) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    peer ? getpeername(descriptor, $0, &length) : getsockname(descriptor, $0, &length)
                }
            }
            guard result == 0, Int32(storage.ss_family) == AF_INET else { return nil }
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
            }
        }

        /// With the pinned swift-nio the descriptor of an accepted socket is found through NIO's documented accessor
        /// (else every push silently takes the slower NIO path: this test then FAILS, it does not skip), it is that
        /// channel's socket (the kernel gives the channel's two ports for it), and bytes written through it arrive.
        @Test("finds an accepted socket's descriptor and writes through it")
        func findsDescriptorAndWrites() async throws {
            let (server, client, child) = try await Self.acceptedPair()
            let descriptor = try await child.eventLoop.submit { DirectWriter.descriptor(of: child) }.get()
            let fd = try #require(descriptor, "the accepted channel's descriptor was not found: pushes would not write directly")
            #expect(Self.port(of: fd, peer: false) == child.localAddress?.port)
            #expect(Self.port(of: fd, peer: true) == child.remoteAddress?.port)
            let outcome = try await child.eventLoop.submit { () -> Bool in
                if case .complete = DirectWriter.write(ByteBuffer(string: "direct"), to: fd) { return true }
                return false
            }.get()
            #expect(outcome)
            #expect(try await client.read(6) == Array("direct".utf8))
            await client.close()
            try? await child.close()
            try await server.close()
        }

        @Test("pushes to plain TCP and WebSocket clients are written directly with the pinned NIO")
        func directPathInUse() async throws {
            try await withComet { comet in
                let tcp = try await comet.client(auth: auth(key: "direct-tcp", room: "live://direct"))
                let ws = try await comet.client(.webSocket(), auth: auth(key: "direct-ws", room: "live://direct"))
                try await comet.broadcastRoom("live://direct", body: "one")
                #expect(try await tcp.receiveBodies() == ["one"])
                #expect(try await ws.receiveBodies() == ["one"])
                var descriptors: [CInt] = []
                for box in comet.core.loops {
                    descriptors += try await box.eventLoop.submit { box.value.connections.map(\.directDescriptor) }.get()
                }
                #expect(descriptors.count == 2)
                #expect(descriptors.allSatisfy { $0 >= 0 }, "descriptors \(descriptors): a client is not written directly")
            }
        }

        @Test("a channel without a socket has no descriptor")
        func embeddedChannelHasNone() {
            #expect(DirectWriter.descriptor(of: EmbeddedChannel()) == nil)
        }

        @Test("a closed peer makes the write fail instead of raising SIGPIPE")
        func writeToClosedPeerFails() async throws {
            let (server, client, child) = try await Self.acceptedPair()
            let fd = try #require(try await child.eventLoop.submit { DirectWriter.descriptor(of: child) }.get())
            // Our own descriptor for the same socket: NIO closes its one when it sees the EOF or the reset, after
            // which that number may belong to another test's socket in this process (writing to it once corrupted
            // a concurrent StackTests WebSocket upgrade). The duplicate stays ours until we close it.
            let own = dup(fd)
            try #require(own >= 0)
            defer { close(own) }
            await client.close()
            // The first write after the peer's FIN may still succeed; the peer's reset makes a later one fail.
            try await waitUntil(timeout: .seconds(5)) {
                if case .failed = DirectWriter.write(ByteBuffer(string: "x"), to: own) { return true }
                return false
            }
            try? await child.close()
            try await server.close()
        }
    }
}
