"""An application service built on mautrix-python (PyPI `mautrix`), a bridge framework nobody here
wrote, against a homeserver: the bridge side of the Application Service API.

The registration (written by make_registration.py and given to the homeserver before it started)
names the appservice's port, tokens, sender and namespaces (users and aliases @mxb_.* / #mxb_.*).
mautrix's AppService listens there; a normal user (m.login.dummy, open registration) talks to the
bridge's users. Checked:

1. Listener and ping: the as_token's whoami is the sender; mautrix's AppService answers on the
   registration's port; AppService.ping_self
   (POST /_matrix/client/v1/appservice/{id}/ping) returns, and the homeserver's
   POST /_matrix/app/v1/ping reaches the listener with the same transaction_id; the same ping by
   plain HTTP answers an integer duration_ms; a ping for another appservice id is 403
   M_FORBIDDEN.
2. Registration (m.login.application_service): the bot (sender_localpart) and a ghost
   @mxb_alice ensure_registered(), and whoami through their intents names them; a fresh ghost
   registered by plain HTTP with inhibit_login gets its user id and no access token; a username
   outside the namespace is 400 M_EXCLUSIVE.
3. The user creates a room and invites the ghost; the invite reaches mautrix's event handler in
   a transaction; the ghost joins, sets a display name (the user sees it in the profile and in
   the ghost's room member event), and sends a message that the user reads through /messages.
4. The user's own message reaches the handler (same event_id, sender, body).
5. Ephemeral (MSC2409): the user's typing notice and read receipt reach mautrix's handler as
   m.typing and m.receipt for the room.
6. Aliases: the ghost creates #mxb_room_...; it and the user resolve it; an unknown alias in the
   namespace is asked of the appservice (GET /_matrix/app/v1/rooms/{alias}), whose handler
   creates the room on the spot, and the user's lookup answers it; the user creating an alias in
   the namespace is 400 M_EXCLUSIVE; registering mxb_bob (and asking /register/available) is 400
   M_EXCLUSIVE.
7. Masquerading with the as_token (?user_id=) as a user outside the namespace, as the normal
   user, or as an unregistered namespaced user is 403 M_FORBIDDEN; as the ghost it works.
8. The bot is invited, joins and sends an m.notice that the user reads.
9. Appservice-mode encryption plumbing, as mautrix's bridges use it: /login lists
   m.login.application_service; the bot logs in with it through mautrix (a device of its own) and
   uploads device keys and one-time keys; a to-device message from the user to that device
   reaches mautrix's to-device handler (MSC2409/MSC4203); the device's one-time key count reaches
   its OTK handler (MSC3202); the user's device-list change reaches its device-list handler
   (MSC3202).

Checked against Synapse 1.163.2 as the reference server: all 64 checks pass there, with the
registration carrying both ephemeral names (Synapse then sends both transaction keys) and with
only the unstable one. To run it so:

    python make_registration.py /tmp/mxb.yaml 29333 localhost
    SYNAPSE_APPSERVICES=/tmp/mxb.yaml bash ../synapse/synapse.sh start /tmp/syn 8008
    python mautrix_bridge.py http://127.0.0.1:8008 /tmp/mxb.yaml

For Plexus, the same registration (with its server name) goes in
PLEXUS_APPSERVICE_REGISTRATIONS.

Usage: python mautrix_bridge.py BASE_URL REGISTRATION_YAML
       e.g. python mautrix_bridge.py http://127.0.0.1:8008 /tmp/mxb.yaml
Prints one line per check and ends with "N passed, M failed"; exit status 1 on any failure.
"""

import asyncio
import json
import logging
import sys
import time
import uuid
from types import SimpleNamespace
from urllib.parse import urlencode, urlparse

import vodozemac
import yaml
from aiohttp import web
from mautrix.api import HTTPAPI
from mautrix.appservice import AppService
from mautrix.appservice.state_store import ASStateStore
from mautrix.client import ClientAPI
from mautrix.client.state_store import MemoryStateStore
from mautrix.errors import MatrixRequestError
from mautrix.types import LoginType

