//! Plain-text tables for the `sluice group` output: left-aligned columns, two spaces apart,
//! no trailing spaces.

/// Renders `rows` under `headers`; each row has one cell per header.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_cells: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_cells).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// An optional number as a cell: the number, or `-` when absent.
pub fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_have_no_trailing_space() {
        let t = render(
            &["TOPIC", "PARTITION", "LAG"],
            &[
                vec!["orders".into(), "0".into(), opt(Some(12))],
                vec!["a".into(), "10".into(), opt(None)],
            ],
        );
        assert_eq!(
            t,
            "TOPIC   PARTITION  LAG\n\
             orders  0          12\n\
             a       10         -\n"
        );
        assert_eq!(render(&["A", "B"], &[]), "A  B\n");
    }
}
