//! How deeply a program nests, measured on its text before jaq sees it.
//!
//! jaq's lexer, parser and compiler, the native compiler and both
//! evaluators recurse once per level of the program's tree, and a runtime
//! worker has a 2 MiB stack: about 600 levels of `{a:` or 1,100 of `+1`
//! overflowed it (found with fuzz/jq). A stack overflow aborts the process, so
//! a program that nests deeper than [`MAX_NESTING`] is refused when it is
//! compiled.
//!
//! The measure bounds the depth of the program's tree: a bracket (`(`,
//! `[`, `{`, `\(` in a string, `if` ... `end`, the body of a `def` up to its
//! `;`) is one level over the deepest of its parts, and a part is as deep
//! as its deepest bracket plus its operators, prefix keywords and path
//! parts (`.a`, `[0]`), since each can add a level (a chain `a | b | c` or
//! `.a.b.c` is a tree as deep as it is long).
//! Object entries (`,` `:` in `{}`), arguments (`;` in `()`) and the
//! branches of an `if` are separate parts. The scan is a loop over the
//! bytes: it cannot overflow.

/// The deepest program accepted. Measured in a release build, compiling
/// and running a program takes at most 3.5 KiB of stack per unit of this
/// measure (`{a:{a:...}}`; `((...))` 2.7 KiB, `- - -1` 2 KiB, `.a.a...`
/// 0.4 KiB), so a program at the limit needs under 1 MiB: half of a
/// runtime worker's stack.
pub const MAX_NESTING: usize = 256;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    /// The program itself, closed by nothing.
    Top,
    Paren,
    Bracket,
    Brace,
    If,
    Def,
    /// `\(` in a string: the string goes on after its `)`.
    Interp,
}

struct Frame {
    open: Open,
    /// Operators and prefix keywords in the current part.
    ops: usize,
    /// The deepest bracket closed in the current part.
    inner: usize,
    /// The deepest of the parts before the current one.
    parts: usize,
}

impl Frame {
    fn new(open: Open) -> Self {
        Self {
            open,
            ops: 0,
            inner: 0,
            parts: 0,
        }
    }

    /// Starts the next part.
    fn next_part(&mut self) {
        self.parts = self.depth();
        self.ops = 0;
        self.inner = 0;
    }

    fn depth(&self) -> usize {
        self.parts.max(self.ops + self.inner)
    }
}

/// Words that add a level to the tree where they stand.
const NESTING_WORDS: &[&str] = &[
    "and", "or", "as", "try", "catch", "reduce", "foreach", "label",
];

