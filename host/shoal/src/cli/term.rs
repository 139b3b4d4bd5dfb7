//! What the CLI does so that it behaves like a Unix tool at a terminal and
//! in a pipeline.
//!
//! - [`default_sigpipe`]: a closed pipe (`shoal ps | head -1`) ends the
//!   verb quietly, as it ends `ls` or `cat`, instead of a panic.
//! - [`TermText`]: bytes a guest wrote, made safe to print on a terminal:
//!   control characters (escape sequences, bell, carriage return, C1
//!   controls) and bytes that are not UTF-8 are shown escaped, so a process
//!   cannot drive the user's terminal through `shoal logs`.

/// Let `SIGPIPE` end the process, as it does any C program.
///
/// Rust ignores `SIGPIPE`, so a write to a pipe whose reader has gone fails
/// with `EPIPE` and `println!` panics. For a verb whose output is read by
/// another program, the usual Unix behaviour is to stop quietly at once.
/// Not for verbs that run nodes (`node start`, `demo`): there a peer that
/// hangs up must not end the node.
#[allow(unsafe_code)]
pub fn default_sigpipe() {
    // SAFETY: `signal` with `SIG_DFL` for `SIGPIPE` installs no handler
    // (no code runs in signal context); it is called once, at start-up.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Guest output on its way to a terminal: printable text passes, the rest
/// is escaped (`\x1b`, `\r`, `\u{9b}`, `\xff` for a byte that is not
/// UTF-8). Newlines and tabs pass. A character cut between two chunks is
/// kept until the next one completes it.
#[derive(Debug, Default)]
pub struct TermText {
    /// The start of a UTF-8 sequence that the last chunk cut off.
    pending: Vec<u8>,
}

/// Longest UTF-8 sequence: the most a chunk can leave pending.
const UTF8_LEN_MAX: usize = 4;

impl TermText {
    /// The printable form of the next chunk of output.
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        let mut bytes = std::mem::take(&mut self.pending);
        bytes.extend_from_slice(data);
        let mut out = Vec::with_capacity(bytes.len());
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    escape_str(text, &mut out);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // Valid by construction: `valid_up_to` says so.
                    escape_str(std::str::from_utf8(valid).unwrap_or_default(), &mut out);
                    match e.error_len() {
                        Some(n) => {
                            for b in &after[..n] {
                                out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
                            }
                            rest = &after[n..];
                        }
                        // Cut off at the end: wait for the rest.
                        None if after.len() < UTF8_LEN_MAX => {
                            self.pending = after.to_vec();
                            break;
                        }
                        None => {
                            for b in after {
                                out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
                            }
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// Whatever is still pending, escaped (the output ended mid-character).
    pub fn finish(&mut self) -> Vec<u8> {
        let pending = std::mem::take(&mut self.pending);
        let mut out = Vec::new();
        for b in pending {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
        out
    }
}

fn escape_str(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c as u8),
            c if c.is_control() => {
                let code = u32::from(c);
                let shown = match c {
                    '\r' => "\\r".to_string(),
                    _ if code < 0x80 => format!("\\x{code:02x}"),
                    _ => format!("\\u{{{code:x}}}"),
                };
                out.extend_from_slice(shown.as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// Print `rows` under `header` to stdout as aligned columns, two spaces
/// apart, the last one unpadded (`shoal ps`, `shoal locks`). Widths count
/// characters, not bytes.
pub fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut widths = header.map(|h| h.chars().count());
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let header = header.map(String::from);
    for r in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (k, cell) in r.iter().enumerate() {
            if k + 1 == N {
                line.push_str(cell);
            } else {
                let pad = widths[k] - cell.chars().count();
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(chunks: &[&[u8]]) -> String {
        let mut t = TermText::default();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(t.push(c));
        }
        out.extend(t.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_passes_and_controls_are_escaped() {
        assert_eq!(show(&[b"hello\tworld\n"]), "hello\tworld\n");
        assert_eq!(show(&["grüße ✓\n".as_bytes()]), "grüße ✓\n");
        assert_eq!(
            show(&[b"\x1b[2J\x1b]0;title\x07x\r\n"]),
            "\\x1b[2J\\x1b]0;title\\x07x\\r\n"
        );
        assert_eq!(show(&["a\u{9b}31m".as_bytes()]), "a\\u{9b}31m");
        assert_eq!(show(&[b"\x7f\x00"]), "\\x7f\\x00");
        assert_eq!(show(&[b"bad \xff\xfe end"]), "bad \\xff\\xfe end");
    }

    #[test]
    fn a_character_cut_between_chunks_is_kept_whole() {
        let check = "✓".as_bytes();
        assert_eq!(
            show(&[b"a", &check[..1], &check[1..2], &check[2..], b"b"]),
            "a✓b"
        );
        // Cut off for good: escaped at the end.
        assert_eq!(show(&[b"a", &check[..2]]), "a\\xe2\\x9c");
        // No escape byte ever comes out.
        let all: Vec<u8> = (0..=255u8).collect();
        assert!(!show(&[&all]).as_bytes().contains(&0x1b));
    }
}
