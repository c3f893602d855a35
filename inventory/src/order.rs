//! The tree's one sort order, shared by path IDs, children lists and selector results so that
//! "sorted" means the same thing everywhere: names in natural order (`pve2` before `pve10`),
//! guests by vmid whatever their kind.

use std::cmp::Ordering;

/// Compares two (kind word, name) segment pairs at the same depth.
pub(crate) fn leaf_cmp(a: (&str, &str), b: (&str, &str)) -> Ordering {
    let guest = |w: &str| w == "lxc" || w == "vm";
    if guest(a.0) && guest(b.0) {
        natural_cmp(a.1, b.1).then_with(|| a.0.cmp(b.0))
    } else {
        a.0.cmp(b.0).then_with(|| natural_cmp(a.1, b.1))
    }
}

/// Natural order: runs of digits compare by value, other bytes bytewise; names equal under
/// that rule (`a01`, `a1`) fall back to plain byte order, so this is a total order.
pub(crate) fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < x.len() && j < y.len() {
        if x[i].is_ascii_digit() && y[j].is_ascii_digit() {
            let (si, sj) = (i, j);
            while i < x.len() && x[i].is_ascii_digit() {
                i += 1;
            }
            while j < y.len() && y[j].is_ascii_digit() {
                j += 1;
            }
            let (da, db) = (trim_zeros(&x[si..i]), trim_zeros(&y[sj..j]));
            match da.len().cmp(&db.len()).then_with(|| da.cmp(db)) {
                Ordering::Equal => {}
                o => return o,
            }
        } else {
            // A digit run ranks as the byte '0' against a non-digit.
            let rank = |c: u8| if c.is_ascii_digit() { b'0' } else { c };
            match rank(x[i]).cmp(&rank(y[j])) {
                Ordering::Equal => {}
                o => return o,
            }
            i += 1;
            j += 1;
        }
    }
    (x.len() - i).cmp(&(y.len() - j)).then_with(|| x.cmp(y))
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|&&c| c == b'0').count();
    &d[n..]
}

/// Natural-order comparison of two names, exposed for callers sorting names the way the tree
/// does.
pub fn compare_names(a: &str, b: &str) -> Ordering {
    natural_cmp(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec![
            "pve10", "pve2", "pve1", "a01", "a1", "a", "a-b", "ab", "101", "99",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            ["99", "101", "a", "a-b", "a01", "a1", "ab", "pve1", "pve2", "pve10"]
        );
        assert_eq!(natural_cmp("x", "x"), Ordering::Equal);
    }

    #[test]
    fn guests_sort_by_vmid_across_kinds() {
        assert_eq!(leaf_cmp(("vm", "101"), ("lxc", "102")), Ordering::Less);
        assert_eq!(leaf_cmp(("lxc", "1000"), ("vm", "999")), Ordering::Greater);
        assert_eq!(leaf_cmp(("lxc", "101"), ("vm", "101")), Ordering::Less);
    }
}
