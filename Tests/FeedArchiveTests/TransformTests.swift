import Foundation
import Testing

@testable import FeedArchive

/// The transform steps on awkward documents: nested objects, arrays of objects, unicode keys,
/// escapes, missing fields, values of every type; redaction keyed and stable.
@Suite(.serialized) struct TransformTests {  // serialized: the key is a process-wide variable
    static func transform(_ yaml: String, environment key: String = "0123456789abcdef-key") throws -> Transform {
        setenv("FEEDARCHIVE_TEST_REDACT_KEY", key, 1)
        let node = try ConfigNode.parse(yaml: yaml, file: "job.yaml")
        return try Transform.parse(node, base: ".")
    }

    static func envelope(after: String, before: String = "null") -> String {
        #"{"pos":"1","part":"0","op":"u","ts":null,"key":"k","after":"# + after + #","before":"# + before
            + #","source":{"table":"t"}}"#
    }

    /// The transformed `after` and `before`, parsed for comparison.
    static func apply(_ transform: Transform, after: String, before: String = "null") throws -> (Any, Any) {
        var out: [UInt8] = []
        #expect(try transform.apply(ArraySlice(Array(envelope(after: after, before: before).utf8)), into: &out) == nil)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(out)) as? [String: Any])
        #expect(object["pos"] as? String == "1" && (object["source"] as? [String: Any])?["table"] as? String == "t")
        return (object["after"] as Any, object["before"] as Any)
    }