from harness import Http, check, q, require, run_main, short

RUN_DEADLINE = 300.0  # seconds for the whole run, whatever happens
WAIT = 20.0  # seconds any one thing may take to arrive (a transaction, a message, a request)

CS = "/_matrix/client/v3"


class MemoryASStateStore(MemoryStateStore, ASStateStore):
    """mautrix's state store kept in memory (its default writes mx-state.json to the cwd)."""

    def __init__(self):
        MemoryStateStore.__init__(self)
        ASStateStore.__init__(self)


class Found(dict):
    """The spec's answer to an alias or user query that exists: an empty JSON object. mautrix
    answers 404 for any falsy return value, {} included, so the empty object must be truthy."""

    def __bool__(self):
        return True


class Inbox:
    """Everything that reached the appservice: each HTTP request the listener got (method, path,
    query, Authorization header, JSON body as sent) and what mautrix handed to its handlers."""

    def __init__(self):
        self.requests = []
        self.events = []  # (kind, JSON): "event" | "ephemeral" | "to_device"
        self.device_lists = []  # DeviceLists as JSON
        self.otk_counts = []  # {user: {device: {algorithm: count}}}
        self.alias_queries = []

    @web.middleware
    async def middleware(self, request, handler):
        body = None
        if request.can_read_body:
            try:
                body = json.loads(await request.text())  # aiohttp keeps the bytes for mautrix
            except ValueError:
                body = "(not JSON)"
        self.requests.append({
            "method": request.method, "path": request.path, "query": dict(request.query),
            "auth": request.headers.get("Authorization"), "body": body,
        })
        return await handler(request)

    def transactions(self):
        """The homeserver's transactions (not the synthetic ones this script sends itself)."""
        return [r["body"] for r in self.requests if r["method"] == "PUT"
                and "/transactions/" in r["path"] and "/transactions/synthetic-" not in r["path"]
                and isinstance(r["body"], dict)]

    def pings(self):
        return [r for r in self.requests
                if r["method"] == "POST" and r["path"] == "/_matrix/app/v1/ping"]

    def of_kind(self, kind):
        return [e for k, e in self.events if k == kind]

    def summary(self, kind):
        return short([(e.get("type"), e.get("room_id"), e.get("sender"), e.get("state_key"))
                      for e in self.of_kind(kind)][-12:], 800)


async def until(predicate, seconds=WAIT, interval=0.1):
    """Poll `predicate` (sync or async) until it returns something truthy, for at most `seconds`;
    returns that value or None."""
    end = time.monotonic() + seconds
    while True:
        got = predicate()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        if time.monotonic() >= end:
            return None
        await asyncio.sleep(interval)


async def attempt(awaitable, seconds=WAIT):
    """(result, None) or (None, what went wrong): a mautrix call, bounded in time."""
    try:
        return await asyncio.wait_for(awaitable, seconds), None
    except MatrixRequestError as e:
        return None, f"{type(e).__name__}: HTTP {e.http_status} {e.errcode} {e.message}"
    except asyncio.TimeoutError:
        return None, f"no answer within {seconds:.0f}s"
    except Exception as e:  # IntentError and friends wrap the homeserver's answer
        cause = f" (caused by {type(e.__cause__).__name__}: {e.__cause__})" if e.__cause__ else ""
        return None, f"{type(e).__name__}: {e}{cause}"


def errcode_is(status, data, want_status, want_errcode):
    return status == want_status and isinstance(data, dict) and data.get("errcode") == want_errcode


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed(account, user_id, device_id, obj):
    """`obj` with the device's ed25519 signature over its canonical JSON."""
    sig = account.sign(canonical(obj)).to_base64()
    return {**obj, "signatures": {user_id: {f"ed25519:{device_id}": sig}}}


def device_keys(account, user_id, device_id):
    return signed(account, user_id, device_id, {
        "user_id": user_id, "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {f"curve25519:{device_id}": account.curve25519_key.to_base64(),
                 f"ed25519:{device_id}": account.ed25519_key.to_base64()},
    })


