"""Room features as matrix-nio, a Matrix client library nobody here wrote, sees them.

Two fresh users A and B register (m.login.dummy, open registration) and share rooms. Checked:

1. Read receipts: B sets its m.read receipt and m.fully_read marker on A's message
   (/read_markers); A sees B's receipt through sync (ephemeral m.receipt); B sees m.fully_read in
   its room account data.
2. Typing: A types, B sees A typing through sync; A stops, B sees nobody typing.
3. Edits: A edits a message (m.replace with m.new_content); B sees the edit in its timeline;
   /relations/{id}/m.replace lists it; the original fetched through /event/{id} carries the edit
   in unsigned.m.relations.m.replace (bundled aggregation).
4. Reactions: B reacts with m.annotation "👍"; A sees the reaction through sync;
   /relations/{id}/m.annotation lists it.
5. Threads: B replies in a thread on A's root (m.thread, is_falling_back, m.in_reply_to);
   /threads lists the root with unsigned.m.relations.m.thread (count 1, latest_event = B's reply,
   current_user_participated); the root fetched through /event/{id} has the same summary.
6. Unread counts: two messages from B show as unread_notifications (2 notifications, no
   highlight) in A's sync and in a filter-free /sync; a mention of A (m.mentions and A's display
   name in the body) makes a highlight; /notifications lists the three (room_id, event, read, ts,
   actions); A's read receipt on the latest event (nio's default: thread_id "main") brings the
   counts to 0 and marks them read.
7. Tags: A tags the room m.favourite (order 0.5), sees it through GET .../tags and in sync as
   room account data m.tag; deletes it; it is gone from both.
8. Room directory: A creates a public room with an alias; B resolves the alias, finds the room in
   POST /publicRooms by a word of its name, and joins by alias.
9. Spaces: A creates a space with two child rooms (m.space.child with via, one suggested;
   m.space.parent on a child); /hierarchy lists the space (room_type m.space, children_state)
   then both children; with suggested_only=true only the space and the suggested child.

nio's own methods are used where it has them; plain requests (aiohttp, Bearer token) where it has
none or hides the response (relations, threads, notifications, tags, suggested_only=true).

Checked against Synapse 1.163.2 as the reference server (spec-tests/synapse/synapse.sh): every
check passes there.

Usage: python nio_rooms.py BASE_URL        e.g. http://127.0.0.1:8008
Prints one line per check and ends with "N passed, M failed"; exit status 1 on any failure.
"""

import uuid

from nio import (
    AsyncClient,
    FullyReadEvent,
    JoinResponse,
    ProfileSetDisplayNameResponse,
    ReceiptEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomGetEventResponse,
    RoomPreset,
    RoomPutStateResponse,
    RoomReadMarkersResponse,
    RoomResolveAliasResponse,
    RoomSendResponse,
    RoomTypingResponse,
    RoomVisibility,
    SpaceGetHierarchyResponse,
    SyncResponse,
    TagEvent,
    TypingNoticeEvent,
    UpdateReceiptMarkerResponse,
)
from nio.api import ReceiptType
from nio.responses import PublicRoomsResponse

from harness import (
    CLIENT_CONFIG, SYNC_DEADLINE, Http, check, desc, q, require, run_main, short, sync_until,
)

RUN_DEADLINE = 240.0  # seconds for the whole run, whatever happens


def relations(event):
    """unsigned.m.relations of an event as JSON (a dict), or None."""
    unsigned = event.get("unsigned") if isinstance(event, dict) else None
    rels = unsigned.get("m.relations") if isinstance(unsigned, dict) else None
    return rels if isinstance(rels, dict) else None


def highlights(actions):
    """Whether push rule actions set the highlight tweak (its value defaults to true)."""
    return isinstance(actions, list) and any(
        isinstance(a, dict) and a.get("set_tweak") == "highlight" and a.get("value", True) is True
        for a in actions)


