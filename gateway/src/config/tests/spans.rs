//! Key paths → lines.

use crate::config::KeySpans;

const YAML: &str = "\
# comment
a: 1
b:
  c: x

  d:
    - e: 1
      f: [1, 2]
    - g: {h: 3}
    -
      i: 4
list: [x, y]
anchor: &x {k: 1}
alias: *x
? [complex, key]
: skipped
last: 9
";

#[test]
fn keys_and_items_map_to_their_lines() {
    let spans = KeySpans::parse(YAML);
    let want = [
        ("a", 2),
        ("b", 3),
        ("b.c", 4),
        ("b.d", 6),
        ("b.d[0]", 7),
        ("b.d[0].e", 7),
        ("b.d[0].f", 8),
        ("b.d[0].f[1]", 8),
        ("b.d[1].g", 9),
        ("b.d[1].g.h", 9),
        ("b.d[2].i", 11),
        ("list[1]", 12),
        ("anchor.k", 13),
        ("alias", 14),
        ("last", 17),
    ];
    for (path, line) in want {
        assert_eq!(spans.exact(path), Some(line), "{path}");
    }
    assert_eq!(spans.exact("b.d[3]"), None);
}

#[test]
fn unknown_paths_fall_back_to_the_longest_known_prefix() {
    let spans = KeySpans::parse(YAML);
    assert_eq!(spans.line("b.d[1].g.missing"), Some(9));
    assert_eq!(spans.line("b.d[7].x"), Some(6));
    assert_eq!(spans.line("b.zz"), Some(3));
    assert_eq!(spans.line("nothing.here"), None);
}

#[test]
fn syntax_errors_keep_the_keys_seen_so_far() {
    let spans = KeySpans::parse("a: 1\nb: [\n");
    assert_eq!(spans.exact("a"), Some(1));
}

#[test]
fn a_repeated_key_records_its_second_line() {
    let spans = KeySpans::parse("a:\n  b: 1\n  c: 2\n  b: 3\n");
    assert_eq!(spans.exact("a.b"), Some(2));
    assert_eq!(spans.repeated("a.b"), Some(4));
    assert_eq!(spans.repeated("a.c"), None);
}
