import Atomics
import Foundation
import GoIMRPC
import LogicClient
import Prometheus
import Telemetry

/// The comet's Prometheus families (docs/operations.md). Nothing here runs per recipient: deliveries, bytes and
/// direct writes are plain per-loop integers (`LoopState`), connection events are the comet's atomics, and a collector
/// copies both into the registry when `/metrics` is scraped. Calls to logic are timed per call (`MeasuredLogic`).
enum CometMetrics {
    /// Registers the scrape-time collector over `comet`'s counters.
    static func register(_ telemetry: Telemetry, comet: Comet) {
        let t = telemetry
        let transports: [TransportKind] = [.tcp, .webSocket]
        let open = transports.map { t.gauge("goim_comet_connections", "Open client connections by transport and state.", labels: [("transport", $0.description), ("state", "handshake")]) }
        let authenticated = transports.map { t.gauge("goim_comet_connections", "Open client connections by transport and state.", labels: [("transport", $0.description), ("state", "authenticated")]) }
        let accepted = t.mirror("goim_comet_connections_accepted_total", "Client connections accepted by the listeners (before admission).")
        let closed = t.mirror("goim_comet_connections_closed_total", "Client connections closed, for any reason.")
        func refused(_ reason: String) -> CounterMirror {
            t.mirror("goim_comet_connections_refused_total", "Connections refused at accept by the admission limits.", labels: [("reason", reason)])
        }
        let refusedPerIP = refused("per_ip"), refusedRate = refused("connect_rate"), refusedCap = refused("capacity")
        func auth(_ result: String) -> CounterMirror {
            t.mirror("goim_comet_auth_total", "Authentications (op 7) by outcome: accepted by logic, refused by logic, or not finished in time.", labels: [("result", result)])
        }
        let authAccepted = auth("accepted"), authRefused = auth("refused"), authTimeout = auth("timeout")
        func closes(_ reason: String) -> CounterMirror {
            t.mirror("goim_comet_closes_total", "Connections closed by the comet, by reason.", labels: [("reason", reason)])
        }
        let closeHeartbeat = closes("heartbeat_timeout"), closeCredential = closes("credential_expired")
        let closeProtocol = closes("malformed_input"), closeWatch = closes("watch_limit"), closeSlow = closes("slow_consumer")
        let closeReplaced = closes("replaced")
        let rooms = t.gauge("goim_comet_rooms", "Rooms with at least one member on this comet.")
        let ips = t.gauge("goim_comet_distinct_ips", "Distinct client IPs with an authenticated connection.")
        func rpc(_ name: String) -> CounterMirror {
            t.mirror("goim_comet_rpc_pushes_total", "Push RPCs received from job (one per call, whatever the recipients).", labels: [("rpc", name)])
        }
        let pushMsg = rpc("PushMsg"), broadcast = rpc("Broadcast"), broadcastRoom = rpc("BroadcastRoom")
        let pushUsers = rpc("Users.Push")
        let direct = t.mirror("goim_comet_deliveries_total", "Pushes written to clients, one per recipient, by write path.", labels: [("path", "direct")])
        let nio = t.mirror("goim_comet_deliveries_total", "Pushes written to clients, one per recipient, by write path.", labels: [("path", "nio")])
        let bytes = t.mirror("goim_comet_delivered_bytes_total", "Bytes of pushes written to clients (frames included).")
        let dropped = t.mirror("goim_comet_deliveries_dropped_total", "Pushes skipped for slow consumers (slowConsumerPolicy = drop).")
        let slowEpisodes = t.mirror("goim_comet_slow_consumer_episodes_total", "Times a client's outbound queue filled up.")
        let ignored = t.mirror("goim_comet_ignored_before_auth_total", "Packets other than op 7 received before authentication (ignored, as goim does).")
        func history(_ event: String) -> CounterMirror {
            t.mirror("goim_comet_history_events_total", "Room history ordering events: duplicates dropped, messages held for a gap, offsets skipped, gaps filled from history.", labels: [("event", event)])
        }
        let duplicates = history("duplicate"), held = history("held"), skipped = history("skipped"), gapFills = history("gap_fill")
        func recovery(_ result: String) -> CounterMirror {
            t.mirror("goim_comet_recoveries_total", "Client recoveries (op 7 or op 12 with \"recover\") by outcome.", labels: [("result", result)])
        }
        let recovered = recovery("complete"), incomplete = recovery("incomplete"), recoveryFailed = recovery("failed")
        let logicErrors = t.mirror("goim_comet_logic_errors_total", "Calls to logic that failed (all methods).")

        t.collect {
            let loops = await comet.loopTotals()
            for index in transports.indices {
                open[index].set(Int64(loops.open[index] - loops.authenticated[index]))
                authenticated[index].set(Int64(loops.authenticated[index]))
            }
            closed.update(to: loops.closed)
            direct.update(to: loops.directWrites)
            nio.update(to: loops.delivered - loops.directWrites)
            bytes.update(to: loops.bytesWritten)
            dropped.update(to: loops.dropped)
            let c = comet.counters
            func load(_ counter: KeyPath<Counters, ManagedAtomic<Int>>) -> Int { c[keyPath: counter].load(ordering: .relaxed) }
            accepted.update(to: load(\.accepted))
            refusedPerIP.update(to: load(\.refusedPerIP))
            refusedRate.update(to: load(\.refusedConnectRate))
            refusedCap.update(to: load(\.refusedCap))
            authAccepted.update(to: load(\.authenticated))
            authRefused.update(to: load(\.authFailures))
            authTimeout.update(to: load(\.handshakeTimeouts))
            closeHeartbeat.update(to: load(\.heartbeatTimeouts))
            closeCredential.update(to: load(\.credentialExpiries))
            closeProtocol.update(to: load(\.protocolErrors))
            closeWatch.update(to: load(\.watchLimitCloses))
            closeSlow.update(to: load(\.slowConsumersClosed))
            closeReplaced.update(to: load(\.replaced))
            slowEpisodes.update(to: load(\.slowConsumerEpisodes))
            ignored.update(to: load(\.ignoredBeforeAuth))
            pushMsg.update(to: load(\.rpcPushMsg))
            broadcast.update(to: load(\.rpcBroadcast))
            broadcastRoom.update(to: load(\.rpcBroadcastRoom))
            pushUsers.update(to: load(\.rpcPushUsers))
            duplicates.update(to: load(\.offsetDuplicates))
            held.update(to: load(\.offsetsHeld))
            skipped.update(to: load(\.offsetsSkipped))
            gapFills.update(to: load(\.gapFills))
            recovered.update(to: load(\.recoveries) - load(\.recoveriesIncomplete))
            incomplete.update(to: load(\.recoveriesIncomplete))
            recoveryFailed.update(to: load(\.recoveryFailures))
            logicErrors.update(to: load(\.logicErrors))
            rooms.set(Int64(comet.rooms.counts().count))
            ips.set(Int64(comet.ips.distinctCount))
        }
    }
}

