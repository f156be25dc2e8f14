//! The full-text index of room messages: one document per searchable event (its body, or the
//! room name or topic it sets), addressed by the event's short id so that an edit or a
//! redaction replaces or removes it.
//!
//! The index knows nothing of rooms' permissions: it answers candidate events in order, and
//! the server keeps those the user may see. Each commit records the store's stream position it
//! reflects, so the indexer resumes exactly there after a crash.

mod tokens;

use std::{
    ops::Bound,
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};
use tantivy::{
    collector::{Count, TopDocs},
    query::{
        BooleanQuery, ConstScoreQuery, EnableScoring, FuzzyTermQuery, Occur, PhraseQuery,
        Query as TQuery, RangeQuery, TermQuery, TermSetQuery,
    },
    schema::{
        Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED, STRING,
    },
    DocAddress, Index, IndexReader, IndexWriter, Order as TOrder, ReloadPolicy, Searcher,
    TantivyDocument, Term,
};

pub use tokens::{matched_words, query_parts, terms, QueryPart};

/// Bump when the schema or the tokenizer changes: an index made by another version is rebuilt.
const FORMAT_VERSION: u64 = 1;
const TOKENIZER: &str = "plexus_code";
/// The indexer's memory budget (tantivy's minimum is 15 MB per thread).
const WRITER_HEAP: usize = 48_000_000;
/// What a prefix-only match adds to the score: below any whole-word match.
const PREFIX_SCORE: f32 = 0.01;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("search index: {0}")]
    Directory(#[from] tantivy::directory::error::OpenDirectoryError),
    #[error("search index: {0}")]
    Io(#[from] std::io::Error),
    #[error("search index: {0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, SearchError>;

/// Which part of an event a document holds (the spec's `keys`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Body,
    Name,
    Topic,
}

impl Key {
    pub const ALL: [Key; 3] = [Key::Body, Key::Name, Key::Topic];

    pub fn as_str(self) -> &'static str {
        match self {
            Key::Body => "content.body",
            Key::Name => "content.name",
            Key::Topic => "content.topic",
        }
    }

    pub fn parse(s: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One searchable event.
#[derive(Clone, Debug)]
pub struct Doc {
    pub event: u64,
    pub room: u64,
    pub key: Key,
    pub text: String,
    /// Sort key for "recent": larger is newer.
    pub order: u64,
    /// The edit whose text this is, if edited (redacting that edit changes the document).
    pub edit: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    version: u64,
    /// The store's stream position up to which everything is indexed.
    position: u64,
}

/// What [`SearchIndex::open`] found.
#[derive(Debug)]
pub enum Opened {
    /// An index that can be resumed from this stream position.
    Existing(u64),
    /// A new empty index; why the old one (if any) was not used.
    Created { reason: String },
}

#[derive(Clone, Copy)]
struct Fields {
    event: Field,
    room: Field,
    key: Field,
    text: Field,
    order: Field,
    edit: Field,
}

fn schema() -> Schema {
    let mut b = Schema::builder();
    b.add_u64_field("event", INDEXED | FAST);
    b.add_u64_field("room", INDEXED | FAST);
    b.add_text_field("key", STRING);
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    b.add_text_field("text", text);
    b.add_u64_field("order", INDEXED | FAST);
    b.add_u64_field("edit", INDEXED | FAST);
    b.build()
}

fn fields(schema: &Schema) -> Result<Fields> {
    let f = |name: &str| {
        schema
            .get_field(name)
            .map_err(|_| SearchError::Invalid(format!("no field {name}")))
    };
    Ok(Fields {
        event: f("event")?,
        room: f("room")?,
        key: f("key")?,
        text: f("text")?,
        order: f("order")?,
        edit: f("edit")?,
    })
}

/// Ordering of results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Order {
    Rank,
    Recent,
}

/// Where a page of results continues from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cursor {
    /// By rank: skip this many candidates.
    Offset(usize),
    /// By recency: candidates with an order key below this.
    Below(u64),
}

