#!/usr/bin/env python3
"""Checks that two homeservers on loopback federate, through their client APIs only.

    fed_check.py CLIENT_URL_A CLIENT_URL_B [--timeout SECS]

e.g. fed_check.py http://127.0.0.1:18008 http://127.0.0.1:28008

Each server must allow open registration (m.login.dummy). The server names are taken from the
registered user ids. Steps, each timed:
  1. register a user on A and on B;
  2. A creates a public room with an alias;
  3. B joins it by room id via A (?server_name=A), then checks that the alias resolves over
     federation;
  4. B sends a message and A sees it in /messages; A replies and B sees it in /sync;
  5. A's typing notification reaches B's /sync;
  6. A's read receipt on B's message reaches B's /sync.
Prints one line per step and exits 1 at the first step that fails or times out.
"""
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

TIMEOUT = 60.0


class Client:
    def __init__(self, base):
        self.base = base.rstrip("/")
        self.token = None
        self.user_id = None
        self.since = None

    @property
    def server_name(self):
        return self.user_id.split(":", 1)[1]

    def call(self, method, path, body=None, query=None, timeout=70):
        url = self.base + "/_matrix/client/v3" + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {url} -> {e.code} {e.read().decode(errors='replace')}")

    def register(self, name):
        r = self.call("POST", "/register", {
            "username": name, "password": "fed-check-pw-" + name,
            "auth": {"type": "m.login.dummy"}, "inhibit_login": False,
        })
        self.token, self.user_id = r["access_token"], r["user_id"]

    def sync(self, timeout_ms=5000):
        q = {"timeout": str(timeout_ms)}
        if self.since:
            q["since"] = self.since
        r = self.call("GET", "/sync", query=q, timeout=timeout_ms / 1000 + 30)
        self.since = r["next_batch"]
        return r

    def sync_until(self, room_id, pred, what):
        """Syncs until pred(joined_room_section) is true."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            r = self.sync()
            room = r.get("rooms", {}).get("join", {}).get(room_id)
            if room and pred(room):
                return
        raise RuntimeError(f"timed out after {TIMEOUT}s waiting for {what}")


def step(name, fn):
    t0 = time.monotonic()
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001 - report any failure and stop
        print(f"FAIL {name} ({time.monotonic() - t0:.2f}s): {e}")
        sys.exit(1)
    print(f"ok   {name} ({time.monotonic() - t0:.2f}s)")
    return out


def main():
    global TIMEOUT
    args = sys.argv[1:]
    if "--timeout" in args:
        i = args.index("--timeout")
        TIMEOUT = float(args[i + 1])
        del args[i:i + 2]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    a, b = Client(args[0]), Client(args[1])
    tag = uuid.uuid4().hex[:8]

    step("register on A and B", lambda: (a.register("fed_a_" + tag), b.register("fed_b_" + tag)))
    print(f"     A = {a.user_id}, B = {b.user_id}")
    if a.server_name == b.server_name:
        print("FAIL A and B have the same server name")
        sys.exit(1)

    alias_local = "fed_" + tag
    room_id = step("A creates a public room", lambda: a.call("POST", "/createRoom", {
        "preset": "public_chat", "visibility": "public", "room_alias_name": alias_local,
        "name": "fed check " + tag,
    })["room_id"])
    alias = f"#{alias_local}:{a.server_name}"
    print(f"     room {room_id}, alias {alias}")

    # Start both sync streams now so that later waits see only new data.
    a.sync(0)
    b.sync(0)

    step("B joins via A (by room id, server_name=A)", lambda: b.call(
        "POST", "/join/" + urllib.parse.quote(room_id, safe=""),
        {}, query={"server_name": a.server_name}))
    def b_resolves_alias():
        got = b.call("GET", "/directory/room/" + urllib.parse.quote(alias, safe=""))["room_id"]
        if got != room_id:
            raise RuntimeError(f"alias resolved to {got}")
    step("B resolves A's alias over federation", b_resolves_alias)

    def a_sees_b_joined():
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            m = a.call("GET", f"/rooms/{urllib.parse.quote(room_id, safe='')}/joined_members")
            if b.user_id in m.get("joined", {}):
                return
            time.sleep(0.1)
        raise RuntimeError("A never saw B's join")
    step("A sees B's join", a_sees_b_joined)

    body_b = "hello from B " + tag
    ev_b = step("B sends a message", lambda: b.call(
        "PUT", f"/rooms/{urllib.parse.quote(room_id, safe='')}/send/m.room.message/{tag}b",
        {"msgtype": "m.text", "body": body_b})["event_id"])

    def a_sees_message():
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            r = a.call("GET", f"/rooms/{urllib.parse.quote(room_id, safe='')}/messages",
                       query={"dir": "b", "limit": "20"})
            if any(e.get("event_id") == ev_b for e in r.get("chunk", [])):
                return
            time.sleep(0.1)
        raise RuntimeError("A never saw B's message in /messages")
    step("A sees B's message (/messages)", a_sees_message)

    body_a = "hello from A " + tag
    ev_a = step("A sends a message", lambda: a.call(
        "PUT", f"/rooms/{urllib.parse.quote(room_id, safe='')}/send/m.room.message/{tag}a",
        {"msgtype": "m.text", "body": body_a})["event_id"])
    step("B sees A's message (/sync)", lambda: b.sync_until(
        room_id, lambda room: any(e.get("event_id") == ev_a
                                  for e in room.get("timeline", {}).get("events", [])),
        "A's message"))

    step("A starts typing", lambda: a.call(
        "PUT", f"/rooms/{urllib.parse.quote(room_id, safe='')}/typing/{urllib.parse.quote(a.user_id, safe='')}",
        {"typing": True, "timeout": 30000}))

    def typing_of_a(room):
        return any(e.get("type") == "m.typing" and a.user_id in e.get("content", {}).get("user_ids", [])
                   for e in room.get("ephemeral", {}).get("events", []))
    step("B sees A typing (/sync)", lambda: b.sync_until(room_id, typing_of_a, "A's typing"))

    step("A sends a read receipt for B's message", lambda: a.call(
        "POST", f"/rooms/{urllib.parse.quote(room_id, safe='')}/receipt/m.read/{urllib.parse.quote(ev_b, safe='')}",
        {}))

    def receipt_of_a(room):
        for e in room.get("ephemeral", {}).get("events", []):
            if e.get("type") == "m.receipt":
                if a.user_id in e.get("content", {}).get(ev_b, {}).get("m.read", {}):
                    return True
        return False
    step("B sees A's read receipt (/sync)", lambda: b.sync_until(room_id, receipt_of_a, "A's receipt"))
    print("federation OK")


if __name__ == "__main__":
    main()
