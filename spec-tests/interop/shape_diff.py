"""The JSON shapes of Plexus's client-server API responses, field by field, against Synapse's.

The same scripted client run goes against both servers: two fresh users (alice and bob, with a
random suffix), then accounts and devices, profile, push rules, filters, end-to-end keys and
to-device messages, a private room (messages, an edit, a reaction, a redaction, a thread, name
and topic) that bob is invited to and joins, a public room with an alias, syncs at each step
(bob's invite, bob's first sync after joining, receipts, typing, account data, to-device, both
users' initial syncs), the room reading endpoints (/messages, /context, /event, /state,
/members, /relations, /threads, /search, /notifications, ...), room summaries, and a few bad
requests. Every response is kept as (HTTP status, JSON) under a label such as
"GET /sync bob (joined)".

Each JSON body is then reduced to its shape: the paths of every field with its type (str, int,
float, bool, null, object, array), ids of the run replaced by names (<user:alice>,
<room:private>, <event:msg1>, ...) so that both servers' responses line up, values kept only for
the enum-like fields clients branch on (errcode, type, membership, limited, ...). List elements
are matched by what they are: events by type (and state_key, and relation type), push rules by
rule_id, conditions by kind, flows by type; the shapes of elements that match are merged.

The differences of a label: its HTTP status, fields only Synapse has (missing in Plexus),
fields only Plexus has (extra), fields whose type or kept value differs, and apart from those
(server specific, never a failure) the "unstable extras" (fields under an MSC or vendor prefix
such as org.matrix.msc*) and the fields of Synapse's legacy event format (age, user_id,
prev_content, ... at an event's top level, outside /sync). A label passes when each of its other
differences is accepted by an entry of ACCEPTED (below: one entry per known cause, with why).

Usage: python shape_diff.py PLEXUS_URL SYNAPSE_URL
       e.g. python shape_diff.py http://127.0.0.1:8008 http://127.0.0.1:8448
Prints one line per label ("ok" or "FAIL", and how many of its differences are accepted, per
cause), after the differences of each failing label that nothing accepts; then those failing
differences that recur under several labels, and how many differences each cause of ACCEPTED
accepted over the whole run; it ends with "N passed, M failed" (one check per label, and one per
server that the scripted run went to the end); exit status 1 on any failure.
With SHAPE_DIFF_VERBOSE=1, every difference of every label is printed (the accepted ones marked
with their cause), the server specific extras too.
With SHAPE_DIFF_DUMP=DIR in the environment, the raw responses (and the names given to ids) are
written to DIR/plexus.json and DIR/synapse.json as well.
"""

import asyncio
import json
import os
import re
import time
import uuid

import aiohttp
import vodozemac

from harness import HTTP_TIMEOUT, check, q, run_main

RUN_DEADLINE = 300.0  # seconds for the whole run (both servers at once), whatever happens
SYNC_WAIT = 20.0  # seconds a "sync until ..." step may take before its last response is kept


class Accept:
    """One accepted cause of differences. Each side's pattern is a regular expression searched in
    the report line of a difference, "path: description" as printed (e.g. `rooms/invite: object
    (empty)`, `devices[*]/last_seen_ts: Plexus int | Synapse int|null`, `status: Plexus 404 ...
    | Synapse 200 {}`): plexus= for fields only Plexus has, synapse= for fields only Synapse has,
    differs= for a type, kept value or HTTP status that differs. labels=, when given, is searched
    in the label: the cause is accepted there only."""

    def __init__(self, tag, why, plexus=None, synapse=None, differs=None, labels=None):
        self.tag, self.why = tag, why
        self.sides = {kind: re.compile(pat) for kind, pat in (
            ("extra", plexus), ("missing", synapse), ("type", differs), ("status", differs))
            if pat}
        self.labels = re.compile(labels) if labels else None

    def matches(self, label, kind, line):
        pat = self.sides.get(kind)
        return bool(pat and pat.search(line)
                    and (self.labels is None or self.labels.search(label)))


