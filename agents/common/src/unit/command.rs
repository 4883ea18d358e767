//! Word splitting with systemd's quoting rules, and `ExecStart=`-style command lines with their
//! prefixes (systemd.service(5), "Command lines").

/// One word of a value, and whether it was written bare (no quotes, no escapes): only a bare `;`
/// separates commands, `\;` and `";"` are literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub bare: bool,
}

/// Splits a value into words the way systemd does for command lines, `Environment=` and other
/// list settings:
///
/// - words are separated by unquoted whitespace;
/// - `"…"` and `'…'` group text into one word; like systemd's implementation (and more lenient
///   than its manual), a quote may also start or end in the middle of a word: `--a="b c"` is the
///   single word `--a=b c`;
/// - C escapes work inside and outside quotes: `\a \b \f \n \r \t \v \s \\ \" \' \xHH \NNN`
///   (octal) `\uHHHH \UHHHHHHHH`; a backslash before any other punctuation or whitespace yields
///   that character; before any other letter or digit it is kept as it is (`\d` stays `\d`),
///   as systemd's relaxed unescaping does.
pub fn split_words(s: &str) -> Result<Vec<Word>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut word = String::new();
        let mut bare = true;
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match (c, quote) {
                ('\\', _) => {
                    bare = false;
                    unescape_one(&mut chars, &mut word)?;
                }
                (q @ ('"' | '\''), None) => {
                    bare = false;
                    quote = Some(q);
                }
                (q, Some(open)) if q == open => quote = None,
                (c, None) if c.is_whitespace() => break,
                (c, _) => word.push(c),
            }
        }
        if let Some(q) = quote {
            return Err(format!(
                "unterminated {q} quote; close it or escape it as \\{q}"
            ));
        }
        out.push(Word { text: word, bare });
    }
}

/// Handles what follows a backslash.
fn unescape_one(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    word: &mut String,
) -> Result<(), String> {
    let Some(c) = chars.next() else {
        return Err("value ends with a lone backslash; write \\\\ for a backslash".into());
    };
    let simple = match c {
        'a' => Some('\u{7}'),
        'b' => Some('\u{8}'),
        'f' => Some('\u{c}'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\u{b}'),
        's' => Some(' '),
        _ => None,
    };
    if let Some(s) = simple {
        word.push(s);
        return Ok(());
    }
    let (radix, digits) = match c {
        'x' => (16, 2),
        'u' => (16, 4),
        'U' => (16, 8),
        '0'..='7' => (8, 3),
        c if c.is_ascii_alphanumeric() => {
            word.push('\\');
            word.push(c);
            return Ok(());
        }
        c => {
            word.push(c);
            return Ok(());
        }
    };
    let mut code: u32 = 0;
    let mut taken = 0;
    if radix == 8 {
        code = c.to_digit(8).unwrap_or(0);
        taken = 1;
    }
    while taken < digits {
        let d = chars
            .next()
            .and_then(|d| d.to_digit(radix))
            .ok_or_else(|| format!("escape \\{c} needs {digits} digits (base {radix})"))?;
        code = code.saturating_mul(radix).saturating_add(d);
        taken += 1;
    }
    match char::from_u32(code) {
        Some('\0') => Err("escape yields a NUL character, which arguments cannot hold".into()),
        Some(ch) => {
            word.push(ch);
            Ok(())
        }
        None => Err(format!(
            "escape \\{c} yields an invalid character {code:#x}"
        )),
    }
}

/// How much privilege a command keeps (`+`, `!`, `!!` prefixes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Privileges {
    /// User=, Group= and sandboxing apply.
    #[default]
    Normal,
    /// `+`: run with full privileges; User= and sandboxing are ignored.
    Full,
    /// `!`: User=/Group= are not applied (the program drops privileges itself).
    NoSetuid,
    /// `!!`: like `!`, but only where ambient capabilities are unsupported.
    NoSetuidWithoutAmbient,
}

/// One command of an `Exec*=` setting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Command {
    /// The program (an absolute path) followed by its arguments.
    pub argv: Vec<String>,
    /// `@` prefix: the name passed as `argv[0]` instead of the program path.
    pub argv0: Option<String>,
    /// `-` prefix: a failing exit status is recorded but treated as success.
    pub ignore_failure: bool,
    /// `:` prefix: `$VAR` / `${VAR}` are not substituted.
    pub no_env_expansion: bool,
    pub privileges: Privileges,
}

