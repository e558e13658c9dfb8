/// Which change feed a job reads; recorded in every token, and a token of the other mode is refused.
public enum CosmosFeedMode: String, Sendable {
    /// `A-IM: Incremental Feed`: the latest version of each changed document (op `w`).
    case latestVersion = "latest_version"
    /// `A-IM: Full-Fidelity Feed`: every create, replace and delete, with the previous image.
    case allVersionsAndDeletes = "all_versions_and_deletes"
}
