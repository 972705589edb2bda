import NIOCore

/// The body of op 19, the answer to a client's op 18 (a fresh token for a connection whose credential expires;
/// swift-goim only). `{"code":0,"expires_at":<Unix seconds>}` when the token was accepted (0: the credential no longer
/// expires), `{"code":<negative>,"message":"..."}` when it was not; the connection then still closes at the old expiry.
public enum TokenRefreshReply {
    /// Codes, after goim's HTTP envelope.
    public static let refused: Int = -401
    /// Logic does not serve token refresh (goim's logic) or could not be reached.
    public static let unavailable: Int = -503

    public static func accepted(expiresAt: Int64) -> ByteBuffer {
        ByteBuffer(string: #"{"code":0,"expires_at":\#(expiresAt)}"#)
    }

    public static func failed(code: Int, message: String) -> ByteBuffer {
        var out = Array(#"{"code":\#(code),"message":"#.utf8)
        AuthBody.appendString(message, to: &out)
        out.append(UInt8(ascii: "}"))
        return ByteBuffer(bytes: out)
    }
}
