//! How text becomes terms, the same way for messages and for queries.
//!
//! Developers write prose and code in one message: "the bug is in `parseJsonBody` under
//! src/http/body_parser.rs". So text is cut into *segments* (runs of letters and digits: `_`,
//! `/`, `.`, `-` and the like separate them) and each segment into *subwords* at case changes
//! (`parseJsonBody` → parse, json, body; `HTTPServer` → http, server). Subwords are lower-cased
//! and English-stemmed (decided → decid, so "decide" finds it), and get one position each, so a
//! query word of several subwords (`parse_json_body`, `ParseJSONBody`, `body_parser.rs`) is a
//! phrase that matches any spelling of the same identifier. A segment of several subwords is
//! also kept whole (`hashmap` for `HashMap`), so a query that writes it as one word finds it.
//! Ideographs and kana are one subword each (those scripts do not separate words by spaces).

use std::borrow::Cow;

use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

/// Longer terms are not indexed (they are noise: base64, hashes, minified code).
const MAX_TERM_BYTES: usize = 64;

/// A segment's terms: its subwords, and the whole segment when it has several.
#[derive(Debug, PartialEq)]
pub struct Segment {
    pub subwords: Vec<String>,
    pub joined: Option<String>,
    /// Byte range of the segment in the analysed text.
    pub span: (usize, usize),
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // hiragana, katakana
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xF900..=0xFAFF    // compatibility ideographs
        | 0x20000..=0x2FFFF) // extensions B and on
}

/// Cut a run of letters and digits at case changes: lower or digit → upper, and before the
/// last capital of a run of capitals followed by a lower-case letter (`HTTPServer`).
fn split_case(seg: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = seg.char_indices().collect();
    let mut out = vec![];
    let mut start = 0;
    for i in 1..chars.len() {
        let (at, c) = chars[i];
        let prev = chars[i - 1].1;
        let cut = if is_cjk(c) || is_cjk(prev) {
            true
        } else if c.is_uppercase() {
            prev.is_lowercase()
                || prev.is_numeric()
                || (prev.is_uppercase() && chars.get(i + 1).is_some_and(|n| n.1.is_lowercase()))
        } else {
            false
        };
        if cut {
            out.push(&seg[start..at]);
            start = at;
        }
    }
    out.push(&seg[start..]);
    out
}

/// Lower-case and, for words of letters, reduce to the English stem.
fn normalise(word: &str, stemmer: &frostem::Stemmer) -> String {
    let lower = word.to_lowercase();
    if lower.chars().all(char::is_alphabetic) {
        match stemmer.stem(&lower) {
            Cow::Borrowed(s) => s.to_owned(),
            Cow::Owned(s) => s,
        }
    } else {
        lower
    }
}

fn stemmer() -> frostem::Stemmer {
    frostem::Stemmer::new(frostem::Algorithm::English)
}

/// The segments of `text`, in order.
pub fn segments(text: &str) -> Vec<Segment> {
    let stemmer = stemmer();
    let mut out = vec![];
    let mut start = None;
    let flush = |from: usize, to: usize, out: &mut Vec<Segment>| {
        let seg = &text[from..to];
        let parts = split_case(seg);
        let subwords: Vec<String> = parts
            .iter()
            .map(|p| normalise(p, &stemmer))
            .filter(|t| t.len() <= MAX_TERM_BYTES)
            .collect();
        if subwords.is_empty() {
            return;
        }
        let joined = (parts.len() > 1 && !parts.iter().any(|p| p.chars().any(is_cjk)))
            .then(|| normalise(seg, &stemmer))
            .filter(|j| j.len() <= MAX_TERM_BYTES);
        out.push(Segment {
            subwords,
            joined,
            span: (from, to),
        });
    };
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() {
            start.get_or_insert(i);
        } else if let Some(s) = start.take() {
            flush(s, i, &mut out);
        }
    }
    if let Some(s) = start {
        flush(s, text.len(), &mut out);
    }
    out
}

/// The terms of `text` as they are indexed, with their positions (for tests and tools).
pub fn terms(text: &str) -> Vec<(usize, String)> {
    let mut stream = CodeTokenizer.token_stream(text);
    let mut out = vec![];
    while stream.advance() {
        let t = stream.token();
        out.push((t.position, t.text.clone()));
    }
    out
}

/// The tantivy tokenizer over [`segments`].
#[derive(Clone, Default)]
pub struct CodeTokenizer;

pub struct CodeTokenStream {
    tokens: Vec<Token>,
    next: usize,
}

impl Tokenizer for CodeTokenizer {
    type TokenStream<'a> = CodeTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> CodeTokenStream {
        let mut tokens = vec![];
        let mut position = 0;
        for seg in segments(text) {
            let (from, to) = seg.span;
            let token = |position: usize, text: String| Token {
                offset_from: from,
                offset_to: to,
                position,
                text,
                position_length: 1,
            };
            if let Some(j) = seg.joined {
                tokens.push(token(position, j));
            }
            for w in seg.subwords {
                tokens.push(token(position, w));
                position += 1;
            }
        }
        CodeTokenStream { tokens, next: 0 }
    }
}

