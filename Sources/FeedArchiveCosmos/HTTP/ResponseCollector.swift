import NIOCore
import NIOHTTP1

/// Gathers one response at a time into the promise the client set. Touched only on its
/// channel's event loop (hence `@unchecked Sendable`: the client holds it to reach it there).
final class ResponseCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart

    private var promise: EventLoopPromise<HTTPClient.Response>?
    private var head: HTTPResponseHead?
    private var body = ByteBuffer()
    private var answered = false
    /// The first error the connection saw while no request waited (a failed TLS handshake
    /// shows before the first request is handed over): that request's answer.
    private(set) var failure: (any Error)?

    func expect(_ promise: EventLoopPromise<HTTPClient.Response>) {
        self.promise = promise
        head = nil
        body.clear()
        answered = false
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        answered = true
        switch unwrapInboundIn(data) {
        case .head(let received):
            head = received
        case .body(var part):
            body.writeBuffer(&part)
        case .end:
            guard let head, let promise else { return }
            self.promise = nil
            var fields: [String: String] = [:]
            for (name, value) in head.headers { fields[name.lowercased()] = value }
            promise.succeed(HTTPClient.Response(status: Int(head.status.code), headers: fields, body: body))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(
            answered
                ? HTTPClient.Failure.badResponse("the server closed the connection in the middle of its answer")
                : HTTPClient.Failure.closedEarly)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if promise == nil && failure == nil { failure = error }
        fail(error)
        context.close(promise: nil)
    }

    private func fail(_ error: any Error) {
        promise?.fail(error)
        promise = nil
    }
}
