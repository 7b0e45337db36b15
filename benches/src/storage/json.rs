//! A minimal JSON reader for fio's `--output-format=json`: enough to walk objects and
//! read numbers. Owns: parsing into `Value`. Never: reads input deeper than
//! `DEPTH_MAX` levels or longer than `INPUT_BYTES_MAX` (fio's output is a few KiB).

/// The deepest nesting accepted (fio's output nests about 6 levels).
const DEPTH_MAX: usize = 64;
/// The longest input accepted.
const INPUT_BYTES_MAX: usize = 64 << 20;

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `true` or `false` (fio's output has no booleans we read).
    Literal,
    /// A number.
    Number(f64),
    /// A string (escapes other than `\"` and `\\` are kept as written).
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object, members in order.
    Object(Vec<(String, Value)>),
}

impl Value {
    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Element `i` of an array.
    pub fn at(&self, i: usize) -> Option<&Value> {
        match self {
            Value::Array(items) => items.get(i),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }
}

/// Parses the first JSON object in `text` (fio may print warnings before it).
pub fn parse(text: &str) -> Result<Value, String> {
    if text.len() > INPUT_BYTES_MAX {
        return Err(format!(
            "{} bytes of JSON (limit {INPUT_BYTES_MAX})",
            text.len()
        ));
    }
    let start = text.find('{').ok_or("no JSON object in the output")?;
    let mut parser = Parser {
        bytes: &text.as_bytes()[start..],
        at: 0,
    };
    parser.value(0)
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > DEPTH_MAX {
            return Err(format!("JSON nested deeper than {DEPTH_MAX}"));
        }
        self.skip_space();
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'n' | b't' | b'f') => {
                while self.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
                    self.at += 1;
                }
                Ok(Value::Literal)
            }
            other => Err(format!("unexpected {other:?} at byte {}", self.at)),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, String> {
        self.expect(b'{')?;
        let mut members = Vec::new();
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_space();
            let key = self.string()?;
            self.skip_space();
            self.expect(b':')?;
            members.push((key, self.value(depth + 1)?));
            self.skip_space();
            if self.peek() == Some(b',') {
                self.at += 1;
                continue;
            }
            self.expect(b'}')?;
            return Ok(Value::Object(members));
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, String> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.skip_space();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_space();
            if self.peek() == Some(b',') {
                self.at += 1;
                continue;
            }
            self.expect(b']')?;
            return Ok(Value::Array(items));
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.at += 1;
            match b {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let escaped = self.peek().ok_or("input ends in an escape")?;
                    self.at += 1;
                    if !matches!(escaped, b'"' | b'\\') {
                        out.push(b'\\');
                    }
                    out.push(escaped);
                }
                _ => out.push(b),
            }
        }
        Err("input ends inside a string".to_owned())
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.at;
        let numeric = |b: u8| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E');
        while self.peek().is_some_and(numeric) {
            self.at += 1;
        }
        let text = std::str::from_utf8(&self.bytes[start..self.at]).map_err(|e| e.to_string())?;
        text.parse()
            .map(Value::Number)
            .map_err(|e| format!("bad number {text:?}: {e}"))
    }

    fn expect(&mut self, want: u8) -> Result<(), String> {
        if self.peek() != Some(want) {
            let got = self.peek().map(char::from);
            return Err(format!(
                "expected {:?} at byte {}, got {got:?}",
                char::from(want),
                self.at
            ));
        }
        self.at += 1;
        Ok(())
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fio_shaped_output_after_a_warning() {
        let text = r#"fio: some warning
{ "fio version" : "fio-3.33", "jobs" : [ { "jobname" : "seq", "error" : 0,
  "write" : { "bw_bytes" : 258264, "iops" : 209.3 },
  "sync" : { "total_ios" : 419, "lat_ns" : { "N" : 419,
     "percentile" : { "50.000000" : 3751936, "99.000000" : 1.8219008e7 } } },
  "flags" : [true, false, null], "empty" : {}, "none" : [], "esc" : "a\"b\\c" } ] }"#;
        let v = parse(text).expect("parses");
        let job = v.get("jobs").and_then(|j| j.at(0)).expect("job 0");
        let bw = job.get("write").and_then(|w| w.get("bw_bytes"));
        assert_eq!(bw.and_then(Value::number), Some(258264.0));
        let p99 = job
            .get("sync")
            .and_then(|s| s.get("lat_ns"))
            .and_then(|l| l.get("percentile"))
            .and_then(|p| p.get("99.000000"))
            .and_then(Value::number);
        assert_eq!(p99, Some(18219008.0));
        assert_eq!(job.get("esc"), Some(&Value::String("a\"b\\c".to_owned())));
    }

    #[test]
    fn rejects_truncated_and_deep_input() {
        assert!(parse(r#"{"a": [1, 2"#).is_err());
        assert!(parse("no object").is_err());
        let deep = "[".repeat(DEPTH_MAX + 2);
        assert!(parse(&format!("{{\"a\": {deep}")).is_err());
    }
}
