extension FeedArchiveError {
    /// The exit code a command ends with for `error`: a `FeedArchiveError`'s own, 65 for a blob
    /// that cannot be decoded, and 74 (an I/O failure) for anything else.
    public static func exitCode(for error: any Error) -> Int32 {
        if let error = error as? FeedArchiveError { return error.exitCode }
        if error is CodecError { return 65 }
        return 74
    }
}
