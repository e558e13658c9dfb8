"""What the torture scripts check about the files a command leaves behind.

A command killed with SIGKILL (or SIGTERM before its handler) may leave temp files and blobs
without a manifest line for the next run's recovery; any other exit (0, 143 after a handled
SIGTERM, 69, 75, ...) must leave no temp file. Files are told apart by inode, mtime and size,
not by path alone: the next run reuses a killed run's temp name after quarantining it.
"""
import os


def files_of(root):
    """Every file under a job root but quarantine/, by path relative to the root."""
    found = {}
    for d, dirs, fs in os.walk(root):
        dirs[:] = [x for x in dirs if x != "quarantine"]
        for f in fs:
            path = os.path.join(d, f)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            found[os.path.relpath(path, root)] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return found


class Leftovers:
    def __init__(self, root):
        self.root = root
        self.by_kills = {}  # path -> identity of what killed commands left

    def snapshot(self):
        return files_of(self.root)

    def settled(self, before, code):
        """After a command: the temp files it leaked (empty when it was killed)."""
        after = files_of(self.root)
        changed = {f: v for f, v in after.items() if before.get(f) != v}
        for f in [f for f, v in self.by_kills.items() if after.get(f) != v]:
            del self.by_kills[f]  # recovered (quarantined) or replaced since
        if code in (-9, -15):
            self.by_kills.update(changed)
            return []
        return sorted(f for f in changed if f.endswith(".tmp"))

    def expected_strays(self):
        """Paths (relative to the job root, as verify names them) that killed commands left."""
        now = files_of(self.root)
        return {f for f, v in self.by_kills.items() if now.get(f) == v}
