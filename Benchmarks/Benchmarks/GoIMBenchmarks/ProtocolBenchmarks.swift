import Benchmark
import GoIMProtocol
import NIOCore

/// Packet encode and decode: the work done per packet a client sends, and per message job batches.
func protocolBenchmarks() {
    let body = ByteBuffer(string: #"{"msg":"hello room"}"#)  // a typical danmaku body
    let packet = Packet(version: 1, operation: .sendMsg, sequence: 7, body: body)
    // Names without spaces: the thresholds files are named after them (ordo-one/benchmark 1.38.1 writes spaces as
    // underscores but reads the name as is, so a name with a space would silently go unchecked).
    // Tolerance 50 per 1,000 operations: one more allocation per operation is +1,000.
    let scale = Benchmark.Configuration(scalingFactor: .kilo, thresholds: allocationTolerance(50))

    Benchmark("Packet-encode-writePacket-20-byte-body", configuration: scale) { benchmark in
        var out = ByteBufferAllocator().buffer(capacity: 64)
        for _ in benchmark.scaledIterations {
            out.clear()
            blackHole(out.writePacket(packet))
        }
    }

    var encoded = ByteBuffer()
    _ = encoded.writePacket(packet)
    Benchmark("Packet-decode-readPacket-20-byte-body", configuration: scale) { benchmark in
        for _ in benchmark.scaledIterations {
            var input = encoded
            blackHole(try? input.readPacket())
        }
    }

    // A heartbeat as clients send it every 30 s: header only.
    var heartbeat = ByteBuffer()
    _ = heartbeat.writePacket(Packet(version: 1, operation: .heartbeat, sequence: 1))
    Benchmark("Packet-decode-heartbeat", configuration: scale) { benchmark in
        for _ in benchmark.scaledIterations {
            var input = heartbeat
            blackHole(try? input.readPacket())
        }
    }

    // Job's batch: 20 messages in one op 9 body (what one BroadcastRoom carries for a busy room).
    let messages = (0..<20).map { Packet(version: 1, operation: Operation(1000), body: ByteBuffer(string: "message \($0) in a batch")) }
    Benchmark("RawBatch-encode-20-messages", configuration: scale) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(RawBatch.encode(messages))
        }
    }
    // How job builds a batch: each message's body appended as an inner packet.
    let bodies = (0..<20).map { Array("message \($0) in a batch".utf8) }
    Benchmark("RawBatch-append-20-bodies", configuration: scale) { benchmark in
        for _ in benchmark.scaledIterations {
            var buffer = ByteBufferAllocator().buffer(capacity: 1024)
            for body in bodies { RawBatch.append(operation: Operation(1000), body: body, to: &buffer) }
            blackHole(buffer)
        }
    }
    let batch = RawBatch.encode(messages)
    Benchmark("RawBatch-split-20-messages", configuration: scale) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try? RawBatch.split(batch))
        }
    }

    let auth = ByteBuffer(string: #"{"mid":123,"key":"","room_id":"live://1000","platform":"web","accepts":[1000,1001,1002]}"#)
    Benchmark("AuthBody-parse", configuration: scale) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try? AuthBody.decode(auth))
        }
    }
}
