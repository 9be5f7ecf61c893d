//! JSON text for the events the pixel queue stores, written without serde.
//!
//! Every accepted event is serialized once on the ingest path. With serde_json that was
//! 6 % of the server's time under 50-event batches, most of it looking for characters
//! to escape a byte at a time, field names included (serde cannot tell a static name
//! from a value). Here names are written as they are, and a string is scanned eight
//! bytes at a time. The text is byte for byte what `serde_json::to_vec` writes for the
//! same types (their `Serialize` derives are kept, and tests hold the two together), so
//! what is read back, and what earlier versions stored, is unchanged.

/// A value that writes itself as compact JSON.
pub trait ToJson {
    fn write_json(&self, out: &mut Vec<u8>);
}

/// Writes an object's members in order; absent ones are left out (serde's
/// `skip_serializing_if = "Option::is_none"`).
pub struct Members<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Members<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Members { out, first: true }
    }

    /// A member; `name` is a field name, which needs no escape.
    pub fn field(&mut self, name: &'static str, value: &(impl ToJson + ?Sized)) -> &mut Self {
        debug_assert!(!needs_escape(name.as_bytes()), "{name}");
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        value.write_json(self.out);
        self
    }

    /// A member when `value` is present.
    pub fn some(&mut self, name: &'static str, value: &Option<impl ToJson>) -> &mut Self {
        if let Some(value) = value {
            self.field(name, value);
        }
        self
    }

    pub fn end(&mut self) {
        self.out.push(b'}');
    }
}

impl ToJson for str {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_str(out, self);
    }
}

impl ToJson for String {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_str(out, self);
    }
}

impl ToJson for bool {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if *self { b"true" } else { b"false" });
    }
}

impl ToJson for i64 {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(itoa::Buffer::new().format(*self).as_bytes());
    }
}

impl ToJson for u64 {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(itoa::Buffer::new().format(*self).as_bytes());
    }
}

impl ToJson for f64 {
    /// As serde_json writes it: the shortest text that reads back the same (with
    /// serde_json's own formatter, zmij), and `null` for NaN and the infinities.
    fn write_json(&self, out: &mut Vec<u8>) {
        if self.is_finite() {
            out.extend_from_slice(zmij::Buffer::new().format_finite(*self).as_bytes());
        } else {
            out.extend_from_slice(b"null");
        }
    }
}

impl<T: ToJson> ToJson for [T] {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        for (i, item) in self.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            item.write_json(out);
        }
        out.push(b']');
    }
}

impl<T: ToJson> ToJson for Vec<T> {
    fn write_json(&self, out: &mut Vec<u8>) {
        self.as_slice().write_json(out);
    }
}

/// Values read back from the store (a replay, a refused batch's survivors): seldom
/// written, so serde_json writes them.
impl ToJson for serde_json::Value {
    fn write_json(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("a JSON value serializes");
    }
}