class Seen:
    """What a client has seen through sync, per joined room, straight from the sync responses:
    timeline events, ephemeral events, the latest room account data of each type and the latest
    unread_notifications."""

    def __init__(self):
        self.events = {}
        self.ephemeral = {}
        self.account_data = {}
        self.unread = {}
        self.last_error = None

    def record(self, resp):
        if not isinstance(resp, SyncResponse):
            self.last_error = desc(resp)
            return
        for room_id, info in resp.rooms.join.items():
            self.events.setdefault(room_id, []).extend(info.timeline.events)
            self.ephemeral.setdefault(room_id, []).extend(info.ephemeral)
            for event in info.account_data:
                kind = {FullyReadEvent: "m.fully_read", TagEvent: "m.tag"}.get(
                    type(event), getattr(event, "type", None))
                self.account_data.setdefault(room_id, {})[kind] = event
            self.unread[room_id] = info.unread_notifications

    def event(self, room_id, event_id):
        """The JSON of a timeline event seen in the room, or None."""
        for e in self.events.get(room_id, []):
            if getattr(e, "event_id", None) == event_id:
                return e.source
        return None

    def typing(self, room_id):
        """The users typing in the room according to the latest m.typing seen, or None."""
        notices = [e for e in self.ephemeral.get(room_id, []) if isinstance(e, TypingNoticeEvent)]
        return notices[-1].users if notices else None

    def receipts(self, room_id):
        return [(r.event_id, r.receipt_type, r.user_id)
                for e in self.ephemeral.get(room_id, []) if isinstance(e, ReceiptEvent)
                for r in e.receipts]

    def counts(self, room_id):
        """(notification_count, highlight_count) from the latest sync that had the room."""
        unread = self.unread.get(room_id)
        return (unread.notification_count, unread.highlight_count) if unread else (None, None)


