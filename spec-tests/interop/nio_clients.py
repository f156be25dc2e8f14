"""What real clients tripped over (issue 20), as matrix-nio, a client library nobody here wrote,
sees it.

Two fresh users A and B register (m.login.dummy, open registration). Checked through nio's own
methods (devices, room_create, room_send, room_invite, join, room_redact, room_get_event, sync):

1. Devices: B's `devices()` is a DevicesResponse, not a DevicesError (nio's schema requires
   last_seen_ip and last_seen_ts on every device, null allowed), and B's device has a
   last_seen_ip that is an IP address (loopback here) and a recent last_seen_ts.
2. History on joining between two syncs, an invite accepted: A creates a room, says "read
   this", then invites B. B, who has synced before (a since token), sees the invite through
   sync, accepts it with `join`, and the first incremental sync that has the room under
   rooms.join carries A's "read this" as a RoomMessageText in its timeline (not only B's join),
   with a prev_batch token to paginate further back.
3. The same for a public room that B joins by its id after A's message, and after a sync of
   B's whose token is past that message.
4. MSC4115 (`unsigned.membership`, the requesting user's membership at the time of the event,
   spec v1.11), read from each event's raw source: "leave" on A's message from before B was
   invited (B had no m.room.member state then), "invite" on the invite, "join" on B's join and
   on A's messages after it; "leave" on the public room's message from before B joined.
5. Redactions in a room of version 12 (v11+ moved `redacts` into content; the client-server
   API keeps it at the top level too): B sees A's message, A redacts it, B's sync delivers a
   RedactionEvent whose `.redacts` is the message's id (nio's schema needs the top-level
   `redacts`: without it the event is a BadEvent), and the message fetched through
   room_get_event is a RedactedEvent naming A as the redacter.

Checked against Synapse 1.163.2 as the reference server (spec-tests/synapse/synapse.sh): every
check passes there.

Usage: python nio_clients.py BASE_URL        e.g. http://127.0.0.1:8008
Prints one line per check and ends with "N passed, M failed"; exit status 1 on any failure.
"""

import ipaddress
import time
import uuid
from urllib.parse import urlsplit

from nio import (
    AsyncClient,
    DevicesResponse,
    InviteMemberEvent,
    JoinResponse,
    RedactedEvent,
    RedactionEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomGetEventResponse,
    RoomInviteResponse,
    RoomMemberEvent,
    RoomMessageText,
    RoomPreset,
    RoomRedactResponse,
    RoomSendResponse,
    RoomVisibility,
    SyncResponse,
)

from harness import (
    CLIENT_CONFIG, SYNC_DEADLINE, check, desc, require, run_main, short, sync_once, sync_until,
)

RUN_DEADLINE = 150.0  # seconds for the whole run, whatever happens


class Seen:
    """What a client has seen through sync: every timeline event per joined room, the timeline
    of the first sync that had each room under rooms.join, and the rooms invited to."""

    def __init__(self):
        self.events = {}
        self.first_join = {}
        self.invites = set()
        self.last_error = None

    def record(self, resp):
        if not isinstance(resp, SyncResponse):
            self.last_error = desc(resp)
            return
        for room_id, info in resp.rooms.join.items():
            self.events.setdefault(room_id, []).extend(info.timeline.events)
            self.first_join.setdefault(room_id, info.timeline)
        self.invites.update(resp.rooms.invite)

    def event(self, room_id, event_id):
        """The nio event with this id seen in the room's timeline, or None."""
        for e in self.events.get(room_id, []):
            if getattr(e, "event_id", None) == event_id:
                return e
        return None


def membership(event):
    """unsigned.membership of a nio event, from its raw source (nio has no attribute for it)."""
    source = getattr(event, "source", None) or {}
    unsigned = source.get("unsigned")
    return unsigned.get("membership") if isinstance(unsigned, dict) else None


def brief(events):
    """A short description of timeline events: type, nio class and body."""
    return short([f"{e.source.get('type')}/{type(e).__name__}"
                  + (f" {e.body!r}" if isinstance(e, RoomMessageText) else "") for e in events])


