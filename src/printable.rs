//! Untrusted text made safe to show a person.
//!
//! Actors, messages, notes, query names and lines of configured files reach terminals (the CLI
//! tables and views) and replies (configuration problems in a reload's 422). Such text can hold
//! control characters: ESC sequences that clear the screen or recolour it, BEL, carriage returns
//! that overwrite what was printed, bidirectional overrides that make text display in another
//! order than it reads. [`escaped`] writes every one of them as an escape, the way the JSON
//! event log already does, so what is shown is what was stored. [`excerpt`] also bounds how much
//! of a file's line is quoted, so an error about a file never copies the file.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters [`excerpt`] quotes of a line by default: enough to recognise the line next to its
/// `file:line`, too little to copy a secret (a 64-digit token shows less than half of itself).
pub const EXCERPT_CHARS: usize = 24;

/// True for characters that change what a terminal shows instead of being shown: C0 controls,
/// DEL, C1 controls (U+009B is a one-character CSI on some terminals), and the bidirectional
/// embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069).
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every unsafe character escaped as JSON writes it (`\n`, `\r`, `\t`, `\u001b`),
/// so it stays on one line and cannot drive the terminal. Backslashes are left alone (paths and
/// zone-file escapes stay readable). Borrowed when nothing needed escaping.
#[must_use]
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Why `text` cannot be accepted as a field an API caller sets (an actor, a reason, a note),
/// or `None`: the first character that would drive a terminal rather than be shown (see
/// [`escaped`]). Line breaks and tabs pass when `multiline` (a note or a reason may have
/// paragraphs); a name such as an actor is one line.
#[must_use]
pub fn rejected_char(text: &str, multiline: bool) -> Option<String> {
    let c = text
        .chars()
        .find(|&c| is_unsafe(c) && !(multiline && matches!(c, '\n' | '\r' | '\t')))?;
    Some(format!(
        "contains the control character U+{:04X}{}",
        u32::from(c),
        if multiline {
            ""
        } else {
            " (it must be one line of text)"
        }
    ))
}

/// Longest `actor` or `reason` an API caller may give, in bytes.
pub const MAX_FIELD_BYTES: usize = 512;

/// Why `value` cannot be the field `field` an API caller sets, or `None`: more than `max`
/// bytes, or a character [`rejected_char`] refuses. An actor or a client is one line; a
/// `reason` or a `message` may have line breaks and tabs. The admin API checks its inputs with
/// it, and a restart checks what it takes back from the state directory with it too.
#[must_use]
pub fn field_problem(field: &str, value: &str, max: usize) -> Option<String> {
    if value.len() > max {
        return Some(format!(
            "{field} is {} bytes; at most {max} are accepted",
            value.len()
        ));
    }
    let multiline = matches!(field, "reason" | "message");
    rejected_char(value, multiline).map(|why| format!("{field} {why}"))
}

/// [`field_problem`] for a field that must be said: not blank either.
#[must_use]
pub fn required_field_problem(field: &str, value: &str, max: usize) -> Option<String> {
    if value.trim().is_empty() {
        return Some(format!("{field} must not be empty"));
    }
    field_problem(field, value, max)
}

/// The first `max` characters of `text`, escaped and in double quotes as `{:?}` would quote
/// them (`\\` and `\"` too, so a zone file's `q\09` reads `"q\\09"`), with `…` after the
/// closing quote when the text was cut: `"root:*:20228:0:99999:7:"…`.
#[must_use]
pub fn excerpt(text: &str, max: usize) -> String {
    let cut = text.char_indices().nth(max).map(|(i, _)| i);
    let shown = cut.map_or(text, |i| &text[..i]);
    let mut out = String::with_capacity(shown.len() + 4);
    out.push('"');
    for c in shown.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push_str(&escaped(c.encode_utf8(&mut [0; 4]))),
        }
    }
    out.push('"');
    if cut.is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_plain_text_is_borrowed() {
        assert!(matches!(escaped("alice: allow cdn é"), Cow::Borrowed(_)));
        assert_eq!(
            escaped("eve\u{1b}[2J\u{1b}[31mRED\u{7}"),
            "eve\\u001b[2J\\u001b[31mRED\\u0007"
        );
        assert_eq!(escaped("line1\nFAKE\r\tx"), "line1\\nFAKE\\r\\tx");
        assert_eq!(escaped("\u{9b}31m \u{7f}"), "\\u009b31m \\u007f");
        assert_eq!(escaped("abc\u{202e}cba"), "abc\\u202ecba");
        assert_eq!(escaped("a\\b"), "a\\b");
    }

    #[test]
    fn fields_with_terminal_controls_are_rejected() {
        assert_eq!(rejected_char("alice é", false), None);
        assert_eq!(rejected_char("line 1\nline 2\ttab\r\n", true), None);
        let why = rejected_char("alice\nroot", false).unwrap();
        assert!(why.contains("U+000A") && why.contains("one line"), "{why}");
        assert!(
            rejected_char("eve\u{1b}[2J", true)
                .unwrap()
                .contains("U+001B")
        );
        assert!(
            rejected_char("abc\u{202e}cba", true)
                .unwrap()
                .contains("U+202E")
        );
        assert!(rejected_char("\u{7f}", true).is_some());
        assert!(rejected_char("\u{9b}31m", true).is_some());
    }

    #[test]
    fn excerpts_are_short_quoted_and_escaped() {
        assert_eq!(excerpt("bad..name", 24), "\"bad..name\"");
        assert_eq!(
            excerpt("root:*:20228:0:99999:7:::", 24),
            "\"root:*:20228:0:99999:7::\"…"
        );
        assert_eq!(excerpt("a\u{1b}\"b", 24), "\"a\\u001b\\\"b\"");
        assert_eq!(excerpt("q\\09", 24), format!("{:?}", "q\\09"));
        // Cut by characters, not bytes.
        assert_eq!(excerpt("ééé", 2), "\"éé\"…");
        assert_eq!(excerpt("", 24), "\"\"");
    }
}
