//! Terminal tables for the CLI (`dnsward alerts`, `dnsward policy history`), drawn by one
//! table crate, comfy-table, so each column's width is computed once over the header and every
//! row together and the header always lines up with the rows below it.
//!
//! The look is a plain listing: no borders, columns two spaces apart, each as wide as its
//! widest cell (in characters as a terminal shows them), numbers aligned right, no trailing
//! spaces.

use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, ContentArrangement, Table};

use crate::printable::escaped;

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// Columns are this many spaces apart.
const GAP: u16 = 2;

/// The table's lines, the header first, then one line per row in order. `align` gives each
/// column's alignment (missing entries are [`Align::Left`]). Cells hold text users and
/// clients wrote (actors, messages, names): their control characters are shown escaped
/// ([`crate::printable::escaped`]), so each row stays on one line, callers can put lines of
/// their own between rows, and no cell can drive the terminal.
#[must_use]
pub fn text_table<R, C>(headers: &[&str], align: &[Align], rows: R) -> Vec<String>
where
    R: IntoIterator<Item = C>,
    C: IntoIterator<Item = String>,
{
    let safe_cell = |cell: String| escaped(&cell).into_owned();
    let mut table = Table::new();
    table
        .load_style(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.iter().map(|h| (*h).to_string()));
    for row in rows {
        table.add_row(row.into_iter().map(safe_cell).collect::<Vec<_>>());
    }
    let last = headers.len().saturating_sub(1);
    for (i, column) in table.column_iter_mut().enumerate() {
        // The gap is the right padding of one column plus the left padding of the next.
        let left = if i == 0 { 0 } else { GAP / 2 };
        let right = if i == last { 0 } else { GAP - GAP / 2 };
        column.set_padding((left, right));
        column.set_cell_alignment(match align.get(i) {
            Some(Align::Right) => CellAlignment::Right,
            Some(Align::Left) | None => CellAlignment::Left,
        });
    }
    table.lines().map(|l| l.trim_end().to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| (*c).to_string()).collect()
    }

    #[test]
    fn header_and_rows_share_one_width_per_column() {
        let lines = text_table(
            &["N", "NAME", "NOTE"],
            &[Align::Right, Align::Left, Align::Left],
            [
                row(&["7", "a-much-longer-name", "x"]),
                row(&["1234", "é", ""]),
            ],
        );
        assert_eq!(
            lines,
            [
                "   N  NAME                NOTE",
                "   7  a-much-longer-name  x",
                "1234  é",
            ]
        );
        // Every column starts at the same place on every line.
        let at = lines[0].find("NOTE").unwrap();
        assert_eq!(lines[1].find('x'), Some(at));
    }

    #[test]
    fn a_cell_with_a_newline_stays_on_its_row() {
        let lines = text_table(&["A", "B"], &[], [row(&["one\ntwo", "b"])]);
        assert_eq!(lines, ["A         B", "one\\ntwo  b"]);
    }

    #[test]
    fn control_characters_in_cells_are_escaped() {
        let lines = text_table(
            &["AUTHOR", "MESSAGE"],
            &[],
            [row(&["eve\u{1b}[2J\u{1b}[31mRED", "forged\r\u{7}"])],
        );
        assert_eq!(lines[1], "eve\\u001b[2J\\u001b[31mRED  forged\\r\\u0007");
        assert!(lines.iter().all(|l| !l.chars().any(char::is_control)));
    }

    #[test]
    fn no_rows_is_just_the_header() {
        assert_eq!(
            text_table(&["A", "B"], &[], Vec::<Vec<String>>::new()),
            ["A  B"]
        );
    }
}