const LOW_BITS: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the 8 bytes in `word` is below 0x20, `"` or `\` (bit tricks from
/// "Bit Twiddling Hacks": `hasless` and `haszero`, exact for whether any byte matches).
fn word_needs_escape(word: u64) -> bool {
    let control = word.wrapping_sub(LOW_BITS * 0x20) & !word;
    let quote = word ^ (LOW_BITS * b'"' as u64);
    let quote = quote.wrapping_sub(LOW_BITS) & !quote;
    let backslash = word ^ (LOW_BITS * b'\\' as u64);
    let backslash = backslash.wrapping_sub(LOW_BITS) & !backslash;
    (control | quote | backslash) & HIGH_BITS != 0
}

fn needs_escape(bytes: &[u8]) -> bool {
    bytes.iter().any(|b| escape_of(*b).is_some())
}

/// The escape serde_json writes for a byte, if it needs one.
fn escape_of(byte: u8) -> Option<&'static [u8]> {
    Some(match byte {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        0x08 => b"\\b",
        0x0c => b"\\f",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0x00..=0x1f => return Some(&CONTROL[byte as usize]),
        _ => return None,
    })
}

/// `\u00XX` for each control character, lowercase hex as serde_json writes it.
static CONTROL: [[u8; 6]; 32] = {
    let hex = b"0123456789abcdef";
    let mut table = [[0u8; 6]; 32];
    let mut i = 0;
    while i < 32 {
        table[i] = [b'\\', b'u', b'0', b'0', hex[i >> 4], hex[i & 15]];
        i += 1;
    }
    table
};

/// Writes `s` as a JSON string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let (mut copied, mut at) = (0, 0);
    while at < bytes.len() {
        if let Some(chunk) = bytes.get(at..at + 8) {
            let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            if !word_needs_escape(word) {
                at += 8;
                continue;
            }
        }
        if let Some(escape) = escape_of(bytes[at]) {
            out.extend_from_slice(&bytes[copied..at]);
            out.extend_from_slice(escape);
            copied = at + 1;
        }
        at += 1;
    }
    out.extend_from_slice(&bytes[copied..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &(impl ToJson + ?Sized)) -> String {
        let mut out = Vec::new();
        value.write_json(&mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = (0u32..0x80)
            .map(|c| char::from_u32(c).unwrap().to_string())
            .collect();
        cases.extend(
            [
                "",
                "plain ascii, longer than one word of eight",
                "tab\tin the middle of a long enough string",
                "ends with a quote after many bytes\"",
                "\"starts with one",
                "back\\slash and \u{7f} and \u{1f}",
                "ünïcödé → 漢字 🎉 with \n newline",
                "\u{0}\u{1}\u{2}\u{3}\u{4}\u{5}\u{6}\u{7}\u{8}\u{9}",
                "https://shop.example/p?q=\"x\"&ttclid=E.C.P.abc",
            ]
            .map(String::from),
        );
        // Each special byte at every offset of a 16-byte string.
        for special in ['"', '\\', '\n', '\u{0}', '\u{1f}', 'é'] {
            for at in 0..16 {
                let mut s: String = "abcdefghijklmnop".into();
                s.insert(at, special);
                cases.push(s);
            }
        }
        for case in &cases {
            assert_eq!(
                text(case.as_str()),
                serde_json::to_string(case).unwrap(),
                "{case:?}"
            );
        }
    }

    #[test]
    fn no_byte_that_needs_no_escape_is_taken_for_one() {
        for byte in 0u8..=255 {
            let word = u64::from_le_bytes([b'a', b'b', byte, b'c', b'd', b'e', b'f', b'g']);
            assert_eq!(
                word_needs_escape(word),
                escape_of(byte).is_some(),
                "{byte:#x}"
            );
        }
    }

    #[test]
    fn numbers_and_lists_are_written_as_serde_json_writes_them() {
        for n in [
            0.0,
            -0.0,
            9.5,
            20.0,
            0.1,
            1e21,
            1.5e-7,
            f64::MAX,
            f64::MIN_POSITIVE,
        ] {
            assert_eq!(text(&n), serde_json::to_string(&n).unwrap(), "{n}");
        }
        for n in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(text(&n), "null");
        }
        for n in [0, -1, i64::MIN, i64::MAX] {
            assert_eq!(text(&n), n.to_string());
        }
        assert_eq!(text(&u64::MAX), u64::MAX.to_string());
        assert_eq!(text(&vec![true, false]), "[true,false]");
        assert_eq!(text(&Vec::<String>::new()), "[]");
        let value = serde_json::json!({"a": [1, "x\"y"], "b": null});
        assert_eq!(text(&value), value.to_string());
    }

    #[test]
    fn members_leave_out_what_is_absent() {
        let mut out = Vec::new();
        Members::new(&mut out).end();
        assert_eq!(out, b"{}");
        let mut out = Vec::new();
        Members::new(&mut out)
            .some("a", &None::<i64>)
            .field("b", "x")
            .some("c", &Some(1i64))
            .end();
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"b":"x","c":1}"#);
    }
}