/// `LogicAPI` with each call timed into `goim_comet_logic_call_duration_seconds{method}` and failures counted in
/// `goim_comet_logic_call_failures_total{method}`: one histogram update per call (connects, heartbeats), never per push.
struct MeasuredLogic: LogicAPI {
    struct Method: Sendable {
        let latency: DurationHistogram
        let failures: Prometheus.Counter

        init(_ name: String, telemetry: Telemetry) {
            latency = telemetry.latency(
                "goim_comet_logic_call_duration_seconds", "Latency of calls to logic's gRPC service, by method.", labels: [("method", name)])
            failures = telemetry.counter(
                "goim_comet_logic_call_failures_total", "Calls to logic that failed or timed out, by method.", labels: [("method", name)])
        }

        func measure<T>(_ call: () async throws -> T) async throws -> T {
            let start = ContinuousClock.now
            do {
                let result = try await call()
                latency.record(start.elapsed)
                return result
            } catch {
                latency.record(start.elapsed)
                failures.increment()
                throw error
            }
        }
    }

    let base: any LogicAPI
    let connectCall, disconnectCall, heartbeatCall, renewOnlineCall, refreshTokenCall, receiveCall, historyCall: Method

    init(_ base: any LogicAPI, telemetry: Telemetry) {
        self.base = base
        connectCall = Method("Connect", telemetry: telemetry)
        disconnectCall = Method("Disconnect", telemetry: telemetry)
        heartbeatCall = Method("Heartbeat", telemetry: telemetry)
        renewOnlineCall = Method("RenewOnline", telemetry: telemetry)
        refreshTokenCall = Method("RefreshToken", telemetry: telemetry)
        receiveCall = Method("Receive", telemetry: telemetry)
        historyCall = Method("RoomHistory", telemetry: telemetry)
    }

    func connect(server: String, cookie: String, token: Data) async throws -> Goim_Logic_ConnectReply {
        try await connectCall.measure { try await base.connect(server: server, cookie: cookie, token: token) }
    }

    func disconnect(mid: Int64, key: String, server: String) async throws {
        try await disconnectCall.measure { try await base.disconnect(mid: mid, key: key, server: server) }
    }

    func heartbeat(mid: Int64, key: String, server: String) async throws {
        try await heartbeatCall.measure { try await base.heartbeat(mid: mid, key: key, server: server) }
    }

    func renewOnline(server: String, roomCount: [String: Int32]) async throws -> [String: Int32] {
        try await renewOnlineCall.measure { try await base.renewOnline(server: server, roomCount: roomCount) }
    }

    func refreshToken(mid: Int64, key: String, server: String, token: Data) async throws -> Int64 {
        try await refreshTokenCall.measure { try await base.refreshToken(mid: mid, key: key, server: server, token: token) }
    }

    func receive(mid: Int64, proto: Goim_Protocol_Proto) async throws {
        try await receiveCall.measure { try await base.receive(mid: mid, proto: proto) }
    }

    func roomHistory(room: String, since: UInt64, epoch: String, limit: Int32) async throws -> Swiftgoim_Logic_HistoryReply {
        try await historyCall.measure { try await base.roomHistory(room: room, since: since, epoch: epoch, limit: limit) }
    }

    func midHistory(mid: Int64, since: UInt64, epoch: String, limit: Int32) async throws -> Swiftgoim_Logic_HistoryReply {
        try await historyCall.measure { try await base.midHistory(mid: mid, since: since, epoch: epoch, limit: limit) }
    }
}
