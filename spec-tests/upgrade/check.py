#!/usr/bin/env python3
"""A data dir written by one plexus build opens in another with nothing lost.

Usage: python3 spec-tests/upgrade/check.py OLD_PLEXUS NEW_PLEXUS

Writes a little of everything with OLD_PLEXUS (accounts, rooms, messages, threads and edits,
aliases, the directory, account data, filters, one-time keys, to-device messages,
key backup, media, receipts, pushers), stops it, starts NEW_PLEXUS on the same data dir and
reads it all back through the API. Run it before landing a change to the store layout; it
prints what it checked and exits non-zero on the first difference.
"""
import json, os, signal, socket, subprocess, sys, tempfile, time, urllib.request, urllib.error

OLD, NEW = sys.argv[1], sys.argv[2]
data = tempfile.mkdtemp()
port = (lambda s: (s.bind(("127.0.0.1", 0)), s.getsockname()[1], s.close())[1])(socket.socket())
base = f"http://127.0.0.1:{port}"


def start(binary):
    env = dict(os.environ, PLEXUS_DATA_DIR=data, PLEXUS_CLIENT_LISTEN=f"127.0.0.1:{port}",
               PLEXUS_REGISTRATION="open", PLEXUS_RATE_LIMITS="off", PLEXUS_LOG="warn")
    p = subprocess.Popen([binary], env=env, stderr=open(os.path.join(data, "log"), "a"))
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/_matrix/client/versions")
            return p
        except Exception:
            time.sleep(0.1)
    sys.exit("server did not start")


def call(method, path, body=None, token=None, raw=None, ctype="application/json"):
    data_ = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data_, method=method)
    req.add_header("Content-Type", ctype)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req) as r:
            out = r.read()
            return json.loads(out) if out and r.headers.get_content_type() == "application/json" else out
    except urllib.error.HTTPError as e:
        sys.exit(f"{method} {path}: {e.code} {e.read()[:300]}")


def check(what, got, want):
    if got != want:
        sys.exit(f"FAIL {what}: got {got!r}, want {want!r}")
    print(f"ok   {what}")


def register(name):
    r = call("POST", "/_matrix/client/v3/register",
             {"username": name, "password": "pw-" + name * 3, "auth": {"type": "m.login.dummy"}})
    return r["access_token"], r["device_id"]


old = start(OLD)
alice, alice_dev = register("alice")
bob, bob_dev = register("bob")
room = call("POST", "/_matrix/client/v3/createRoom",
            {"room_alias_name": "upgrade", "visibility": "public", "preset": "public_chat"}, alice)["room_id"]
call("POST", f"/_matrix/client/v3/join/{room}", {}, bob)
sent = [call("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t{i}",
             {"msgtype": "m.text", "body": f"message {i}"}, alice)["event_id"] for i in range(3)]
reply = call("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/r1",
             {"msgtype": "m.text", "body": "in thread",
              "m.relates_to": {"rel_type": "m.thread", "event_id": sent[0]}}, bob)["event_id"]
call("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/e1",
     {"msgtype": "m.text", "body": "* edited", "m.new_content": {"msgtype": "m.text", "body": "edited"},
      "m.relates_to": {"rel_type": "m.replace", "event_id": sent[1]}}, alice)
call("POST", f"/_matrix/client/v3/rooms/{room}/receipt/m.read/{sent[2]}", {}, bob)
call("PUT", "/_matrix/client/v3/user/@alice:localhost/account_data/org.example.global", {"n": 1}, alice)
call("PUT", f"/_matrix/client/v3/user/@alice:localhost/rooms/{room}/account_data/org.example.room", {"n": 2}, alice)
filter_id = call("POST", "/_matrix/client/v3/user/@alice:localhost/filter", {"room": {"timeline": {"limit": 7}}}, alice)["filter_id"]
# (Signed device keys need an ed25519 signer; the E2EE interop tests cover them.)
call("POST", "/_matrix/client/v3/keys/upload",
     {"one_time_keys": {"curve25519:AAAA": "otk1", "curve25519:AAAB": "otk2"}}, alice)
call("PUT", "/_matrix/client/v3/sendToDevice/m.room_key_request/td1",
     {"messages": {"@bob:localhost": {bob_dev: {"hello": "bob"}}}}, alice)
