import Foundation
import GoIMConfig
import Registry
import Testing

@testable import Logic

@Suite("Weighted balancer (goim §4.5)")
struct BalancerTests {
    static func instance(_ name: String, weight: Int = 10, conns: Int = 0, offline: Bool = false, addrs: [String] = [],
                         updatedAt: Int64 = 1) -> CometInstance {
        CometInstance(hostname: name, rpcAddress: "", addrs: addrs, weight: weight, offline: offline, connCount: conns, updatedAt: updatedAt)
    }

    @Test("goim's weight formula, including the .5 rounding down and the clamps")
    func formula() {
        #expect(WeightedBalancer.weight(fixedWeight: 10, currentConns: 0, totalWeight: 20, totalConns: 0, gain: 1) == 0)
        #expect(WeightedBalancer.weight(fixedWeight: 10, currentConns: 1, totalWeight: 20, totalConns: 1, gain: 1) == 10)
        #expect(WeightedBalancer.weight(fixedWeight: 10, currentConns: 0, totalWeight: 20, totalConns: 1, gain: 1) == 10)  // m = 0.5 → 0
        #expect(WeightedBalancer.weight(fixedWeight: 10, currentConns: 0, totalWeight: 20, totalConns: 2, gain: 1) == 11)
        #expect(WeightedBalancer.weight(fixedWeight: 10, currentConns: 0, totalWeight: 20, totalConns: 3, gain: 1) == 11)  // m = 1.5 → 1
        // diff < 0: at least 1
        #expect(WeightedBalancer.weight(fixedWeight: 1, currentConns: 1000, totalWeight: 100, totalConns: 1000, gain: 1) == 1)
        // region gain 1.6: w' = 16, W' = 26
        #expect(WeightedBalancer.weight(fixedWeight: 10, currentConns: 0, totalWeight: 20, totalConns: 10, gain: 1.6) == 22)
    }

    @Test("picks follow the counters; offline comets are skipped; updates always apply (bugs 28, 29)")
    func picks() {
        var balancer = WeightedBalancer()
        balancer.update([
            Self.instance("a", addrs: ["1.1.1.1"]), Self.instance("b", addrs: ["2.2.2.2", " "]),
            Self.instance("c", weight: 100, offline: true),
        ])
        #expect(balancer.nodes.map(\.hostname) == ["a", "b"])
        #expect(balancer.nodes[1].addrs == ["2.2.2.2"])
        #expect(balancer.pick(clientRegion: "", regionWeight: 1.6).map(\.hostname) == ["a", "b"])
        #expect(balancer.pick(clientRegion: "", regionWeight: 1.6).map(\.hostname) == ["a", "b"])
        #expect(balancer.pick(clientRegion: "", regionWeight: 1.6).map(\.hostname) == ["b", "a"])
        #expect(balancer.totalConns == 3)

        // an unchanged record keeps its counter; a changed one restarts from its reported count
        balancer.update([Self.instance("a", addrs: ["1.1.1.1"]), Self.instance("b", conns: 7, updatedAt: 2)])
        #expect(balancer.nodes.first { $0.hostname == "a" }?.currentConns == 2)
        #expect(balancer.nodes.first { $0.hostname == "b" }?.currentConns == 7)

        // shrinking to less than half is applied at once (goim ignored it)
        balancer.update([Self.instance("b", updatedAt: 3)])
        #expect(balancer.nodes.map(\.hostname) == ["b"])
        balancer.update([])
        #expect(balancer.pick(clientRegion: "", regionWeight: 1.6).isEmpty)
    }

    @Test("a comet without a region gets no boost when the client's region is unknown (bug 27)")
    func noRegionBoost() {
        var balancer = WeightedBalancer()
        balancer.update([Self.instance("a", conns: 5), Self.instance("b", conns: 5)])
        let picked = balancer.pick(clientRegion: "", regionWeight: 10)
        #expect(picked.map(\.currentWeight) == [12, 12])  // with goim's rule both would get the 10× boost
    }
}

@Suite("Go-compatible JSON and parameters")
struct FormatTests {
    @Test("ol_ shard JSON is goim's: struct order, sorted rooms")
    func shardJSON() {
        #expect(
            RedisOnlineStore.shardJSON(server: "comet-1", roomCount: ["test://1": 1, "live://1000": 3], updated: 1_700_000_000)
                == #"{"server":"comet-1","room_count":{"live://1000":3,"test://1":1},"updated":1700000000}"#)
    }

    @Test("escaping and float32 formatting match encoding/json")
    func goJSON() {
        #expect(GoJSON.string("<a&b>\n\"\u{01}\u{2028}").encoded() == #""\u003ca\u0026b\u003e\n\"\u0001\u2028""#)
        #expect(GoJSON.float32(1.8).encoded() == "1.8")
        #expect(GoJSON.float32(0.3).encoded() == "0.3")
        #expect(GoJSON.float32(2).encoded() == "2")
        #expect(GoJSON.map(["b": .int(1), "a": .null]).encoded() == #"{"a":null,"b":1}"#)
    }

    @Test("query parsing follows Go's url.ParseQuery")
    func query() {
        let query = QueryParameters("mids=1&mids=2,3&type=live%3A%2F%2F&x=a+b&bad=%zz&semi;colon=1&empty")
        #expect(query.list("mids") == ["1", "2", "3"])
        #expect(query.first("type") == "live://")
        #expect(query.first("x") == "a b")
        #expect(query.contains("bad") == false)
        #expect(query.contains("semi;colon") == false)
        #expect(query.first("empty") == "")
    }

    @Test("room ids in online/top are the host part of the room key")
    func roomID() {
        #expect(LogicCore.roomID(fromKey: "live://1000", prefixLength: 7) == "1000")
        #expect(LogicCore.roomID(fromKey: "live://a/b?c", prefixLength: 7) == "a")
    }
}
