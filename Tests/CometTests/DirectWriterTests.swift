#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOEmbedded
import NIOPosix
import Synchronization
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

        /// With the pinned swift-nio the descriptor of an accepted socket is found (else every push silently takes
        /// the slower NIO path) and bytes written through it arrive.
        @Test("finds an accepted socket's descriptor and writes through it")
        func findsDescriptorAndWrites() async throws {
            let (server, client, child) = try await Self.acceptedPair()
            let descriptor = try await child.eventLoop.submit { DirectWriter.descriptor(of: child) }.get()
            let fd = try #require(descriptor, "the accepted channel's descriptor was not found: pushes would not write directly")
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
            var failed = false
            for _ in 0..<50 where !failed {
                if case .failed = DirectWriter.write(ByteBuffer(string: "x"), to: own) {
                    failed = true
                } else {
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
            #expect(failed)
            try? await child.close()
            try await server.close()
        }
    }
}