async def run(base):
    suffix = uuid.uuid4().hex[:10]
    a = AsyncClient(base, config=CLIENT_CONFIG)
    b = AsyncClient(base, config=CLIENT_CONFIG)
    sa, sb = Seen(), Seen()
    try:
        ids = {}
        for name, client in (("A", a), ("B", b)):
            local = f"nioc_{name.lower()}_{suffix}"
            reg = await client.register(local, f"password-{name}-{suffix}", f"nio-clients-{name}")
            require(isinstance(reg, RegisterResponse) and reg.user_id.startswith(f"@{local}:"),
                    f"register {name} ({local}) with m.login.dummy", desc(reg))
            ids[name] = reg.user_id
        a_id, b_id = ids["A"], ids["B"]

        for name, client, seen in (("A", a, sa), ("B", b, sb)):
            first = await client.sync(timeout=100)
            seen.record(first)
            require(isinstance(first, SyncResponse) and first.next_batch,
                    f"{name}'s initial sync answers with a next_batch token", desc(first))

        async def send(room_id, what):
            sent = await a.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": what})
            require(isinstance(sent, RoomSendResponse) and sent.event_id.startswith("$"),
                    f"A sends {what!r}", desc(sent))
            return sent.event_id

        # 1. GET /devices through nio.
        print("# devices", flush=True)
        devices = await b.devices()
        check(isinstance(devices, DevicesResponse),
              "B's devices() is a DevicesResponse (nio needs last_seen_ip and last_seen_ts)",
              desc(devices))
        mine = [d for d in getattr(devices, "devices", []) if d.id == b.device_id]
        check(len(mine) == 1, f"B's device {b.device_id} is listed",
              short([d.id for d in getattr(devices, "devices", [])]))
        device = mine[0] if mine else None
        ip = getattr(device, "last_seen_ip", None)
        try:
            address = ipaddress.ip_address(ip) if isinstance(ip, str) else None
        except ValueError:
            address = None
        host = urlsplit(base).hostname or ""
        loopback = host in ("localhost", "::1") or host.startswith("127.")
        check(address is not None and (address.is_loopback or not loopback),
              "its last_seen_ip is an IP address (a loopback one, as B connects over loopback)",
              repr(ip))
        seen_at = getattr(device, "last_seen_date", None)
        age = time.time() - seen_at.timestamp() if seen_at else None
        check(age is not None and -60 < age < 60,
              "its last_seen_ts is recent (within a minute of now)",
              f"last_seen_date={seen_at!r}")

        # 2. A room B is invited to after A said something, joined between two syncs.
        print("# invite accepted between two syncs", flush=True)
        created = await a.room_create(name=f"nio clients invite {suffix}", room_version="12")
        require(isinstance(created, RoomCreateResponse), "A creates a private room (version 12)",
                desc(created))
        room = created.room_id
        read_this = await send(room, f"read this ({suffix})")
        invited = await a.room_invite(room, b_id)
        require(isinstance(invited, RoomInviteResponse), "A invites B", desc(invited))
        ok = await sync_until(b, sb, lambda: room in sb.invites)
        require(ok, "B's incremental sync shows the invite",
                f"after {SYNC_DEADLINE}s; last error: {sb.last_error}")
        joined = await b.join(room)
        require(isinstance(joined, JoinResponse) and joined.room_id == room,
                "B accepts the invite (join)", desc(joined))
        ok = await sync_until(b, sb, lambda: room in sb.first_join)
        require(ok, "B's next incremental sync has the room under rooms.join",
                f"after {SYNC_DEADLINE}s; last error: {sb.last_error}")
        timeline = sb.first_join[room]
        got = [e for e in timeline.events if getattr(e, "event_id", None) == read_this]
        check(len(got) == 1 and isinstance(got[0], RoomMessageText)
              and got[0].body == f"read this ({suffix})" and got[0].sender == a_id,
              "that sync's timeline holds A's earlier 'read this' as a RoomMessageText",
              f"limited={timeline.limited}, events: {brief(timeline.events)}")
        check(isinstance(timeline.prev_batch, str) and timeline.prev_batch != "",
              "that timeline has a prev_batch token", repr(timeline.prev_batch))
        own = [e for e in timeline.events
               if isinstance(e, RoomMemberEvent) and e.state_key == b_id and e.membership == "join"]
        check(len(own) == 1, "and B's own join", brief(timeline.events))

        # 4. MSC4115 unsigned.membership on what B sees.
        print("# unsigned.membership (MSC4115)", flush=True)
        check(got and membership(got[0]) == "leave",
              "unsigned.membership is 'leave' on 'read this' (sent before B was invited)",
              short(got[0].source) if got else "no 'read this' seen")
        invite_ev = [e for e in timeline.events
                     if isinstance(e, (InviteMemberEvent, RoomMemberEvent))
                     and e.state_key == b_id and e.membership == "invite"]
        check(invite_ev and membership(invite_ev[0]) == "invite",
              "unsigned.membership is 'invite' on B's invite",
              short(invite_ev[0].source) if invite_ev else brief(timeline.events))
        check(own and membership(own[0]) == "join", "unsigned.membership is 'join' on B's join",
              short(own[0].source) if own else brief(timeline.events))
        after = await send(room, f"after the join ({suffix})")
        ok = await sync_until(b, sb, lambda: sb.event(room, after) is not None)
        check(ok, "B sees A's message sent after the join",
              f"after {SYNC_DEADLINE}s; last error: {sb.last_error}")
        check(ok and membership(sb.event(room, after)) == "join",
              "unsigned.membership is 'join' on A's message after B joined",
              short(sb.event(room, after).source) if ok else "")

        # 3. A public room joined by id after A's message.
        print("# public room joined between two syncs", flush=True)
        created = await a.room_create(visibility=RoomVisibility.public,
                                      preset=RoomPreset.public_chat,
                                      name=f"nio clients public {suffix}", room_version="12")
        require(isinstance(created, RoomCreateResponse), "A creates a public room (version 12)",
                desc(created))
        public = created.room_id
        public_msg = await send(public, f"read this too ({suffix})")
        # B syncs once more: its since token is now past A's message, which is history before
        # the token by the time B joins.
        await sync_once(b, sb, 100)
        require(sb.last_error is None, "B syncs again (its token is now past A's message)",
                sb.last_error)
        joined = await b.join(public)
        require(isinstance(joined, JoinResponse) and joined.room_id == public,
                "B joins the public room by its id", desc(joined))
        ok = await sync_until(b, sb, lambda: public in sb.first_join)
        require(ok, "B's next incremental sync has the public room under rooms.join",
                f"after {SYNC_DEADLINE}s; last error: {sb.last_error}")
        timeline = sb.first_join[public]
        got = [e for e in timeline.events if getattr(e, "event_id", None) == public_msg]
        check(len(got) == 1 and isinstance(got[0], RoomMessageText)
              and got[0].body == f"read this too ({suffix})",
              "that sync's timeline holds A's earlier message as a RoomMessageText",
              f"limited={timeline.limited}, events: {brief(timeline.events)}")
        check(got and membership(got[0]) == "leave",
              "unsigned.membership is 'leave' on it (B had not joined yet)",
              short(got[0].source) if got else "not seen")

        # 5. A redaction in a version 12 room.
        print("# redaction in a v12 room", flush=True)
        target = await send(room, f"a message A regrets ({suffix})")
        ok = await sync_until(b, sb, lambda: isinstance(sb.event(room, target), RoomMessageText))
        require(ok, "B sees the message as a RoomMessageText",
                f"after {SYNC_DEADLINE}s saw {sb.event(room, target)!r}")
        redacted = await a.room_redact(room, target, reason="regret")
        require(isinstance(redacted, RoomRedactResponse) and redacted.event_id.startswith("$"),
                "A redacts it (reason 'regret')", desc(redacted))
        ok = await sync_until(b, sb, lambda: sb.event(room, redacted.event_id) is not None)
        require(ok, "B's sync delivers the redaction",
                f"after {SYNC_DEADLINE}s; last error: {sb.last_error}")
        ev = sb.event(room, redacted.event_id)
        check(isinstance(ev, RedactionEvent) and ev.redacts == target and ev.reason == "regret",
              "it arrives as a RedactionEvent whose .redacts is the message (reason kept)",
              f"{type(ev).__name__}: {short(ev.source)}")
        fetched = await b.room_get_event(room, target)
        ev = fetched.event if isinstance(fetched, RoomGetEventResponse) else None
        check(isinstance(ev, RedactedEvent) and ev.redacter == a_id and ev.reason == "regret",
              "the message fetched with room_get_event is a RedactedEvent (redacter A, reason)",
              f"{type(ev).__name__}: {short(ev.source)}" if ev else desc(fetched))
    finally:
        await a.close()
        await b.close()


if __name__ == "__main__":
    run_main(run, __doc__, RUN_DEADLINE)
