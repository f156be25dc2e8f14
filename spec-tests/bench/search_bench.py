#!/usr/bin/env python3
"""Full-text search benchmark: Plexus's POST /_matrix/client/v3/search against Synapse's.

    python3.11 -m venv target/bench-venv
    target/bench-venv/bin/pip install -r spec-tests/bench/requirements.txt
    target/bench-venv/bin/python spec-tests/bench/search_bench.py --sizes 100000,1000000 \\
        --plexus-bin target/release/plexus --synapse-dir target/synapse-search \\
        [--only plexus|synapse] [--queries 200] [--out target/search-bench/results.json]

Both servers run on loopback. The script prints one Markdown table per size (Plexus | Synapse)
and writes every figure, down to each query's latency and count, to --out as JSON. Runs of one
side merge into an existing --out file (same seed and query set), so `--only synapse` now and
`--only plexus` later give one table.

Corpus. N messages are generated from a fixed seed and cached as JSONL under target/search-bench/
(the smaller sizes use a prefix of the same list), so both servers index the same texts. 70 % are
prose: 5 to 25 words drawn Zipf-wise (s = 1) from a 30,000-word vocabulary (about 450 common
English words, then made-up words for the long tail). 30 % are code-ish: snake_case and
CamelCase identifiers, error names (`InvalidUtf8Error`), file paths (`src/http/body_parser.rs`,
sometimes the bare file name), line numbers, mixed with prose.

Queries. A fixed set (default 200, one fifth of each kind): a common word, a rare word (1 to 20
hits in the first 100,000 messages), two words, an identifier (`parse_json_body`,
`HttpClientBuilder`), a file name (`body_parser.rs`). No query is a stop word. Ten other queries
warm each server up first. Each query is one `POST /search` with
`{"search_categories":{"room_events":{"search_term": q, "order_by": "rank"}}}` (and again with
"recent"), sent one after another by one user who is in every room. Latency p50/p99 is over the
timed queries; `count` and the number of results are recorded per query.

Plexus. A fresh data dir; 8 users, 10 rooms, N messages sent through
`PUT /rooms/{id}/send/m.room.message/{txn}` with 32 requests in flight (the send rate is
reported; Plexus indexes as it persists). The index rate is that of
`plexus rebuild-search-index` on the stopped server (timed end to end; its own counts are
recorded too). Then the server is started again and queried.

Synapse (spec-tests/synapse/synapse.sh, on PostgreSQL as in production). Synapse persists about
70 events/s through its API, so only a base of real messages (--synapse-base, default 2,000,
the first texts of the list, same rooms and senders as for Plexus) is sent through the API; its
rate is reported as "send rate". The rest of the N messages go into Synapse's database directly:
  1. Synapse is stopped. For each remaining text, an `m.room.message` event is made from one of
     the real base events (cycled, so same room, sender, auth/prev events and state group): new
     body, new origin_server_ts, content hash recomputed, event id recomputed with Synapse's own
     code (Synapse refuses events whose stored JSON does not hash to their id). Signatures are
     the template's (not valid for the new content; nothing on the search path checks them).
     Rows go into `events`, `event_json` and `event_to_state_groups` with fresh
     stream_orderings (COPY; "prep" time, not counted as indexing).
  2. Indexing, timed: `INSERT INTO event_search (event_id, room_id, key, vector,
     stream_ordering, origin_server_ts) SELECT ..., to_tsvector('english', value), ...` from a
     staging table, the same row and tsvector that Synapse's `store_search_entries_txn` writes,
     in one statement with the table's indexes (GIN on vector, btrees) in place. This is the
     database-side cost of Synapse's indexing; in real use Synapse indexes inside event
     persistence, bounded by its send rate. `VACUUM ANALYZE event_search` (which also flushes
     the GIN pending list) is timed separately.
  3. Synapse is started again (empty caches) and queried through its API. Every search hit is a
     distinct event that Synapse loads, filters for visibility and serialises, as it would in a
     real database. Before timing, the script checks that common words find results.

Timed phases wait (up to --wait-idle seconds) while rustc/cargo run, since this machine has 2
cores; each phase records whether a compiler was running and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import hashlib
import itertools
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORK = REPO / "target" / "search-bench"
GEN_VERSION = 1
QUERY_BASIS = 100_000  # rare-word queries are chosen by their counts in this many messages

# ---------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------

ENGLISH = """the of and to a in is it you that he was for on are with as I his they be at one
have this from or had by not word but what some we can out other were all there when up use your
how said an each she which do their time if will way about many then them write would like so
these her long make thing see him two has look more day could go come did number sound no most
people my over know water than call first who may down side been now find any new work part take
get place made live where after back little only round man year came show every good me give our
under name very through just form sentence great think say help low line differ turn cause much
mean before move right boy old too same tell does set three want air well also play small end put
home read hand port large spell add even land here must big high such follow act why ask men
change went light kind off need house picture try us again animal point mother world near build
self earth father head stand own page should country found answer school grow study still learn
plant cover food sun four between state keep eye never last let thought city tree cross farm hard
start might story saw far sea draw left late run while press close night real life few north open
seem together next white children begin got walk example ease paper group always music those both
mark often letter until mile river car feet care second book carry took science eat room friend
began idea fish mountain stop once base hear horse cut sure watch color face wood main enough
plain girl usual young ready above ever red list though feel talk bird soon body dog family direct
pose leave song measure door product black short numeral class wind question happen complete ship
area half rock order fire south problem piece told knew pass since top whole king space heard best
hour better true during hundred five remember step early hold west ground interest reach fast verb
sing listen six table travel less morning ten simple several vowel toward war lay against pattern
slow center love person money serve appear road map rain rule govern pull cold notice voice unit
power town fine certain fly fall lead cry dark machine note wait plan figure star box noun field
rest correct able pound done beauty drive stood contain front teach week final gave green oh quick
develop ocean warm free minute strong special mind behind clear tail produce fact street inch
multiply nothing course stay wheel full force blue object decide surface deep moon island foot
system busy test record boat common gold possible plane stead dry wonder laugh thousand ago ran
check game shape equate hot miss brought heat snow tire bring yes distant fill east paint language
among""".split()
ENGLISH = list(dict.fromkeys(w.lower() for w in ENGLISH))

# PostgreSQL's english stop words (snowball english.stop): never used as queries.
PG_STOP = set("""i me my myself we our ours ourselves you your yours yourself yourselves he him
his himself she her hers herself it its itself they them their theirs themselves what which who
whom this that these those am is are was were be been being have has had having do does did doing
a an the and but if or because as until while of at by for with about against between into through
during before after above below to from up down in out on off over under again further then once
here there when where why how all any both each few more most other some such no nor not only own
same so than too very s t can will just don should now""".split())

TECH = """parse json body http request response event room state sync token user device key cache
index store query stream buffer socket config server client media upload federation auth session
timeline filter search batch queue worker handler router codec frame header payload schema
signature hash encode decode read write flush compact merge retry timeout limit count build load
fetch send resolve validate verify lookup member profile presence receipt typing push rule
notify backfill graph edge node limit page cursor offset shard segment writer reader pool lock
mutex channel task spawn join""".split()
TECH = list(dict.fromkeys(TECH))
DIRS = """http store sync federation search media auth crypto push client server util state room
config api net db""".split()
EXTS = ["rs"] * 6 + ["py", "ts", "go", "toml"]
ONSETS = "b c d f g k l m n p r s t v z br cr dr gl pl st tr sh ch th qu fl gr".split()
VOWELS = "a e i o u ai ea ou io".split()
CODAS = [""] * 4 + "n r s l m nd st x th".split()

VOCAB_SIZE = 30_000


def _zipf_cum(n: int, s: float) -> list[float]:
    acc, out = 0.0, []
    for r in range(1, n + 1):
        acc += 1.0 / r**s
        out.append(acc)
    return out


class Corpus:
    def __init__(self, seed: int):
        self.seed = seed
        rng = random.Random(f"vocab-{seed}")
        english = set(ENGLISH)
        made: list[str] = []
        seen: set[str] = set()
        while len(ENGLISH) + len(made) < VOCAB_SIZE:
            w = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(rng.randint(2, 3)))
            w += rng.choice(CODAS)
            if w in seen or w in english or w in PG_STOP:
                continue
            seen.add(w)
            made.append(w)
        self.words = ENGLISH + made
        self.word_cum = _zipf_cum(len(self.words), 1.0)

        def uniq(gen, n, first=()):
            out = list(dict.fromkeys(first))
            have = set(out)
            while len(out) < n:
                x = gen()
                if x not in have:
                    have.add(x)
                    out.append(x)
            return out

        def snake():
            return "_".join(rng.sample(TECH, rng.randint(2, 3)))

        def camel():
            return "".join(w.capitalize() for w in rng.sample(TECH, rng.randint(2, 3)))

        def path():
            return f"src/{rng.choice(DIRS)}/{'_'.join(rng.sample(TECH, 2))}.{rng.choice(EXTS)}"

        # The examples from the brief sit near the top of their lists, so they do occur.
        self.snake = uniq(snake, 3000, ["handle_sync_request", "load_room_state", "parse_json_body"])
        self.camel = uniq(camel, 1500, ["EventStore", "SyncHandler", "HttpClientBuilder"])
        self.errors = uniq(lambda: camel() + "Error", 300, ["InvalidUtf8Error", "TimeoutError"])
        self.paths = uniq(path, 800, ["src/store/event_log.rs", "src/http/body_parser.rs"])
        self.snake_cum = _zipf_cum(len(self.snake), 1.1)
        self.camel_cum = _zipf_cum(len(self.camel), 1.1)
        self.errors_cum = _zipf_cum(len(self.errors), 1.1)
        self.paths_cum = _zipf_cum(len(self.paths), 1.1)

    def messages(self, n: int):
        rng = random.Random(f"messages-{self.seed}")
        words, wcum = self.words, self.word_cum

        def prose(k: int) -> str:
            return " ".join(rng.choices(words, cum_weights=wcum, k=k)) if k > 0 else ""

        def pick(lst, cum):
            return rng.choices(lst, cum_weights=cum, k=1)[0]

        for _ in range(n):
            if rng.random() < 0.7:
                text = prose(rng.randint(5, 25))
                text = text[0].upper() + text[1:] + rng.choice([".", ".", ".", "?", "!"])
            else:
                sn = pick(self.snake, self.snake_cum)
                cm = pick(self.camel, self.camel_cum)
                er = pick(self.errors, self.errors_cum)
                pa = pick(self.paths, self.paths_cum)
                if rng.random() < 0.4:
                    pa = pa.rsplit("/", 1)[1]
                line = rng.randint(1, 2000)
                t = rng.randrange(6)
                if t == 0:
                    text = f"{prose(rng.randint(3, 8))} `{sn}` {prose(rng.randint(2, 10))}"
                elif t == 1:
                    text = f"error: {er} in {pa}:{line} {prose(rng.randint(2, 10))}"
                elif t == 2:
                    text = f"{pa}:{line}: {sn} returned {er}, {prose(rng.randint(1, 8))}"
                elif t == 3:
                    sn2 = pick(self.snake, self.snake_cum)
                    text = f"panicked at {pa}:{line}: called {cm}::{sn} with {sn2}"
                elif t == 4:
                    text = f"see {pa} where {sn} calls {cm} {prose(rng.randint(2, 8))}"
                else:
                    text = f"{cm}::{sn}() fails with {er} after {rng.randint(2, 9)} retries {prose(rng.randint(0, 6))}"
            yield text.strip()


def messages_file(seed: int, n: int) -> Path:
    """A JSONL file (one JSON string a line) with at least n messages, generated if needed."""
    WORK.mkdir(parents=True, exist_ok=True)
    pat = re.compile(rf"messages-v{GEN_VERSION}-seed{seed}-n(\d+)\.jsonl$")
    for p in sorted(WORK.iterdir()):
        m = pat.match(p.name)
        if m and int(m.group(1)) >= n:
            return p
    path = WORK / f"messages-v{GEN_VERSION}-seed{seed}-n{n}.jsonl"
    log(f"generating {n:,} messages into {path}")
    t0 = time.monotonic()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for text in Corpus(seed).messages(n):
            f.write(json.dumps(text, ensure_ascii=False) + "\n")
    tmp.rename(path)
    log(f"generated in {time.monotonic() - t0:.1f} s")
    return path


def read_messages(path: Path, n: int, start: int = 0) -> list[str]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in itertools.islice(f, start, n):
            out.append(json.loads(line))
    if len(out) != n - start:
        raise SystemExit(f"{path} has fewer than {n} messages")
    return out


# ---------------------------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------------------------

KINDS = ["common", "rare", "two_words", "identifier", "path"]


def build_queries(seed: int, total: int, msgs_path: Path) -> tuple[list[dict], list[dict]]:
    corpus = Corpus(seed)
    rng = random.Random(f"queries-{seed}")
    counts: collections.Counter[str] = collections.Counter()
    made_words = set(corpus.words[len(ENGLISH):])
    with open(msgs_path, encoding="utf-8") as f:
        for line in itertools.islice(f, QUERY_BASIS):
            for w in re.findall(r"[a-z]+", json.loads(line).lower()):
                if w in made_words:
                    counts[w] += 1
    per = {k: total // len(KINDS) for k in KINDS}
    per["common"] += total - sum(per.values())
    warm = 2  # warm-up queries per kind, disjoint from the timed ones

    def take(cands: list, n: int, first=()) -> list:
        cands = [c for c in dict.fromkeys(cands) if c not in first]
        picked = list(first) + rng.sample(cands, min(len(cands), n + warm - len(first)))
        return picked

    common_cands = [w for w in ENGLISH[15:300] if w not in PG_STOP and len(w) > 2]
    mid_cands = [w for w in ENGLISH[150:] if w not in PG_STOP and len(w) > 2]
    rare_cands = [w for w in corpus.words[2000:] if 1 <= counts[w] <= 20]
    pool = {
        "common": take(common_cands, per["common"]),
        "rare": take(rare_cands, per["rare"]),
        "two_words": [
            f"{a} {b}"
            for a, b in zip(
                take([w for w in common_cands if w not in mid_cands], per["two_words"]),
                take(mid_cands, per["two_words"]),
            )
        ],
        "identifier": take(
            corpus.snake[:300] + corpus.camel[:150] + corpus.errors[:50],
            per["identifier"],
            first=["parse_json_body", "HttpClientBuilder", "InvalidUtf8Error"],
        ),
        "path": take(
            [p.rsplit("/", 1)[1] for p in corpus.paths[:300]],
            per["path"],
            first=["body_parser.rs"],
        ),
    }
    timed, warmup = [], []
    for k in KINDS:
        items = pool[k]
        # the first `warm` go to the warm-up, except the named examples which stay timed
        fixed = {"parse_json_body", "HttpClientBuilder", "InvalidUtf8Error", "body_parser.rs"}
        w = [q for q in items if q not in fixed][-warm:]
        t = [q for q in items if q not in w][: per[k]]
        warmup += [{"q": q, "kind": k} for q in w]
        timed += [{"q": q, "kind": k} for q in t]
    rng.shuffle(timed)
    rng.shuffle(warmup)
    return timed, warmup


# ---------------------------------------------------------------------------------------------
# Utilities
# ---------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def compilers_running() -> list[str]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                comm = (d / "comm").read_text().strip()
            except OSError:
                continue
            if comm in ("rustc", "cargo"):
                found.append(f"{comm}:{d.name}")
    return found


class Phase:
    """Waits for an idle machine (no rustc/cargo) before a timed phase, then samples once a
    second whether a compiler runs during it."""

    def __init__(self, name: str, wait_idle: float):
        import threading

        self.name = name
        waited = 0.0
        while compilers_running() and waited < wait_idle:
            if waited == 0:
                log(f"{name}: waiting for rustc/cargo to finish (up to {wait_idle:.0f} s)")
            time.sleep(5)
            waited += 5
        self.info = {"waited_s": waited, "load_at_start": round(os.getloadavg()[0], 2)}
        self.samples = 0
        self.busy = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while True:
            self.samples += 1
            self.busy += bool(compilers_running())
            if self.stop.wait(1.0):
                return

    def done(self) -> dict:
        self.stop.set()
        self.thread.join()
        self.info["load_at_end"] = round(os.getloadavg()[0], 2)
        self.info["compiler_share"] = round(self.busy / max(1, self.samples), 3)
        self.info["contended"] = self.busy > 0
        return self.info


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


# ---------------------------------------------------------------------------------------------
# Client API
# ---------------------------------------------------------------------------------------------


class Api:
    def __init__(self, base: str, session):
        self.base = base
        self.s = session

    async def call(self, method: str, path: str, token: str | None = None, body=None,
                   timeout: float = 300):
        import aiohttp

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.s.request(method, self.base + path, json=body, headers=headers,
                                  timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            text = await r.text()
            try:
                data = json.loads(text) if text else {}
            except ValueError:
                data = {"raw": text[:300]}
            return r.status, data

    async def must(self, method, path, token=None, body=None):
        st, d = await self.call(method, path, token, body)
        if st != 200:
            raise RuntimeError(f"{method} {path} -> {st} {json.dumps(d)[:300]}")
        return d

    async def register(self, name: str) -> tuple[str, str]:
        body = {"username": name, "password": "search-bench-pw-1234", "inhibit_login": False}
        st, d = await self.call("POST", "/_matrix/client/v3/register", body=body)
        if st == 401:
            body["auth"] = {"type": "m.login.dummy", "session": d.get("session")}
            st, d = await self.call("POST", "/_matrix/client/v3/register", body=body)
        if st != 200:
            raise RuntimeError(f"register {name} -> {st} {d}")
        return d["access_token"], d["user_id"]

    async def search(self, token: str, term: str, order: str):
        body = {"search_categories": {"room_events": {"search_term": term, "order_by": order}}}
        return await self.call("POST", "/_matrix/client/v3/search", token, body)


async def wait_up(base: str, timeout: float, proc: subprocess.Popen | None = None,
                  logfile: Path | None = None) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(base + "/_matrix/client/versions",
                                 timeout=aiohttp.ClientTimeout(total=5)) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass
            if proc is not None and proc.poll() is not None:
                tail = logfile.read_text()[-3000:] if logfile and logfile.exists() else ""
                raise RuntimeError(f"server exited with {proc.returncode}:\n{tail}")
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{base} did not come up within {timeout:.0f} s")


async def setup_users_rooms(api: Api, n_users: int, n_rooms: int, prefix: str):
    users = []
    for i in range(n_users):
        users.append(await api.register(f"{prefix}{i}"))
    owner = users[0][0]
    rooms = []
    for i in range(n_rooms):
        d = await api.must("POST", "/_matrix/client/v3/createRoom", owner,
                           {"preset": "public_chat", "name": f"search bench {i}"})
        rooms.append(d["room_id"])
    for tok, _ in users[1:]:
        for r in rooms:
            await api.must("POST", f"/_matrix/client/v3/join/{quote(r)}", tok, {})
    return users, rooms


def quote(s: str) -> str:
    from urllib.parse import quote as q

    return q(s, safe="")


async def send_all(api: Api, users, rooms, texts: list[str], offset: int, in_flight: int,
                   label: str) -> dict:
    """Sends texts[i] as message offset+i: room (offset+i) % rooms, sender (offset+i) % users."""
    n = len(texts)
    next_i = 0
    done = 0
    errors = 0
    retries = 0
    t0 = time.monotonic()
    last_report = t0

    async def worker():
        nonlocal next_i, done, errors, retries, last_report
        while True:
            i = next_i
            if i >= n:
                return
            next_i += 1
            k = offset + i
            tok = users[k % len(users)][0]
            room = rooms[k % len(rooms)]
            path = f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/sb{k}"
            body = {"msgtype": "m.text", "body": texts[i]}
            for attempt in range(5):
                try:
                    st, d = await api.call("PUT", path, tok, body, timeout=120)
                except Exception as e:  # noqa: BLE001 - connection errors are retried
                    st, d = 0, {"error": repr(e)}
                if st == 200:
                    break
                retries += 1
                if st not in (0, 429, 500, 502, 503):
                    break
                await asyncio.sleep(0.2 * (attempt + 1))
            if st != 200:
                errors += 1
                if errors <= 5:
                    log(f"{label}: send {k} failed: {st} {json.dumps(d)[:200]}")
            done += 1
            now = time.monotonic()
            if now - last_report > 30:
                last_report = now
                log(f"{label}: {done:,}/{n:,} sent, {done / (now - t0):,.0f}/s")

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.monotonic() - t0
    if errors:
        raise RuntimeError(f"{label}: {errors} of {n} sends failed")
    return {"sent": n, "seconds": round(elapsed, 2), "rate": round(n / elapsed, 1),
            "retries": retries, "in_flight": in_flight}


async def run_queries(api: Api, token: str, timed: list[dict], warmup: list[dict],
                      orders: list[str]) -> dict:
    out = {}
    for order in orders:
        for q in warmup:
            st, d = await api.search(token, q["q"], order)
            if st != 200:
                raise RuntimeError(f"/search ({order}) {q['q']!r} -> {st} {json.dumps(d)[:300]}")
        rows = []
        for q in timed:
            t0 = time.perf_counter()
            st, d = await api.search(token, q["q"], order)
            ms = (time.perf_counter() - t0) * 1000
            if st != 200:
                raise RuntimeError(f"/search ({order}) {q['q']!r} -> {st} {json.dumps(d)[:300]}")
            re_ = d.get("search_categories", {}).get("room_events", {})
            rows.append({"q": q["q"], "kind": q["kind"], "ms": round(ms, 3),
                         "count": re_.get("count"), "results": len(re_.get("results") or [])})
        out[order] = summarize(rows)
    return out


def summarize(rows: list[dict]) -> dict:
    lat = [r["ms"] for r in rows]
    by_kind = {}
    for k in KINDS:
        kr = [r for r in rows if r["kind"] == k]
        if not kr:
            continue
        counts = [r["count"] for r in kr if r["count"] is not None]
        by_kind[k] = {
            "n": len(kr),
            "p50_ms": pct([r["ms"] for r in kr], 50),
            "p99_ms": pct([r["ms"] for r in kr], 99),
            "median_count": pct(counts, 50),
            "with_results": sum(1 for r in kr if r["results"] > 0),
        }
    counts = [r["count"] for r in rows if r["count"] is not None]
    return {
        "n": len(rows),
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "mean_ms": round(sum(lat) / len(lat), 3) if lat else None,
        "with_results": sum(1 for r in rows if r["results"] > 0),
        "median_count": pct(counts, 50),
        "total_count": sum(counts) if counts else None,
        "by_kind": by_kind,
        "queries": rows,
    }


async def check_finds(api: Api, token: str, timed: list[dict], label: str) -> None:
    """Common words must be found before anything is timed."""
    commons = [q["q"] for q in timed if q["kind"] == "common"][:3]
    for q in commons:
        st, d = await api.search(token, q, "rank")
        re_ = d.get("search_categories", {}).get("room_events", {}) if st == 200 else {}
        if st != 200 or not re_.get("results"):
            raise RuntimeError(f"{label}: /search for common word {q!r} found nothing "
                               f"({st} {json.dumps(d)[:300]})")
        log(f"{label}: /search {q!r}: count={re_.get('count')} results={len(re_['results'])}")


# ---------------------------------------------------------------------------------------------
# Plexus
# ---------------------------------------------------------------------------------------------


class PlexusProc:
    def __init__(self, binary: Path, data: Path, port: int, logfile: Path):
        self.binary, self.data, self.port, self.logfile = binary, data, port, logfile
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict:
        e = dict(os.environ)
        e.update({
            "PLEXUS_DATA_DIR": str(self.data),
            "PLEXUS_CLIENT_LISTEN": f"127.0.0.1:{self.port}",
            "PLEXUS_SERVER_NAME": "localhost",
            "PLEXUS_REGISTRATION": "open",
            "PLEXUS_RATE_LIMITS": "off",
            "PLEXUS_LOG": "warn",
        })
        return e

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        f = open(self.logfile, "ab")
        self.proc = subprocess.Popen([str(self.binary)], env=self.env(), stdout=subprocess.DEVNULL,
                                     stderr=f, start_new_session=True)
        f.close()
        await wait_up(self.base, 600, self.proc, self.logfile)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=180)
            except subprocess.TimeoutExpired:
                log("plexus did not stop within 180 s; killing it")
                self.proc.kill()
                self.proc.wait()
        self.proc = None


async def run_plexus(n: int, args, msgs_path: Path, timed, warmup) -> dict:
    import aiohttp

    binary = Path(args.plexus_bin).resolve()
    if not binary.exists():
        raise RuntimeError(f"no plexus binary at {binary}")
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout.strip()
    data = WORK / f"plexus-data-{n}"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    logfile = WORK / f"plexus-{n}.log"
    logfile.unlink(missing_ok=True)
    px = PlexusProc(binary, data / "data", free_port(), logfile)
    res: dict = {"binary": str(binary), "version": version, "messages": n}
    try:
        await px.start()
        conn = aiohttp.TCPConnector(limit=args.in_flight)
        async with aiohttp.ClientSession(connector=conn) as s:
            api = Api(px.base, s)
            users, rooms = await setup_users_rooms(api, args.users, args.rooms, "sbp")
            st, d = await api.search(users[0][0], "hello", "rank")
            if st != 200:
                raise RuntimeError(f"{binary} answers POST /search with {st} "
                                   f"({json.dumps(d)[:200]}): build it with search first")
            texts = read_messages(msgs_path, n)
            ph = Phase("plexus send", args.wait_idle)
            log(f"plexus: sending {n:,} messages ({args.in_flight} in flight, "
                f"{len(users)} users, {len(rooms)} rooms)")
            res["send"] = await send_all(api, users, rooms, texts, 0, args.in_flight, "plexus")
            res["send"]["phase"] = ph.done()
            del texts
            log(f"plexus: sent at {res['send']['rate']:,.0f}/s")
        px.stop()
        res["data_bytes"] = du(data)

        ph = Phase("plexus rebuild-search-index", args.wait_idle)
        log("plexus: rebuild-search-index")
        t0 = time.monotonic()
        p = subprocess.run([str(binary), "rebuild-search-index"], env=px.env(),
                           capture_output=True, text=True)
        wall = time.monotonic() - t0
        out = (p.stdout + p.stderr).strip()
        (WORK / f"plexus-rebuild-{n}.log").write_text(out + "\n")
        if p.returncode != 0:
            raise RuntimeError(f"plexus rebuild-search-index exited {p.returncode}:\n{out[-2000:]}")
        lines = [ln for ln in out.splitlines() if ln.strip()]
        last = lines[-1] if lines else ""
        nums = [int(x.replace(",", "").replace("_", ""))
                for x in re.findall(r"(\d[\d,_]*)\s+(?:events|documents|docs|messages)", last)]
        secs = [float(x) for x in re.findall(r"(\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds)\b", last)]
        indexed = nums[0] if nums else n
        res["index"] = {
            "wall_s": round(wall, 2),
            "rate": round(indexed / wall, 1),
            "indexed_reported": nums[0] if nums else None,
            "seconds_reported": secs[0] if secs else None,
            "rate_reported": round(nums[0] / secs[0], 1) if nums and secs and secs[0] > 0 else None,
            "last_line": last[-300:],
            "phase": ph.done(),
        }
        log(f"plexus: rebuild took {wall:.1f} s: {last[-200:]}")
        sdir = px.data / "search"  # Services::open: data_dir/search
        res["search_index_bytes"] = du(sdir) if sdir.is_dir() else None
        res["data_bytes_after"] = du(data)

        await px.start()
        conn = aiohttp.TCPConnector(limit=4)
        async with aiohttp.ClientSession(connector=conn) as s:
            api = Api(px.base, s)
            await check_finds(api, users[0][0], timed, "plexus")
            ph = Phase("plexus queries", args.wait_idle)
            res["queries"] = await run_queries(api, users[0][0], timed, warmup, args.orders)
            res["queries"]["phase"] = ph.done()
    finally:
        px.stop()
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
    return res


# ---------------------------------------------------------------------------------------------
# Synapse
# ---------------------------------------------------------------------------------------------


class SynapseCtl:
    def __init__(self, sdir: Path, venv: Path):
        self.dir, self.venv = sdir, venv
        self.script = REPO / "spec-tests" / "synapse" / "synapse.sh"
        self.port = 0
        self.started = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict:
        e = dict(os.environ)
        e["SYNAPSE_VENV"] = str(self.venv)
        e.pop("FED_PORT", None)
        return e

    def start_fresh(self) -> None:
        self.port = free_port()
        self.started = True
        p = subprocess.run(["bash", str(self.script), "start", str(self.dir), str(self.port),
                            "postgres"], env=self.env(), capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"synapse.sh start failed:\n{p.stdout}\n{p.stderr}")
        log(p.stdout.strip().splitlines()[-1] if p.stdout.strip() else "synapse up")

    def pg_dsn(self) -> str:
        cfg = (self.dir / "homeserver.yaml").read_text()
        m = re.search(r"database:\s*\n\s*name: psycopg2.*?port: (\d+)", cfg, re.S)
        if not m:
            raise RuntimeError("no postgres port in homeserver.yaml")
        return f"host=127.0.0.1 port={m.group(1)} user=postgres dbname=synapse"

    def stop_synapse_only(self) -> None:
        pidf = self.dir / "homeserver.pid"
        if not pidf.exists():
            return
        pid = int(pidf.read_text().strip())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pidf.unlink(missing_ok=True)
            return
        for _ in range(300):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        pidf.unlink(missing_ok=True)

    async def restart_synapse_only(self) -> None:
        p = subprocess.run([str(self.venv / "bin" / "python"), "-m", "synapse.app.homeserver",
                            "-c", str(self.dir / "homeserver.yaml"), "--daemonize"],
                           cwd=self.dir, env=self.env(), capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"synapse restart failed:\n{p.stdout}\n{p.stderr}")
        await wait_up(self.base, 300)

    def stop_all(self) -> None:
        if self.started:
            subprocess.run(["bash", str(self.script), "stop", str(self.dir)], env=self.env(),
                           capture_output=True, text=True)
            self.started = False

    def psql(self, sql: str) -> str:
        dsn = dict(kv.split("=") for kv in self.pg_dsn().split())
        p = subprocess.run(["psql", "-h", dsn["host"], "-p", dsn["port"], "-U", "postgres",
                            "-d", "synapse", "-At", "-c", sql], capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"psql failed: {p.stderr}")
        return p.stdout.strip()


async def run_synapse(n: int, args, msgs_path: Path, timed, warmup) -> dict:
    import aiohttp

    sdir = Path(args.synapse_dir).resolve()
    venv = Path(args.synapse_venv).resolve() if args.synapse_venv else sdir / "venv"
    ctl = SynapseCtl(sdir, venv)
    base_n = min(args.synapse_base, n)
    res: dict = {"messages": n, "api_base": base_n}
    try:
        ctl.start_fresh()
        res["version"] = subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import synapse; print(synapse.__version__)"],
            capture_output=True, text=True).stdout.strip()
        conn = aiohttp.TCPConnector(limit=args.in_flight)
        async with aiohttp.ClientSession(connector=conn) as s:
            api = Api(ctl.base, s)
            users, rooms = await setup_users_rooms(api, args.users, args.rooms, "sbs")
            texts = read_messages(msgs_path, base_n)
            ph = Phase("synapse send", args.wait_idle)
            log(f"synapse: sending the base of {base_n:,} messages through the API")
            res["send"] = await send_all(api, users, rooms, texts, 0, args.in_flight, "synapse")
            res["send"]["phase"] = ph.done()
            log(f"synapse: sent at {res['send']['rate']:,.0f}/s")
        rows = int(ctl.psql("SELECT count(*) FROM event_search WHERE key = 'content.body'"))
        if rows < base_n:
            raise RuntimeError(f"synapse indexed {rows} of {base_n} base messages")
        ctl.stop_synapse_only()

        if n > base_n:
            ph = Phase("synapse bulk index", args.wait_idle)
            log(f"synapse: filling {n - base_n:,} more events and event_search rows")
            p = subprocess.run(
                [str(venv / "bin" / "python"), str(Path(__file__).resolve()), "_synapse-fill",
                 "--dsn", ctl.pg_dsn(), "--messages", str(msgs_path), "--start", str(base_n),
                 "--end", str(n), "--wait-idle", str(args.wait_idle)],
                cwd=sdir, stdout=subprocess.PIPE, text=True)
            if p.returncode != 0:
                raise RuntimeError(f"synapse fill failed ({p.returncode})")
            fill = json.loads(p.stdout.strip().splitlines()[-1])
            fill["prep_phase"] = ph.done()
            # the timed insert waited for an idle machine on its own
            fill["phase"] = fill.pop("insert_phase")
            fill["rate"] = round(fill["rows"] / fill["insert_s"], 1)
            fill["rate_incl_vacuum"] = round(fill["rows"] / (fill["insert_s"] + fill["vacuum_s"]), 1)
            res["index"] = fill
            log(f"synapse: indexed {fill['rows']:,} rows in {fill['insert_s']:.1f} s "
                f"(+{fill['vacuum_s']:.1f} s VACUUM ANALYZE): {fill['rate']:,.0f} rows/s")
        res["event_search_rows"] = int(ctl.psql("SELECT count(*) FROM event_search"))
        res["event_search_bytes"] = int(ctl.psql("SELECT pg_total_relation_size('event_search')"))
        res["database_bytes"] = int(ctl.psql("SELECT pg_database_size('synapse')"))

        await ctl.restart_synapse_only()
        conn = aiohttp.TCPConnector(limit=4)
        async with aiohttp.ClientSession(connector=conn) as s:
            api = Api(ctl.base, s)
            await check_finds(api, users[0][0], timed, "synapse")
            ph = Phase("synapse queries", args.wait_idle)
            res["queries"] = await run_queries(api, users[0][0], timed, warmup, args.orders)
            res["queries"]["phase"] = ph.done()
    finally:
        ctl.stop_all()
    return res


def synapse_fill(argv: list[str]) -> None:
    """Runs in Synapse's venv: makes events from the base ones and indexes them (see top)."""
    import io

    import psycopg2
    from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
    from synapse.crypto.event_signing import compute_content_hash
    from synapse.events import make_event_from_dict
    from unpaddedbase64 import encode_base64

    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--messages", required=True)
    ap.add_argument("--start", type=int, required=True)
    ap.add_argument("--end", type=int, required=True)
    ap.add_argument("--chunk", type=int, default=20_000)
    ap.add_argument("--wait-idle", type=float, default=0)
    a = ap.parse_args(argv)

    conn = psycopg2.connect(a.dsn)
    cur = conn.cursor()
    cur.execute("""
        SELECT e.event_id, e.room_id, e.topological_ordering, e.depth, e.sender,
               ej.json, ej.format_version, sg.state_group, r.room_version
        FROM events e JOIN event_json ej USING (event_id)
             JOIN event_to_state_groups sg USING (event_id)
             JOIN rooms r ON r.room_id = e.room_id
        WHERE e.type = 'm.room.message' AND NOT e.outlier
        ORDER BY e.stream_ordering""")
    templates = []
    for eid, room, topo, depth, sender, js, fmt, sg, rv in cur.fetchall():
        d = json.loads(js)
        templates.append((room, topo, depth, sender, d, fmt, sg, KNOWN_ROOM_VERSIONS[rv]))
    if not templates:
        raise SystemExit("no base m.room.message events to copy")
    cur.execute("SELECT max(stream_ordering), max(origin_server_ts) FROM events")
    max_so, max_ts = cur.fetchone()
    cur.execute("DROP TABLE IF EXISTS bench_search_staging")
    cur.execute("""CREATE UNLOGGED TABLE bench_search_staging (event_id text, room_id text,
                   value text, stream_ordering bigint, origin_server_ts bigint)""")
    conn.commit()

    def esc(s: str) -> str:
        return (s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                .replace("\r", "\\r"))

    total = a.end - a.start
    t0 = time.monotonic()
    bufs = None
    made = 0

    def flush():
        for table, cols, buf in bufs:
            buf.seek(0)
            cur.copy_expert(f"COPY {table} ({cols}) FROM STDIN", buf)
        conn.commit()

    with open(a.messages, encoding="utf-8") as f:
        for j, line in enumerate(itertools.islice(f, a.start, a.end)):
            if bufs is None:
                bufs = [
                    ("events", "topological_ordering, event_id, type, room_id, processed, outlier,"
                     " depth, origin_server_ts, received_ts, sender, contains_url, instance_name,"
                     " stream_ordering", io.StringIO()),
                    ("event_json", "event_id, room_id, internal_metadata, json, format_version",
                     io.StringIO()),
                    ("event_to_state_groups", "event_id, state_group", io.StringIO()),
                    ("bench_search_staging", "event_id, room_id, value, stream_ordering,"
                     " origin_server_ts", io.StringIO()),
                ]
            text = json.loads(line)
            room, topo, depth, sender, tmpl, fmt, sg, rv = templates[j % len(templates)]
            so = max_so + 1 + j
            ts = max_ts + 1 + j
            d = dict(tmpl)
            d["content"] = {"msgtype": "m.text", "body": text}
            d["origin_server_ts"] = ts
            d["unsigned"] = {"age_ts": ts}
            d.pop("hashes", None)
            d["hashes"] = {"sha256": encode_base64(compute_content_hash(d, hashlib.sha256)[1])}
            eid = make_event_from_dict(d, rv).event_id
            js = json.dumps(d, ensure_ascii=False, separators=(",", ":"))
            bufs[0][2].write(f"{topo}\t{esc(eid)}\tm.room.message\t{esc(room)}\tt\tf\t{depth}\t"
                             f"{ts}\t{ts}\t{esc(sender)}\tf\tmaster\t{so}\n")
            bufs[1][2].write(f"{esc(eid)}\t{esc(room)}\t{{}}\t{esc(js)}\t{fmt}\n")
            bufs[2][2].write(f"{esc(eid)}\t{sg}\n")
            bufs[3][2].write(f"{esc(eid)}\t{esc(room)}\t{esc(text.replace(chr(0), ' '))}\t{so}\t{ts}\n")
            made += 1
            if made % a.chunk == 0:
                flush()
                bufs = None
                el = time.monotonic() - t0
                print(f"[fill] {made:,}/{total:,} events made ({made / el:,.0f}/s)",
                      file=sys.stderr, flush=True)
    if bufs is not None:
        flush()
    conn.autocommit = True
    for t in ("events", "event_json", "event_to_state_groups", "bench_search_staging"):
        cur.execute(f"ANALYZE {t}")
    prep_s = time.monotonic() - t0
    print(f"[fill] {made:,} events in {prep_s:.1f} s; indexing", file=sys.stderr, flush=True)

    # The timed part: Synapse's own row and tsvector (store_search_entries_txn), in bulk.
    ph = Phase("synapse event_search insert", a.wait_idle)
    conn.autocommit = False
    t1 = time.monotonic()
    cur.execute("""
        INSERT INTO event_search (event_id, room_id, key, vector, stream_ordering, origin_server_ts)
        SELECT event_id, room_id, 'content.body', to_tsvector('english', value),
               stream_ordering, origin_server_ts
        FROM bench_search_staging""")
    rows = cur.rowcount
    conn.commit()
    insert_s = time.monotonic() - t1
    conn.autocommit = True
    t2 = time.monotonic()
    cur.execute("VACUUM ANALYZE event_search")
    vacuum_s = time.monotonic() - t2
    insert_phase = ph.done()
    cur.execute("DROP TABLE bench_search_staging")
    conn.close()
    print(json.dumps({"rows": rows, "prep_s": round(prep_s, 2), "insert_s": round(insert_s, 2),
                      "vacuum_s": round(vacuum_s, 2), "templates": len(templates),
                      "insert_phase": insert_phase}))


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def fnum(x, digits=0) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and digits:
        return f"{x:,.{digits}f}"
    return f"{x:,.0f}"


