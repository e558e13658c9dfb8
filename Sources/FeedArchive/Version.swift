/// The version of this build, printed by `feedarchive --version` (bug reports, cron mails).
public enum FeedArchiveVersion {
    public static let current = "0.6.0"
}