# The differences that are known and accepted, one entry per cause: (a short tag, why, then the
# report lines it accepts on each side). Any difference that none of them matches fails its
# label; an accepted one is still counted under its tag, per label and at the end.
PL = r'\[m\.room\.power_levels sk=""\]/content/'
ACCEPTED = [
    # /sync
    Accept("sync sections", "Plexus sends every /sync section, empty ones too; Synapse leaves "
           "the empty ones out (both are valid)", labels=r"^GET /sync ",
           plexus=r"^(rooms|rooms/(invite|join|knock|leave)|account_data|presence|to_device|"
                  r"device_lists|device_lists/(changed|left)): (object|array)( \{[^}]*\})? "
                  r"\(empty\)$"),
    Accept("summary", "Plexus sends a joined room's summary in every sync (heroes even for named "
           "rooms); Synapse only when it changed", labels=r"^GET /sync ",
           plexus=r"^rooms/join/[^/]+/summary/m\.(heroes: array \{\[\*\]\}|"
                  r"joined_member_count: int|invited_member_count: int)$"),
    Accept("sync create room_id", "the v12 m.room.create in /sync: Synapse adds room_id, which "
           "sync's room sections leave out of events",
           synapse=r'^rooms/join/[^/]+/(state|timeline)/events\[m\.room\.create sk=""\]/'
                   r'room_id: str$'),
    Accept("sync redacted_because room_id", "in /sync, the redaction under "
           "unsigned.redacted_because keeps its room_id in Plexus",
           plexus=r"^rooms/join/[^/]+/timeline/events\[[^\]]*\]/unsigned/redacted_because/"
                  r"room_id: str$"),
    Accept("lazy-load state", "lazy-loading initial sync whose timeline starts at an "
           "m.room.name: Plexus's state (before the timeline) holds the earlier name, Synapse "
           "leaves it out (the state/timeline split of the first events differs)",
           labels=r"lazy_load_members",
           plexus=r'^rooms/join/[^/]+/state/events\[m\.room\.name sk=""\]: object \{'),
    Accept("presence off", "Synapse runs with presence off outside federated mode "
           "(synapse.sh): always offline, never in /sync",
           labels=r"^(GET /presence/|GET /sync )",
           plexus=r"^(currently_active: bool|last_active_ago: int|status_msg: str|"
                  r"presence: object \{events\})$",
           differs=r'^presence: Plexus "online" \| Synapse "offline"$'),
    # events
    Accept("power levels", "createRoom's default power levels: Plexus has notifications.room, "
           "Synapse has historical (MSC2716) and events.m.call.invite",
           plexus=PL + r"notifications: object \{room\}$",
           synapse=PL + r"(historical|events/m\.call\.invite): int$"),
    Accept("m.topic mimetype", "m.topic's text/plain representation carries its mimetype "
           "(spec v1.15 text)", plexus=r"m\.topic/m\.text\[\*\]/mimetype: str$"),
    Accept("redacted_by", "Synapse's non-spec unsigned.redacted_by, and the transaction_id in "
           "redacted_because.unsigned",
           synapse=r"(^|/)unsigned/(redacted_by|redacted_because/unsigned/transaction_id): "
                   r"str$"),
    # push rules
    Accept("legacy push rules", "the legacy mention rules .m.rule.contains_display_name, "
           ".m.rule.roomnotif, .m.rule.contains_user_name: gone from the spec (MSC4210, v1.17); "
           "Plexus has ruma's current defaults",
           synapse=r"(^|/)global/(override\[\.m\.rule\.(contains_display_name|roomnotif)\]: "
                   r"object \{|content: array \{\[\.m\.rule\.contains_user_name\]\}$|"
                   r"content\[\.m\.rule\.contains_user_name\]: object \{)"),
    Accept("empty rule kinds", "Synapse lists push rule kinds that have no rules",
           synapse=r"(^|/)global/(content|override|postcontent|room|sender|underride): "
                   r"array \(empty\)$"),
    Accept("highlight false", "Synapse spells out highlight: false (the default) in rules that "
           "do not highlight",
           synapse=r"(^|/)global/(override|underride)\[\.m\.rule\.(invite_for_me|call|encrypted|"
                   r"encrypted_room_one_to_one|message|room_one_to_one)\]/actions\[highlight\]: "
                   r"object \{set_tweak, value\}$"),
    # accounts, devices, keys, profile
    Accept("UIA completed", "completed: [] in the first user-interactive auth step (optional in "
           "the spec)", plexus=r"^completed: array \(empty\)$"),
    Accept("login well_known", "/login's optional well_known", labels=r"^POST /login ",
           synapse=r"^well_known: object \{m\.homeserver\}$"),
    Accept("register home_server", "/register's home_server: deprecated since r0.4.0 and not in "
           "ruma's response type, which Plexus answers with (clients read the user id's server "
           "name)", labels=r"^POST /register ", synapse=r"^home_server: str$"),
    Accept("ruma omits defaults", "fields at the spec's default, which ruma's response types "
           "leave out: whoami's is_guest: false, empty unstable_features in /versions, and the "
           "capabilities m.change_password, m.set_displayname, m.set_avatar_url (default "
           "enabled) and m.get_login_token (default disabled)",
           labels=r"^GET /(account/whoami|versions|capabilities)",
           synapse=r"^(is_guest: bool|unstable_features: object \(empty\)|capabilities/"
                   r"m\.(change_password|set_displayname|set_avatar_url|get_login_token): "
                   r"object \{enabled\})$"),
    Accept("m.profile_fields", "the m.profile_fields capability (spec v1.16, which Plexus does "
           "not claim)", synapse=r"^capabilities/m\.profile_fields: object \{enabled\}$"),
    Accept("avatar_url unset", "GET /profile/{id}/avatar_url with none set: Plexus 404 "
           "M_NOT_FOUND as the spec says, Synapse 200 {}", labels=r"^GET /profile/avatar_url ",
           differs=r"^status: Plexus 404 \{'errcode': 'M_NOT_FOUND'.*\| Synapse 200 \{\}$"),
    Accept("device user_id", "Synapse's user_id in /devices (not in the spec)",
           labels=r"^GET /devices", synapse=r"^(devices\[\*\]/)?user_id: str$"),
    Accept("device last_seen_ts", "Synapse's last_seen_ts may be null",
           labels=r"^GET /devices",
           differs=r"^(devices\[\*\]/)?last_seen_ts: Plexus int \| Synapse int\|null$"),
    Accept("keys unsigned", "/keys/query: Synapse's empty unsigned on a device with no name",
           synapse=r"^device_keys/<user:\w+>/<device:\w+>/unsigned: object \(empty\)$"),
    Accept("avatar_url null", "Synapse's avatar_url: null in the user directory and /search "
           "profile_info; Plexus leaves it out",
           synapse=r"(^results\[\*\]|/profile_info/<user:\w+>)/avatar_url: null$"),
    Accept("versions r0", "Synapse still lists r0.0.1 to r0.6.0 in /versions",
           labels=r"^GET /versions$", synapse=r'^versions\["r0\.[0-6]\.\d"\]: "r0\.[0-6]\.\d"$'),
    # room reading endpoints
    Accept("messages end", "/messages that reached the start of the room: the spec says omit "
           "end, Synapse sends one", labels=r"^GET /messages ", synapse=r"^end: str$"),
    Accept("threads transaction_id", "/threads: Plexus gives unsigned.transaction_id to the "
           "device that sent the event (as the spec says of transaction_id), Synapse does not",
           labels=r"^GET /threads$",
           plexus=r"^chunk\[[^\]]*\]/unsigned/(m\.relations/m\.thread/latest_event/unsigned/)?"
                  r"transaction_id: str$"),
    Accept("notifications next_token", "/notifications: Synapse sends next_token even with no "
           "more to come (the spec: absent then)", labels=r"^GET /notifications$",
           synapse=r"^next_token: str$"),
    Accept("notifications profile_tag", "/notifications: Synapse's profile_tag: null",
           labels=r"^GET /notifications$", synapse=r"^notifications\[\*\]/profile_tag: null$"),
    Accept("notifications membership", "/notifications: Plexus gives each event its "
           "unsigned.membership (MSC4115: servers SHOULD wherever practical), Synapse does not",
           labels=r"^GET /notifications$",
           plexus=r'^notifications\[\*\]/event/unsigned/membership: "join"$'),
]


# --- running the scripted actions: {label: (status, json)} per server ---------------------------


class Stop(Exception):
    """A step failed that the rest of the run depends on."""


class User:
    def __init__(self, name):
        self.name = name  # alice or bob: the placeholder name
        self.localpart = f"shape_{name}_{uuid.uuid4().hex[:8]}"
        self.password = "pw-" + uuid.uuid4().hex
        self.user_id = self.token = self.device_id = None
        self.olm = vodozemac.Account()
        self.since = None  # the next_batch of this user's latest sync


