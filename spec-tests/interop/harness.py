"""What the matrix-nio interop scripts share: bounded client settings, the check counters and
their one-line output, and a main that turns any failure into a failed check.

Each script calls `run_main(run, __doc__, deadline)`; `run(base_url)` is its async body (or
`run(base_url, base_url2)` with `max_urls=2`).
"""

import asyncio
import dataclasses
import json
import os
import sys
import time
import traceback
from urllib.parse import quote

import aiohttp
from nio import AsyncClientConfig

# nio retries connection errors forever and 429s without limit by default: bound both, so that a
# dead or throttling server fails the run instead of hanging it. Encryption is off explicitly:
# nio turns it on by default whenever its E2EE extras (vodozemac, ...) are installed, as they are
# for nio_e2ee.py; the other scripts run without it.
CLIENT_CONFIG = AsyncClientConfig(
    max_timeouts=2, max_limit_exceeded=3, request_timeout=20, max_timeout_retry_wait_time=2,
    encryption_enabled=False,
)

HTTP_TIMEOUT = 20.0  # seconds for one plain HTTP request


def e2ee_config():
    """CLIENT_CONFIG with end-to-end encryption on. Each client then needs its own store_path
    (nio keeps its Olm account and sessions in a SQLite file there)."""
    return dataclasses.replace(CLIENT_CONFIG, encryption_enabled=True)


_counts = {"passed": 0, "failed": 0}


class Abort(Exception):
    """A check failed that later checks depend on."""


def desc(resp):
    """A short description of a nio response: its type, and the error if any."""
    parts = [type(resp).__name__]
    for attr in ("status_code", "message"):
        val = getattr(resp, attr, None)
        if val:
            parts.append(f"{attr}={val}")
    return " ".join(parts)


def short(value, limit=1500):
    """JSON (or text) cut to `limit` characters, for failure details."""
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit] + "..."


SYNC_DEADLINE = 30.0  # seconds a client may sync before a "sees ..." check gives up


async def sync_once(client, seen, wait_ms):
    """One sync with a long-poll of `wait_ms`, recorded in `seen` (which has `record(resp)` and
    `last_error`). Never a 0 ms poll: nio turns that into a zero client-side timeout."""
    try:
        resp = await asyncio.wait_for(client.sync(timeout=max(100, wait_ms)),
                                      timeout=wait_ms / 1000 + 10)
    except asyncio.TimeoutError:
        seen.last_error = "sync request timed out"
        return
    seen.record(resp)


async def sync_until(client, seen, predicate, deadline_s=SYNC_DEADLINE):
    """Sync until predicate() holds; gives up after `deadline_s` seconds. Returns whether it
    held. The long-poll stays under the time left (the server may hold the request that long)."""
    deadline = time.monotonic() + deadline_s
    while True:
        if predicate():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        await sync_once(client, seen, int(max(0.1, min(2.0, remaining - 1.0)) * 1000))


def q(part):
    """One path segment, percent-encoded (room ids, event ids, ...)."""
    return quote(part, safe="")


class Http:
    """Plain client-server API requests where nio has no method (or hides the response)."""

    def __init__(self, base):
        self.base = base.rstrip("/")
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT))

    async def call(self, client, method, path, body=None):
        """(status, JSON body or text, a one-line description of request and response), with
        the access token of the nio `client` (anything with an `access_token`), or none when
        `client` is None."""
        headers = {"Authorization": f"Bearer {client.access_token}"} if client is not None else {}
        async with self.session.request(method, self.base + path, headers=headers,
                                        json=body) as r:
            text = await r.text()
            try:
                data = json.loads(text)
            except ValueError:
                data = text
        sent = f" {short(body, 300)}" if body is not None else ""
        return r.status, data, f"{method} {path}{sent} -> HTTP {r.status} {short(data)}"

    async def close(self):
        await self.session.close()


def check(cond, what, detail=""):
    """Record one check, print one line for it, and return whether it held."""
    if cond:
        _counts["passed"] += 1
        print(f"ok   - {what}", flush=True)
    else:
        _counts["failed"] += 1
        print(f"FAIL - {what}" + (f": {detail}" if detail else ""), flush=True)
    return bool(cond)


def failed_count():
    """How many checks have failed so far."""
    return _counts["failed"]


def require(cond, what, detail=""):
    """A check that later checks cannot do without."""
    if not check(cond, what, detail):
        raise Abort(what)


def _where(exc):
    """The line of the running script an exception came through, for the failure message."""
    script = os.path.abspath(sys.argv[0])
    here = [f for f in traceback.extract_tb(exc.__traceback__)
            if os.path.abspath(f.filename) == script]
    return f" at line {here[-1].lineno} ({here[-1].line})" if here else ""


def run_main(run, doc, deadline, max_urls=1, files=0):
    """Run `run(BASE_URL, ...)` (1 to `max_urls` base URLs from the command line, then `files`
    paths of existing files) within `deadline` seconds, print "N passed, M failed", exit 1 on
    any failure (or when nothing was checked)."""
    args = sys.argv[1:]
    urls, paths = args[:len(args) - files], args[len(args) - files:]
    if (len(args) < files or not 1 <= len(urls) <= max_urls
            or not all(u.startswith(("http://", "https://")) for u in urls)
            or not all(os.path.isfile(p) for p in paths)):
        print(doc, file=sys.stderr)
        sys.exit(2)
    start = time.monotonic()
    try:
        asyncio.run(asyncio.wait_for(run(*urls, *paths), deadline))
    except Abort as e:
        print(f"# stopped: later checks depend on \"{e}\"", flush=True)
    except TimeoutError as e:
        if time.monotonic() - start >= deadline:
            check(False, f"the whole run finishes within {deadline:.0f}s")
        else:  # a request that the client library gave up on
            check(False, "no unexpected exception", f"request timed out{_where(e)}")
    except Exception as e:  # an unexpected error is a failure too, never a silent pass
        check(False, "no unexpected exception", f"{type(e).__name__}: {e}{_where(e)}")
    passed, failed = _counts["passed"], _counts["failed"]
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed or passed == 0 else 0)
