import Benchmark
import GoIMProtocol
import NIOCore

/// Packet encode and decode: the work done per packet a client sends, and per message job batches.
func protocolBenchmarks() {
    let body = ByteBuffer(string: #"{"msg":"hello room"}"#)  // a typical danmaku body
    let packet = Packet(version: 1, operation: .sendMsg, sequence: 7, body: body)
    let scale = Benchmark.Configuration(scalingFactor: .kilo)

    Benchmark("Packet encode (writePacket, 20-byte body)", configuration: scale) { benchmark in
        var out = ByteBufferAllocator().buffer(capacity: 64)
        for _ in benchmark.scaledIterations {
            out.clear()
            blackHole(out.writePacket(packet))
        }
    }

    var encoded = ByteBuffer()
    _ = encoded.writePacket(packet)
    Benchmark("Packet decode (readPacket, 20-byte body)", configuration: scale) { benchmark in
        for _ in benchmark.scaledIterations {
            var input = encoded
            blackHole(try? input.readPacket())
        }
    }

    // A heartbeat as clients send it every 30 s: header only.
    var heartbeat = ByteBuffer()
    _ = heartbeat.writePacket(Packet(version: 1, operation: .heartbeat, sequence: 1))
    Benchmark("Packet decode (heartbeat, no body)", configuration: scale) { benchmark in
        for _ in benchmark.scaledIterations {
            var input = heartbeat
            blackHole(try? input.readPacket())
        }
    }

    // Job's batch: 20 messages in one op 9 body (what one BroadcastRoom carries for a busy room).
    let messages = (0..<20).map { Packet(version: 1, operation: Operation(1000), body: ByteBuffer(string: "message \($0) in a batch")) }
    Benchmark("Raw batch encode (20 messages)", configuration: scale) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(RawBatch.encode(messages))
        }
    }
    // How job builds a batch: each message's body appended as an inner packet.
    let bodies = (0..<20).map { Array("message \($0) in a batch".utf8) }
    Benchmark("Raw batch append (20 message bodies, as job builds)", configuration: scale) { benchmark in
        for _ in benchmark.scaledIterations {
            var buffer = ByteBufferAllocator().buffer(capacity: 1024)
            for body in bodies { RawBatch.append(operation: Operation(1000), body: body, to: &buffer) }
            blackHole(buffer)
        }
    }
    let batch = RawBatch.encode(messages)
    Benchmark("Raw batch split (20 messages)", configuration: scale) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try? RawBatch.split(batch))
        }
    }

    let auth = ByteBuffer(string: #"{"mid":123,"key":"","room_id":"live://1000","platform":"web","accepts":[1000,1001,1002]}"#)
    Benchmark("Auth body parse (goim JSON token)", configuration: scale) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try? AuthBody.decode(auth))
        }
    }
}
