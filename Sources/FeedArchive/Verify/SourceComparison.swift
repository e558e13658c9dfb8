import Crypto
import Foundation

extension Verifier {
    /// `verify --against-source`: re-reads each live blob's range from the source, where the
    /// source still holds it, and compares the number of changes and the SHA-256 of the
    /// uncompressed envelopes with the blob's. Adds problems (kind `source`) and notes to `report`.
    public func compareWithSource(_ source: any FeedSource, report: inout VerifyReport) async throws {
        let archive = JobArchive(job: job, fs: fs)
        _ = try archive.load()
        var compared = 0
        var unavailable = 0
        var transformed: [UInt8] = []
        for entry in archive.manifest.currentLines() where entry.namesBlob && entry.lineage == "live" {
            guard let path = entry.path, let part = entry.part,
                let from = entry.fromToken.flatMap({ try? ContinuationToken.decode($0) }),
                let to = entry.toToken.flatMap({ try? ContinuationToken.decode($0) }),
                let start = from.cursors[part], let end = to.cursors[part]
            else { continue }
            if entry.transform != job.transform?.hash {
                // Written under another transform section (`run --transform-changed`): the
                // source cannot be made to read as it did.
                unavailable += 1
                continue
            }
            do {
                try await source.checkRetained(from: from)
            } catch {
                unavailable += 1
                continue
            }
            // The source's view of the range.
            var sourceHash = SHA256()
            var sourceCount: Int64 = 0
            var cursor = start
            var moved = false
            while cursor != end {
                let page = try await source.readPage(
                    partition: part, after: cursor, through: end, maxRecords: job.batch.pageSize)
                if page.topology != nil {
                    moved = true  // the range was split or merged since: it cannot be re-read as archived
                    break
                }
                if page.records.isEmpty { break }
                for record in page.records {
                    if let transform = job.transform {
                        // The archive holds the transformed envelopes: so must the comparison.
                        do {
                            if try transform.apply(record.line, into: &transformed) != nil { continue }  // filtered
                        } catch is Transform.Failure {
                            continue  // a dead letter, counted on the line
                        }
                        transformed.withUnsafeBytes { sourceHash.update(bufferPointer: $0) }
                    } else {
                        record.line.withUnsafeBytes { sourceHash.update(bufferPointer: $0) }
                    }
                    sourceHash.update(data: [0x0A])
                    sourceCount += 1
                }
                cursor = page.next ?? end
            }
            if moved {
                unavailable += 1
                continue
            }
            // The archive's view of it.
            guard let bytes = try? fs.read(archive.layout.absolute(path)), let compression = Compression.of(path: path),
                let decoded = try? compression.makeDecoder().decodeAll(bytes)
            else { continue }  // missing or damaged blobs are reported by verify itself
            compared += 1
            let archiveHash = sha256Hex(decoded)
            let sourceDigest = hexString(sourceHash.finalize())
            if sourceCount != entry.records {
                report.problems.append(
                    VerifyProblem(
                        kind: "source", path: path,
                        message:
                            "the source now holds \(sourceCount) changes in this blob's range, the blob \(entry.records ?? -1)",
                        fix: nil))
            } else if sourceDigest != archiveHash {
                report.problems.append(
                    VerifyProblem(
                        kind: "source", path: path,
                        message:
                            "the source's changes in this range hash to \(sourceDigest.prefix(16))…, the blob's to \(archiveHash.prefix(16))…: the source rows changed after they were archived",
                        fix: nil))
            }
        }
        report.notes.append(
            "against the source: \(compared) blobs compared\(unavailable > 0 ? ", \(unavailable) no longer held by the source" : "")"
        )
    }
}
