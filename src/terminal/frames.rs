//! The WebSocket frame protocol of docs/API.md §6: parsing client frames, and turning output
//! bytes into `stdout`/`stderr` frames (`utf8` when the bytes are valid UTF-8, `base64`
//! otherwise), never splitting a multi-byte character, never carrying more than
//! [`MAX_FRAME_DATA`] bytes of data in one frame, and never more than [`MAX_FRAME_JSON`]
//! bytes of `data` once it is JSON-escaped.

use base64::Engine as _;
use serde_json::{json, Value};

use super::error::{Error, Reason};

/// The most raw output bytes one frame carries. Base64 of this is under 64 KiB, and so is
/// the text itself, so no frame's `data` exceeds the contract's 64 KiB.
pub const MAX_FRAME_DATA: usize = 32 * 1024;

/// The most bytes a frame's `data` takes in the message once JSON-escaped. Escaping can
/// make text six times longer (`\u001b` for an ESC, common in terminal output), so a
/// `utf8` frame of control characters carries less text; with the rest of the frame, no
/// message is much over 64 KiB.
pub const MAX_FRAME_JSON: usize = 64 * 1024;

/// The most decoded bytes one `stdin` frame may carry (the contract's limit).
pub const MAX_INPUT_DATA: usize = 64 * 1024;

/// Which output stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = OutputStream)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Who produced the output: the container's main process or the session's exec'd process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Main,
    Exec,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Main => "main",
            Source::Exec => "exec",
        }
    }
}

/// The signals a client may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Int,
    Term,
    Kill,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Int => "INT",
            Signal::Term => "TERM",
            Signal::Kill => "KILL",
        }
    }
}

/// A client frame, parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    Stdin(Vec<u8>),
    Resize { cols: u16, rows: u16 },
    Signal(Signal),
    Close,
}

fn bad(reason: Reason, message: impl Into<String>) -> Error {
    Error::new(reason, message)
}

/// Parses one text frame. Errors are `validation_error`s the session reports in an `error`
/// frame before it goes on.
pub fn parse_input(text: &str) -> Result<Input, Error> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        bad(
            Reason::InvalidFrame,
            format!("a frame must be a JSON object: {e}"),
        )
    })?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad(Reason::InvalidFrame, "a frame must be a JSON object"))?;
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(Reason::InvalidFrame, "a frame needs a string \"type\""))?;
    match kind {
        "stdin" => {
            let data = obj
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(Reason::InvalidFrame, "stdin needs a string \"data\""))?;
            let bytes = match obj.get("encoding").map(|e| e.as_str()) {
                None | Some(Some("utf8")) => data.as_bytes().to_vec(),
                Some(Some("base64")) => base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| {
                        bad(
                            Reason::InvalidBase64,
                            format!("stdin data is not base64: {e}"),
                        )
                    })?,
                Some(_) => {
                    return Err(bad(
                        Reason::InvalidEncoding,
                        "encoding must be \"utf8\" or \"base64\"",
                    ))
                }
            };
            if bytes.len() > MAX_INPUT_DATA {
                return Err(bad(
                    Reason::FrameTooLarge,
                    format!("a stdin frame carries at most {MAX_INPUT_DATA} bytes"),
                )
                .with_details(json!({"limit": MAX_INPUT_DATA, "provided": bytes.len()})));
            }
            Ok(Input::Stdin(bytes))
        }
        "resize" => {
            let dim = |name: &str| -> Result<u16, Error> {
                obj.get(name)
                    .and_then(Value::as_u64)
                    .filter(|n| (1..=1000).contains(n))
                    .map(|n| n as u16)
                    .ok_or_else(|| {
                        bad(
                            Reason::InvalidSize,
                            format!("resize needs \"{name}\" as an integer from 1 to 1000"),
                        )
                    })
            };
            Ok(Input::Resize {
                cols: dim("cols")?,
                rows: dim("rows")?,
            })
        }
        "signal" => {
            let name = obj.get("name").and_then(Value::as_str).unwrap_or("");
            let name = name.strip_prefix("SIG").unwrap_or(name);
            let signal = match name {
                "INT" => Signal::Int,
                "TERM" => Signal::Term,
                "KILL" => Signal::Kill,
                _ => {
                    return Err(bad(
                        Reason::InvalidSignal,
                        "signal \"name\" must be INT, TERM or KILL",
                    )
                    .with_details(json!({"provided": obj.get("name")})))
                }
            };
            Ok(Input::Signal(signal))
        }
        "close" => Ok(Input::Close),
        other => Err(bad(
            Reason::UnknownFrameType,
            format!("unknown frame type {other:?}"),
        )),
    }
}

