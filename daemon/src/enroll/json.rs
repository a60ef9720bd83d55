//! Just enough JSON for the enrollment response: the string members of one
//! top-level object (`{"device_id": "...", "secret": "..."}`, or
//! `{"error": "..."}` on refusal). Members of other types, nested ones
//! included, are checked for syntax and skipped. A JSON library would be a
//! noticeable part of the daemon binary for these two shapes.

/// The string-valued members of a JSON object, in document order.
pub(super) type Members = Vec<(String, String)>;

/// Why the text is not a JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub(super) struct JsonError {
    what: &'static str,
    at: usize,
}

/// Parses `text` as one JSON object; returns its string members.
pub(super) fn string_members(text: &[u8]) -> Result<Members, JsonError> {
    let mut p = Parser { s: text, i: 0 };
    let mut out = Vec::new();
    p.ws();
    p.expect(b'{')?;
    p.ws();
    if p.peek() == Some(b'}') {
        p.i += 1;
    } else {
        loop {
            p.ws();
            let key = p.string()?;
            p.ws();
            p.expect(b':')?;
            p.ws();
            if p.peek() == Some(b'"') {
                let value = p.string()?;
                out.push((key, value));
            } else {
                p.value(0)?;
            }
            p.ws();
            match p.next() {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err(p.err("expected ',' or '}'")),
            }
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("trailing characters"));
    }
    Ok(out)
}

/// Deepest nesting skipped.
const MAX_DEPTH: usize = 32;

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err(&self, what: &'static str) -> JsonError {
        JsonError { what, at: self.i }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn expect(&mut self, c: u8) -> Result<(), JsonError> {
        match self.next() {
            Some(x) if x == c => Ok(()),
            _ => Err(self.err("unexpected character")),
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// A string, unescaped.
    fn string(&mut self) -> Result<String, JsonError> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.next() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => match self.next() {
                    Some(b'"') => out.push(b'"'),
                    Some(b'\\') => out.push(b'\\'),
                    Some(b'/') => out.push(b'/'),
                    Some(b'b') => out.push(0x08),
                    Some(b'f') => out.push(0x0c),
                    Some(b'n') => out.push(b'\n'),
                    Some(b'r') => out.push(b'\r'),
                    Some(b't') => out.push(b'\t'),
                    Some(b'u') => {
                        let c = self.unicode_escape()?;
                        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                    _ => return Err(self.err("bad escape")),
                },
                Some(c) if c < 0x20 => return Err(self.err("control character in string")),
                Some(c) => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| self.err("invalid UTF-8"))
    }

    /// After `\u`: one code point, a surrogate pair taking two escapes.
    fn unicode_escape(&mut self) -> Result<char, JsonError> {
        let hi = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if self.next() != Some(b'\\') || self.next() != Some(b'u') {
                return Err(self.err("unpaired surrogate"));
            }
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(self.err("unpaired surrogate"));
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(|| self.err("unpaired surrogate"))
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self
            .s
            .get(self.i..self.i + 4)
            .ok_or_else(|| self.err("bad \\u escape"))?;
        let text = std::str::from_utf8(digits).map_err(|_| self.err("bad \\u escape"))?;
        let v = u32::from_str_radix(text, 16).map_err(|_| self.err("bad \\u escape"))?;
        self.i += 4;
        Ok(v)
    }

    /// Skips any value, checking its syntax.
    fn value(&mut self, depth: usize) -> Result<(), JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(open @ (b'{' | b'[')) => {
                let close = if open == b'{' { b'}' } else { b']' };
                self.i += 1;
                self.ws();
                if self.peek() == Some(close) {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    if open == b'{' {
                        self.string()?;
                        self.ws();
                        self.expect(b':')?;
                        self.ws();
                    }
                    self.value(depth + 1)?;
                    self.ws();
                    match self.next() {
                        Some(b',') => continue,
                        Some(c) if c == close => return Ok(()),
                        _ => return Err(self.err("expected ',' or a closing bracket")),
                    }
                }
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.err("expected a value")),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), JsonError> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("expected a value"))
        }
    }

    fn number(&mut self) -> Result<(), JsonError> {
        let start = self.i;
        while matches!(
            self.peek(),
            Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
        ) {
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        // Checked loosely: Rust's float syntax, minus a leading '+' or '.'
        // (it still takes "01" and "1.", which JSON does not; they are
        // skipped values here, never read).
        let json_like = !text.starts_with('+') && !text.starts_with("-.") && !text.starts_with('.');
        if json_like && text.parse::<f64>().is_ok() {
            Ok(())
        } else {
            Err(JsonError {
                what: "bad number",
                at: start,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(text: &str) -> Result<Members, JsonError> {
        string_members(text.as_bytes())
    }

    #[test]
    fn reads_string_members_and_skips_the_rest() {
        let m = members(
            r#" {"device_id":"d-1","n":-1.5e3,"ok":true,"x":null,
                "nested":{"a":[1,{"b":"c"},[]]},"secret":"s\"\\\/\u00e9\ud83d\ude00\n"} "#,
        )
        .expect("object");
        assert_eq!(
            m,
            vec![
                ("device_id".into(), "d-1".into()),
                ("secret".into(), "s\"\\/é😀\n".into()),
            ]
        );
        assert_eq!(members("{}").expect("empty"), vec![]);
    }

    #[test]
    fn refuses_what_is_not_one_object() {
        for bad in [
            "",
            "[]",
            "\"x\"",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":\"b\"} x",
            "{\"a\":tru}",
            "{\"a\":+1}",
            "{\"a\":\"\\ud800\"}",
            "{\"a\":\"\\q\"}",
            "{\"a\":\"line\nbreak\"}",
        ] {
            assert!(members(bad).is_err(), "{bad:?}");
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(members(&deep).is_err(), "depth");
    }
}