    static let awkward = #"""
        { "id" : 7, "name": "\u00e9\"q\"", "ключ": {"deep": {"x": [1, {"y": "z"}]}}, "email": "a@b.c",
          "lines": [{"sku": "a", "email": "x@y.z", "n": null}, {"sku": "b"}, 5, "s", [1]],
          "empty": {}, "list": [], "n": 1.5e3, "t": true, "nil": null }
        """#

    @Test func dropAndSelectReachIntoNestedObjectsAndArrays() throws {
        let drop = try Self.transform("- drop: [email, lines.email, ключ.deep.x, missing, missing.too, n.x]")
        let (after, before) = try Self.apply(drop, after: Self.awkward, before: #"{"email":"old","keep":1}"#)
        let a = try #require(after as? [String: Any])
        #expect(a["email"] == nil && a["id"] as? Int == 7 && a["name"] as? String == "é\"q\"")
        #expect(((a["ключ"] as? [String: Any])?["deep"] as? [String: Any])?.isEmpty == true)
        let lines = try #require(a["lines"] as? [Any])
        #expect((lines[0] as? [String: Any])?["email"] == nil && (lines[0] as? [String: Any])?["sku"] as? String == "a")
        #expect(lines.count == 5 && lines[2] as? Int == 5 && lines[3] as? String == "s")
        #expect(a["n"] as? Double == 1500 && a["t"] as? Bool == true && a["nil"] is NSNull)
        #expect((before as? [String: Any]).map { $0["email"] == nil && $0["keep"] as? Int == 1 } == true)

        let select = try Self.transform("- select: [id, lines.sku, ключ.deep, nothing]")
        let (kept, _) = try Self.apply(select, after: Self.awkward)
        let k = try #require(kept as? [String: Any])
        #expect(Set(k.keys) == ["id", "lines", "ключ"])
        let keptLines = try #require(k["lines"] as? [Any])
        #expect((keptLines[0] as? [String: Any]).map { Set($0.keys) } == ["sku"] && keptLines[2] as? Int == 5)
        #expect(((k["ключ"] as? [String: Any])?["deep"] as? [String: Any])?["x"] != nil)
    }

    @Test func renameAndSetInOrder() throws {
        let steps = try Self.transform(
            """
            - rename: {name: full_name, lines.sku: code, absent: nope}
            - set: {region: eu, count: 3, ratio: -0.5, flag: false, nothing: null, copy: {field: ключ.deep}, a.b.c: "x y", id: {field: full_name}}
            """)
        let (after, _) = try Self.apply(steps, after: Self.awkward)
        let a = try #require(after as? [String: Any])
        #expect(a["name"] == nil && a["full_name"] as? String == "é\"q\"" && a["nope"] == nil)
        #expect(((a["lines"] as? [Any])?.first as? [String: Any])?["code"] as? String == "a")
        #expect(a["region"] as? String == "eu" && a["count"] as? Int == 3 && a["ratio"] as? Double == -0.5)
        #expect(a["flag"] as? Bool == false && a["nothing"] is NSNull)
        #expect((a["copy"] as? [String: Any])?["x"] != nil)
        #expect(((a["a"] as? [String: Any])?["b"] as? [String: Any])?["c"] as? String == "x y")
        #expect(a["id"] as? String == "é\"q\"")  // set after the rename: the new name's value
    }

    @Test func redactionIsKeyedStableAndHidesTheValue() throws {
        let yaml = "- redact: {fields: [email, lines.email, n, nil], key: \"${FEEDARCHIVE_TEST_REDACT_KEY}\"}"
        let one = try Self.transform(yaml)
        let (first, _) = try Self.apply(one, after: Self.awkward)
        let (again, _) = try Self.apply(
            one, after: Self.awkward.replacingOccurrences(of: #""a@b.c""#, with: #""a\u0040b.c""#))
        let a = try #require(first as? [String: Any]), b = try #require(again as? [String: Any])
        let email = try #require(a["email"] as? String)
        #expect(email.count == 64 && email.allSatisfy(\.isHexDigit) && !email.contains("a@b.c"))
        #expect(b["email"] as? String == email)  // the same value (spelled otherwise): the same output
        #expect(((a["lines"] as? [Any])?.first as? [String: Any])?["email"] as? String != email)
        #expect((a["n"] as? String)?.count == 64 && a["nil"] is NSNull)
        let other = try Self.transform(yaml, environment: "another-key-0123456789")
        let (third, _) = try Self.apply(other, after: Self.awkward)
        #expect((third as? [String: Any])?["email"] as? String != email)
        #expect(one.hash != other.hash && !one.hash.contains("0123456789abcdef"))

        let mask = try Self.transform("- redact: {fields: [email], mask: \"***\"}")
        #expect((try Self.apply(mask, after: Self.awkward).0 as? [String: Any])?["email"] as? String == "***")
    }

    @Test func aDocumentThatIsNotAnObjectStopsTheRun() throws {
        let steps = try Self.transform("- drop: [x]")
        for after in [#""a string""#, "[1,2]", "3"] {
            var out: [UInt8] = []
            #expect(throws: Transform.Failure.self) {
                _ = try steps.apply(ArraySlice(Array(Self.envelope(after: after).utf8)), into: &out)
            }
        }
        // null (a delete) passes as it is.
        let (after, _) = try Self.apply(steps, after: "null")
        #expect(after is NSNull)
    }

    @Test func errorsNameTheirPlace() throws {
        for (yaml, message) in [
            ("- frob: [x]", "job.yaml:1:3: transform[0] must be one of filter, drop, select"),
            ("- drop: [a..b]", "job.yaml:1:10: transform[0].drop: 'a..b' is not a field path"),
            ("- rename: {a: b.c}", "the new name 'b.c' must be one field name"),
            ("- redact: {fields: [a]}", "needs exactly one of key"),
            ("- redact: {fields: [a], key: short}", "shorter than 16 bytes"),
            ("- redact: {fields: [a], key: 0123456789abcdefg, mask: x}", "needs exactly one of key"),
            ("- drop: []", "names no field"),
            ("drop: [a]", "job.yaml:1:1"),
        ] {
            do {
                _ = try Self.transform(yaml)
                Issue.record("accepted: \(yaml)")
            } catch {
                #expect("\(error)".contains(message), "\(yaml): \(error)")
            }
        }
    }

    @Test func theHashFollowsTheSectionNotItsSpelling() throws {
        let a = try Self.transform("- drop: [a, b]\n- set: {c: 1}")
        let b = try Self.transform("- drop:\n  - a\n  - b\n- set:\n    c: 1")
        let c = try Self.transform("- drop: [b, a]\n- set: {c: 1}")
        #expect(a.hash == b.hash && a.hash != c.hash && a.hash.hasPrefix("sha256:"))
    }

    @Test func filtersKeepOrDropByTableOpAndField() throws {
        let steps = try Self.transform(
            """
            - filter: {name: tables, keep: {table: [t, other]}}
            - filter: {name: no-deletes, drop: {op: [d, t]}}
            - filter: {name: tests, drop: {field: after.kind, in: [test, "demo"]}}
            - filter: {name: big, drop: {field: after.n, gt: 1000}}
            - filter: {name: flagged, drop: {field: after.meta.flag, exists: true}}
            - filter: {name: key, drop: {field: key, equals: drop-me}}
            - drop: [secret]
            """)
        func outcome(_ after: String, op: String = "u", key: String = #""k""#) throws -> String {
            var out: [UInt8] = []
            let line =
                #"{"pos":"1","part":"0","op":""# + op + #"","ts":null,"key":"# + key + #","after":"# + after
                + #","before":null,"source":{"table":"public.t"}}"#
            guard let step = try steps.apply(ArraySlice(Array(line.utf8)), into: &out) else {
                return String(decoding: out, as: UTF8.self)
            }
            return steps.steps[step].name
        }
        #expect(try outcome(#"{"kind":"live","n":5,"secret":1}"#).contains(#""after":{"kind":"live","n":5}"#))
        #expect(try outcome(#"{"kind":"test"}"#) == "tests")
        #expect(try outcome(#"{"kind":"test"}"#) == "tests")  // a value, however spelled
        #expect(try outcome(#"{"n":1000.5}"#) == "big")
        #expect(try outcome(#"{"n":1e3}"#).hasPrefix("{"))
        #expect(try outcome(#"{"meta":{"flag":null}}"#) == "flagged")
        #expect(try outcome("null", op: "d") == "no-deletes")
        #expect(try outcome("{}", key: #""drop-me""#) == "key")
        // A comparison with a value that is not a number is not a "no": the run is told.
        #expect(throws: Transform.Failure.self) { try outcome(#"{"n":"5"}"#) }
        // Missing fields compare as false.
        #expect(try outcome("{}").hasPrefix("{"))
        for (yaml, message) in [
            ("- filter: {keep: {op: x}}", "'x' is not an op"),
            ("- filter: {keep: {field: other.x, equals: 1}}", "must start with after., before. or key."),
            ("- filter: {keep: {field: after.x}}", "exactly one test"),
            ("- filter: {keep: {field: after.x, gt: abc}}", "is not a number"),
            ("- filter: {keep: {op: c}, drop: {op: d}}", "exactly one of keep"),
            ("- filter: {name: a, keep: {op: c}}\n- filter: {name: a, keep: {op: u}}", "two filters are named 'a'"),
        ] {
            do {
                _ = try Self.transform(yaml)
                Issue.record("accepted: \(yaml)")
            } catch {
                #expect("\(error)".contains(message), "\(yaml): \(error)")
            }
        }
    }

    @Test func partitionByRendersAFolderFromFields() throws {
        let steps = try Self.transform(
            "- partition_by: \"tenant={after.tenant}/k={key}/n={after.meta.n}\"\n- drop: [tenant]")
        var out: [UInt8] = []
        var path: String?
        let line =
            #"{"pos":"1","part":"0","op":"u","ts":null,"key":"a/b","after":{"tenant":"ü ../x","meta":{"n":3}},"before":null,"source":{}}"#
        #expect(try steps.apply(ArraySlice(Array(line.utf8)), into: &out, path: &path) == nil)
        let folders = try #require(path).split(separator: "/").map(String.init)
        #expect(
            folders.count == 3 && folders[0].hasPrefix("tenant=") && folders[1].hasPrefix("k=") && folders[2] == "n=3")
        #expect(!folders.contains("..") && !String(decoding: out, as: UTF8.self).contains("tenant"))
        let missing = #"{"pos":"1","part":"0","op":"d","ts":null,"key":null,"after":null,"before":null,"source":{}}"#
        _ = try steps.apply(ArraySlice(Array(missing.utf8)), into: &out, path: &path)
        #expect(path == "tenant=_/k=_/n=_")
        for (yaml, message) in [
            ("- partition_by: \"tenant\"", "names no field"),
            ("- partition_by: \"t={other.x}\"", "must name a field of after, before or key"),
            ("- partition_by: \"t={after.x\"", "without a closing"),
            ("- partition_by: \"a={after.x}\"\n- partition_by: \"b={after.y}\"", "only one partition_by"),
        ] {
            do {
                _ = try Self.transform(yaml)
                Issue.record("accepted: \(yaml)")
            } catch {
                #expect("\(error)".contains(message), "\(yaml): \(error)")
            }
        }
    }
}
