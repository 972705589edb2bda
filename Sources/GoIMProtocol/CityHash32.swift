/// Google CityHash v1.1 `CityHash32`, as goim uses it (via `zhenjl/cityhash`) to pick a Comet
/// bucket (`mod 32`) and a Redis `ol_` shard (`mod 64`). Inputs of 0–4 bytes are read as
/// signed bytes, as in the C++ reference.
public func cityHash32(_ bytes: some Collection<UInt8>) -> UInt32 {
    if let hash = bytes.withContiguousStorageIfAvailable({ CityHash32.hash(UnsafeRawBufferPointer($0)) }) {
        return hash
    }
    return Array(bytes).withUnsafeBytes { CityHash32.hash($0) }
}

extension String {
    /// CityHash32 of the UTF-8 bytes.
    public var cityHash32: UInt32 {
        var copy = self  // withUTF8 is mutating; the copy shares storage unless the string is bridged.
        return copy.withUTF8 { CityHash32.hash(UnsafeRawBufferPointer($0)) }
    }
}

/// A line-by-line port of city.cc; names follow the C++ so the two can be compared.
enum CityHash32 {
    static let c1: UInt32 = 0xcc9e_2d51
    static let c2: UInt32 = 0x1b87_3593

    static func hash(_ s: UnsafeRawBufferPointer) -> UInt32 {
        let len = s.count
        if len <= 4 { return hash0to4(s) }
        if len <= 12 { return hash5to12(s) }
        if len <= 24 { return hash13to24(s) }

        var h = UInt32(truncatingIfNeeded: len)
        var g = c1 &* h
        var f = g
        let a0 = rotate(fetch(s, len - 4) &* c1, 17) &* c2
        let a1 = rotate(fetch(s, len - 8) &* c1, 17) &* c2
        let a2 = rotate(fetch(s, len - 16) &* c1, 17) &* c2
        let a3 = rotate(fetch(s, len - 12) &* c1, 17) &* c2
        let a4 = rotate(fetch(s, len - 20) &* c1, 17) &* c2
        h ^= a0; h = rotate(h, 19); h = h &* 5 &+ 0xe654_6b64
        h ^= a2; h = rotate(h, 19); h = h &* 5 &+ 0xe654_6b64
        g ^= a1; g = rotate(g, 19); g = g &* 5 &+ 0xe654_6b64
        g ^= a3; g = rotate(g, 19); g = g &* 5 &+ 0xe654_6b64
        f = f &+ a4; f = rotate(f, 19); f = f &* 5 &+ 0xe654_6b64

        var offset = 0
        for _ in 0..<((len - 1) / 20) {
            let a0 = rotate(fetch(s, offset) &* c1, 17) &* c2
            let a1 = fetch(s, offset + 4)
            let a2 = rotate(fetch(s, offset + 8) &* c1, 17) &* c2
            let a3 = rotate(fetch(s, offset + 12) &* c1, 17) &* c2
            let a4 = fetch(s, offset + 16)
            h ^= a0; h = rotate(h, 18); h = h &* 5 &+ 0xe654_6b64
            f = f &+ a1; f = rotate(f, 19); f = f &* c1
            g = g &+ a2; g = rotate(g, 18); g = g &* 5 &+ 0xe654_6b64
            h ^= a3 &+ a1; h = rotate(h, 19); h = h &* 5 &+ 0xe654_6b64
            g ^= a4; g = g.byteSwapped &* 5
            h = h &+ a4 &* 5; h = h.byteSwapped
            f = f &+ a0
            (f, h, g) = (g, f, h)  // PERMUTE3(f, h, g)
            offset += 20
        }
        g = rotate(g, 11) &* c1; g = rotate(g, 17) &* c1
        f = rotate(f, 11) &* c1; f = rotate(f, 17) &* c1
        h = rotate(h &+ g, 19); h = h &* 5 &+ 0xe654_6b64; h = rotate(h, 17) &* c1
        h = rotate(h &+ f, 19); h = h &* 5 &+ 0xe654_6b64; h = rotate(h, 17) &* c1
        return h
    }

    static func hash0to4(_ s: UnsafeRawBufferPointer) -> UInt32 {
        var b: UInt32 = 0
        var c: UInt32 = 9
        for byte in s {
            let v = UInt32(bitPattern: Int32(Int8(bitPattern: byte)))  // C++ reads `signed char`
            b = b &* c1 &+ v
            c ^= b
        }
        return fmix(mur(b, mur(UInt32(s.count), c)))
    }

    static func hash5to12(_ s: UnsafeRawBufferPointer) -> UInt32 {
        let len = s.count
        var a = UInt32(len)
        var b = a &* 5
        var c: UInt32 = 9
        let d = b
        a = a &+ fetch(s, 0)
        b = b &+ fetch(s, len - 4)
        c = c &+ fetch(s, (len >> 1) & 4)
        return fmix(mur(c, mur(b, mur(a, d))))
    }

    static func hash13to24(_ s: UnsafeRawBufferPointer) -> UInt32 {
        let len = s.count
        let a = fetch(s, (len >> 1) - 4)
        let b = fetch(s, 4)
        let c = fetch(s, len - 8)
        let d = fetch(s, len >> 1)
        let e = fetch(s, 0)
        let f = fetch(s, len - 4)
        let h = UInt32(len)
        return fmix(mur(f, mur(e, mur(d, mur(c, mur(b, mur(a, h)))))))
    }

    /// Little-endian 32-bit load; callers keep `offset + 4 <= s.count`.
    static func fetch(_ s: UnsafeRawBufferPointer, _ offset: Int) -> UInt32 {
        UInt32(littleEndian: s.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    static func rotate(_ value: UInt32, _ shift: UInt32) -> UInt32 {
        (value >> shift) | (value << (32 - shift))
    }

    static func fmix(_ value: UInt32) -> UInt32 {
        var h = value
        h ^= h >> 16
        h = h &* 0x85eb_ca6b
        h ^= h >> 13
        h = h &* 0xc2b2_ae35
        h ^= h >> 16
        return h
    }

    static func mur(_ value: UInt32, _ hash: UInt32) -> UInt32 {
        var a = value &* c1
        a = rotate(a, 17)
        a = a &* c2
        var h = hash ^ a
        h = rotate(h, 19)
        return h &* 5 &+ 0xe654_6b64
    }
}