/// The WebSocket close code of a session that ended because the Swarm node running its
/// container was lost (after an `error` frame `NODE_LOST`): a private-use code (RFC 6455
/// §7.4.2), so a client can tell it from a normal end (1000) and open a new terminal.
pub const CLOSE_NODE_LOST: u16 = 4001;

pub fn exit_frame(code: i64) -> String {
    json!({"type": "exit", "code": code}).to_string()
}

fn output_frame(stream: Stream, source: Source, data: &str, encoding: &str) -> String {
    json!({
        "type": stream.as_str(),
        "data": data,
        "encoding": encoding,
        "source": source.as_str(),
    })
    .to_string()
}

/// How many bytes of `text` (a prefix ending on a character boundary) fit in
/// [`MAX_FRAME_JSON`] once escaped as serde_json escapes strings.
fn fit_escaped(text: &str) -> usize {
    let mut size = 0;
    for (i, c) in text.char_indices() {
        size += match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if u32::from(c) < 0x20 => 6, // \u00XX
            c => c.len_utf8(),
        };
        if size > MAX_FRAME_JSON {
            return i;
        }
    }
    text.len()
}

/// Turns one output stream's bytes into frames. Keeps an incomplete UTF-8 sequence at the
/// end of a read (at most 3 bytes) for the next read, so characters are never split.
#[derive(Debug)]
pub struct Encoder {
    stream: Stream,
    source: Source,
    carry: Vec<u8>,
}

impl Encoder {
    pub fn new(stream: Stream, source: Source) -> Self {
        Self {
            stream,
            source,
            carry: Vec::new(),
        }
    }

    /// `utf8` frames for `text`: one, or more when escaping would make one too large.
    fn push_text(&self, mut text: &str, frames: &mut Vec<String>) {
        while !text.is_empty() {
            let n = fit_escaped(text);
            frames.push(output_frame(self.stream, self.source, &text[..n], "utf8"));
            text = &text[n..];
        }
    }

