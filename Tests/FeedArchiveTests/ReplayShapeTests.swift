import Foundation
import Testing

@testable import FeedArchive

/// How an envelope becomes a replay row: typed conversion, dead-letter reasons, the old key of
/// a key-changing update, unchanged TOAST fields, and changes of other source tables.
@Suite struct ReplayShapeTests {
    static func shape(_ yaml: String) throws -> ReplayShape {
        let node = try ConfigNode.parse(yaml: yaml, file: "replay.yaml")
        let map = try node.mapping("target")
        let shape = try ReplayShape.parse(map)
        return shape
    }

    static func bytes(_ text: String) -> ArraySlice<UInt8> { ArraySlice(Array(text.utf8)) }

    static let typed = """
        table: orders
        key: [tenant, id]
        columns:
          tenant: text
          id: integer
          total: real
          paid: boolean
          placed: {field: placedAt, type: timestamp}
          lines: json
        document: doc
        """

    func change(
        _ shape: ReplayShape, op: String = "u", key: String, after: String, source: String = "{}",
        sourceTable: String? = nil
    ) -> ReplayChange {
        RowConverter(shape: shape, sourceTable: sourceTable).change(
            part: "0", pos: "1", op: UInt8(ascii: Unicode.Scalar(op)!), key: Self.bytes(key), after: Self.bytes(after),
            source: Self.bytes(source), line: Self.bytes("{}"), ts: nil)
    }

    @Test func typedValuesComeFromTheKeyAndTheDocument() throws {
        let shape = try Self.shape(Self.typed)
        #expect(shape.keyColumns.map(\.name) == ["tenant", "id"])
        #expect(shape.valueColumns.map(\.name) == ["total", "paid", "placed", "lines", "doc"])
        let after =
            #"{ "id": 7, "tenant": "a\"b\u00e9\ud83d\ude00", "total": 12.5, "paid": true, "placedAt": "2026-11-18T11:00:00.5+01:00", "lines": [1, {"x": null}] }"#
        let row = change(shape, key: #"{"tenant":"a\"bé😀","id":7}"#, after: after)
        #expect(row.action == .upsert)
        #expect(row.key == [.text("a\"bé😀"), .integer(7)])
        #expect(
            row.values == [
                .real(12.5), .boolean(true), .timestamp(1_794_996_000_500_000), .json(Self.bytes(#"[1, {"x": null}]"#)),
                .json(Self.bytes(after)),
            ])
        // A missing field is NULL; a null one too.
        let sparse = change(shape, key: #"{"tenant":"t","id":1}"#, after: #"{"total":null}"#)
        #expect(sparse.action == .upsert && sparse.values.prefix(4).allSatisfy { $0 == .null })
    }

    @Test func aValueThatDoesNotFitIsRejectedWithTheReason() throws {
        let shape = try Self.shape(Self.typed)
        for (after, reason) in [
            (#"{"total":"12"}"#, #"column total: "12" is not a number (real)"#),
            (#"{"paid":1}"#, "column paid: 1 is not true or false (boolean)"),
            (#"{"placedAt":"yesterday"}"#, #"column placed: "yesterday" is not an RFC 3339 time (timestamp)"#),
            ("[1,2]", "the document is not an object, its fields cannot be columns"),
        ] {
            let row = change(shape, key: #"{"tenant":"t","id":1}"#, after: after)
            #expect(row.action == .reject(reason), "\(after)")
        }
        #expect(
            change(shape, key: #"{"tenant":"t","id":1.5}"#, after: "{}").action
                == .reject("key column id: 1.5 is not an integer that fits 64 bits (integer)"))
        #expect(
            change(shape, key: #"{"tenant":"t","id":99999999999999999999}"#, after: "{}").action
                == .reject("key column id: 99999999999999999999 is not an integer that fits 64 bits (integer)"))
        #expect(
            change(shape, op: "d", key: #"{"id":1}"#, after: "null").action
                == .reject("key column tenant: the key has no field tenant"))
    }

    @Test func aKeyChangingUpdateDeletesTheOldKeysRow() throws {
        let shape = try Self.shape(Self.typed)
        let row = change(
            shape, key: #"{"tenant":"t","id":2}"#, after: #"{"tenant":"t","id":2}"#,
            source: #"{"table":"public.orders","old_key":{"tenant":"t","id":1}}"#)
        #expect(row.oldKey == [.text("t"), .integer(1)] && row.key == [.text("t"), .integer(2)])
        let documents = ReplayShape.documents(table: "orders")
        let plain = change(
            documents, key: #"{"id":2}"#, after: #"{"id":2}"#, source: #"{"table":"public.orders","old_key":{"id":1}}"#)
        #expect(plain.oldKey == [.text(#"{"id":1}"#)] && plain.key == [.text(#"{"id":2}"#)])
        // The same key is no change of key.
        let same = change(documents, key: #"{"id":2}"#, after: "{}", source: #"{"old_key":{"id":2}}"#)
        #expect(same.oldKey == nil)
    }

    @Test func unchangedToastFieldsAreKeptAndOtherTablesPassed() throws {
        let shape = try Self.shape(Self.typed)
        let row = change(
            shape, key: #"{"tenant":"t","id":2}"#, after: #"{"id":2}"#,
            source: #"{"table":"public.orders","unchanged_toast":["lines","doc \"x\""]}"#)
        #expect(row.keep == ["lines", "doc \"x\""])
        let other = change(shape, key: "1", after: "{}", source: #"{"table":"public.items"}"#, sourceTable: "orders")
        #expect(other.action == .pass)
        let mine = change(
            shape, op: "t", key: "null", after: "null", source: #"{"table":"public.orders"}"#, sourceTable: "orders")
        #expect(mine.action == .truncate)
    }

    @Test func mappingErrorsNameTheirPlace() throws {
        for (yaml, message) in [
            ("table: t\nkey: id\ncolumns:\n  id: decimal\n", "type 'decimal' is not one of"),
            ("table: t\ncolumns:\n  id: text\n", "missing the required key 'key'"),
            ("table: t\nkey: nope\ncolumns:\n  id: text\n", "'nope' is not one of target.columns"),
            ("table: t\nkey: doc\ncolumns:\n  doc: json\n", "'doc' is json"),
            ("table: t\nkey: id\n", "without columns the key is the envelope's key"),
            ("table: 1t\n", "must be letters"),
        ] {
            #expect(throws: FeedArchiveError.self, "\(yaml)") { try Self.shape(yaml) }
            do {
                _ = try Self.shape(yaml)
            } catch {
                #expect("\(error)".contains(message) && "\(error)".contains("replay.yaml:"), "\(error)")
            }
        }
    }

    @Test func jsonStringsDecode() {
        #expect(JSONScan.string(Self.bytes(#""plain""#)) == "plain")
        #expect(JSONScan.string(Self.bytes(#""a\nb\t\"\\\/\u0041\ud83d\ude00""#)) == "a\nb\t\"\\/A😀")
        #expect(JSONScan.string(Self.bytes(#""\ud83d""#)) == nil)
        #expect(JSONScan.string(Self.bytes(#""\x""#)) == nil)
        #expect(
            JSONScan.fields(Self.bytes(#" { "a" : [1, "]"] , "b\"" : {"c": "}"} } "#))?.map(\.name) == ["a", "b\""])
        #expect(JSONScan.fields(Self.bytes(#"{"a":1"#)) == nil)
    }
}
