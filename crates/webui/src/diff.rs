//! A line diff (longest common subsequence), for comparing two versions of
//! an app definition rendered as pretty JSON.

use maud::{html, Markup};

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    Same(&'a str),
    Removed(&'a str),
    Added(&'a str),
}

/// Above this many cells the LCS table is not built: the diff is then
/// "everything removed, everything added" (app definitions are far smaller).
const MAX_CELLS: usize = 4_000_000;

/// The lines of `a` and `b` as kept, removed (only in `a`) and added (only
/// in `b`), in order.
pub fn lines<'a>(a: &'a str, b: &'a str) -> Vec<Line<'a>> {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let (n, m) = (a.len(), b.len());
    if n.saturating_mul(m) > MAX_CELLS {
        let mut out: Vec<Line> = a.iter().map(|l| Line::Removed(l)).collect();
        out.extend(b.iter().map(|l| Line::Added(l)));
        return out;
    }
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] = if a[i] == b[j] {
                lcs[at(i + 1, j + 1)] + 1
            } else {
                lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(n.max(m));
    while i < n && j < m {
        if a[i] == b[j] {
            out.push(Line::Same(a[i]));
            i += 1;
            j += 1;
        } else if lcs[at(i + 1, j)] >= lcs[at(i, j + 1)] {
            out.push(Line::Removed(a[i]));
            i += 1;
        } else {
            out.push(Line::Added(b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|l| Line::Removed(l)));
    out.extend(b[j..].iter().map(|l| Line::Added(l)));
    out
}

/// A diff as a `<pre>`: removed lines marked `-`, added `+`.
pub fn render(diff: &[Line<'_>]) -> Markup {
    html! {
        pre.diff {
            @for line in diff {
                @match line {
                    Line::Same(l) => span.same { "  " (l) "\n" },
                    Line::Removed(l) => span.del { "- " (l) "\n" },
                    Line::Added(l) => span.add { "+ " (l) "\n" },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_line_is_removed_then_added() {
        let d = lines("a\nb\nc", "a\nx\nc");
        assert_eq!(
            d,
            vec![
                Line::Same("a"),
                Line::Removed("b"),
                Line::Added("x"),
                Line::Same("c")
            ]
        );
    }

    #[test]
    fn identical_texts_have_no_change() {
        assert!(lines("a\nb", "a\nb")
            .iter()
            .all(|l| matches!(l, Line::Same(_))));
    }
}