pub struct Query<'a> {
    pub parts: &'a [QueryPart],
    pub rooms: &'a [u64],
    pub keys: &'a [Key],
    pub order: Order,
    pub after: Option<Cursor>,
    pub limit: usize,
    /// Also count every match (the answer's approximate `count`).
    pub count: bool,
}

#[derive(Clone, Debug)]
pub struct Hit {
    pub event: u64,
    pub room: u64,
    pub rank: f32,
    pub order: u64,
}

pub struct Page {
    pub hits: Vec<Hit>,
    pub count: Option<usize>,
    /// Where the next page starts; `None` when these were the last candidates.
    pub next: Option<Cursor>,
}

pub struct SearchIndex {
    fields: Fields,
    writer: Mutex<IndexWriter<TantivyDocument>>,
    reader: IndexReader,
    dir: PathBuf,
}

impl SearchIndex {
    /// Open the index in `dir`, or make a new one there when it is missing, unreadable or made
    /// by another version (the caller then indexes everything again).
    pub fn open(dir: &Path) -> Result<(SearchIndex, Opened)> {
        let reason = if !dir.join("meta.json").exists() {
            "no index yet".to_owned()
        } else {
            match Self::open_existing(dir) {
                Ok((idx, position)) => return Ok((idx, Opened::Existing(position))),
                Err(e) => format!("the index could not be used ({e})"),
            }
        };
        Ok((Self::create(dir)?, Opened::Created { reason }))
    }

