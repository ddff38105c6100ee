//! The `sp` connection field: a JSON object whose values are all strings
//! (docs/protocol.md section 2), read by a small strict parser instead of a JSON
//! crate.
//!
//! What is accepted:
//!
//! - one object, with whitespace (space, tab, CR, LF) around any token;
//! - keys and values are JSON strings: `\"`, `\\`, `\/`, `\b`, `\f`, `\n`,
//!   `\r`, `\t` and `\uXXXX` escapes; a `\u` high surrogate must be followed
//!   by a `\u` low surrogate, and a lone surrogate is refused;
//! - no control character (below 0x20) unescaped inside a string.
//!
//! What is refused: any other value type (number, object, array, `true`,
//! `false`, `null`), trailing bytes after the object, and a key that appears
//! twice (after unescaping). A JSON parser would keep one of the two values;
//! refusing is the strict reading: the client never sends a key twice, so
//! a duplicate is a fault, not a choice for the server to make silently.
//!
//! Nesting cannot happen (values are strings), so the parser runs in one
//! pass with no recursion; the input is bounded by the handshake size limit.

use std::collections::BTreeMap;

/// The first byte offset the parser could not accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PropertiesError {
    /// Byte offset in the `sp` text (after URL decoding).
    pub offset: usize,
}

/// Parses `sp`: a flat JSON object of string values. See the
/// [module documentation](self) for what is accepted.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, PropertiesError> {
    let mut p = Parser {
        bytes: text.as_bytes(),
        at: 0,
    };
    let mut out = BTreeMap::new();
    p.skip_ws();
    p.expect(b'{')?;
    p.skip_ws();
    if p.peek() == Some(b'}') {
        p.at += 1;
    } else {
        loop {
            p.skip_ws();
            let key_at = p.at;
            let key = p.string()?;
            p.skip_ws();
            p.expect(b':')?;
            p.skip_ws();
            let value = p.string()?;
            if out.insert(key, value).is_some() {
                return Err(PropertiesError { offset: key_at });
            }
            p.skip_ws();
            match p.peek() {
                Some(b',') => p.at += 1,
                Some(b'}') => {
                    p.at += 1;
                    break;
                }
                _ => return Err(p.error()),
            }
        }
    }
    p.skip_ws();
    if p.at != p.bytes.len() {
        return Err(p.error());
    }
    Ok(out)
}

/// Writes properties as the JSON object [`parse`] reads back: `"` and `\\`
/// escaped, control characters as `\uXXXX`, everything else as is.
pub fn encode(properties: &BTreeMap<String, String>) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in properties.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(&mut out, k);
        out.push(':');
        write_string(&mut out, v);
    }
    out.push('}');
    out
}

fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn error(&self) -> PropertiesError {
        PropertiesError { offset: self.at }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), PropertiesError> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error())
        }
    }

    /// Four hex digits of a `\u` escape.
    fn hex4(&mut self) -> Result<u32, PropertiesError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = self
                .peek()
                .and_then(|b| char::from(b).to_digit(16))
                .ok_or(self.error())?;
            self.at += 1;
            v = v << 4 | d;
        }
        Ok(v)
    }

    /// A JSON string, unescaped.
    fn string(&mut self) -> Result<String, PropertiesError> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            let start = self.at;
            // Copy the run of plain characters in one go. The input is a
            // `str` and the run stops only at ASCII bytes, so it is UTF-8.
            while matches!(self.peek(), Some(b) if b != b'"' && b != b'\\' && b >= 0x20) {
                self.at += 1;
            }
            let run = std::str::from_utf8(&self.bytes[start..self.at]).map_err(|_| self.error())?;
            out.push_str(run);
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => self.at += 1,
                _ => return Err(self.error()),
            }
            let escape_at = self.at.saturating_sub(1);
            let c = match self.next() {
                Some(b'"') => '"',
                Some(b'\\') => '\\',
                Some(b'/') => '/',
                Some(b'b') => '\u{8}',
                Some(b'f') => '\u{c}',
                Some(b'n') => '\n',
                Some(b'r') => '\r',
                Some(b't') => '\t',
                Some(b'u') => {
                    let hi = self.hex4()?;
                    let code = if (0xd800..0xdc00).contains(&hi) {
                        if self.next() != Some(b'\\') || self.next() != Some(b'u') {
                            return Err(PropertiesError { offset: escape_at });
                        }
                        let lo = self.hex4()?;
                        if !(0xdc00..0xe000).contains(&lo) {
                            return Err(PropertiesError { offset: escape_at });
                        }
                        0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                    } else {
                        hi
                    };
                    // A lone low surrogate is no character.
                    char::from_u32(code).ok_or(PropertiesError { offset: escape_at })?
                }
                _ => return Err(PropertiesError { offset: escape_at }),
            };
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<(String, String)> {
        parse(text).expect(text).into_iter().collect()
    }

    fn err(text: &str) -> usize {
        parse(text).expect_err(text).offset
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn section_2_sp_is_an_object_of_strings() {
        assert_eq!(ok("{}"), vec![]);
        assert_eq!(ok(" { } "), vec![]);
        assert_eq!(ok(r#"{"room":"7"}"#), vec![pair("room", "7")]);
        assert_eq!(
            ok("{ \"b\" :\t\"2\" ,\n\"a\":\"\" }"),
            vec![pair("a", ""), pair("b", "2")]
        );
    }

    #[test]
    fn section_2_sp_escapes_are_unescaped() {
        assert_eq!(
            ok(r#"{"k":"\"\\\/\b\f\n\r\t"}"#),
            vec![pair("k", "\"\\/\u{8}\u{c}\n\r\t")]
        );
        assert_eq!(ok(r#"{"k":"caf\u00E9"}"#), vec![pair("k", "café")]);
        assert_eq!(ok(r#"{"k":"\ud83d\ude00"}"#), vec![pair("k", "😀")]);
        assert_eq!(ok("{\"k\":\"é😀\"}"), vec![pair("k", "é😀")]);
    }

    #[test]
    fn section_2_sp_lone_surrogates_and_bad_escapes_are_refused() {
        assert_eq!(err(r#"{"k":"\ud83d"}"#), 6);
        assert_eq!(err(r#"{"k":"\ud83dx"}"#), 6);
        assert_eq!(err(r#"{"k":"\ud83d\u0041"}"#), 6);
        assert_eq!(err(r#"{"k":"\ude00"}"#), 6);
        assert_eq!(err(r#"{"k":"\x"}"#), 6);
        assert_eq!(err(r#"{"k":"\u12G4"}"#), 10);
    }

    #[test]
    fn section_2_sp_other_value_types_are_refused() {
        for (text, offset) in [
            (r#"{"k":7}"#, 5),
            (r#"{"k":null}"#, 5),
            (r#"{"k":true}"#, 5),
            (r#"{"k":{"x":"y"}}"#, 5),
            (r#"{"k":["x"]}"#, 5),
            (r#"["x"]"#, 0),
            (r#""x""#, 0),
            ("", 0),
        ] {
            assert_eq!(err(text), offset, "{text}");
        }
    }

    #[test]
    fn section_2_sp_structure_faults_are_refused_at_their_offset() {
        assert_eq!(err(r#"{"k":"v"} x"#), 10, "trailing bytes");
        assert_eq!(err(r#"{"k":"v",}"#), 9, "trailing comma");
        assert_eq!(err(r#"{"k""v"}"#), 4, "missing colon");
        assert_eq!(err(r#"{"k":"v""#), 8, "unterminated object");
        assert_eq!(err(r#"{"k":"v"#), 7, "unterminated string");
        assert_eq!(err(r#"{"k":"v" "l":"w"}"#), 9, "missing comma");
        assert_eq!(err("{\"k\":\"a\nb\"}"), 7, "raw control character");
        assert_eq!(err(r#"{k:"v"}"#), 1, "bare key");
    }

    #[test]
    fn section_2_sp_duplicate_keys_are_refused() {
        assert_eq!(err(r#"{"a":"1","a":"2"}"#), 9);
        // The same key after unescaping is a duplicate too.
        assert_eq!(err(r#"{"a":"1","\u0061":"2"}"#), 9);
    }

    #[test]
    fn section_2_sp_encode_then_parse_is_the_identity() {
        let p = BTreeMap::from([
            (String::new(), String::new()),
            ("k\"\\".to_owned(), "\u{1}\n\u{1f}é😀/".to_owned()),
        ]);
        let text = encode(&p);
        assert_eq!(
            text,
            "{\"\":\"\",\"k\\\"\\\\\":\"\\u0001\\u000a\\u001fé😀/\"}"
        );
        assert_eq!(parse(&text), Ok(p));
    }

    proptest::proptest! {
        #[test]
        fn section_2_sp_any_properties_round_trip(
            p in proptest::collection::btree_map(".*", ".*", 0..6)
        ) {
            proptest::prop_assert_eq!(parse(&encode(&p)), Ok(p));
        }
    }

    #[test]
    fn section_2_sp_prefixes_of_a_valid_object_are_refused() {
        let text = r#"{"room":"7","name":"caf\u00e9 \ud83d\ude00"}"#;
        assert!(parse(text).is_ok());
        for end in 0..text.len() {
            assert!(parse(&text[..end]).is_err(), "prefix {end}");
        }
    }
}

/// The examples this module showed in its documentation, kept as tests.
#[cfg(test)]
mod examples {
    use super::*;

    #[test]
    fn section_2_sp_is_a_flat_object_of_strings() {
        let p = parse(r#"{"room": "7", "name": "caf\u00e9"}"#).unwrap();
        assert_eq!(p["name"], "café");
        assert!(parse(r#"{"room": 7}"#).is_err());
        assert!(parse(r#"{"a": "1", "a": "2"}"#).is_err());
    }

    #[test]
    fn section_2_sp_encodes_back_to_what_it_parses() {
        use std::collections::BTreeMap;
        let p = BTreeMap::from([("room".to_owned(), "7 \"b\"".to_owned())]);
        assert_eq!(encode(&p), r#"{"room":"7 \"b\""}"#);
        assert_eq!(parse(&encode(&p)).unwrap(), p);
    }
}