impl Command {
    /// The program to execute.
    pub fn program(&self) -> &str {
        self.argv.first().map_or("", String::as_str)
    }

    /// The arguments as the process sees them, `argv[0]` first, with `$VAR` and `${VAR}` replaced
    /// from `env` (unless the `:` prefix was given). `${VAR}` keeps its word, a word that is
    /// exactly `$VAR` is split at whitespace (systemd's rules); unknown variables are empty.
    pub fn expand_env(&self, env: &[(String, String)]) -> Vec<String> {
        let lookup = |name: &str| {
            env.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map_or("", |(_, v)| v.as_str())
        };
        let mut out = Vec::with_capacity(self.argv.len());
        for (i, arg) in self.argv.iter().enumerate() {
            let arg = if i == 0 {
                self.argv0.as_ref().unwrap_or(arg)
            } else {
                arg
            };
            if self.no_env_expansion || i == 0 {
                out.push(arg.clone());
                continue;
            }
            if let Some(name) = arg.strip_prefix('$').filter(|n| is_env_name(n)) {
                out.extend(lookup(name).split_whitespace().map(String::from));
                continue;
            }
            out.push(substitute_braced(arg, &lookup));
        }
        out
    }
}

/// Replaces each `${NAME}` in `s`; `$$` is a literal `$`.
fn substitute_braced<'a>(s: &str, lookup: &dyn Fn(&str) -> &'a str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after
            .strip_prefix('{')
            .and_then(|b| b.split_once('}'))
            .filter(|(n, _)| is_env_name(n))
        {
            out.push_str(lookup(name));
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A valid environment variable name: letters, digits and `_`, not starting with a digit.
pub fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parses an `Exec*=` value: one or more commands separated by bare `;` words, each with
/// optional prefixes (`@ - : + ! !!`, any order, each once) before an absolute program path.
pub fn parse_command_line(value: &str) -> Result<Vec<Command>, String> {
    parse_command_line_with(value, &mut |w| Ok(w))
}

/// [`parse_command_line`] with `resolve` applied to each word after splitting and unquoting
/// (how systemd expands `%` specifiers, so an expansion never splits or joins words).
pub fn parse_command_line_with(
    value: &str,
    resolve: &mut dyn FnMut(String) -> Result<String, String>,
) -> Result<Vec<Command>, String> {
    let words = split_words(value)?
        .into_iter()
        .map(|w| {
            Ok(Word {
                text: resolve(w.text)?,
                bare: w.bare,
            })
        })
        .collect::<Result<Vec<Word>, String>>()?;
    let mut out = Vec::new();
    for group in words.split(|w| w.bare && w.text == ";") {
        let Some((first, rest)) = group.split_first() else {
            continue;
        };
        let mut cmd = Command::default();
        let mut path = first.text.as_str();
        let mut seen = String::new();
        loop {
            let (flag, tail) = if let Some(t) = path.strip_prefix("!!") {
                ("!!", t)
            } else if let Some(t) = path.strip_prefix(['@', '-', ':', '+', '!']) {
                (&path[..1], t)
            } else {
                break;
            };
            if seen.split(' ').any(|s| s == flag) {
                return Err(format!("prefix {flag} given twice in {:?}", first.text));
            }
            match flag {
                "@" => cmd.argv0 = Some(String::new()),
                "-" => cmd.ignore_failure = true,
                ":" => cmd.no_env_expansion = true,
                p => {
                    if cmd.privileges != Privileges::Normal {
                        return Err(format!(
                            "prefixes +, ! and !! exclude each other; {:?} has more than one",
                            first.text
                        ));
                    }
                    cmd.privileges = match p {
                        "+" => Privileges::Full,
                        "!" => Privileges::NoSetuid,
                        _ => Privileges::NoSetuidWithoutAmbient,
                    };
                }
            }
            seen.push_str(flag);
            seen.push(' ');
            path = tail;
        }
        if path.is_empty() {
            return Err(format!(
                "command {:?} names no program after its prefixes",
                first.text
            ));
        }
        if !path.starts_with('/') {
            return Err(format!(
                "program {path:?} must be an absolute path, e.g. /usr/bin/{path}"
            ));
        }
        let mut args = rest.iter().map(|w| w.text.clone());
        if cmd.argv0.is_some() {
            cmd.argv0 = Some(args.next().ok_or_else(|| {
                format!("prefix @ needs the argv[0] word after {path}, e.g. @{path} name")
            })?);
        }
        cmd.argv = std::iter::once(path.to_string()).chain(args).collect();
        out.push(cmd);
    }
    if out.is_empty() {
        return Err("names no command".into());
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        split_words(s)
            .unwrap()
            .into_iter()
            .map(|w| w.text)
            .collect()
    }

    #[test]
    fn quoting_and_escapes() {
        for (input, want) in [
            ("", vec![]),
            ("   ", vec![]),
            (
                "  /a  b\\ c 'd e' \"f\\\"g\"",
                vec!["/a", "b c", "d e", "f\"g"],
            ),
            ("'it''s'", vec!["its"]),
            ("\"a 'b' c\" 'x \"y\"'", vec!["a 'b' c", "x \"y\""]),
            ("--opt=\"a b\" c", vec!["--opt=a b", "c"]),
            ("\"\" x", vec!["", "x"]),
            ("a\\tb \\n \\s", vec!["a\tb", "\n", " "]),
            ("\\x41\\101\\u00e9\\U0001F600", vec!["AAé😀"]),
            ("\\$HOME \\; \\\\", vec!["$HOME", ";", "\\"]),
            ("grep '\\d+'", vec!["grep", "\\d+"]),
            ("tab\tsep\nnl", vec!["tab", "sep", "nl"]),
        ] {
            assert_eq!(words(input), want, "{input:?}");
        }
        for (input, needle) in [
            ("/a \"open", "unterminated \""),
            ("/a 'open", "unterminated '"),
            ("/a \\", "lone backslash"),
            ("\\x4", "needs 2 digits"),
            ("\\xzz", "needs 2 digits"),
            ("\\x00", "NUL"),
            ("\\UFFFFFFFF", "invalid character"),
        ] {
            let e = split_words(input).unwrap_err();
            assert!(e.contains(needle), "{input:?}: {e}");
        }
    }

    #[test]
    fn bare_semicolons_separate_commands() {
        let cmds = parse_command_line("/bin/a 1 ; /bin/b \\; \";\" ;").unwrap();
        assert_eq!(cmds.len(), 2);
        assert_eq!(cmds[0].argv, ["/bin/a", "1"]);
        assert_eq!(cmds[1].argv, ["/bin/b", ";", ";"]);
    }

    #[test]
    fn prefixes() {
        let c = &parse_command_line("-@/bin/sh mysh -c true").unwrap()[0];
        assert!(c.ignore_failure);
        assert_eq!(c.argv0.as_deref(), Some("mysh"));
        assert_eq!(c.argv, ["/bin/sh", "-c", "true"]);
        assert_eq!(c.program(), "/bin/sh");

        for (input, privileges) in [
            ("/bin/x", Privileges::Normal),
            ("+/bin/x", Privileges::Full),
            ("!/bin/x", Privileges::NoSetuid),
            ("-!!/bin/x", Privileges::NoSetuidWithoutAmbient),
            ("!!-/bin/x", Privileges::NoSetuidWithoutAmbient),
        ] {
            assert_eq!(
                parse_command_line(input).unwrap()[0].privileges,
                privileges,
                "{input}"
            );
        }
        let c = &parse_command_line(":-/bin/x").unwrap()[0];
        assert!(c.no_env_expansion && c.ignore_failure);

        for (input, needle) in [
            ("--/bin/x", "twice"),
            ("+!/bin/x", "exclude each other"),
            ("-", "no program"),
            ("-@", "no program"),
            ("@/bin/x", "argv[0]"),
            ("bin/x", "absolute path"),
            ("-sh -c x", "absolute path"),
            ("", "no command"),
            (" ; ", "no command"),
        ] {
            let e = parse_command_line(input).unwrap_err();
            assert!(e.contains(needle), "{input:?}: {e}");
        }
    }

    #[test]
    fn environment_substitution() {
        let env: Vec<(String, String)> = [("A", "one two"), ("B", "x"), ("A", "1 2 3")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let c =
            &parse_command_line("@/bin/p name $A ${A} pre${B}post $$A ${NOPE}. $ $1").unwrap()[0];
        assert_eq!(
            c.expand_env(&env),
            ["name", "1", "2", "3", "1 2 3", "prexpost", "$A", ".", "$", "$1"]
        );
        let c = &parse_command_line(":/bin/p $A").unwrap()[0];
        assert_eq!(c.expand_env(&env), ["/bin/p", "$A"]);
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("A_1"));
        assert!(is_env_name("_x"));
        assert!(!is_env_name("1A"));
        assert!(!is_env_name(""));
        assert!(!is_env_name("A-B"));
    }
}
