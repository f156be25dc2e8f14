//! `!command args` messages, the way users drive the bridges from a room.

use serde_json::Value;

/// A command: `!pr open "fix the bug" 12` is name `pr`, args `open`, `fix the bug`, `12`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Lower-cased, so `!PR` and `!pr` are the same command.
    pub name: String,
    /// Whitespace-separated; a double-quoted stretch is one argument (quotes removed, `\"` and
    /// `\\` escaped inside it). An unclosed quote runs to the end.
    pub args: Vec<String>,
    /// Everything after the name, trimmed, as typed: for commands that take free text.
    pub rest: String,
}

impl Command {
    /// Parse a message body. `None` unless it starts with `prefix` directly followed by a name.
    pub fn parse(body: &str, prefix: &str) -> Option<Command> {
        if prefix.is_empty() {
            return None;
        }
        let after = body.trim_start().strip_prefix(prefix)?;
        let name_len = after.find(char::is_whitespace).unwrap_or(after.len());
        let (name, rest) = after.split_at(name_len);
        if name.is_empty() {
            return None;
        }
        let rest = rest.trim();
        Some(Command {
            name: name.to_lowercase(),
            args: split_args(rest),
            rest: rest.to_owned(),
        })
    }

    /// The command in a room event, if it is one a user typed: an `m.room.message` of msgtype
    /// `m.text`. `m.notice` is skipped, so bots never answer bots (and never loop on each
    /// other), and so are edits (`m.replace`), so editing a command does not run it again.
    pub fn from_event(event: &Value, prefix: &str) -> Option<Command> {
        if event.get("type").and_then(Value::as_str) != Some("m.room.message") {
            return None;
        }
        let content = event.get("content")?;
        if content.get("msgtype").and_then(Value::as_str) != Some("m.text") {
            return None;
        }
        let relation = content
            .get("m.relates_to")
            .and_then(|r| r.get("rel_type"))
            .and_then(Value::as_str);
        if relation == Some("m.replace") {
            return None;
        }
        Command::parse(content.get("body")?.as_str()?, prefix)
    }

    /// Argument `i`, if given.
    pub fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).map(String::as_str)
    }
}

/// Shell-like splitting: whitespace separates, double quotes group.
fn split_args(s: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    // Whether `cur` is an argument even if empty (`""`).
    let mut started = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                started = true;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some(e @ ('"' | '\\')) => cur.push(e),
                            Some(other) => {
                                cur.push('\\');
                                cur.push(other);
                            }
                            None => cur.push('\\'),
                        },
                        _ => cur.push(q),
                    }
                }
            }
            c if c.is_whitespace() => {
                if started {
                    args.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            _ => {
                started = true;
                cur.push(c);
            }
        }
    }
    if started {
        args.push(cur);
    }
    args
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn args(body: &str) -> Vec<String> {
        Command::parse(body, "!").unwrap().args
    }

    #[test]
    fn name_is_lower_cased_and_args_split_on_whitespace() {
        let c = Command::parse("  !PR   open\t12 ", "!").unwrap();
        assert_eq!(c.name, "pr");
        assert_eq!(c.args, vec!["open", "12"]);
        assert_eq!(c.rest, "open\t12");
        assert_eq!(c.arg(1), Some("12"));
        assert_eq!(c.arg(2), None);
        let c = Command::parse("!help", "!").unwrap();
        assert_eq!(c.name, "help");
        assert!(c.args.is_empty());
        assert_eq!(c.rest, "");
    }

    #[test]
    fn double_quotes_group() {
        assert_eq!(
            args(r#"!pr open "fix the bug" 12"#),
            vec!["open", "fix the bug", "12"]
        );
        assert_eq!(args(r#"!x "" a"#), vec!["", "a"]);
        assert_eq!(args(r#"!x say"s it"s"#), vec!["says its"]);
        assert_eq!(args(r#"!x "a \"q\" \\ \n""#), vec![r#"a "q" \ \n"#]);
        assert_eq!(args(r#"!x "unclosed rest"#), vec!["unclosed rest"]);
        assert_eq!(args("!x é ü"), vec!["é", "ü"]);
    }

    #[test]
    fn other_text_is_not_a_command() {
        for body in [
            "hello",
            "",
            "!",
            "! pr",
            " ",
            "say !pr",
            "> <@a:hs> !pr\n\nok",
        ] {
            assert_eq!(Command::parse(body, "!"), None, "{body:?}");
        }
        assert_eq!(Command::parse("!pr", ""), None);
        assert_eq!(Command::parse("bot: go now", "bot: ").unwrap().name, "go");
        assert_eq!(Command::parse("!pr", "bot:"), None);
    }

    #[test]
    fn only_text_messages_typed_by_users_count() {
        let msg = |msgtype: &str, body: &str| {
            json!({"type": "m.room.message", "sender": "@a:hs",
                   "content": {"msgtype": msgtype, "body": body}})
        };
        assert_eq!(
            Command::from_event(&msg("m.text", "!echo hi there"), "!")
                .unwrap()
                .args,
            vec!["hi", "there"]
        );
        assert_eq!(Command::from_event(&msg("m.notice", "!echo hi"), "!"), None);
        assert_eq!(Command::from_event(&msg("m.emote", "!echo hi"), "!"), None);
        assert_eq!(Command::from_event(&msg("m.text", "echo hi"), "!"), None);
        let edit = json!({"type": "m.room.message", "content": {"msgtype": "m.text", "body": "* !echo",
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$e"}}});
        assert_eq!(Command::from_event(&edit, "*"), None);
        let state =
            json!({"type": "m.room.topic", "content": {"msgtype": "m.text", "body": "!echo"}});
        assert_eq!(Command::from_event(&state, "!"), None);
        let no_body = json!({"type": "m.room.message", "content": {"msgtype": "m.text"}});
        assert_eq!(Command::from_event(&no_body, "!"), None);
    }
}