class Server:
    """One server under test: its requests, the responses recorded under labels, and the names
    given to the ids of the run (for the shape comparison)."""

    def __init__(self, name, base):
        self.name = name
        self.base = base.rstrip("/")
        self.results = {}  # label -> (status, JSON body or text), in the order recorded
        self.notes = {}  # label -> a remark (a sync condition that never held, ...)
        self.names = {}  # an id of this run -> its placeholder, e.g. "<room:private>"
        self.error = None  # why the scenario stopped early, if it did
        self.txn = 0
        self.session = None

    def name_id(self, real, placeholder):
        if isinstance(real, str) and real:
            self.names[real] = placeholder

    def next_txn(self):
        self.txn += 1
        return f"shape{self.txn}-{uuid.uuid4().hex[:6]}"

    def record(self, label, status, data):
        if label in self.results:  # a label is one response: make repeated ones distinct
            n = 2
            while f"{label} #{n}" in self.results:
                n += 1
            label = f"{label} #{n}"
        self.results[label] = (status, data)

    async def req(self, label, method, path, user=None, body=None, params=None, raw=None,
                  token=None, record=True):
        """One request; recorded under `label` unless record is False. `path` is under
        /_matrix/client/v3 unless it starts with /_matrix. `raw` is a body sent as is."""
        url = self.base + (path if path.startswith("/_matrix") else "/_matrix/client/v3" + path)
        headers = {}
        if token is None and user is not None:
            token = user.token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        kwargs = {}
        if raw is not None:
            kwargs["data"] = raw
            headers["Content-Type"] = "application/json"
        elif body is not None:
            kwargs["json"] = body
        async with self.session.request(method, url, headers=headers, params=params,
                                        **kwargs) as r:
            text = await r.text()
            try:
                data = json.loads(text)
            except ValueError:
                data = text
            status = r.status
        if record:
            self.record(label, status, data)
        return status, data

    async def need(self, label, method, path, user=None, body=None, **kw):
        """A request the rest of the run depends on: HTTP 200 with a JSON object, or Stop."""
        status, data = await self.req(label, method, path, user=user, body=body, **kw)
        if status != 200 or not isinstance(data, dict):
            raise Stop(f"{label}: HTTP {status} {str(data)[:300]}")
        return data

    async def poll(self, label, method, path, ready, user=None, body=None, wait=10.0):
        """A request repeated until ready(json) holds (an index that fills in the background);
        the response that was ready is recorded (or the last one, with a note)."""
        start = time.monotonic()
        tries = 0
        while True:
            tries += 1
            status, data = await self.req(label, method, path, user=user, body=body,
                                          record=False)
            if status != 200 or ready(data):
                break
            if time.monotonic() - start >= wait:
                self.notes[label] = f"not ready within {wait:.0f}s; last response kept"
                break
            await asyncio.sleep(0.5)
        if tries > 1 and label not in self.notes:
            self.notes[label] = f"ready after {time.monotonic() - start:.1f}s ({tries} tries)"
        self.record(label, status, data)

    async def sync_until(self, label, user, pred, params=None, wait=SYNC_WAIT):
        """Sync as `user` (incrementally from user.since, if any) until pred(response) holds;
        that response is recorded under `label` (or the last one, with a note, if pred never
        held within `wait` seconds). Advances user.since."""
        deadline = time.monotonic() + wait
        last = None
        while True:
            p = dict(params or {})
            if user.since:
                p["since"] = user.since
            remaining = deadline - time.monotonic()
            p["timeout"] = str(int(max(0, min(5.0, remaining)) * 1000)) if user.since else "0"
            status, data = await self.req(label, "GET", "/sync", user=user, params=p,
                                          record=False)
            if status != 200 or not isinstance(data, dict):
                self.record(label, status, data)
                raise Stop(f"{label}: HTTP {status} {str(data)[:300]}")
            last = data
            user.since = data.get("next_batch", user.since)
            if pred(data):
                break
            if time.monotonic() >= deadline:
                self.notes[label] = f"condition not met within {wait:.0f}s; last response kept"
                break
        self.record(label, 200, last)
        return last

    async def initial_sync(self, label, user, params=None):
        """A sync without `since` (the full state of every room), recorded; user.since is set
        to its next_batch only if the user had none. Synapse answers a repeated request (same
        user, filter and timeout) from a cache for a while: a user's initial syncs each need
        their own filter."""
        p = dict(params or {})
        p["timeout"] = "0"
        data = await self.need(label, "GET", "/sync", user=user, params=p)
        if user.since is None:
            user.since = data.get("next_batch")
        return data


def rooms_section(sync, section, room_id):
    return ((sync.get("rooms") or {}).get(section) or {}).get(room_id)


def timeline_types(sync, room_id):
    room = rooms_section(sync, "join", room_id) or {}
    return [e.get("type") for e in (room.get("timeline") or {}).get("events") or []]


def ephemeral_types(sync, room_id):
    room = rooms_section(sync, "join", room_id) or {}
    return [e.get("type") for e in (room.get("ephemeral") or {}).get("events") or []]


def canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def signed(user, obj):
    """obj with the user's device signature (ed25519 of its canonical JSON)."""
    sig = user.olm.sign(canonical_json(obj).encode()).to_base64()
    return {**obj, "signatures": {user.user_id: {f"ed25519:{user.device_id}": sig}}}


def device_keys(user):
    return signed(user, {
        "user_id": user.user_id,
        "device_id": user.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            f"curve25519:{user.device_id}": user.olm.curve25519_key.to_base64(),
            f"ed25519:{user.device_id}": user.olm.ed25519_key.to_base64(),
        },
    })


def one_time_keys(user, n=3):
    user.olm.generate_one_time_keys(n)
    keys = {f"signed_curve25519:{kid}": signed(user, {"key": key.to_base64()})
            for kid, key in user.olm.one_time_keys.items()}
    user.olm.mark_keys_as_published()
    return keys


async def register(s, user):
    # The first request has no auth: the answer is the user-interactive auth (401, flows).
    await s.req(f"POST /register {user.name} (no auth)", "POST", "/register",
                body={"username": user.localpart, "password": user.password})
    data = await s.need(f"POST /register {user.name}", "POST", "/register",
                        body={"username": user.localpart, "password": user.password,
                              "auth": {"type": "m.login.dummy"}})
    user.user_id, user.token, user.device_id = data["user_id"], data["access_token"], data[
        "device_id"]
    s.name_id(user.user_id, f"<user:{user.name}>")
    s.name_id(user.device_id, f"<device:{user.name}>")


async def send(s, label, room_id, user, content, etype="m.room.message", name=None):
    data = await s.need(label, "PUT", f"/rooms/{q(room_id)}/send/{etype}/{s.next_txn()}",
                        user=user, body=content)
    if name:
        s.name_id(data["event_id"], f"<event:{name}>")
    return data["event_id"]


async def put_state(s, label, room_id, user, etype, key, content, name=None):
    data = await s.need(label, "PUT", f"/rooms/{q(room_id)}/state/{etype}/{q(key)}", user=user,
                        body=content)
    if name:
        s.name_id(data["event_id"], f"<event:{name}>")
    return data["event_id"]