    /// Frames for `bytes` (possibly none, when all of it is an incomplete character).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(bytes);
        let mut frames = Vec::new();
        let mut rest: &[u8] = &buf;
        while !rest.is_empty() {
            let window = &rest[..rest.len().min(MAX_FRAME_DATA)];
            match std::str::from_utf8(window) {
                Ok(text) => {
                    self.push_text(text, &mut frames);
                    rest = &rest[window.len()..];
                }
                Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => {
                    // Valid text up to a character cut by the window or by the read.
                    let n = e.valid_up_to();
                    if window.len() == rest.len() {
                        // End of this read: keep the partial character for the next one.
                        let text = std::str::from_utf8(&window[..n]).unwrap_or_default();
                        self.push_text(text, &mut frames);
                        self.carry = rest[n..].to_vec();
                        return frames;
                    }
                    let text = std::str::from_utf8(&window[..n]).unwrap_or_default();
                    self.push_text(text, &mut frames);
                    rest = &rest[n..];
                }
                Err(e) if e.error_len().is_none() && window.len() == rest.len() => {
                    // Only a partial character (at most 3 bytes) is left: wait for more.
                    self.carry = rest.to_vec();
                    return frames;
                }
                Err(_) => {
                    // Not text: this window goes as base64, byte-exact.
                    let data = base64::engine::general_purpose::STANDARD.encode(window);
                    frames.push(output_frame(self.stream, self.source, &data, "base64"));
                    rest = &rest[window.len()..];
                }
            }
        }
        frames
    }

    /// At the end of the stream: whatever partial character is left, as base64.
    pub fn finish(&mut self) -> Option<String> {
        if self.carry.is_empty() {
            return None;
        }
        let data =
            base64::engine::general_purpose::STANDARD.encode(std::mem::take(&mut self.carry));
        Some(output_frame(self.stream, self.source, &data, "base64"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(frames: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            let v: Value = serde_json::from_str(f).unwrap();
            let data = v["data"].as_str().unwrap();
            match v["encoding"].as_str().unwrap() {
                "utf8" => out.extend_from_slice(data.as_bytes()),
                "base64" => out.extend(
                    base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .unwrap(),
                ),
                e => panic!("encoding {e}"),
            }
        }
        out
    }

    #[test]
    fn multibyte_characters_split_across_reads_stay_whole() {
        let text = "héllo wörld €uro 😀!";
        let bytes = text.as_bytes();
        for cut in 0..bytes.len() {
            let mut enc = Encoder::new(Stream::Stdout, Source::Exec);
            let mut frames = enc.push(&bytes[..cut]);
            frames.extend(enc.push(&bytes[cut..]));
            assert!(enc.finish().is_none());
            for f in &frames {
                let v: Value = serde_json::from_str(f).unwrap();
                assert_eq!(v["encoding"], "utf8", "cut {cut}: {f}");
                assert_eq!(v["source"], "exec");
                assert_eq!(v["type"], "stdout");
            }
            assert_eq!(decode(&frames), bytes, "cut {cut}");
        }
    }

    #[test]
    fn byte_by_byte_text_is_never_base64() {
        let text = "ä€😀";
        let mut enc = Encoder::new(Stream::Stderr, Source::Main);
        let mut frames = Vec::new();
        for b in text.as_bytes() {
            frames.extend(enc.push(&[*b]));
        }
        assert!(frames.iter().all(|f| f.contains("\"utf8\"")));
        assert_eq!(decode(&frames), text.as_bytes());
    }

    #[test]
    fn binary_is_base64_and_byte_exact() {
        let bytes: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut enc = Encoder::new(Stream::Stdout, Source::Exec);
        let mut frames = Vec::new();
        for chunk in bytes.chunks(7001) {
            frames.extend(enc.push(chunk));
        }
        frames.extend(enc.finish());
        assert!(frames.iter().any(|f| f.contains("\"base64\"")));
        assert_eq!(decode(&frames), bytes);
    }

    #[test]
    fn no_frame_carries_more_than_64_kib() {
        let big = "é".repeat(100_000); // 200 000 bytes, 2-byte characters
        let mut enc = Encoder::new(Stream::Stdout, Source::Exec);
        let frames = enc.push(big.as_bytes());
        assert!(frames.len() >= 4);
        for f in &frames {
            let v: Value = serde_json::from_str(f).unwrap();
            assert!(v["data"].as_str().unwrap().len() <= 64 * 1024);
            assert_eq!(v["encoding"], "utf8");
        }
        assert_eq!(decode(&frames), big.as_bytes());
        let bin = vec![0xffu8; 200_000];
        let frames = enc.push(&bin);
        for f in &frames {
            let v: Value = serde_json::from_str(f).unwrap();
            assert!(v["data"].as_str().unwrap().len() <= 64 * 1024);
        }
        assert_eq!(decode(&frames), bin);
    }

    /// The room a frame takes besides its escaped `data`: type, encoding, source, quotes.
    const FRAME_OVERHEAD: usize = 128;

    #[test]
    fn escaped_control_characters_keep_messages_near_64_kib() {
        // 32 KiB of ESC is valid UTF-8 but 192 KiB of JSON in one window (`\u001b` each).
        let escapes = vec![0x1bu8; 32 * 1024];
        // Terminal output: colour sequences, quotes, backslashes, tabs and text mixed.
        let mixed: Vec<u8> = "\x1b[1;31mé\"q\\\t\x01 ".repeat(20_000).into_bytes();
        for input in [escapes.clone(), mixed] {
            let mut enc = Encoder::new(Stream::Stdout, Source::Exec);
            let mut frames = enc.push(&input);
            frames.extend(enc.finish());
            assert!(frames.len() > 1);
            for (i, f) in frames.iter().enumerate() {
                assert!(
                    f.len() <= MAX_FRAME_JSON + FRAME_OVERHEAD,
                    "frame {i} is {} bytes of JSON",
                    f.len()
                );
                let v: Value = serde_json::from_str(f).unwrap();
                assert_eq!(v["encoding"], "utf8", "valid text stays utf8");
                let data_json = serde_json::to_string(&v["data"]).unwrap().len() - 2;
                assert!(data_json <= MAX_FRAME_JSON, "frame {i}: {data_json}");
            }
            assert_eq!(decode(&frames), input);
        }
        // Counted as serde_json counts: cut at the limit, not below it.
        let frames = Encoder::new(Stream::Stdout, Source::Exec).push(&escapes);
        assert_eq!(frames.len(), 4); // 6 × 32 KiB of JSON, a little over three frames
        for f in &frames[..3] {
            let v: Value = serde_json::from_str(f).unwrap();
            let data_json = serde_json::to_string(&v["data"]).unwrap().len() - 2;
            assert!(data_json > MAX_FRAME_JSON - 6, "{data_json}");
        }
    }

    #[test]
    fn a_dangling_partial_character_is_flushed_at_the_end() {
        let mut enc = Encoder::new(Stream::Stdout, Source::Exec);
        let frames = enc.push(&[b'a', 0xe2, 0x82]);
        assert_eq!(decode(&frames), b"a");
        let last = enc.finish().unwrap();
        assert_eq!(decode(&[last]), [0xe2, 0x82]);
    }

    #[test]
    fn input_frames_parse() {
        assert_eq!(
            parse_input(r#"{"type":"stdin","data":"ls\n","encoding":"utf8"}"#).unwrap(),
            Input::Stdin(b"ls\n".to_vec())
        );
        assert_eq!(
            parse_input(r#"{"type":"stdin","data":"AAH/","encoding":"base64"}"#).unwrap(),
            Input::Stdin(vec![0, 1, 255])
        );
        assert_eq!(
            parse_input(r#"{"type":"stdin","data":"x"}"#).unwrap(),
            Input::Stdin(b"x".to_vec())
        );
        assert_eq!(
            parse_input(r#"{"type":"resize","cols":120,"rows":40}"#).unwrap(),
            Input::Resize {
                cols: 120,
                rows: 40
            }
        );
        assert_eq!(
            parse_input(r#"{"type":"signal","name":"TERM"}"#).unwrap(),
            Input::Signal(Signal::Term)
        );
        assert_eq!(
            parse_input(r#"{"type":"signal","name":"SIGKILL"}"#).unwrap(),
            Input::Signal(Signal::Kill)
        );
        assert_eq!(parse_input(r#"{"type":"close"}"#).unwrap(), Input::Close);
    }

    #[test]
    fn malformed_frames_are_validation_errors() {
        for (text, code) in [
            ("not json", "INVALID_FRAME"),
            ("[1]", "INVALID_FRAME"),
            (r#"{"data":"x"}"#, "INVALID_FRAME"),
            (r#"{"type":"nope"}"#, "UNKNOWN_FRAME_TYPE"),
            (r#"{"type":"stdin"}"#, "INVALID_FRAME"),
            (
                r#"{"type":"stdin","data":"!!","encoding":"base64"}"#,
                "INVALID_BASE64",
            ),
            (
                r#"{"type":"stdin","data":"x","encoding":"latin1"}"#,
                "INVALID_ENCODING",
            ),
            (r#"{"type":"resize","cols":0,"rows":10}"#, "INVALID_SIZE"),
            (r#"{"type":"resize","cols":"80","rows":10}"#, "INVALID_SIZE"),
            (r#"{"type":"signal","name":"HUP"}"#, "INVALID_SIGNAL"),
        ] {
            let err = crate::error::ApiError::from(parse_input(text).unwrap_err());
            assert_eq!(err.code, code, "{text}");
            assert_eq!(err.kind, crate::error::Kind::Validation);
        }
        let big = format!(
            r#"{{"type":"stdin","data":"{}"}}"#,
            "a".repeat(MAX_INPUT_DATA + 1)
        );
        assert_eq!(
            crate::error::ApiError::from(parse_input(&big).unwrap_err()).code,
            "FRAME_TOO_LARGE"
        );
    }
}
