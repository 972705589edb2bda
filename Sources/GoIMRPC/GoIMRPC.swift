// Generated code lives in Generated/ (scripts/generate-protos rewrites it from Protos/*.proto).
// This file holds the few conveniences every service shares.
import Foundation
import SwiftProtobuf

extension Goim_Protocol_Proto {
    /// A Proto with goim's defaults for pushes: ver 1, seq 0.
    public init(version: Int32 = 1, operation: Int32, sequence: Int32 = 0, body: [UInt8]) {
        self.init()
        self.ver = version
        self.op = operation
        self.seq = sequence
        self.body = Data(body)
    }
}
