import NIOCore

/// Asks an HTTP proxy for a tunnel (`CONNECT host:port`) and waits for its 2xx answer, then
/// leaves the pipeline. One per channel, touched only on its event loop; on a failure `done`
/// fails and the client closes the channel.
final class TunnelHandshake: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let proxy: HTTPProxy
    let target: String
    let done: EventLoopPromise<Void>
    private var answer = ByteBuffer()

    init(proxy: HTTPProxy, target: String, done: EventLoopPromise<Void>) {
        self.proxy = proxy
        self.target = target
        self.done = done
    }

    func start(_ channel: any Channel) {
        var request = "CONNECT \(target) HTTP/1.1\r\nHost: \(target)\r\n"
        if let authorization = proxy.authorization { request += "Proxy-Authorization: \(authorization)\r\n" }
        request += "\r\n"
        channel.writeAndFlush(ByteBuffer(string: request), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        answer.writeBuffer(&incoming)
        let bytes = Array(answer.readableBytesView)
        let blank: [UInt8] = [13, 10, 13, 10]
        guard let end = bytes.indices.dropLast(3).first(where: { bytes[$0..<$0 + 4].elementsEqual(blank) }) else {
            if answer.readableBytes > 16 << 10 {
                fail(
                    HTTPClient.Failure.proxyRefused(
                        "the proxy \(proxy.description) (\(proxy.variable)) sent an answer to CONNECT without an end"))
            }
            return
        }
        let lineEnd = bytes.firstIndex(of: 13) ?? end
        let statusLine = String(decoding: bytes[..<lineEnd], as: UTF8.self)
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]), (200..<300).contains(status)
        else {
            fail(
                HTTPClient.Failure.proxyRefused(
                    "the proxy \(proxy.description) (\(proxy.variable)) refused CONNECT \(target): \(statusLine)"))
            return
        }
        guard end + 4 == bytes.count else {
            fail(
                HTTPClient.Failure.proxyRefused(
                    "the proxy \(proxy.description) (\(proxy.variable)) sent bytes after its answer to CONNECT"))
            return
        }
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
        done.succeed()
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(
            HTTPClient.Failure.proxyRefused(
                "the proxy \(proxy.description) (\(proxy.variable)) closed the connection before it answered CONNECT \(target)"
            ))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error)
    }

    /// A second completion of `done` is ignored.
    private func fail(_ error: any Error) {
        done.fail(error)
    }
}