async def run(base):
    suffix = uuid.uuid4().hex[:10]
    a = AsyncClient(base, config=CLIENT_CONFIG)
    b = AsyncClient(base, config=CLIENT_CONFIG)
    sa, sb = Seen(), Seen()
    http = Http(base)
    try:
        ids = {}
        for name, client in (("A", a), ("B", b)):
            local = f"nio_{name.lower()}_{suffix}"
            reg = await client.register(local, f"password-{name}-{suffix}", "nio-rooms")
            require(isinstance(reg, RegisterResponse) and reg.user_id.startswith(f"@{local}:"),
                    f"register {name} ({local}) with m.login.dummy", desc(reg))
            ids[name] = reg.user_id
        a_id, b_id = ids["A"], ids["B"]
        server = a_id.split(":", 1)[1]
        a_name = f"Ottilie{suffix[:6]}"
        named = await a.set_displayname(a_name)
        require(isinstance(named, ProfileSetDisplayNameResponse),
                f"A sets the display name {a_name}", desc(named))

        for name, client, seen in (("A", a, sa), ("B", b, sb)):
            first = await client.sync(timeout=100)
            seen.record(first)
            require(isinstance(first, SyncResponse) and first.next_batch,
                    f"{name}'s initial sync answers with a next_batch token", desc(first))

        async def shared_room(room_name):
            """A room A creates and B joins (invited)."""
            created = await a.room_create(name=room_name, invite=[b_id])
            require(isinstance(created, RoomCreateResponse),
                    f"A creates the room '{room_name}', inviting B", desc(created))
            joined = await b.join(created.room_id)
            require(isinstance(joined, JoinResponse) and joined.room_id == created.room_id,
                    f"B joins '{room_name}'", desc(joined))
            return created.room_id

        async def send(client, who, room_id, content, what, event_type="m.room.message"):
            sent = await client.room_send(room_id, event_type, content)
            require(isinstance(sent, RoomSendResponse) and sent.event_id.startswith("$"),
                    f"{who} sends {what}", desc(sent))
            return sent.event_id

        def text(body, **extra):
            return {"msgtype": "m.text", "body": body, **extra}

        room = await shared_room(f"nio rooms {suffix}")

        # 1. Read receipts and the fully-read marker.
        print("# read receipts", flush=True)
        first_msg = await send(a, "A", room, text(f"please read this ({suffix})"), "a message")
        ok = await sync_until(b, sb, lambda: sb.event(room, first_msg) is not None)
        check(ok, "B sees A's message through sync", f"last error: {sb.last_error}")
        marked = await b.room_read_markers(room, fully_read_event=first_msg, read_event=first_msg)
        check(isinstance(marked, RoomReadMarkersResponse),
              "B sets m.fully_read and m.read on it (/read_markers)", desc(marked))
        want = (first_msg, ReceiptType.read.value, b_id)
        ok = await sync_until(a, sa, lambda: want in sa.receipts(room))
        check(ok, "A sees B's m.read receipt on the message (ephemeral m.receipt)",
              f"after {SYNC_DEADLINE}s A saw receipts {sa.receipts(room)}; "
              f"last error: {sa.last_error}")

        def fully_read():
            marker = sb.account_data.get(room, {}).get("m.fully_read")
            return marker.event_id if isinstance(marker, FullyReadEvent) else marker

        ok = await sync_until(b, sb, lambda: fully_read() == first_msg)
        check(ok, "B sees its m.fully_read marker on the message in room account data",
              f"after {SYNC_DEADLINE}s B's m.fully_read: {fully_read()!r}; "
              f"last error: {sb.last_error}")

        # 2. Typing notifications.
        print("# typing", flush=True)
        typing = await a.room_typing(room, typing_state=True, timeout=30000)
        check(isinstance(typing, RoomTypingResponse), "A starts typing (30s)", desc(typing))
        ok = await sync_until(b, sb, lambda: a_id in (sb.typing(room) or []))
        check(ok, "B sees A typing through sync (m.typing)",
              f"after {SYNC_DEADLINE}s B's latest typing users: {sb.typing(room)!r}")
        typing = await a.room_typing(room, typing_state=False)
        check(isinstance(typing, RoomTypingResponse), "A stops typing", desc(typing))
        ok = await sync_until(b, sb, lambda: sb.typing(room) == [])
        check(ok, "B sees nobody typing any more",
              f"after {SYNC_DEADLINE}s B's latest typing users: {sb.typing(room)!r}")

        # 3. Edits (m.replace).
        print("# edits", flush=True)
        original = await send(a, "A", room, text("a typo here"), "a message to edit")
        edit = await send(a, "A", room, text(
            "* no typo here", **{"m.new_content": text("no typo here"),
                                 "m.relates_to": {"rel_type": "m.replace", "event_id": original}}),
            "an edit of it (m.replace)")

        def is_edit(event):
            rel = (event or {}).get("content", {}).get("m.relates_to", {})
            new = (event or {}).get("content", {}).get("m.new_content", {})
            return (rel.get("rel_type") == "m.replace" and rel.get("event_id") == original
                    and new.get("body") == "no typo here")

        ok = await sync_until(b, sb, lambda: is_edit(sb.event(room, edit)))
        check(ok, "B sees the edit in the timeline (m.replace, m.new_content)",
              f"after {SYNC_DEADLINE}s B saw {short(sb.event(room, edit))}")
        status, body, seen = await http.call(
            b, "GET", f"/_matrix/client/v1/rooms/{q(room)}/relations/{q(original)}/m.replace")
        chunk = body.get("chunk") if status == 200 and isinstance(body, dict) else None
        check(isinstance(chunk, list) and [e.get("event_id") for e in chunk] == [edit],
              "/relations/{original}/m.replace lists exactly the edit", seen)
        got = await b.room_get_event(room, original)
        src = got.event.source if isinstance(got, RoomGetEventResponse) else None
        replace = (relations(src) or {}).get("m.replace")
        check(isinstance(replace, dict) and replace.get("event_id") == edit,
              "the original from /event/{id} bundles the edit: "
              "unsigned.m.relations.m.replace.event_id", short(src) if src else desc(got))

        # 4. Reactions (m.annotation).
        print("# reactions", flush=True)
        reaction = await send(
            b, "B", room, {"m.relates_to": {"rel_type": "m.annotation", "event_id": first_msg,
                                            "key": "👍"}},
            "a 👍 reaction to A's first message", event_type="m.reaction")

        def is_reaction(event):
            rel = (event or {}).get("content", {}).get("m.relates_to", {})
            return ((event or {}).get("type") == "m.reaction" and event.get("sender") == b_id
                    and rel == {"rel_type": "m.annotation", "event_id": first_msg, "key": "👍"})

        ok = await sync_until(a, sa, lambda: is_reaction(sa.event(room, reaction)))
        check(ok, "A sees B's reaction through sync (sender, m.annotation, key)",
              f"after {SYNC_DEADLINE}s A saw {short(sa.event(room, reaction))}")
        status, body, seen = await http.call(
            a, "GET", f"/_matrix/client/v1/rooms/{q(room)}/relations/{q(first_msg)}/m.annotation")
        chunk = body.get("chunk") if status == 200 and isinstance(body, dict) else None
        check(isinstance(chunk, list) and [e.get("event_id") for e in chunk] == [reaction]
              and is_reaction(chunk[0]),
              "/relations/{message}/m.annotation lists exactly B's reaction", seen)

        # 5. Threads.
        print("# threads", flush=True)
        root = await send(a, "A", room, text(f"a thread starts here ({suffix})"), "a thread root")
        reply = await send(b, "B", room, text("a reply in the thread", **{"m.relates_to": {
            "rel_type": "m.thread", "event_id": root, "is_falling_back": True,
            "m.in_reply_to": {"event_id": root}}}), "a reply in the thread (m.thread)")

        def thread_summary(event, where):
            """Checks unsigned.m.relations.m.thread of the root as A sees it."""
            thread = (relations(event) or {}).get("m.thread")
            latest = thread.get("latest_event") if isinstance(thread, dict) else None
            check(isinstance(thread, dict) and thread.get("count") == 1,
                  f"{where}: the root's unsigned.m.relations.m.thread has count 1", short(event))
            check(isinstance(latest, dict) and latest.get("event_id") == reply
                  and latest.get("sender") == b_id
                  and latest.get("content", {}).get("m.relates_to", {}).get("event_id") == root,
                  f"{where}: its latest_event is B's reply, in full", short(event))
            check(isinstance(thread, dict) and thread.get("current_user_participated") is True,
                  f"{where}: current_user_participated is true for A (A sent the root)",
                  short(event))

        ok = await sync_until(a, sa, lambda: sa.event(room, reply) is not None)
        check(ok, "A sees B's thread reply through sync", f"last error: {sa.last_error}")
        status, body, seen = await http.call(a, "GET", f"/_matrix/client/v1/rooms/{q(room)}/threads")
        chunk = body.get("chunk") if status == 200 and isinstance(body, dict) else None
        roots = [e for e in chunk or [] if e.get("event_id") == root]
        check(isinstance(chunk, list) and [e.get("event_id") for e in chunk] == [root],
              "/threads lists exactly the thread root", seen)
        thread_summary(roots[0] if roots else seen, "/threads")
        got = await a.room_get_event(room, root)
        check(isinstance(got, RoomGetEventResponse), "A fetches the root through /event/{id}",
              desc(got))
        thread_summary(got.event.source if isinstance(got, RoomGetEventResponse) else desc(got),
                       "/event/{id}")

        # 6. Unread notification counts and /notifications, in a room of their own.
        print("# unread counts", flush=True)
        quiet = await shared_room(f"nio unread {suffix}")
        unread = [await send(b, "B", quiet, text(f"unread message {i} ({suffix})"),
                             f"plain message {i}") for i in (1, 2)]
        ok = await sync_until(a, sa, lambda: sa.counts(quiet) == (2, 0))
        check(ok, "A's sync shows unread_notifications: 2 notifications, 0 highlights",
              f"after {SYNC_DEADLINE}s (notification_count, highlight_count) = "
              f"{sa.counts(quiet)}; last error: {sa.last_error}")
        status, body, seen = await http.call(a, "GET", "/_matrix/client/v3/sync?timeout=0")
        counts = (body.get("rooms", {}).get("join", {}).get(quiet, {}).get("unread_notifications")
                  if status == 200 and isinstance(body, dict) else None)
        check(counts == {"notification_count": 2, "highlight_count": 0},
              "a filter-free initial /sync shows the same counts for the room",
              f"GET /_matrix/client/v3/sync?timeout=0 -> HTTP {status}, the room's "
              f"unread_notifications: {counts}")
        mention = await send(b, "B", quiet, text(
            f"{a_name}: have a look ({suffix})", **{"m.mentions": {"user_ids": [a_id]}}),
            "a message mentioning A (m.mentions and A's display name)")
        unread.append(mention)
        ok = await sync_until(a, sa, lambda: sa.counts(quiet) == (3, 1))
        check(ok, "A's sync shows 3 notifications, 1 highlight",
              f"after {SYNC_DEADLINE}s (notification_count, highlight_count) = "
              f"{sa.counts(quiet)}; last error: {sa.last_error}")

        async def notifications():
            """A's notifications in the quiet room, by event id, and what was seen."""
            status, body, seen = await http.call(a, "GET", "/_matrix/client/v3/notifications")
            items = body.get("notifications") if status == 200 and isinstance(body, dict) else None
            if not isinstance(items, list):
                return None, seen
            return {n.get("event", {}).get("event_id"): n for n in items
                    if n.get("room_id") == quiet}, seen

        listed, seen = await notifications()
        check(listed is not None and set(listed) == set(unread),
              "/notifications lists B's three messages in the room", seen)
        fields = {"room_id", "event", "read", "ts", "actions"}
        check(listed and all(fields <= set(n) and n["read"] is False
                             and isinstance(n["ts"], int) and isinstance(n["actions"], list)
                             for n in listed.values()),
              "each has room_id, event, ts, actions and read: false", seen)
        check(listed and mention in listed and highlights(listed[mention].get("actions"))
              and listed[mention]["event"].get("sender") == b_id
              and not any(highlights(listed[e].get("actions")) for e in unread[:2]),
              "the mention's actions highlight, the plain messages' do not", seen)
        receipt = await a.update_receipt_marker(quiet, mention, ReceiptType.read)
        check(isinstance(receipt, UpdateReceiptMarkerResponse),
              "A sends a read receipt on the latest message", desc(receipt))
        ok = await sync_until(a, sa, lambda: sa.counts(quiet) == (0, 0))
        check(ok, "A's sync shows the counts back at 0",
              f"after {SYNC_DEADLINE}s (notification_count, highlight_count) = "
              f"{sa.counts(quiet)}; last error: {sa.last_error}")
        listed, seen = await notifications()
        check(listed is not None and set(listed) == set(unread)
              and all(n.get("read") is True for n in listed.values()),
              "/notifications still lists them, now read: true", seen)

        # 7. Room tags.
        print("# tags", flush=True)
        tag_path = f"/_matrix/client/v3/user/{q(a_id)}/rooms/{q(room)}/tags"
        status, body, seen = await http.call(a, "PUT", tag_path + "/m.favourite", {"order": 0.5})
        check(status == 200 and body == {}, "A tags the room m.favourite with order 0.5", seen)
        status, body, seen = await http.call(a, "GET", tag_path)
        check(status == 200 and body == {"tags": {"m.favourite": {"order": 0.5}}},
              "GET .../tags shows m.favourite (order 0.5)", seen)

        def tags():
            event = sa.account_data.get(room, {}).get("m.tag")
            return event.tags if isinstance(event, TagEvent) else event

        ok = await sync_until(a, sa, lambda: tags() == {"m.favourite": {"order": 0.5}})
        check(ok, "A's sync shows m.tag with m.favourite (order 0.5) in room account data",
              f"after {SYNC_DEADLINE}s: {tags()!r}; last error: {sa.last_error}")
        status, body, seen = await http.call(a, "DELETE", tag_path + "/m.favourite")
        check(status == 200 and body == {}, "A deletes the tag", seen)
        status, body, seen = await http.call(a, "GET", tag_path)
        check(status == 200 and body == {"tags": {}}, "GET .../tags is empty", seen)
        ok = await sync_until(a, sa, lambda: tags() == {})
        check(ok, "A's sync shows m.tag with no tags",
              f"after {SYNC_DEADLINE}s: {tags()!r}; last error: {sa.last_error}")

        # 8. Room directory: alias and public room list.
        print("# room directory", flush=True)
        word = f"quokka{suffix}"
        alias = f"#nio-{suffix}:{server}"
        created = await a.room_create(visibility=RoomVisibility.public, preset=RoomPreset.public_chat,
                                      alias=f"nio-{suffix}", name=f"nio {word} lounge")
        require(isinstance(created, RoomCreateResponse),
                f"A creates a public room with the alias {alias}", desc(created))
        public = created.room_id
        resolved = await b.room_resolve_alias(alias)
        check(isinstance(resolved, RoomResolveAliasResponse) and resolved.room_id == public
              and server in resolved.servers,
              "B resolves the alias to the room (and the server is among its servers)",
              desc(resolved) if not isinstance(resolved, RoomResolveAliasResponse)
              else f"{resolved.room_id} {resolved.servers}")
        listing = await b.list_public_rooms(filter_generic_search_term=word)
        found = ([r for r in listing.public_rooms if r.room_id == public]
                 if isinstance(listing, PublicRoomsResponse) else [])
        check(len(found) == 1 and found[0].name == f"nio {word} lounge"
              and found[0].canonical_alias == alias and found[0].num_joined_members == 1,
              "B finds it in POST /publicRooms by a word of its name (name, alias, 1 member)",
              desc(listing) if not isinstance(listing, PublicRoomsResponse)
              else f"{listing.public_rooms}")
        joined = await b.join(alias)
        check(isinstance(joined, JoinResponse) and joined.room_id == public,
              "B joins the room by its alias", desc(joined))

        # 9. A space with two child rooms.
        print("# spaces", flush=True)
        made = await a.room_create(name=f"nio space {suffix}", space=True)
        require(isinstance(made, RoomCreateResponse), "A creates a space", desc(made))
        space = made.room_id
        children = []
        for n in (1, 2):
            made = await a.room_create(name=f"nio child {n} {suffix}")
            require(isinstance(made, RoomCreateResponse), f"A creates child room {n}", desc(made))
            children.append(made.room_id)
        suggested, other = children
        for child, content in ((suggested, {"via": [server], "suggested": True}),
                               (other, {"via": [server]})):
            put = await a.room_put_state(space, "m.space.child", content, state_key=child)
            require(isinstance(put, RoomPutStateResponse),
                    f"A adds m.space.child {content} to the space", desc(put))
        put = await a.room_put_state(suggested, "m.space.parent",
                                     {"via": [server], "canonical": True}, state_key=space)
        check(isinstance(put, RoomPutStateResponse),
              "A adds m.space.parent (canonical) to the suggested child", desc(put))

        tree = await a.space_get_hierarchy(space)
        rooms = tree.rooms if isinstance(tree, SpaceGetHierarchyResponse) else None
        listed_ids = [r.get("room_id") for r in rooms or []]
        check(rooms is not None and len(rooms) == 3 and listed_ids[0] == space
              and set(listed_ids[1:]) == {suggested, other},
              "/hierarchy lists the space first, then both children",
              desc(tree) if rooms is None else short(rooms))
        top = rooms[0] if rooms and listed_ids[0] == space else {}
        state = {e.get("state_key"): e for e in top.get("children_state", [])}
        check(top.get("room_type") == "m.space" and top.get("name") == f"nio space {suffix}",
              "the space's entry has room_type m.space and its name", short(top))
        check(set(state) == {suggested, other}
              and all(e.get("type") == "m.space.child" and e.get("content", {}).get("via") == [server]
                      and e.get("sender") == a_id and isinstance(e.get("origin_server_ts"), int)
                      for e in state.values())
              and state[suggested]["content"].get("suggested") is True,
              "its children_state holds both m.space.child events (via, suggested)",
              short(top.get("children_state")))
        # nio sends suggested_only=True (Python's spelling), which the spec's boolean does not
        # allow: the request goes as a user agent following the spec would send it.
        status, body, seen = await http.call(
            a, "GET", f"/_matrix/client/v1/rooms/{q(space)}/hierarchy?suggested_only=true")
        got_ids = ([r.get("room_id") for r in body.get("rooms", [])]
                   if status == 200 and isinstance(body, dict) else None)
        check(got_ids == [space, suggested],
              "/hierarchy?suggested_only=true lists only the space and the suggested child", seen)
    finally:
        await a.close()
        await b.close()
        await http.close()


if __name__ == "__main__":
    run_main(run, __doc__, RUN_DEADLINE)