    /// A new empty index in `dir`, replacing whatever was there.
    pub fn create(dir: &Path) -> Result<SearchIndex> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        let index = Index::create_in_dir(dir, schema())?;
        let idx = Self::from_index(index, dir)?;
        idx.commit(0)?;
        Ok(idx)
    }

    fn open_existing(dir: &Path) -> Result<(SearchIndex, u64)> {
        let index = Index::open_in_dir(dir)?;
        let payload: Payload = index
            .load_metas()?
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .ok_or_else(|| SearchError::Invalid("no progress recorded".into()))?;
        if payload.version != FORMAT_VERSION {
            return Err(SearchError::Invalid(format!(
                "format {} (this build writes {FORMAT_VERSION})",
                payload.version
            )));
        }
        if index.schema() != schema() {
            return Err(SearchError::Invalid("another schema".into()));
        }
        let idx = Self::from_index(index, dir)?;
        // Every segment must be readable, not just the metadata.
        let searcher = idx.reader.searcher();
        for seg in searcher.segment_readers() {
            seg.fast_fields().u64("event")?;
        }
        Ok((idx, payload.position))
    }

    fn from_index(index: Index, dir: &Path) -> Result<SearchIndex> {
        index
            .tokenizers()
            .register(TOKENIZER, tokens::CodeTokenizer);
        let fields = fields(&index.schema())?;
        let writer = index.writer_with_num_threads(1, WRITER_HEAP)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(SearchIndex {
            fields,
            writer: Mutex::new(writer),
            reader,
            dir: dir.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, IndexWriter<TantivyDocument>> {
        // A panic while indexing leaves nothing half-done that the next commit would keep.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replace what is indexed for `event` with `doc` (`None`: remove it). Seen by searches
    /// after the next [`Self::commit`].
    pub fn put(&self, event: u64, doc: Option<Doc>) -> Result<()> {
        let f = self.fields;
        let w = self.writer();
        w.delete_term(Term::from_field_u64(f.event, event));
        if let Some(d) = doc {
            let mut td = TantivyDocument::default();
            td.add_u64(f.event, d.event);
            td.add_u64(f.room, d.room);
            td.add_text(f.key, d.key.as_str());
            td.add_text(f.text, &d.text);
            td.add_u64(f.order, d.order);
            if let Some(e) = d.edit {
                td.add_u64(f.edit, e);
            }
            w.add_document(td)?;
        }
        Ok(())
    }

    /// Make everything put so far durable and searchable, recording with it the stream
    /// `position` it reflects.
    pub fn commit(&self, position: u64) -> Result<()> {
        let payload = serde_json::to_string(&Payload {
            version: FORMAT_VERSION,
            position,
        })
        .map_err(|e| SearchError::Invalid(e.to_string()))?;
        {
            let mut w = self.writer();
            let mut prepared = w.prepare_commit()?;
            prepared.set_payload(&payload);
            prepared.commit()?;
        }
        self.reader.reload()?;
        Ok(())
    }

    /// The events whose indexed text is that of the edit `edit` (as of the last commit).
    pub fn edited_by(&self, edit: u64) -> Result<Vec<u64>> {
        let searcher = self.reader.searcher();
        let query = TermQuery::new(
            Term::from_field_u64(self.fields.edit, edit),
            IndexRecordOption::Basic,
        );
        let top = searcher.search(&query, &TopDocs::with_limit(16).order_by_score())?;
        top.into_iter()
            .map(|(_, addr)| {
                let ff = searcher.segment_reader(addr.segment_ord).fast_fields();
                Ok(ff.u64("event")?.first(addr.doc_id).unwrap_or(0))
            })
            .collect()
    }

    /// Remove every document (before indexing everything again), at position 0.
    pub fn clear(&self) -> Result<()> {
        self.writer().delete_all_documents()?;
        self.commit(0)
    }

    /// Documents searchable now.
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Candidates for a query, best or newest first; at most `limit`.
    pub fn search(&self, q: &Query) -> Result<Page> {
        let f = self.fields;
        let searcher = self.reader.searcher();
        let Some(text) = text_query(f.text, q.parts) else {
            return Ok(Page {
                hits: vec![],
                count: q.count.then_some(0),
                next: None,
            });
        };
        let filter = |query: Box<dyn TQuery>| -> (Occur, Box<dyn TQuery>) {
            (Occur::Must, Box::new(ConstScoreQuery::new(query, 0.0)))
        };
        let mut clauses: Vec<(Occur, Box<dyn TQuery>)> = vec![(Occur::Must, text)];
        clauses.push(filter(Box::new(TermSetQuery::new(
            q.rooms.iter().map(|r| Term::from_field_u64(f.room, *r)),
        ))));
        if q.keys.len() < Key::ALL.len() {
            clauses.push(filter(Box::new(TermSetQuery::new(
                q.keys
                    .iter()
                    .map(|k| Term::from_field_text(f.key, k.as_str())),
            ))));
        }
        // Counted without the page's cursor: the count is of all matches.
        let counted = BooleanQuery::new(clauses);
        let query = match q.after {
            Some(Cursor::Below(below)) => BooleanQuery::new(vec![
                (Occur::Must, Box::new(counted.clone()) as Box<dyn TQuery>),
                filter(Box::new(RangeQuery::new(
                    Bound::Unbounded,
                    Bound::Excluded(Term::from_field_u64(f.order, below)),
                ))),
            ]),
            _ => counted.clone(),
        };
        let limit = q.limit.max(1);
        let (addresses, next): (Vec<(Option<f32>, DocAddress)>, Option<Cursor>) = match q.order {
            Order::Rank => {
                let offset = match q.after {
                    Some(Cursor::Offset(n)) => n,
                    _ => 0,
                };
                let top = searcher.search(
                    &query,
                    &TopDocs::with_limit(limit)
                        .and_offset(offset)
                        .order_by_score(),
                )?;
                let next = (top.len() == limit).then_some(Cursor::Offset(offset + top.len()));
                (top.into_iter().map(|(s, a)| (Some(s), a)).collect(), next)
            }
            Order::Recent => {
                let top = searcher.search(
                    &query,
                    &TopDocs::with_limit(limit).order_by_fast_field::<u64>("order", TOrder::Desc),
                )?;
                let next = if top.len() == limit {
                    top.last().and_then(|(o, _)| *o).map(Cursor::Below)
                } else {
                    None
                };
                (top.into_iter().map(|(_, a)| (None, a)).collect(), next)
            }
        };
        let hits = self.hits(&searcher, &query, addresses)?;
        let count = if q.count {
            Some(searcher.search(&counted, &Count)?)
        } else {
            None
        };
        Ok(Page { hits, count, next })
    }

    /// Read the hits' ids, and score those that were not ranked.
    fn hits(
        &self,
        searcher: &Searcher,
        query: &BooleanQuery,
        addresses: Vec<(Option<f32>, DocAddress)>,
    ) -> Result<Vec<Hit>> {
        let mut weight = None;
        let mut out = Vec::with_capacity(addresses.len());
        for (score, addr) in addresses {
            let seg = searcher.segment_reader(addr.segment_ord);
            let ff = seg.fast_fields();
            let value =
                |name: &str| -> Result<u64> { Ok(ff.u64(name)?.first(addr.doc_id).unwrap_or(0)) };
            let rank = match score {
                Some(s) => s,
                None => {
                    if weight.is_none() {
                        weight =
                            Some(query.weight(EnableScoring::enabled_from_searcher(searcher))?);
                    }
                    match &weight {
                        Some(w) => w.explain(seg, addr.doc_id)?.value(),
                        None => 0.0,
                    }
                }
            };
            out.push(Hit {
                event: value("event")?,
                room: value("room")?,
                rank,
                order: value("order")?,
            });
        }
        Ok(out)
    }
}

/// Every part must match; `None` when the search term has nothing to search for. A single
/// word also matches as a prefix (`sche` finds "schema", as Synapse users are used to), with
/// whole-word matches ranked above.
fn text_query(field: Field, parts: &[QueryPart]) -> Option<Box<dyn TQuery>> {
    let term = |t: &str| -> Box<dyn TQuery> {
        Box::new(TermQuery::new(
            Term::from_field_text(field, t),
            IndexRecordOption::WithFreqs,
        ))
    };
    let word = |t: &str| -> Box<dyn TQuery> {
        if !tokens::prefix_searchable(t) {
            return term(t);
        }
        let prefix = FuzzyTermQuery::new_prefix(Term::from_field_text(field, t), 0, true);
        Box::new(BooleanQuery::new(vec![
            (Occur::Should, term(t)),
            (
                Occur::Should,
                Box::new(ConstScoreQuery::new(Box::new(prefix), PREFIX_SCORE)),
            ),
        ]))
    };
    let clauses: Vec<(Occur, Box<dyn TQuery>)> = parts
        .iter()
        .map(|p| {
            let q: Box<dyn TQuery> = match p {
                QueryPart::Term(t) => word(t),
                QueryPart::Phrase { terms, or_joined } => {
                    let phrase: Box<dyn TQuery> = Box::new(PhraseQuery::new(
                        terms
                            .iter()
                            .map(|t| Term::from_field_text(field, t))
                            .collect(),
                    ));
                    match or_joined {
                        Some(j) => Box::new(BooleanQuery::new(vec![
                            (Occur::Should, phrase),
                            (Occur::Should, term(j)),
                        ])),
                        None => phrase,
                    }
                }
            };
            (Occur::Must, q)
        })
        .collect();
    (!clauses.is_empty()).then(|| Box::new(BooleanQuery::new(clauses)) as Box<dyn TQuery>)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(event: u64, room: u64, text: &str) -> Doc {
        Doc {
            event,
            room,
            key: Key::Body,
            text: text.into(),
            order: event,
            edit: None,
        }
    }

    fn find(idx: &SearchIndex, term: &str, order: Order) -> Vec<u64> {
        let parts = query_parts(term);
        let page = idx
            .search(&Query {
                parts: &parts,
                rooms: &[1, 2],
                keys: &Key::ALL,
                order,
                after: None,
                limit: 10,
                count: true,
            })
            .unwrap();
        page.hits.iter().map(|h| h.event).collect()
    }

    #[test]
    fn put_replace_remove_and_resume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idx");
        let (idx, opened) = SearchIndex::open(&path).unwrap();
        assert!(matches!(opened, Opened::Created { .. }));
        idx.put(1, Some(doc(1, 1, "we decided the schema")))
            .unwrap();
        idx.put(
            2,
            Some(doc(2, 1, "call parseJsonBody in src/http/body_parser.rs")),
        )
        .unwrap();
        idx.put(3, Some(doc(3, 9, "schema in a room we may not search")))
            .unwrap();
        idx.commit(7).unwrap();
        assert_eq!(find(&idx, "decide schema", Order::Rank), [1]);
        assert_eq!(find(&idx, "parse_json_body", Order::Rank), [2]);
        assert_eq!(find(&idx, "body_parser.rs", Order::Recent), [2]);
        assert_eq!(find(&idx, "\"decided the\"", Order::Rank), [1]);
        // A word is also a prefix; whole words rank first; short words are not prefixes.
        idx.put(4, Some(doc(4, 2, "schematic drawings"))).unwrap();
        idx.commit(8).unwrap();
        assert_eq!(find(&idx, "schema", Order::Rank), [1, 4]);
        let mut both = find(&idx, "sche", Order::Rank);
        both.sort_unstable();
        assert_eq!(both, [1, 4]);
        assert_eq!(find(&idx, "bod", Order::Rank), [2]);
        assert!(find(&idx, "sc", Order::Rank).is_empty());
        assert!(find(&idx, "\"the decided\"", Order::Rank).is_empty());

        // An edit replaces the text; a redaction removes it.
        let mut edited = doc(1, 1, "we chose the format");
        edited.edit = Some(5);
        idx.put(1, Some(edited)).unwrap();
        idx.put(2, None).unwrap();
        idx.commit(9).unwrap();
        assert_eq!(find(&idx, "schema", Order::Rank), [4]);
        assert_eq!(find(&idx, "format", Order::Rank), [1]);
        assert!(find(&idx, "json", Order::Rank).is_empty());
        assert_eq!(idx.edited_by(5).unwrap(), [1]);
        assert!(idx.edited_by(1).unwrap().is_empty());
        drop(idx);

        let (idx, opened) = SearchIndex::open(&path).unwrap();
        match opened {
            Opened::Existing(p) => assert_eq!(p, 9),
            other => panic!("{other:?}"),
        }
        assert_eq!(idx.num_docs(), 3);
    }

    #[test]
    fn a_corrupt_index_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idx");
        let (idx, _) = SearchIndex::open(&path).unwrap();
        idx.put(1, Some(doc(1, 1, "hello"))).unwrap();
        idx.commit(0).unwrap();
        drop(idx);
        std::fs::write(path.join("meta.json"), b"{ not json").unwrap();
        let (idx, opened) = SearchIndex::open(&path).unwrap();
        assert!(matches!(opened, Opened::Created { .. }), "{opened:?}");
        assert_eq!(idx.num_docs(), 0);
    }

    #[test]
    fn recent_pages_follow_the_order_key_and_rank_pages_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (idx, _) = SearchIndex::open(&dir.path().join("idx")).unwrap();
        for e in 1..=25 {
            idx.put(e, Some(doc(e, 1, &format!("note number {e}"))))
                .unwrap();
        }
        idx.commit(0).unwrap();
        let parts = query_parts("note");
        for order in [Order::Recent, Order::Rank] {
            let mut after = None;
            let mut seen = vec![];
            loop {
                let page = idx
                    .search(&Query {
                        parts: &parts,
                        rooms: &[1],
                        keys: &[Key::Body],
                        order,
                        after,
                        limit: 10,
                        count: true,
                    })
                    .unwrap();
                assert_eq!(page.count, Some(25));
                seen.extend(page.hits.iter().map(|h| h.event));
                if order == Order::Recent {
                    assert!(page.hits.iter().all(|h| h.rank > 0.0));
                }
                match page.next {
                    Some(c) => after = Some(c),
                    None => break,
                }
            }
            let mut sorted = seen.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted, (1..=25).collect::<Vec<_>>(), "{order:?}");
            if order == Order::Recent {
                assert_eq!(seen[..3], [25, 24, 23]);
            }
        }
    }
}
