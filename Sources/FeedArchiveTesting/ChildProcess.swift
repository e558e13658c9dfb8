import FeedArchive
import Foundation

/// posix_spawn with stdout/stderr sent to files (or /dev/null) and stdin from /dev/null. The
/// child starts with default signal handling and an empty mask whatever the test runner set,
/// so SIGTERM means the same to it as under cron.
/// `environment`: variables set (a value) or removed (nil) for the child only, on top of this
/// process's environment (setenv here would reach every test running meanwhile).
public func spawn(
    _ executable: String, _ arguments: [String], stdout: String = "/dev/null", stderr: String = "/dev/null",
    environment: [String: String?] = [:]
) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGQUIT] { sigaddset(&defaults, signal) }
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    var mask = sigset_t()
    sigemptyset(&mask)
    posix_spawnattr_setsigmask(&attributes, &mask)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
    let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    var variables = ProcessInfo.processInfo.environment
    for (name, value) in environment { variables[name] = value }
    let envp: [UnsafeMutablePointer<CChar>?] = variables.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { envp.forEach { free($0) } }
    let code = posix_spawnp(&pid, executable, &actions, &attributes, argv, envp)
    guard code == 0 else { throw FeedArchiveError.io(operation: "posix_spawn", path: executable, errno: code) }
    return pid
}

/// Waits for a child; returns its exit status, or 128 + signal when a signal ended it.
public func reap(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let signal = status & 0x7F
    return signal == 0 ? (status >> 8) & 0xFF : 128 + signal
}

/// `reap` on a thread of its own: a test task waiting for a child (the binary under test runs
/// for seconds) must not hold one of the cooperative pool's few threads, which the other tests
/// running in parallel need.
public func reapAsync(_ pid: pid_t) async -> Int32 {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread { continuation.resume(returning: reap(pid)) }
    }
}