def one_time_keys(account, user_id, device_id, count):
    account.generate_one_time_keys(count)
    keys = {f"signed_curve25519:{kid}": signed(account, user_id, device_id, {"key": k.to_base64()})
            for kid, k in account.one_time_keys.items()}
    account.mark_keys_as_published()
    return keys


def load_registration(path):
    with open(path) as f:
        reg = yaml.safe_load(f)
    missing = [k for k in ("id", "url", "as_token", "hs_token", "sender_localpart")
               if not isinstance(reg, dict) or not reg.get(k)]
    return reg, missing


async def register_user(http, username, password):
    """Plain /register with m.login.dummy (the user-interactive dance if the server asks for it):
    (status, data, line) of the last step."""
    body = {"username": username, "password": password,
            "initial_device_display_name": "mautrix interop user"}
    status, data, line = await http.call(None, "POST", f"{CS}/register", body)
    if status == 401 and isinstance(data, dict) and "session" in data:
        body["auth"] = {"type": "m.login.dummy", "session": data["session"]}
        status, data, line = await http.call(None, "POST", f"{CS}/register", body)
    return status, data, line


async def run(base, registration_path):
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="# log %(levelname)s %(name)s: %(message)s")
    suffix = uuid.uuid4().hex[:8]
    reg, missing = load_registration(registration_path)
    require(not missing, "the registration file has id, url, as_token, hs_token, sender_localpart",
            f"missing {missing}")
    url = urlparse(reg["url"])
    require(url.scheme == "http" and url.port, "the registration's url names an http port",
            reg["url"])
    as_port = url.port

    http = Http(base)
    as_client = SimpleNamespace(access_token=reg["as_token"])
    appservice = None
    inbox = Inbox()
    try:
        # --- 1. Listener and ping ---------------------------------------------------------------
        status, data, line = await http.call(as_client, "GET", f"{CS}/account/whoami")
        sender_local = reg["sender_localpart"]
        require(status == 200 and isinstance(data, dict)
                and str(data.get("user_id", "")).startswith(f"@{sender_local}:"),
                "whoami with the as_token (no user_id) is the sender_localpart user", line)
        bot_id = data["user_id"]
        server = bot_id.split(":", 1)[1]
        ghost_id = f"@mxb_alice:{server}"

        appservice = AppService(
            server=base, domain=server, as_token=reg["as_token"], hs_token=reg["hs_token"],
            bot_localpart=sender_local, id=reg["id"], state_store=MemoryASStateStore(),
            ephemeral_events=True, encryption_events=True, log=logging.getLogger("mxb"))
        appservice.app.middlewares.append(inbox.middleware)

        async def on_event(evt):
            kind = "ephemeral" if evt.type.is_ephemeral else "event"
            inbox.events.append((kind, evt.serialize()))

        async def on_to_device(evt):
            inbox.events.append(("to_device", evt.serialize()))

        async def on_device_lists(lists):
            inbox.device_lists.append(lists.serialize())

        async def on_otk_counts(counts):
            inbox.otk_counts.append({u: {d: c.serialize() for d, c in devs.items()}
                                     for u, devs in counts.items()})

        auto_rooms = {}

        async def on_alias_query(alias):
            """A bridge's portal-on-demand: an unknown #mxb_auto_* alias gets a room made for
            it by the bot, then the homeserver is told the alias now exists."""
            inbox.alias_queries.append(alias)
            localpart = alias[1:].split(":", 1)[0]
            if not localpart.startswith("mxb_auto_"):
                return None
            room_id = await asyncio.wait_for(appservice.intent.create_room(
                alias_localpart=localpart, name=f"portal {localpart}"), WAIT)
            auto_rooms[alias] = room_id
            return Found()

        appservice.matrix_event_handler(on_event)
        appservice.to_device_handler = on_to_device
        appservice.device_list_handler = on_device_lists
        appservice.otk_handler = on_otk_counts
        appservice.query_alias = on_alias_query
        await asyncio.wait_for(appservice.start(host="127.0.0.1", port=as_port), WAIT)
        appservice.ready = True

        as_http = Http(f"http://127.0.0.1:{as_port}")
        try:
            status, _, line = await as_http.call(None, "GET", "/_matrix/mau/live")
            require(status == 200, f"mautrix's AppService listens on 127.0.0.1:{as_port}", line)
        finally:
            await as_http.close()

        txn1 = f"mautrix-ping-{suffix}"
        duration, err = await attempt(appservice.ping_self(txn1))
        check(err is None and isinstance(duration, int),
              "AppService.ping_self: POST /_matrix/client/v1/appservice/{id}/ping answers",
              err or f"returned {duration!r}")
        pings = [p for p in inbox.pings() if isinstance(p["body"], dict)
                 and p["body"].get("transaction_id") == txn1]
        check(pings, "the homeserver's POST /_matrix/app/v1/ping reached the listener with the "
              "same transaction_id", f"pings seen: {short(inbox.pings())}")
        if pings:
            auth = pings[0]["auth"]
            check(auth == f"Bearer {reg['hs_token']}" or
                  pings[0]["query"].get("access_token") == reg["hs_token"],
                  "the homeserver authenticates to the appservice with the hs_token",
                  f"Authorization {auth!r}, query {pings[0]['query']}")

        txn2 = f"plain-ping-{suffix}"
        status, data, line = await http.call(
            as_client, "POST", f"/_matrix/client/v1/appservice/{q(reg['id'])}/ping",
            {"transaction_id": txn2})
        dur = data.get("duration_ms") if isinstance(data, dict) else None
        check(status == 200 and isinstance(dur, int) and not isinstance(dur, bool) and dur >= 0,
              "a plain-HTTP ping with the as_token answers an integer duration_ms", line)
        check(any(isinstance(p["body"], dict) and p["body"].get("transaction_id") == txn2
                  for p in inbox.pings()),
              "that ping reached the listener with its transaction_id",
              f"pings seen: {short(inbox.pings())}")
        status, data, line = await http.call(
            as_client, "POST", f"/_matrix/client/v1/appservice/{q('someone-else-' + suffix)}/ping",
            {})
        check(errcode_is(status, data, 403, "M_FORBIDDEN"),
              "a ping for another appservice id is 403 M_FORBIDDEN", line)

        # --- 2. Registration of the bot and a ghost ---------------------------------------------
        bot = appservice.intent
        ghost = bot.user(ghost_id)
        for name, intent, mxid in (("the bot", bot, bot_id), ("the ghost", ghost, ghost_id)):
            _, err = await attempt(intent.ensure_registered())
            check(err is None, f"{name} ({mxid}) ensure_registered() "
                  "(m.login.application_service)", err or "")
            who, err = await attempt(intent.whoami())
            check(err is None and who.user_id == mxid,
                  f"whoami through {name}'s intent is {mxid}", err or f"{who}")

        fresh = f"mxb_carol_{suffix}"
        status, data, line = await http.call(
            as_client, "POST", f"{CS}/register",
            {"type": "m.login.application_service", "username": fresh, "inhibit_login": True})
        check(status == 200 and isinstance(data, dict)
              and data.get("user_id") == f"@{fresh}:{server}" and "access_token" not in data,
              "registering a fresh namespaced user with the as_token and inhibit_login: its user "
              "id, no access token", line)
        status, data, line = await http.call(
            as_client, "POST", f"{CS}/register",
            {"type": "m.login.application_service", "username": f"outside_{suffix}",
             "inhibit_login": True})
        check(errcode_is(status, data, 400, "M_EXCLUSIVE"),
              "the appservice registering a username outside its namespace is 400 M_EXCLUSIVE",
              line)

        # --- 3. A normal user, a room, the ghost in it ------------------------------------------
        status, data, line = await register_user(http, f"mxint_user_{suffix}", "pw-" + suffix)
        require(status == 200 and isinstance(data, dict) and data.get("access_token"),
                "a normal user registers (m.login.dummy)", line)
        user = SimpleNamespace(access_token=data["access_token"], user_id=data["user_id"],
                               device_id=data.get("device_id"))

        status, data, line = await http.call(user, "POST", f"{CS}/createRoom",
                                             {"preset": "private_chat", "name": "mautrix interop"})
        require(status == 200 and isinstance(data, dict) and data.get("room_id"),
                "the user creates a room", line)
        room_id = data["room_id"]
        status, data, line = await http.call(user, "POST", f"{CS}/rooms/{q(room_id)}/invite",
                                             {"user_id": ghost_id})
        require(status == 200, "the user invites the ghost", line)

        def invite_of(mxid):
            return lambda: [e for e in inbox.of_kind("event")
                            if e.get("type") == "m.room.member" and e.get("room_id") == room_id
                            and e.get("state_key") == mxid and e.get("sender") == user.user_id
                            and (e.get("content") or {}).get("membership") == "invite"]

        got = await until(invite_of(ghost_id))
        check(got, "the ghost's invite (m.room.member, membership invite, sender the user) reaches "
              "mautrix's event handler in a transaction",
              f"after {WAIT:.0f}s the handler had {inbox.summary('event')}")

        joined, err = await attempt(ghost.join_room_by_id(room_id))
        require(err is None and joined == room_id, "the ghost joins the room", err or f"{joined}")

        display = f"Alice via mxb {suffix}"
        _, err = await attempt(ghost.set_displayname(display))
        check(err is None, "the ghost sets its display name", err or "")
        status, data, line = await http.call(user, "GET",
                                             f"{CS}/profile/{q(ghost_id)}/displayname")
        check(status == 200 and isinstance(data, dict) and data.get("displayname") == display,
              "the user sees the ghost's display name in its profile", line)

        async def member_name():
            status, data, _ = await http.call(
                user, "GET", f"{CS}/rooms/{q(room_id)}/state/m.room.member/{q(ghost_id)}")
            return status == 200 and isinstance(data, dict) and data.get("displayname") == display \
                and data.get("membership") == "join"

        ok = await until(member_name, interval=0.5)
        check(ok, "the user sees the ghost joined with that display name (its m.room.member)",
              f"after {WAIT:.0f}s: GET .../state/m.room.member/{ghost_id} had no joined member "
              f"with displayname {display!r}")

        ghost_body = f"hello from a bridged user ({suffix})"
        ghost_event, err = await attempt(ghost.send_text(room_id, ghost_body))
        require(err is None and str(ghost_event).startswith("$"),
                "the ghost sends a text message", err or f"{ghost_event}")

        async def user_sees(event_id, sender, msgtype, body):
            status, data, _ = await http.call(
                user, "GET", f"{CS}/rooms/{q(room_id)}/messages?dir=b&limit=50")
            chunk = data.get("chunk", []) if status == 200 and isinstance(data, dict) else []
            return any(e.get("event_id") == event_id and e.get("sender") == sender
                       and (e.get("content") or {}).get("msgtype") == msgtype
                       and (e.get("content") or {}).get("body") == body for e in chunk)

        ok = await until(lambda: user_sees(ghost_event, ghost_id, "m.text", ghost_body),
                         interval=0.5)
        check(ok, "the user reads the ghost's message through /messages (event id, sender, body)",
              f"not in the room's last 50 events after {WAIT:.0f}s")

        # --- 4. The user's message reaches the appservice ---------------------------------------
        user_body = f"hello bridge ({suffix})"
        status, data, line = await http.call(
            user, "PUT", f"{CS}/rooms/{q(room_id)}/send/m.room.message/u1-{suffix}",
            {"msgtype": "m.text", "body": user_body})
        require(status == 200 and isinstance(data, dict) and data.get("event_id"),
                "the user sends a message", line)
        user_event = data["event_id"]
        got = await until(lambda: [e for e in inbox.of_kind("event")
                                   if e.get("event_id") == user_event])
        check(got and got[0].get("sender") == user.user_id and got[0].get("room_id") == room_id
              and (got[0].get("content") or {}).get("body") == user_body
              and got[0].get("type") == "m.room.message",
              "the user's message reaches mautrix's event handler (event_id, room, sender, body)",
              short(got[0]) if got else f"after {WAIT:.0f}s the handler had "
              f"{inbox.summary('event')}")

        # --- 5. Ephemeral events (MSC2409) ------------------------------------------------------
        status, _, line = await http.call(
            user, "PUT", f"{CS}/rooms/{q(room_id)}/typing/{q(user.user_id)}",
            {"typing": True, "timeout": 30000})
        check(status == 200, "the user starts typing", line)
        status, _, line = await http.call(
            user, "POST", f"{CS}/rooms/{q(room_id)}/receipt/m.read/{q(ghost_event)}", {})
        check(status == 200, "the user sends a read receipt for the ghost's message", line)

        def raw_edu_keys(kind):
            keys = set()
            for body in inbox.transactions():
                for key in ("ephemeral", "de.sorunome.msc2409.ephemeral"):
                    for e in body.get(key) or []:
                        if isinstance(e, dict) and e.get("type") == kind \
                                and e.get("room_id") == room_id:
                            keys.add(key)
            return sorted(keys)

        def typing_seen():
            return [e for e in inbox.of_kind("ephemeral") if e.get("type") == "m.typing"
                    and e.get("room_id") == room_id
                    and user.user_id in (e.get("content") or {}).get("user_ids", [])]

        def receipt_seen():
            return [e for e in inbox.of_kind("ephemeral") if e.get("type") == "m.receipt"
                    and e.get("room_id") == room_id
                    and user.user_id in ((e.get("content") or {}).get(ghost_event) or {})
                    .get("m.read", {})]

        ok = await until(typing_seen)
        check(ok, "the user's typing reaches mautrix's ephemeral handler as m.typing for the room",
              f"after {WAIT:.0f}s ephemeral events: {inbox.summary('ephemeral')}; transaction "
              f"keys: {sorted({k for t in inbox.transactions() for k in t})}")
        ok = await until(receipt_seen)
        check(ok, "the user's read receipt reaches mautrix's ephemeral handler as m.receipt "
              "(event id, m.read, user)",
              f"after {WAIT:.0f}s ephemeral events: {short(inbox.of_kind('ephemeral')[-6:])}")
        print(f"# the server sent m.typing under {raw_edu_keys('m.typing')} and m.receipt under "
              f"{raw_edu_keys('m.receipt')}", flush=True)

        # --- 6. Aliases -------------------------------------------------------------------------
        alias_local = f"mxb_room_{suffix}"
        alias = f"#{alias_local}:{server}"
        _, err = await attempt(ghost.add_room_alias(room_id, alias_local))
        check(err is None, f"the ghost creates {alias} in its exclusive namespace", err or "")
        info, err = await attempt(ghost.resolve_room_alias(alias))
        check(err is None and info.room_id == room_id, "the ghost resolves the alias to the room",
              err or f"{info}")
        status, data, line = await http.call(user, "GET", f"{CS}/directory/room/{q(alias)}")
        check(status == 200 and isinstance(data, dict) and data.get("room_id") == room_id,
              "the user resolves the ghost's alias to the room", line)

        auto = f"#mxb_auto_{suffix}:{server}"
        status, data, line = await http.call(user, "GET", f"{CS}/directory/room/{q(auto)}")
        check(auto in inbox.alias_queries,
              "an unknown alias in the namespace is asked of the appservice "
              "(GET /_matrix/app/v1/rooms/{alias})",
              f"alias queries seen: {inbox.alias_queries}; user got {line}")
        check(status == 200 and isinstance(data, dict) and auto in auto_rooms
              and data.get("room_id") == auto_rooms[auto],
              "the user's lookup answers the room the appservice made for it on the spot",
              f"{line}; the appservice made {auto_rooms}")

        taken = f"#mxb_x_{suffix}:{server}"
        status, data, line = await http.call(user, "PUT", f"{CS}/directory/room/{q(taken)}",
                                             {"room_id": room_id})
        check(errcode_is(status, data, 400, "M_EXCLUSIVE"),
              "the user creating an alias in the appservice's namespace is 400 M_EXCLUSIVE", line)
        status, data, line = await register_user(http, "mxb_bob", "pw-" + suffix)
        check(errcode_is(status, data, 400, "M_EXCLUSIVE"),
              "registering username mxb_bob (the appservice's namespace) is 400 M_EXCLUSIVE", line)
        status, data, line = await http.call(None, "GET",
                                             f"{CS}/register/available?username=mxb_bob")
        check(errcode_is(status, data, 400, "M_EXCLUSIVE"),
              "GET /register/available?username=mxb_bob is 400 M_EXCLUSIVE", line)

        # --- 7. Masquerading --------------------------------------------------------------------
        def as_user(path, mxid):
            sep = "&" if "?" in path else "?"
            return f"{path}{sep}{urlencode({'user_id': mxid})}"

        for who, mxid in (("a user outside the namespace", f"@someoneelse_{suffix}:{server}"),
                          ("the normal user (outside the namespace)", user.user_id),
                          ("an unregistered namespaced user", f"@mxb_nobody_{suffix}:{server}")):
            status, data, line = await http.call(as_client, "GET",
                                                 as_user(f"{CS}/account/whoami", mxid))
            check(errcode_is(status, data, 403, "M_FORBIDDEN"),
                  f"whoami with the as_token as {who} is 403 M_FORBIDDEN", line)
        status, data, line = await http.call(
            as_client, "PUT",
            as_user(f"{CS}/rooms/{q(room_id)}/send/m.room.message/mq-{suffix}", user.user_id),
            {"msgtype": "m.text", "body": "not allowed"})
        check(errcode_is(status, data, 403, "M_FORBIDDEN"),
              "sending a message with the as_token as the normal user is 403 M_FORBIDDEN", line)
        status, data, line = await http.call(as_client, "GET",
                                             as_user(f"{CS}/account/whoami", ghost_id))
        check(status == 200 and isinstance(data, dict) and data.get("user_id") == ghost_id,
              "whoami with the as_token as the registered ghost names the ghost", line)

        # --- 8. The bot's notice ----------------------------------------------------------------
        status, data, line = await http.call(user, "POST", f"{CS}/rooms/{q(room_id)}/invite",
                                             {"user_id": bot_id})
        require(status == 200, "the user invites the bot", line)
        got = await until(invite_of(bot_id))
        check(got, "the bot's invite reaches mautrix's event handler",
              f"after {WAIT:.0f}s the handler had {inbox.summary('event')}")
        joined, err = await attempt(bot.join_room_by_id(room_id))
        require(err is None and joined == room_id, "the bot joins the room", err or f"{joined}")
        notice = f"bridge notice ({suffix})"
        notice_event, err = await attempt(bot.send_notice(room_id, notice))
        require(err is None and str(notice_event).startswith("$"), "the bot sends an m.notice",
                err or f"{notice_event}")
        ok = await until(lambda: user_sees(notice_event, bot_id, "m.notice", notice),
                         interval=0.5)
        check(ok, "the user reads the bot's m.notice (event id, sender, msgtype, body)",
              f"not in the room's last 50 events after {WAIT:.0f}s")

        # --- 9. Appservice-mode encryption plumbing ---------------------------------------------
        await encryption_plumbing(base, http, appservice, inbox, user, bot_id, suffix)
    finally:
        if appservice is not None:
            try:
                await asyncio.wait_for(appservice.stop(), WAIT)
            except Exception as e:  # the run's verdict is already made; say so and go on
                print(f"# stopping the appservice listener: {type(e).__name__}: {e}", flush=True)
        await http.close()