version = call("POST", "/_matrix/client/v3/room_keys/version",
               {"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "pk"}}, alice)["version"]
session = {"first_message_index": 0, "forwarded_count": 0, "is_verified": False, "session_data": {"ciphertext": "c"}}
call("PUT", f"/_matrix/client/v3/room_keys/keys/{room}/sess1?version={version}", session, alice)
mxc = call("POST", "/_matrix/media/v3/upload?filename=a.txt", raw=b"hello upgrade", token=alice, ctype="text/plain")["content_uri"]
before = call("GET", "/_matrix/client/v3/sync", token=alice)
old.send_signal(signal.SIGTERM)
old.wait(30)

new = start(NEW)
try:
    check("old access tokens still log in", call("GET", "/_matrix/client/v3/account/whoami", token=alice)["user_id"], "@alice:localhost")
    after = call("GET", "/_matrix/client/v3/sync", token=alice)
    ids = lambda s: [e["event_id"] for e in s["rooms"]["join"][room]["timeline"]["events"]]
    check("the timeline reads back the same", ids(after), ids(before))
    check("a retried send finds its transaction",
          call("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t1", {"msgtype": "m.text", "body": "message 1"}, alice)["event_id"], sent[1])
    check("the alias resolves", call("GET", "/_matrix/client/v3/directory/room/%23upgrade:localhost")["room_id"], room)
    check("the room is in the directory", [r["room_id"] for r in call("GET", "/_matrix/client/v3/publicRooms")["chunk"]], [room])
    check("global account data", call("GET", "/_matrix/client/v3/user/@alice:localhost/account_data/org.example.global", token=alice), {"n": 1})
    check("room account data", call("GET", f"/_matrix/client/v3/user/@alice:localhost/rooms/{room}/account_data/org.example.room", token=alice), {"n": 2})
    check("the filter", call("GET", f"/_matrix/client/v3/user/@alice:localhost/filter/{filter_id}", token=alice)["room"]["timeline"]["limit"], 7)
    claimed = call("POST", "/_matrix/client/v3/keys/claim", {"one_time_keys": {"@alice:localhost": {alice_dev: "curve25519"}}}, bob)
    check("one-time keys, oldest first", claimed["one_time_keys"]["@alice:localhost"][alice_dev], {"curve25519:AAAA": "otk1"})
    bob_sync = call("GET", "/_matrix/client/v3/sync", token=bob)
    check("the to-device message", [m["content"] for m in bob_sync["to_device"]["events"]], [{"hello": "bob"}])
    call("PUT", "/_matrix/client/v3/sendToDevice/m.room_key_request/td1",
         {"messages": {"@bob:localhost": {bob_dev: {"hello": "bob"}}}}, alice)
    again = call("GET", f"/_matrix/client/v3/sync?since={bob_sync['next_batch']}&timeout=0", token=bob)
    check("a to-device send retried after the upgrade is not delivered twice",
          again.get("to_device", {}).get("events", []), [])
    threads = call("GET", f"/_matrix/client/v1/rooms/{room}/threads", token=alice)
    check("the thread", [t["event_id"] for t in threads["chunk"]], [sent[0]])
    rel = call("GET", f"/_matrix/client/v1/rooms/{room}/relations/{sent[0]}/m.thread", token=alice)
    check("the thread's replies", [e["event_id"] for e in rel["chunk"]], [reply])
    edited = call("GET", f"/_matrix/client/v3/rooms/{room}/event/{sent[1]}", token=alice)
    check("the edit is bundled", "m.replace" in edited.get("unsigned", {}).get("m.relations", {}), True)
    check("the backup key", call("GET", f"/_matrix/client/v3/room_keys/keys/{room}/sess1?version={version}", token=alice)["session_data"], {"ciphertext": "c"})
    check("the media", call("GET", "/_matrix/client/v1/media/download/" + mxc[len("mxc://"):], token=alice), b"hello upgrade")
    receipts = [e for e in bob_sync["rooms"]["join"][room]["ephemeral"]["events"] if e["type"] == "m.receipt"]
    check("the read receipt", list(receipts[0]["content"].keys()), [sent[2]])
    print("upgrade check passed")
finally:
    new.send_signal(signal.SIGTERM)
    new.wait(30)