impl TokenStream for CodeTokenStream {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

/// One part of a query: every part must match.
#[derive(Debug, PartialEq)]
pub enum QueryPart {
    /// One term.
    Term(String),
    /// Consecutive terms; `or_joined` also accepts the identifier written as one word.
    Phrase {
        terms: Vec<String>,
        or_joined: Option<String>,
    },
}

/// Parse a search term: words, and `"quoted phrases"`; each becomes one part.
pub fn query_parts(search_term: &str) -> Vec<QueryPart> {
    let mut out = vec![];
    for (i, chunk) in search_term.split('"').enumerate() {
        let quoted = i % 2 == 1;
        let pieces: Vec<&str> = if quoted {
            vec![chunk]
        } else {
            chunk.split_whitespace().collect()
        };
        for piece in pieces {
            let segs = segments(piece);
            let single = segs.len() == 1;
            let mut terms: Vec<String> = vec![];
            let mut joined = None;
            for seg in segs {
                if single {
                    joined = seg.joined;
                }
                terms.extend(seg.subwords);
            }
            match terms.len() {
                0 => {}
                1 => out.extend(terms.pop().map(QueryPart::Term)),
                _ => out.push(QueryPart::Phrase {
                    terms,
                    or_joined: joined,
                }),
            }
        }
    }
    out
}

/// Whether a query term also matches longer terms that start with it (long enough that it
/// does not match half the dictionary).
pub fn prefix_searchable(term: &str) -> bool {
    term.chars().count() >= 3
}

/// The words of `text` that a query with these parts matched, as written in the text (for the
/// answer's `highlights`: what a client should mark, stemming included).
pub fn matched_words(parts: &[QueryPart], text: &str) -> Vec<String> {
    let prefixes: Vec<&str> = parts
        .iter()
        .filter_map(|p| match p {
            QueryPart::Term(t) if prefix_searchable(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    let wanted: std::collections::HashSet<&str> = parts
        .iter()
        .flat_map(|p| match p {
            QueryPart::Term(t) => vec![t.as_str()],
            QueryPart::Phrase { terms, or_joined } => terms
                .iter()
                .map(String::as_str)
                .chain(or_joined.as_deref())
                .collect(),
        })
        .collect();
    let stemmer = stemmer();
    let mut out = vec![];
    for seg in segments(text) {
        let raw = &text[seg.span.0..seg.span.1];
        if seg.joined.as_deref().is_some_and(|j| wanted.contains(j)) {
            out.push(raw.to_owned());
            continue;
        }
        for part in split_case(raw) {
            let t = normalise(part, &stemmer);
            if wanted.contains(t.as_str()) || prefixes.iter().any(|p| t.starts_with(p)) {
                out.push(part.to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        terms(text).into_iter().map(|(_, t)| t).collect()
    }

    #[test]
    fn prose_is_lower_cased_and_stemmed() {
        assert_eq!(
            words("We decided the Schemas!"),
            ["we", "decid", "the", "schema"]
        );
    }

    #[test]
    fn identifiers_split_into_subwords_and_keep_the_whole() {
        assert_eq!(
            words("parseJsonBody"),
            ["parsejsonbodi", "pars", "json", "bodi"]
        );
        assert_eq!(words("parse_json_body"), ["pars", "json", "bodi"]);
        assert_eq!(words("HTTPServer"), ["httpserver", "http", "server"]);
        assert_eq!(words("utf8Decoder"), ["utf8decoder", "utf8", "decod"]);
    }

    #[test]
    fn paths_and_punctuation_separate_segments() {
        assert_eq!(
            words("src/http/body_parser.rs"),
            ["src", "http", "bodi", "parser", "rs"]
        );
        let positions: Vec<usize> = terms("a::b-c").into_iter().map(|(p, _)| p).collect();
        assert_eq!(positions, [0, 1, 2]);
    }

    #[test]
    fn ideographs_are_one_term_each() {
        assert_eq!(words("数据库schema"), ["数", "据", "库", "schema"]);
    }

    #[test]
    fn long_terms_are_dropped() {
        let blob = "a".repeat(100);
        assert_eq!(words(&format!("x {blob} y")), ["x", "y"]);
    }

    #[test]
    fn any_spelling_of_an_identifier_is_one_phrase() {
        let phrase = |q: &str| match query_parts(q).pop() {
            Some(QueryPart::Phrase { terms, .. }) => terms,
            other => panic!("{other:?}"),
        };
        assert_eq!(phrase("parse_json_body"), phrase("ParseJSONBody"));
        assert_eq!(phrase("parseJsonBody"), phrase("parse-json-body"));
        assert_eq!(
            query_parts("HashMap"),
            [QueryPart::Phrase {
                terms: vec!["hash".into(), "map".into()],
                or_joined: Some("hashmap".into())
            }]
        );
    }

    #[test]
    fn quotes_make_one_phrase_and_noise_is_ignored() {
        assert_eq!(
            query_parts(r#"schema "we decided" !!"#),
            [
                QueryPart::Term("schema".into()),
                QueryPart::Phrase {
                    terms: vec!["we".into(), "decid".into()],
                    or_joined: None
                }
            ]
        );
        assert!(query_parts("  ?? ").is_empty());
    }

    #[test]
    fn highlights_are_the_words_as_written() {
        let parts = query_parts("decide parse_json_body");
        assert_eq!(
            matched_words(&parts, "We Decided: call parseJsonBody first"),
            ["Decided", "parse", "Json", "Body"]
        );
        assert_eq!(
            matched_words(&query_parts("hashmap"), "a HashMap here"),
            ["HashMap"]
        );
        assert_eq!(
            matched_words(&query_parts("sche"), "the Schemas, a scheme"),
            ["Schemas", "scheme"]
        );
    }
}
