"""What the matrix-nio interop scripts share: bounded client settings, the check counters and
their one-line output, and a main that turns any failure into a failed check.

Each script calls `run_main(run, __doc__, deadline)`; `run(base_url)` is its async body.
"""

import asyncio
import os
import sys
import time
import traceback

from nio import AsyncClientConfig

# nio retries connection errors forever and 429s without limit by default: bound both, so that a
# dead or throttling server fails the run instead of hanging it.
CLIENT_CONFIG = AsyncClientConfig(
    max_timeouts=2, max_limit_exceeded=3, request_timeout=20, max_timeout_retry_wait_time=2
)

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


def check(cond, what, detail=""):
    """Record one check, print one line for it, and return whether it held."""
    if cond:
        _counts["passed"] += 1
        print(f"ok   - {what}", flush=True)
    else:
        _counts["failed"] += 1
        print(f"FAIL - {what}" + (f": {detail}" if detail else ""), flush=True)
    return bool(cond)


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


def run_main(run, doc, deadline):
    """Run `run(BASE_URL)` within `deadline` seconds, print "N passed, M failed", exit 1 on any
    failure (or when nothing was checked)."""
    if len(sys.argv) != 2 or not sys.argv[1].startswith(("http://", "https://")):
        print(doc, file=sys.stderr)
        sys.exit(2)
    start = time.monotonic()
    try:
        asyncio.run(asyncio.wait_for(run(sys.argv[1]), deadline))
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