async def encryption_plumbing(base, http, appservice, inbox, user, bot_id, suffix):
    """What a mautrix bridge with appservice-mode encryption needs of the server: an appservice
    login for the bot's own device, and to-device messages, one-time key counts and device list
    changes for it in the transactions."""
    status, data, line = await http.call(None, "GET", f"{CS}/login")
    flows = [f.get("type") for f in data.get("flows", [])] if isinstance(data, dict) else []
    check("m.login.application_service" in flows,
          "GET /login lists m.login.application_service (mautrix bridges refuse to start "
          "encryption without it)", line)

    # As mautrix.bridge.e2ee does: the as_token authenticates the appservice login, and the
    # device's own access token replaces it.
    client = ClientAPI(mxid=bot_id, api=HTTPAPI(base_url=base, token=appservice.as_token,
                                                client_session=appservice.http_session))
    resp, err = await attempt(client.login(login_type=LoginType.APPSERVICE,
                                           device_name="mxb bridge bot", store_access_token=True))
    require(err is None and resp.user_id == bot_id and resp.device_id and resp.access_token,
            "the bot logs in with m.login.application_service through mautrix (a device of its "
            "own)", err or f"{resp}")
    device_id = resp.device_id
    bot_device = SimpleNamespace(access_token=resp.access_token)
    status, data, line = await http.call(bot_device, "GET", f"{CS}/account/whoami")
    check(status == 200 and isinstance(data, dict) and data.get("user_id") == bot_id
          and data.get("device_id") == device_id,
          "whoami with the bot device's access token names the bot and that device", line)

    account = vodozemac.Account()
    status, data, line = await http.call(bot_device, "POST", f"{CS}/keys/upload", {
        "device_keys": device_keys(account, bot_id, device_id),
        "one_time_keys": one_time_keys(account, bot_id, device_id, 5)})
    counts = data.get("one_time_key_counts") if isinstance(data, dict) else None
    require(status == 200 and isinstance(counts, dict) and counts.get("signed_curve25519") == 5,
            "the bot device uploads device keys and 5 signed one-time keys", line)

    nonce = f"to-device-{suffix}"
    status, data, line = await http.call(
        user, "PUT", f"{CS}/sendToDevice/m.interop.ping/td-{suffix}",
        {"messages": {bot_id: {device_id: {"nonce": nonce}}}})
    check(status == 200, "the user sends a to-device message to the bot's device", line)
    got = await until(lambda: [e for e in inbox.of_kind("to_device")
                               if (e.get("content") or {}).get("nonce") == nonce])
    check(got and got[0].get("type") == "m.interop.ping" and got[0].get("sender") == user.user_id
          and got[0].get("to_user_id") == bot_id and got[0].get("to_device_id") == device_id,
          "the to-device message reaches mautrix's to-device handler (type, sender, to_user_id, "
          "to_device_id)",
          short(got[0]) if got else f"after {WAIT:.0f}s none; to-device keys in transactions: "
          f"{sorted({k for t in inbox.transactions() for k in t if 'to_device' in k})}")

    got = await until(lambda: [c for c in inbox.otk_counts
                               if (c.get(bot_id) or {}).get(device_id, {})
                               .get("signed_curve25519") == 5])
    check(got, "the bot device's one-time key count (signed_curve25519: 5) reaches mautrix's OTK "
          "handler (MSC3202)",
          f"after {WAIT:.0f}s counts seen: {short(inbox.otk_counts[-4:])}; OTK keys in "
          f"transactions: {sorted({k for t in inbox.transactions() for k in t if 'one_time' in k})}")

    # The user's device list changes (its device gets keys) while it shares a room with the bot.
    user_account = vodozemac.Account()
    status, _, line = await http.call(user, "POST", f"{CS}/keys/upload", {
        "device_keys": device_keys(user_account, user.user_id, user.device_id)})
    check(status == 200, "the user's device uploads its device keys", line)
    got = await until(lambda: [d for d in inbox.device_lists
                               if user.user_id in d.get("changed", [])])
    check(got, "the user's device-list change reaches mautrix's device-list handler (MSC3202)",
          f"after {WAIT:.0f}s device lists seen: {short(inbox.device_lists[-4:])}; keys in "
          f"transactions: {sorted({k for t in inbox.transactions() for k in t})}")


if __name__ == "__main__":
    run_main(run, __doc__, RUN_DEADLINE, files=1)