/// The nesting of `code` (see the module docs), or the byte offset where
/// it is found to go past `limit`.
pub fn check(code: &str, limit: usize) -> Result<usize, usize> {
    let b = code.as_bytes();
    let mut stack = vec![Frame::new(Open::Top)];
    // Closes the top frame into its parent; `Err(at)` when that goes too
    // deep.
    let close = |stack: &mut Vec<Frame>, at: usize| {
        let frame = stack.pop().expect("not the top frame");
        let parent = stack.last_mut().expect("the top frame stays");
        parent.inner = parent.inner.max(1 + frame.depth());
        if parent.depth() <= limit {
            Ok(())
        } else {
            Err(at)
        }
    };
    let mut in_string = false;
    let mut i = 0;
    while i < b.len() {
        let (c, at) = (b[i], i);
        i += 1;
        if in_string {
            match c {
                b'"' => in_string = false,
                b'\\' if b.get(i) == Some(&b'(') => {
                    stack.push(Frame::new(Open::Interp));
                    in_string = false;
                    i += 1;
                }
                b'\\' => i += 1,
                _ => {}
            }
        } else {
            let top = stack.len() - 1;
            match c {
                b'"' => in_string = true,
                b'#' => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
                b'(' => stack.push(Frame::new(Open::Paren)),
                b'[' => {
                    // `x[0][1]...` is a path, a level per part.
                    stack[top].ops += 1;
                    stack.push(Frame::new(Open::Bracket));
                }
                b'{' => stack.push(Frame::new(Open::Brace)),
                b')' | b']' | b'}' => {
                    let wanted: &[Open] = match c {
                        b')' => &[Open::Paren, Open::Interp],
                        b']' => &[Open::Bracket],
                        _ => &[Open::Brace],
                    };
                    // Closes up to the matching bracket (and any `if` or
                    // `def` left open in it); a stray closer closes nothing.
                    if let Some(open) = stack.iter().rposition(|f| wanted.contains(&f.open)) {
                        in_string = stack[open].open == Open::Interp;
                        while stack.len() > open {
                            close(&mut stack, at)?;
                        }
                    }
                }
                b',' | b':' if stack[top].open == Open::Brace => stack[top].next_part(),
                b';' if stack[top].open == Open::Def => close(&mut stack, at)?,
                b';' if stack[top].open == Open::Paren => stack[top].next_part(),
                b'|' | b',' | b'+' | b'-' | b'*' | b'/' | b'%' | b'<' | b'>' => stack[top].ops += 1,
                // `=`, but not as the second character of `==`, `<=`, `|=`...
                b'=' if at == 0 || !b"=!<>|+-*/%".contains(&b[at - 1]) => stack[top].ops += 1,
                b'.' | b'$' | b'@' | b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                    // A word; or a variable or format (`$if`, `@sh`), which
                    // nests nothing; or a path part (`.end`, `.`, `."k"`,
                    // `.[0]`), a level each in `.a.b.c...`.
                    if c == b'.' {
                        stack[top].ops += 1;
                    }
                    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                        i += 1;
                    }
                    match &code[at..i] {
                        "if" => stack.push(Frame::new(Open::If)),
                        "then" | "elif" | "else" if stack[top].open == Open::If => {
                            stack[top].next_part()
                        }
                        "end" if stack[top].open == Open::If => close(&mut stack, at)?,
                        "def" => {
                            // The rest of the term is under the definition.
                            stack[top].ops += 1;
                            stack.push(Frame::new(Open::Def));
                        }
                        w if NESTING_WORDS.contains(&w) => stack[top].ops += 1,
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        // Every open bracket is a level already.
        let top = stack.last().expect("the top frame stays");
        if stack.len() - 1 + top.depth() > limit {
            return Err(at);
        }
    }
    // Brackets left open (a syntax error jaq reports) still nest.
    while stack.len() > 1 {
        close(&mut stack, b.len())?;
    }
    Ok(stack[0].depth())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nesting(code: &str) -> usize {
        check(code, usize::MAX).unwrap()
    }

    #[test]
    fn brackets_operators_keywords_and_path_parts_count_separate_parts_do_not() {
        assert_eq!(nesting(".a"), 1);
        assert_eq!(nesting(".a.b[0][1]"), 5);
        assert_eq!(nesting("((.a))"), 3);
        assert_eq!(nesting(".a | .b | .c"), 5);
        assert_eq!(nesting("[1, 2, 3]"), 4);
        assert_eq!(nesting("-1"), 1);
        // An operator after a bracket is a level over it.
        assert_eq!(nesting("((1)) | ."), 4);
        // Object entries and arguments are parts of their own.
        assert_eq!(nesting("{a: 1, b: 2, c: (3 + 4)}"), 3);
        assert_eq!(nesting("sub(\"a\"; \"b\"; \"g\")"), 1);
        assert_eq!(
            nesting("if .a then .b | .c elif .d then .e else .f end | .g"),
            6
        );
        assert_eq!(nesting("def f(a; b): a | b; f(.; .) | ."), 6);
        assert_eq!(nesting("(def a: def b: 1; .|.; .|.)"), 11);
        // Variables, strings and comments nest nothing; `.end` is a key.
        assert_eq!(nesting(".end | $__loc__ | .if"), 4);
        assert_eq!(nesting("\"(((|||\" # ((((\n"), 0);
        assert_eq!(nesting("\"a\\(1 + \"b\\(2)\")\""), 3);
        // A stray closer closes nothing; an open bracket still counts.
        assert_eq!(nesting(")) (1)"), 1);
        assert_eq!(nesting("((1"), 2);
    }

    #[test]
    fn the_place_found_past_the_limit_is_reported() {
        assert_eq!(check("((((1))))", 3), Err(3));
        assert_eq!(check(".a|.a|.a", 1), Err(2));
        assert_eq!(check("((((1))))", 4), Ok(4));
        assert_eq!(check("(1)|(1)|(1)", 3), Ok(3));
        assert_eq!(check("(1)|(1)|(1)", 2), Err(7));
    }
}