async def public_rooms(s, label, method, user, params=None, body=None):
    """The room directory, recorded with only the rooms of this run in its chunk."""
    status, data = await s.req(label, method, "/publicRooms", user=user, params=params,
                               body=body, record=False)
    if status == 200 and isinstance(data, dict) and isinstance(data.get("chunk"), list):
        data["chunk"] = [r for r in data["chunk"] if r.get("room_id") in s.names]
    s.record(label, status, data)


async def scenario(s):
    alice, bob = User("alice"), User("bob")

    # Server level, no user yet.
    await s.req("GET /versions", "GET", "/_matrix/client/versions")
    await s.req("GET /login", "GET", "/login")
    await s.req("GET /register/available", "GET", "/register/available",
                params={"username": alice.localpart})
    await register(s, alice)
    await register(s, bob)
    server_name = alice.user_id.split(":", 1)[1]
    s.name_id(server_name, "<server>")
    await s.req("POST /register (user in use)", "POST", "/register",
                body={"username": alice.localpart, "password": "x" * 12,
                      "auth": {"type": "m.login.dummy"}})

    # Accounts, devices, profile.
    login = await s.need("POST /login (password)", "POST", "/login", body={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.localpart},
        "password": alice.password, "initial_device_display_name": "second device"})
    s.name_id(login.get("device_id"), "<device:alice2>")
    await s.req("POST /login (wrong password)", "POST", "/login", body={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.localpart},
        "password": "wrong-password"})
    await s.req("GET /account/whoami", "GET", "/account/whoami", user=alice)
    await s.req("GET /capabilities", "GET", "/capabilities", user=alice)
    await s.req("PUT /profile/displayname", "PUT", f"/profile/{q(alice.user_id)}/displayname",
                user=alice, body={"displayname": "Alice Shape"})
    await s.req("PUT /profile/displayname bob", "PUT", f"/profile/{q(bob.user_id)}/displayname",
                user=bob, body={"displayname": "Bob Shape"})
    await s.req("GET /profile", "GET", f"/profile/{q(alice.user_id)}", user=alice)
    await s.req("GET /profile/displayname", "GET", f"/profile/{q(alice.user_id)}/displayname",
                user=alice)
    await s.req("GET /profile/avatar_url (unset)", "GET",
                f"/profile/{q(alice.user_id)}/avatar_url", user=alice)
    await s.req("PUT /devices/{id}", "PUT", f"/devices/{q(alice.device_id)}", user=alice,
                body={"display_name": "alice's first device"})
    await s.req("GET /devices", "GET", "/devices", user=alice)
    await s.req("GET /devices/{id}", "GET", f"/devices/{q(alice.device_id)}", user=alice)
    await s.req("GET /devices/{id} (unknown)", "GET", "/devices/NOSUCHDEVICE", user=alice)
    status, uia = await s.req("DELETE /devices/{id} (no auth)", "DELETE",
                              f"/devices/{q(login['device_id'])}", user=alice, body={})
    session = uia.get("session") if isinstance(uia, dict) else None
    await s.req("DELETE /devices/{id} (password)", "DELETE", f"/devices/{q(login['device_id'])}",
                user=alice, body={"auth": {
                    "type": "m.login.password", "session": session, "password": alice.password,
                    "identifier": {"type": "m.id.user", "user": alice.localpart}}})
    await s.req("GET /pushrules/", "GET", "/pushrules/", user=alice)
    await s.req("GET /pushrules/global/override/.m.rule.master", "GET",
                "/pushrules/global/override/.m.rule.master", user=alice)
    await s.req("PUT /presence/status", "PUT", f"/presence/{q(alice.user_id)}/status", user=alice,
                body={"presence": "online", "status_msg": "shaping"})
    await s.req("GET /presence/status", "GET", f"/presence/{q(alice.user_id)}/status",
                user=alice)
    filt = await s.need("POST /user/{id}/filter", "POST", f"/user/{q(alice.user_id)}/filter",
                        user=alice, body={
                            "room": {"timeline": {"limit": 10},
                                     "state": {"lazy_load_members": True}},
                            "presence": {"types": ["m.presence"]}})
    await s.req("GET /user/{id}/filter/{id}", "GET",
                f"/user/{q(alice.user_id)}/filter/{q(filt['filter_id'])}", user=alice)
    await s.req("GET /account/3pid", "GET", "/account/3pid", user=alice)
    await s.req("GET /thirdparty/protocols", "GET", "/thirdparty/protocols", user=alice)
    await s.req("GET /voip/turnServer", "GET", "/voip/turnServer", user=alice)

    # Bob's first sync: where his incremental syncs start.
    await s.initial_sync("GET /sync bob (initial, no rooms)", bob,
                         params={"filter": json.dumps({"room": {"timeline": {"limit": 20}}})})

    # End-to-end keys.
    for u in (alice, bob):
        await s.req(f"POST /keys/upload {u.name}", "POST", "/keys/upload", user=u,
                    body={"device_keys": device_keys(u), "one_time_keys": one_time_keys(u)})
    await s.req("POST /keys/upload (count only)", "POST", "/keys/upload", user=alice, body={})
    await s.req("POST /keys/query", "POST", "/keys/query", user=alice,
                body={"device_keys": {bob.user_id: [], alice.user_id: []}})
    await s.req("POST /keys/claim", "POST", "/keys/claim", user=alice,
                body={"one_time_keys": {bob.user_id: {bob.device_id: "signed_curve25519"}}})

    # The private room, its messages, and bob invited.
    room = await s.need("POST /createRoom (private)", "POST", "/createRoom", user=alice,
                        body={"preset": "private_chat", "name": "Shape private",
                              "topic": "the first topic"})
    priv = room["room_id"]
    s.name_id(priv, "<room:private>")
    await s.req("GET /rooms/{id}/state (forbidden)", "GET", f"/rooms/{q(priv)}/state", user=bob)
    msg1 = await send(s, "PUT /send m.room.message", priv, alice,
                      {"msgtype": "m.text", "body": "hello shapes"}, name="msg1")
    msg2 = await send(s, "PUT /send m.room.message (2)", priv, alice,
                      {"msgtype": "m.text", "body": "a second message, a thread root",
                       "format": "org.matrix.custom.html",
                       "formatted_body": "a <b>second</b> message"}, name="msg2")
    await send(s, "PUT /send m.room.message (edit)", priv, alice, {
        "msgtype": "m.text", "body": "* hello shapes, edited",
        "m.new_content": {"msgtype": "m.text", "body": "hello shapes, edited"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": msg1}}, name="edit")
    await send(s, "PUT /send m.reaction", priv, alice, {
        "m.relates_to": {"rel_type": "m.annotation", "event_id": msg1, "key": "👍"}},
        etype="m.reaction", name="reaction")
    await send(s, "PUT /send m.room.message (thread)", priv, alice, {
        "msgtype": "m.text", "body": "in the thread",
        "m.relates_to": {"rel_type": "m.thread", "event_id": msg2, "is_falling_back": True,
                         "m.in_reply_to": {"event_id": msg2}}}, name="thread1")
    # One message with a word no other event has: the one result of the search below.
    await send(s, "PUT /send m.room.message (search target)", priv, alice,
               {"msgtype": "m.text", "body": "a xylophone for the search"}, name="searched")
    msg3 = await send(s, "PUT /send m.room.message (to redact)", priv, alice,
                      {"msgtype": "m.text", "body": "a message to redact"}, name="msg3")
    red = await s.need("PUT /redact", "PUT", f"/rooms/{q(priv)}/redact/{q(msg3)}/{s.next_txn()}",
                       user=alice, body={"reason": "shape test"})
    s.name_id(red.get("event_id"), "<event:redaction>")
    await put_state(s, "PUT /state/m.room.topic", priv, alice, "m.room.topic", "",
                    {"topic": "the second topic"}, name="topic")
    await put_state(s, "PUT /state/m.room.name", priv, alice, "m.room.name", "",
                    {"name": "Shape private room"}, name="name")
    await s.need("POST /rooms/{id}/invite", "POST", f"/rooms/{q(priv)}/invite", user=alice,
                 body={"user_id": bob.user_id, "reason": "shape test"})
    await s.sync_until("GET /sync bob (invite)", bob,
                       lambda d: rooms_section(d, "invite", priv) is not None)
    await s.need("POST /rooms/{id}/join", "POST", f"/rooms/{q(priv)}/join", user=bob, body={})
    await s.sync_until("GET /sync bob (joined)", bob,
                       lambda d: rooms_section(d, "join", priv) is not None)

    # After the join: a message that mentions bob, bob's answer that mentions alice.
    await send(s, "PUT /send m.room.message (mention bob)", priv, alice, {
        "msgtype": "m.text", "body": "Bob Shape: a message for you",
        "m.mentions": {"user_ids": [bob.user_id]}}, name="mention")
    await s.sync_until("GET /sync bob (new message, unread counts)", bob,
                       lambda d: "m.room.message" in timeline_types(d, priv))
    reply = await send(s, "PUT /send m.room.message (reply)", priv, bob, {
        "msgtype": "m.text", "body": "Alice Shape: thanks",
        "m.mentions": {"user_ids": [alice.user_id]},
        "m.relates_to": {"m.in_reply_to": {"event_id": msg1}}}, name="reply")
    await s.req("PUT /state/m.room.power_levels (forbidden)", "PUT",
                f"/rooms/{q(priv)}/state/m.room.power_levels/", user=bob,
                body={"users": {bob.user_id: 100}})

    # Receipts and read markers, seen in alice's sync.
    await s.initial_sync("GET /sync alice (initial, one room)", alice,
                         params={"filter": json.dumps({"room": {"timeline": {"limit": 20}}})})
    await s.req("POST /receipt/m.read", "POST", f"/rooms/{q(priv)}/receipt/m.read/{q(msg1)}",
                user=alice, body={})
    await s.req("POST /receipt/m.read (thread)", "POST",
                f"/rooms/{q(priv)}/receipt/m.read/{q(msg2)}", user=alice,
                body={"thread_id": "main"})
    await s.req("POST /read_markers", "POST", f"/rooms/{q(priv)}/read_markers", user=bob,
                body={"m.fully_read": reply, "m.read": reply})
    await s.sync_until("GET /sync alice (receipts)", alice,
                       lambda d: "m.receipt" in ephemeral_types(d, priv))

    # Typing, seen by bob.
    await s.req("PUT /typing", "PUT", f"/rooms/{q(priv)}/typing/{q(alice.user_id)}", user=alice,
                body={"typing": True, "timeout": 20000})
    await s.sync_until("GET /sync bob (typing)", bob,
                       lambda d: "m.typing" in ephemeral_types(d, priv))

    # Account data (global, room) and tags, seen by alice.
    uid = q(alice.user_id)
    await s.req("PUT /account_data (global)", "PUT", f"/user/{uid}/account_data/com.example.shape",
                user=alice, body={"colour": "blue"})
    await s.req("PUT /account_data m.direct", "PUT", f"/user/{uid}/account_data/m.direct",
                user=alice, body={bob.user_id: [priv]})
    await s.req("PUT /rooms/{id}/account_data", "PUT",
                f"/user/{uid}/rooms/{q(priv)}/account_data/com.example.room_shape", user=alice,
                body={"pinned": True})
    await s.req("PUT /tags/m.favourite", "PUT", f"/user/{uid}/rooms/{q(priv)}/tags/m.favourite",
                user=alice, body={"order": 0.25})
    await s.req("PUT /tags/u.custom", "PUT", f"/user/{uid}/rooms/{q(priv)}/tags/u.custom",
                user=alice, body={})
    await s.req("GET /account_data (global)", "GET", f"/user/{uid}/account_data/com.example.shape",
                user=alice)
    await s.req("GET /account_data (unknown)", "GET", f"/user/{uid}/account_data/com.example.none",
                user=alice)
    await s.req("GET /rooms/{id}/account_data", "GET",
                f"/user/{uid}/rooms/{q(priv)}/account_data/com.example.room_shape", user=alice)
    await s.req("GET /tags", "GET", f"/user/{uid}/rooms/{q(priv)}/tags", user=alice)
    await s.sync_until("GET /sync alice (account data, tags)", alice, lambda d: any(
        e.get("type") == "m.tag"
        for e in ((rooms_section(d, "join", priv) or {}).get("account_data") or {}).get(
            "events") or []))

    # To-device, seen by bob.
    await s.req("PUT /sendToDevice", "PUT", f"/sendToDevice/com.example.shape/{s.next_txn()}",
                user=alice, body={"messages": {bob.user_id: {bob.device_id: {"hello": "bob"}}}})
    await s.sync_until("GET /sync bob (to_device)", bob,
                       lambda d: bool((d.get("to_device") or {}).get("events")))

    # Reading the room.
    r = f"/rooms/{q(priv)}"
    await s.req("GET /messages (b)", "GET", f"{r}/messages", user=alice,
                params={"dir": "b", "limit": "30"})
    await s.req("GET /messages (f)", "GET", f"{r}/messages", user=alice,
                params={"dir": "f", "limit": "30"})
    await s.req("GET /messages (b, lazy_load_members)", "GET", f"{r}/messages", user=bob,
                params={"dir": "b", "limit": "5",
                        "filter": json.dumps({"lazy_load_members": True})})
    await s.req("GET /context/{msg2}", "GET", f"{r}/context/{q(msg2)}", user=alice,
                params={"limit": "4"})
    await s.req("GET /event/{msg1} (edited, reacted)", "GET", f"{r}/event/{q(msg1)}", user=alice)
    await s.req("GET /event/{msg2} (thread root)", "GET", f"{r}/event/{q(msg2)}", user=alice)
    await s.req("GET /event/{msg3} (redacted)", "GET", f"{r}/event/{q(msg3)}", user=alice)
    await s.req("GET /event (unknown)", "GET", f"{r}/event/{q('$nosuchevent')}", user=alice)
    await s.req("GET /state", "GET", f"{r}/state", user=alice)
    await s.req("GET /state/m.room.topic/", "GET", f"{r}/state/m.room.topic/", user=alice)
    await s.req("GET /state/m.room.create/", "GET", f"{r}/state/m.room.create/", user=alice)
    await s.req("GET /state/m.room.member/{bob}", "GET",
                f"{r}/state/m.room.member/{q(bob.user_id)}", user=alice)
    await s.req("GET /state/m.room.avatar/ (absent)", "GET", f"{r}/state/m.room.avatar/",
                user=alice)
    await s.req("GET /members", "GET", f"{r}/members", user=alice)
    await s.req("GET /members?membership=join", "GET", f"{r}/members", user=alice,
                params={"membership": "join"})
    await s.req("GET /joined_members", "GET", f"{r}/joined_members", user=alice)
    await s.req("GET /joined_rooms", "GET", "/joined_rooms", user=alice)
    v1 = f"/_matrix/client/v1/rooms/{q(priv)}"
    await s.req("GET /relations/{msg1}", "GET", f"{v1}/relations/{q(msg1)}", user=alice)
    await s.req("GET /relations/{msg1}/m.annotation", "GET",
                f"{v1}/relations/{q(msg1)}/m.annotation", user=alice)
    await s.req("GET /relations/{msg2}/m.thread (recurse)", "GET",
                f"{v1}/relations/{q(msg2)}/m.thread", user=alice, params={"recurse": "true"})
    await s.req("GET /threads", "GET", f"{v1}/threads", user=alice)
    await s.poll("POST /search", "POST", "/search", user=alice, body={"search_categories": {
        "room_events": {"search_term": "xylophone", "order_by": "recent",
                        "event_context": {"before_limit": 1, "after_limit": 1,
                                          "include_profile": True}}}},
        ready=lambda d: bool(d["search_categories"]["room_events"].get("results")))
    # bob's reply mentions alice: one notification, once the server has worked out its actions.
    await s.poll("GET /notifications", "GET", "/notifications", user=alice,
                 ready=lambda d: bool(d.get("notifications")))

    # The public room, its alias, and the directories.
    alias = f"#shape_{uuid.uuid4().hex[:8]}:{server_name}"
    s.name_id(alias, "<alias:public>")
    pub = (await s.need("POST /createRoom (public)", "POST", "/createRoom", user=alice, body={
        "preset": "public_chat", "visibility": "public", "name": "Shape public",
        "topic": "a public room"}))["room_id"]
    s.name_id(pub, "<room:public>")
    await s.req("PUT /directory/room/{alias}", "PUT", f"/directory/room/{q(alias)}", user=alice,
                body={"room_id": pub})
    await s.req("GET /directory/room/{alias}", "GET", f"/directory/room/{q(alias)}", user=alice)
    await s.req("GET /directory/room/{alias} (unknown)", "GET",
                f"/directory/room/{q('#nosuchalias:' + server_name)}", user=alice)
    await put_state(s, "PUT /state/m.room.canonical_alias", pub, alice, "m.room.canonical_alias",
                    "", {"alias": alias})
    await s.req("GET /rooms/{id}/aliases", "GET", f"/rooms/{q(pub)}/aliases", user=alice)
    await s.req("GET /directory/list/room/{id}", "GET", f"/directory/list/room/{q(pub)}")
    await s.req("POST /join/{alias}", "POST", f"/join/{q(alias)}", user=bob, body={})
    await s.req("POST /join/{alias} (unknown)", "POST",
                f"/join/{q('#nosuchalias:' + server_name)}", user=bob, body={})
    # The directory lists every public room of the server, those of the tests that ran before
    # on the same Plexus too: only this run's room is compared (one page, so that there is
    # no next_batch on one side only).
    await public_rooms(s, "GET /publicRooms", "GET", alice, params={"limit": "1000"})
    await public_rooms(s, "POST /publicRooms (filter)", "POST", alice,
                       body={"limit": 1000, "filter": {"generic_search_term": "Shape"}})
    # Until this run's bob is in the index (a bob of an earlier run on the same server may be).
    await s.poll("POST /user_directory/search", "POST", "/user_directory/search", user=alice,
                 body={"search_term": "Bob Shape"}, ready=lambda d: any(
                     r.get("user_id") == bob.user_id for r in d.get("results") or []))
    summaries = [
        ("v1 room_summary", "/_matrix/client/v1/room_summary/{}"),
        ("im.nheko.summary rooms/{}/summary",
         "/_matrix/client/unstable/im.nheko.summary/rooms/{}/summary"),
        ("im.nheko.summary summary/{}", "/_matrix/client/unstable/im.nheko.summary/summary/{}"),
    ]
    for name, path in summaries:
        await s.req(f"GET {name} (public, by id)", "GET", path.format(q(pub)), user=alice)
    await s.req("GET v1 room_summary (public, by alias)", "GET",
                summaries[0][1].format(q(alias)), user=bob)
    await s.req("GET v1 room_summary (public, no auth)", "GET", summaries[0][1].format(q(pub)))
    await s.req("GET v1 room_summary (private, joined)", "GET", summaries[0][1].format(q(priv)),
                user=bob)

    # Both users' initial syncs, now that there is everything to see.
    await s.initial_sync("GET /sync alice (initial, full)", alice)
    await s.initial_sync("GET /sync bob (initial, full)", bob)
    await s.initial_sync("GET /sync alice (initial, lazy_load_members)", alice, params={
        "filter": json.dumps({"room": {"state": {"lazy_load_members": True},
                                       "timeline": {"limit": 5}}})})

    # Bad requests.
    await s.req("GET /rooms/{unknown}/state", "GET",
                f"/rooms/{q('!nosuchroom:' + server_name)}/state", user=alice)
    await s.req("POST /createRoom (bad JSON)", "POST", "/createRoom", user=alice,
                raw=b"{not json")
    await s.req("POST /createRoom (not an object)", "POST", "/createRoom", user=alice,
                raw=b"[1, 2]")
    await s.req("GET unknown endpoint", "GET", "/no_such_endpoint", user=alice)
    await s.req("GET /account/whoami (no token)", "GET", "/account/whoami")
    await s.req("GET /account/whoami (bad token)", "GET", "/account/whoami",
                token="not_a_valid_token")


async def run_server(name, base):
    s = Server(name, base)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT)) as sess:
        s.session = sess
        try:
            await scenario(s)
        except Stop as e:
            s.error = str(e)
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            s.error = f"{type(e).__name__}: {e}"
    return s


# --- reducing a response to its shape ---------------------------------------------------------

# Fields whose values are kept (not just their type): the enum-like values a client branches on.
VALUE_KEYS = {
    "errcode", "type", "membership", "limited", "msgtype", "rel_type", "join_rule",
    "history_visibility", "guest_access", "kind", "set_tweak", "presence", "versions",
    "room_type", "visibility", "format", "room_version", "default",
}
# Fields Synapse copies to the top level of an event besides the spec's places (its legacy "v1"
# client event format, used everywhere but /sync): age and redacted_because (from unsigned),
# prev_content and replaces_state (from unsigned), user_id (the sender). Reported apart.
LEGACY_EVENT_KEYS = {"age", "user_id", "prev_content", "replaces_state", "redacted_because"}
# A key (or list discriminator) under an MSC or vendor prefix: server specific, reported apart.
UNSTABLE = re.compile(
    r"(^|[^a-z])msc\d+|^\.?(org\.matrix|io\.element|im\.nheko|im\.vector|uk\.half-shot|"
    r"com\.beeper|fi\.mau|uk\.tcpip|uk\.timedout)\.")
# A key id ("signed_curve25519:AAAAAQ") that is not one of the run's names: which key a server
# hands out differs.
KEY_ID = re.compile(r"^([a-z0-9_]+):[A-Za-z0-9+/_=-]+$")
SIGILS = {"!": "<room>", "@": "<user>", "$": "<event>", "#": "<alias>"}


def name_of(names, value):
    """An id of the run by its placeholder; other ids by their kind; anything else as is."""
    if value in names:
        return names[value]
    if isinstance(value, str) and value[:1] in SIGILS and ":" in value:
        return SIGILS[value[0]]
    return value


def name_key(names, key):
    """A JSON object key with the ids of the run in it replaced (exactly, or inside a key such
    as "ed25519:DEVICEID")."""
    named = name_of(names, key)
    if named != key:
        return named
    for real in sorted(names, key=len, reverse=True):
        if len(real) >= 6 and real in key:
            key = key.replace(real, names[real])
    return KEY_ID.sub(r"\1:<key id>", key)


def scalar(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def element_tag(names, el, parent_key):
    """What a list element is matched by across the two servers."""
    if not isinstance(el, dict):
        if parent_key in VALUE_KEYS and not isinstance(el, (dict, list)):
            return json.dumps(el)
        return "*"
    if "type" in el and isinstance(el["type"], str) and (
            "content" in el or "event_id" in el or "sender" in el):
        tag = el["type"]
        if "state_key" in el:
            tag += f" sk={name_of(names, el['state_key']) or chr(34) * 2}"
        content = el.get("content")
        rel = content.get("m.relates_to") if isinstance(content, dict) else None
        if isinstance(rel, dict) and isinstance(rel.get("rel_type"), str):
            tag += f" rel={rel['rel_type']}"
        return tag
    for key in ("rule_id", "kind", "set_tweak", "type"):
        if isinstance(el.get(key), str):
            return name_of(names, el[key])
    return "*"


def shape(value, names):
    """{path: set of types}: every field of the JSON value (a path is a tuple of object keys and
    "[tag]" list elements), its type or, for VALUE_KEYS, its value."""
    out = {}

    def add(path, kind):
        out.setdefault(path, set()).add(kind)

    def walk(v, path, key):
        if isinstance(v, dict):
            add(path, "object")
            for k, child in v.items():
                walk(child, path + (name_key(names, k),), k)
        elif isinstance(v, list):
            add(path, "array")
            for el in v:
                walk(el, path + (f"[{element_tag(names, el, key)}]",), key)
        elif key in VALUE_KEYS:
            add(path, json.dumps(name_of(names, v)))
        else:
            add(path, scalar(v))

    if isinstance(value, (dict, list)):
        walk(value, (), None)
    else:
        out[()] = {"non-JSON text"}
    return out


# --- comparing the two servers' shapes --------------------------------------------------------


def render(path):
    text = ""
    for part in path:
        text += part if part.startswith("[") or not text else "/" + part
    return text or "(top level)"


def is_unstable(path):
    return any(UNSTABLE.search(part.strip("[]")) for part in path)


def is_legacy(path, shape_of):
    """A field of Synapse's legacy event format (LEGACY_EVENT_KEYS at an event's top level)."""
    event = path[:-1]
    return (bool(path) and path[-1] in LEGACY_EVENT_KEYS and event + ("event_id",) in shape_of
            and event + ("type",) in shape_of)


def kinds(types):
    return "|".join(sorted(types))


def collapse(paths, shape_of):
    """The top-most of `paths` (a path whose parent is also listed is left out), each as
    (path, description): its type and direct children, and "(empty)" when nothing below it is
    more than an empty object or array."""
    listed = set(paths)
    items = []
    for p in sorted(paths):
        if any(p[:i] in listed for i in range(len(p))):
            continue
        below = [c for c in listed if len(c) > len(p) and c[:len(p)] == p]
        children = sorted({c[len(p)] for c in below})
        held = f" {{{', '.join(children[:8])}{', ...' if len(children) > 8 else ''}}}" \
            if children else ""
        if shape_of[p] <= {"object", "array"} and all(
                shape_of[c] <= {"object", "array"} for c in below):
            held += " (empty)"
        items.append((p, f"{kinds(shape_of[p])}{held}"))
    return items


def compare(plexus, synapse, names_p, names_s):
    """The differences for one label: {kind: [(path, description)]} with the kinds of
    HEADINGS; a path is a tuple (rendered by render), () for the HTTP status."""
    (sp, bp), (ss, bs) = plexus, synapse
    diff = {kind: [] for kind in HEADINGS}
    if sp != ss:
        diff["status"].append(((), f"Plexus {sp} {str(bp)[:200]} | Synapse {ss} {str(bs)[:200]}"))
        return diff
    shp, shs = shape(bp, names_p), shape(bs, names_s)
    only_s = [p for p in shs if p not in shp]
    only_p = [p for p in shp if p not in shs]
    differ = [p for p in shp if p in shs and shp[p] != shs[p]]
    # Below a field that is missing, extra, or a different kind of container, nothing more.
    gone = set(only_s) | set(only_p) | {
        p for p in differ if {"object", "array"} & (shp[p] ^ shs[p])}
    differ = [p for p in differ if not any(p[:i] in gone for i in range(len(p)))]
    for side, paths, held in (("missing", only_s, shs), ("extra", only_p, shp)):
        who = "Synapse only" if side == "missing" else "Plexus only"
        unstable = {p for p in paths if is_unstable(p)}
        legacy = {p for p in paths if p not in unstable and any(
            is_legacy(p[:i], held) for i in range(1, len(p) + 1))}
        diff[side] = collapse([p for p in paths if p not in unstable and p not in legacy], held)
        diff["unstable"] += [(p, f"{who}: {d}") for p, d in collapse(unstable, held)]
        diff["legacy"] += [(p, who) for p, _ in collapse(legacy, held)]
    for p in sorted(differ):
        diff["unstable" if is_unstable(p) else "type"].append(
            (p, f"Plexus {kinds(shp[p])} | Synapse {kinds(shs[p])}"))
    return diff


HEADINGS = {
    "status": "HTTP status differs",
    "missing": "missing in Plexus (only Synapse has it)",
    "extra": "extra in Plexus (Synapse does not have it)",
    "type": "type or value differs",
    "unstable": "unstable extras (MSC / vendor prefixed)",
    "legacy": "legacy event format extras (fields Synapse adds at an event's top level)",
}
BLOCKING = ("status", "missing", "extra", "type")


def path_text(path):
    return render(path) if path else "status"


def relative(path):
    """The part of a path below its last list element (an event's own fields, say): what
    recurs across labels."""
    cut = max((i + 1 for i, part in enumerate(path) if part.startswith("[")), default=0)
    return render(path[cut:]) if cut < len(path) else render(path)


def accepted_by(label, kind, line):
    """The ACCEPTED entry that accepts this difference, or None."""
    return next((a for a in ACCEPTED if a.matches(label, kind, line)), None)


def counted(tags):
    """"tag x2, other" from a list of tags, in first-seen order."""
    counts = {}
    for tag in tags:
        counts[tag] = counts.get(tag, 0) + 1
    return ", ".join(f"{tag} x{n}" if n > 1 else tag for tag, n in counts.items())


def report(px, sy):
    """One check per label, after the differences that fail it (all of them, accepted ones
    marked, with SHAPE_DIFF_VERBOSE=1); the accepted ones counted per label and per cause; then
    the failing differences that recur under several labels."""
    verbose = bool(os.environ.get("SHAPE_DIFF_VERBOSE"))
    labels = list(px.results) + [label for label in sy.results if label not in px.results]
    recurring = {}  # (kind, relative path) -> labels
    by_cause = {a.tag: [0, set()] for a in ACCEPTED}  # tag -> [differences, labels]
    apart = {"unstable": set(), "legacy": set()}  # labels with server specific extras
    for label in labels:
        if label not in px.results or label not in sy.results:
            where = "Plexus" if label in px.results else "Synapse"
            check(False, f"{label}: recorded on both servers", f"only on {where}")
            continue
        diff = compare(px.results[label], sy.results[label], px.names, sy.names)
        lines = {kind: [(p, f"{path_text(p)}: {what}") for p, what in diff[kind]]
                 for kind in BLOCKING + ("unstable",)}
        accepted, blocking = [], 0
        cause = {}  # report line -> the tag that accepts it
        for kind in BLOCKING:
            for p, line in lines[kind]:
                a = accepted_by(label, kind, line)
                if a:
                    cause[line] = a.tag
                    accepted.append(a.tag)
                    by_cause[a.tag][0] += 1
                    by_cause[a.tag][1].add(label)
                else:
                    blocking += 1
                    if p:
                        recurring.setdefault((kind, relative(p)), set()).add(label)
        for kind in ("unstable", "legacy"):
            if diff[kind]:
                apart[kind].add(label)
        shown = verbose and any(diff.values())
        if blocking or shown:
            print(f"\n== {label}")
            for server in (px, sy):
                if label in server.notes:
                    print(f"   ({server.name}: {server.notes[label]})")
            for kind in BLOCKING + (("unstable",) if verbose else ()):
                rows = [(line, cause.get(line)) for _, line in lines[kind]
                        if verbose or line not in cause]
                if rows:
                    print(f"   {HEADINGS[kind]}:")
                for line, tag in rows:
                    print(f"     {line}" + (f" (accepted: {tag})" if tag else ""))
            if verbose and diff["legacy"]:  # one line per side: which fields, how often
                print(f"   {HEADINGS['legacy']}:")
                counts = {}
                for p, who in diff["legacy"]:
                    side = counts.setdefault(who, {})
                    side[p[-1]] = side.get(p[-1], 0) + 1
                for who, side in sorted(counts.items()):
                    print(f"     {who}: " + ", ".join(
                        f"{key} x{n}" for key, n in sorted(side.items())))
        note = f" ({len(accepted)} accepted: {counted(accepted)})" if accepted else ""
        check(not blocking, f"{label}: same shape{note}",
              f"{blocking} difference(s) not accepted" if blocking else "")
    common = sorted(((len(ls), kind, rel, ls) for (kind, rel), ls in recurring.items()
                     if len(ls) > 1), key=lambda x: (-x[0], x[1], x[2]))
    if common:
        print("\n== failing differences under several labels (path below the last list element)")
        for n, kind, rel, ls in common:
            print(f"   {kind:7} {rel}: {n} labels ({'; '.join(sorted(ls)[:3])}"
                  f"{'; ...' if n > 3 else ''})")
    print("\n== accepted differences (ACCEPTED in shape_diff.py): cause, differences, labels, why")
    width = max(len(a.tag) for a in ACCEPTED)
    for a in ACCEPTED:
        n, ls = by_cause[a.tag]
        print(f"   {a.tag:{width}} {n:4} in {len(ls):2} label(s)  {a.why}"
              + ("" if n else " (none this run)"))
    print(f"   not compared, server specific: unstable (MSC / vendor) extras under "
          f"{len(apart['unstable'])} labels, Synapse's legacy event fields under "
          f"{len(apart['legacy'])} labels (SHAPE_DIFF_VERBOSE=1 lists them)\n")


async def run(plexus_url, synapse_url=None):
    if synapse_url is None:
        check(False, "two base URLs given (PLEXUS_URL SYNAPSE_URL)")
        return
    px, sy = await asyncio.gather(run_server("Plexus", plexus_url),
                                  run_server("Synapse", synapse_url))
    dump = os.environ.get("SHAPE_DIFF_DUMP")
    if dump:
        os.makedirs(dump, exist_ok=True)
        for s in (px, sy):
            with open(os.path.join(dump, f"{s.name.lower()}.json"), "w") as f:
                json.dump({"names": s.names, "notes": s.notes, "error": s.error,
                           "results": s.results}, f, indent=1, ensure_ascii=False)
    report(px, sy)
    for s in (px, sy):
        check(s.error is None, f"the scripted run on {s.name} went to the end", s.error or "")


if __name__ == "__main__":
    run_main(run, __doc__, RUN_DEADLINE, max_urls=2)