def fms(x) -> str:
    if x is None:
        return "–"
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def table(results: dict, sizes: list[int], orders: list[str]) -> str:
    out = []
    for n in sizes:
        r = results.get(str(n), {})
        p, s = r.get("plexus", {}), r.get("synapse", {})
        out.append(f"\n### {n:,} messages\n")
        out.append("| | Plexus | Synapse |")
        out.append("|---|---:|---:|")

        def row(label, pv, sv):
            out.append(f"| {label} | {pv} | {sv} |")

        pi, si = p.get("index", {}), s.get("index", {})
        row("index rate (events/s)",
            (f"{fnum(pi.get('rate'))} (rebuild, {fnum(pi.get('wall_s'), 1)} s wall"
             + (f"; own figure {fnum(pi['rate_reported'])}" if pi.get("rate_reported") else "")
             + ")") if pi else "–",
            f"{fnum(si.get('rate'))} (bulk INSERT, {fnum(si.get('insert_s'), 1)} s)" if si else "–")
        if si:
            row("index rate incl. VACUUM ANALYZE", "", f"{fnum(si.get('rate_incl_vacuum'))}")
        ps, ss = p.get("send", {}), s.get("send", {})
        row("send rate via API, indexing inline (events/s)",
            f"{fnum(ps.get('rate'))} ({fnum(ps.get('sent'))} msgs)" if ps else "–",
            f"{fnum(ss.get('rate'), 1)} ({fnum(ss.get('sent'))} msgs)" if ss else "–")
        for o in orders:
            pq, sq = p.get("queries", {}).get(o, {}), s.get("queries", {}).get(o, {})
            row(f"query `{o}` p50 / p99 (ms)",
                f"{fms(pq.get('p50_ms'))} / {fms(pq.get('p99_ms'))}" if pq else "–",
                f"{fms(sq.get('p50_ms'))} / {fms(sq.get('p99_ms'))}" if sq else "–")
        pq, sq = p.get("queries", {}).get(orders[0], {}), s.get("queries", {}).get(orders[0], {})
        row("queries with results",
            f"{pq.get('with_results')}/{pq.get('n')}" if pq else "–",
            f"{sq.get('with_results')}/{sq.get('n')}" if sq else "–")
        row("median `count`", fnum(pq.get("median_count")) if pq else "–",
            fnum(sq.get("median_count")) if sq else "–")
        row("search index on disk (MB)",
            fnum(p["search_index_bytes"] / 1e6, 1) if p.get("search_index_bytes") else "–",
            fnum(s["event_search_bytes"] / 1e6, 1) if s.get("event_search_bytes") else "–")
        contended = [
            f"{side} {ph}" + (f" ({d[ph]['phase']['compiler_share']:.0%} of the time)"
                              if "compiler_share" in d[ph]["phase"] else "")
            for side, d in (("plexus", p), ("synapse", s))
            for ph in ("send", "index", "queries")
            if d.get(ph, {}).get("phase", {}).get("contended")]
        if contended:
            out.append(f"\nA compiler was running during: {', '.join(contended)}.")
        if pq or sq:
            out.append(f"\nBy query kind (`{orders[0]}`): p50 ms, median count, with results\n")
            out.append("| kind | Plexus | Synapse |")
            out.append("|---|---:|---:|")
            for k in KINDS:
                a = pq.get("by_kind", {}).get(k)
                b = sq.get("by_kind", {}).get(k)

                def cell(x):
                    if not x:
                        return "–"
                    return (f"{fms(x['p50_ms'])} ms, {fnum(x['median_count'])}, "
                            f"{x['with_results']}/{x['n']}")

                out.append(f"| {k} | {cell(a)} | {cell(b)} |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


async def amain(args) -> int:
    sizes = [int(x.replace("_", "").replace(",", "")) for x in args.sizes.split(",") if x]
    args.orders = [o for o in args.order.split(",") if o]
    msgs_path = messages_file(args.seed, max(max(sizes), QUERY_BASIS))
    timed, warmup = build_queries(args.seed, args.queries, msgs_path)
    per_kind = ", ".join(f"{k}: {sum(q['kind'] == k for q in timed)}" for k in KINDS)
    log(f"{len(timed)} queries ({per_kind}), {len(warmup)} warm-up")

    out_path = Path(args.out)
    meta = {"seed": args.seed, "gen_version": GEN_VERSION, "queries": len(timed),
            "users": args.users, "rooms": args.rooms, "in_flight": args.in_flight,
            "synapse_base": args.synapse_base, "nproc": os.cpu_count()}
    doc = {"meta": meta, "results": {}}
    if out_path.exists():
        try:
            old = json.loads(out_path.read_text())
            if all(old.get("meta", {}).get(k) == meta[k] for k in ("seed", "gen_version", "queries")):
                doc["results"] = old.get("results", {})
            else:
                log(f"{out_path}: other seed or query set; not merging")
        except ValueError:
            pass
    doc["query_set"] = timed

    def save():
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(doc, indent=1))

    sides = ["plexus", "synapse"] if args.only is None else [args.only]
    for n in sizes:
        for side in sides:
            log(f"=== {side}, {n:,} messages ===")
            t0 = time.monotonic()
            if side == "plexus":
                r = await run_plexus(n, args, msgs_path, timed, warmup)
            else:
                r = await run_synapse(n, args, msgs_path, timed, warmup)
            r["total_s"] = round(time.monotonic() - t0, 1)
            r["at"] = time.strftime("%Y-%m-%d %H:%M:%S")
            doc["results"].setdefault(str(n), {})[side] = r
            save()
            log(f"=== {side}, {n:,}: done in {r['total_s']:.0f} s ===")
    print(table(doc["results"], sizes, args.orders))
    print(f"\nfigures: {out_path}")
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_synapse-fill":
        synapse_fill(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000")
    ap.add_argument("--plexus-bin", default="target/release/plexus")
    ap.add_argument("--synapse-dir", default="target/synapse-search")
    ap.add_argument("--synapse-venv", default=None,
                    help="Synapse venv (default: target/synapse-venv if present, else DIR/venv)")
    ap.add_argument("--only", choices=["plexus", "synapse"])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--order", default="rank,recent", help="order_by values to time")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--rooms", type=int, default=10)
    ap.add_argument("--in-flight", type=int, default=32)
    ap.add_argument("--synapse-base", type=int, default=2000,
                    help="messages sent to Synapse through its API; the rest are bulk-loaded")
    ap.add_argument("--wait-idle", type=float, default=900,
                    help="seconds a timed phase waits for rustc/cargo to finish")
    ap.add_argument("--keep", action="store_true", help="keep Plexus's data dirs")
    ap.add_argument("--out", default=str(WORK / "results.json"))
    args = ap.parse_args()
    # Paths are relative to where the script is run from; then work from the repository root.
    args.plexus_bin = str(Path(args.plexus_bin).resolve())
    args.synapse_dir = str(Path(args.synapse_dir).resolve())
    args.out = str(Path(args.out).resolve())
    if args.synapse_venv:
        args.synapse_venv = str(Path(args.synapse_venv).resolve())
    os.chdir(REPO)
    if args.synapse_venv is None and (REPO / "target" / "synapse-venv" / "bin" / "python").exists():
        args.synapse_venv = str(REPO / "target" / "synapse-venv")

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); servers stopped")
        return 130
    except RuntimeError as e:
        log(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
