"""Smoke test with matrix-nio, a Matrix client library nobody here wrote.

Two fresh users register (m.login.dummy, open registration), A creates a named room with a topic
and invites B, B sees the invite through sync and joins, A sends a message and B a reply, each
sees the other's message through sync, B sees the room's name and topic, the joined members are
exactly A and B; A uploads a file and a picture that B downloads (content, type, filename) and
thumbnails through the authenticated media API; and both log out (after which A's old access
token is refused).

Checked against Synapse as the reference server (spec-tests/synapse/synapse.sh).

Usage: python nio_smoke.py BASE_URL        e.g. http://127.0.0.1:8008
Prints one line per check and ends with "N passed, M failed"; exit status 1 on any failure.
"""

import io
import struct
import uuid
import zlib

import aiohttp
from nio import (
    AsyncClient,
    InviteMemberEvent,
    JoinedMembersResponse,
    JoinResponse,
    LogoutResponse,
    MemoryDownloadResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
    ThumbnailResponse,
    UploadResponse,
)
from nio.api import ResizingMethod

from harness import CLIENT_CONFIG, SYNC_DEADLINE, check, desc, require, run_main, sync_until

RUN_DEADLINE = 180.0  # seconds for the whole run, whatever happens

ROOM_NAME = "nio smoke room"
ROOM_TOPIC = "interop between a real client and the server"


def png(width, height):
    """An RGB PNG written by hand (no imaging library needed)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"".join(
        b"\x00" + b"".join(bytes((x * 4 % 256, y * 4 % 256, 128)) for x in range(width))
        for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def png_size(data):
    """Width and height from a PNG's IHDR, or None if it is not a PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", data[16:24])


class Timeline:
    """Every timeline event (joined rooms) and invite state event (invited rooms) a client has
    seen through sync, per room, straight from the sync responses."""

    def __init__(self):
        self.events = {}
        self.invite_state = {}
        self.last_error = None

    def record(self, resp):
        if not isinstance(resp, SyncResponse):
            self.last_error = desc(resp)
            return
        for room_id, info in resp.rooms.join.items():
            self.events.setdefault(room_id, []).extend(info.timeline.events)
        for room_id, info in resp.rooms.invite.items():
            self.invite_state.setdefault(room_id, []).extend(info.invite_state)

    def texts(self, room_id):
        return [e for e in self.events.get(room_id, []) if isinstance(e, RoomMessageText)]


async def token_refused(base, token):
    """Whether /account/whoami refuses the token with 401 M_UNKNOWN_TOKEN, as the spec says a
    logged-out token must be. Returns (refused, what was seen)."""
    url = base.rstrip("/") + "/_matrix/client/v3/account/whoami"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
            try:
                body = await r.json(content_type=None)
            except ValueError:
                body = None
            errcode = body.get("errcode") if isinstance(body, dict) else None
            return r.status == 401 and errcode == "M_UNKNOWN_TOKEN", f"HTTP {r.status} {body}"


async def run(base):
    suffix = uuid.uuid4().hex[:10]
    a_local, b_local = f"nio_a_{suffix}", f"nio_b_{suffix}"
    a = AsyncClient(base, config=CLIENT_CONFIG)
    b = AsyncClient(base, config=CLIENT_CONFIG)
    ta, tb = Timeline(), Timeline()
    try:
        # Registration: the server decides the full user id; its localpart must be ours.
        ra = await a.register(a_local, "password-a-" + suffix, "nio-smoke-a")
        require(isinstance(ra, RegisterResponse) and ra.user_id.startswith(f"@{a_local}:"),
                f"register A ({a_local}) with m.login.dummy", desc(ra))
        rb = await b.register(b_local, "password-b-" + suffix, "nio-smoke-b")
        require(isinstance(rb, RegisterResponse) and rb.user_id.startswith(f"@{b_local}:"),
                f"register B ({b_local}) with m.login.dummy", desc(rb))
        a_id, b_id = ra.user_id, rb.user_id
        require(a.access_token and b.access_token and a.access_token != b.access_token,
                "A and B hold distinct access tokens")

        # An initial sync each, so that every later sync is incremental.
        for name, client, tl in (("A", a, ta), ("B", b, tb)):
            first = await client.sync(timeout=100)
            tl.record(first)
            require(isinstance(first, SyncResponse) and first.next_batch,
                    f"{name}'s initial sync answers with a next_batch token", desc(first))

        created = await a.room_create(name=ROOM_NAME, topic=ROOM_TOPIC, invite=[b_id])
        require(isinstance(created, RoomCreateResponse) and created.room_id.startswith("!"),
                "A creates a room with a name and topic, inviting B", desc(created))
        room_id = created.room_id

        ok = await sync_until(b, tb, lambda: room_id in tb.invite_state)
        require(ok and room_id in b.invited_rooms, "B sees the invite through sync",
                f"no invite for the room after {SYNC_DEADLINE}s; last error: {tb.last_error}")
        # The invite's stripped state carries B's m.room.member event, sent by A.
        members = [(e.sender, e.state_key, e.membership) for e in tb.invite_state[room_id]
                   if isinstance(e, InviteMemberEvent)]
        check((a_id, b_id, "invite") in members,
              "the invite's m.room.member event says A invited B", f"member events seen: {members}")

        joined = await b.join(room_id)
        require(isinstance(joined, JoinResponse) and joined.room_id == room_id,
                "B joins the room", desc(joined))

        body_a = f"hello from A ({suffix})"
        body_b = f"hello back from B ({suffix})"
        sent_a = await a.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body_a})
        require(isinstance(sent_a, RoomSendResponse) and sent_a.event_id.startswith("$"),
                "A sends a text message", desc(sent_a))
        sent_b = await b.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body_b})
        require(isinstance(sent_b, RoomSendResponse) and sent_b.event_id.startswith("$"),
                "B sends a reply", desc(sent_b))

        def saw(tl, event_id, sender, body):
            return any(e.event_id == event_id and e.sender == sender and e.body == body
                       for e in tl.texts(room_id))

        def seen(tl):
            return [(e.sender, e.body) for e in tl.texts(room_id)]

        ok = await sync_until(b, tb, lambda: saw(tb, sent_a.event_id, a_id, body_a))
        check(ok, "B sees A's message in the room timeline (event id, sender, body)",
              f"after {SYNC_DEADLINE}s B saw {seen(tb)}; last error: {tb.last_error}")
        ok = await sync_until(a, ta, lambda: saw(ta, sent_b.event_id, b_id, body_b))
        check(ok, "A sees B's message in the room timeline (event id, sender, body)",
              f"after {SYNC_DEADLINE}s A saw {seen(ta)}; last error: {ta.last_error}")

        room_b = b.rooms.get(room_id)
        check(room_b is not None and room_b.name == ROOM_NAME, "B sees the room's name",
              f"{room_b.name if room_b else 'room unknown to B'!r}")
        check(room_b is not None and room_b.topic == ROOM_TOPIC, "B sees the room's topic",
              f"{room_b.topic if room_b else 'room unknown to B'!r}")

        for name, client in (("A", a), ("B", b)):
            members = await client.joined_members(room_id)
            ids = ({m.user_id for m in members.members}
                   if isinstance(members, JoinedMembersResponse) else None)
            check(ids == {a_id, b_id}, f"joined members as {name} asks are exactly {{A, B}}",
                  f"{ids if ids is not None else desc(members)}")

        # Media: A uploads, B downloads and thumbnails through the authenticated endpoints.
        text = b"bytes that cross the media repository intact"
        up, _ = await a.upload(io.BytesIO(text), content_type="text/plain",
                               filename="notes.txt", filesize=len(text))
        check(isinstance(up, UploadResponse) and up.content_uri.startswith("mxc://"),
              "A uploads a file", desc(up))
        if isinstance(up, UploadResponse):
            got = await b.download(up.content_uri)
            check(isinstance(got, MemoryDownloadResponse) and got.body == text
                  and got.content_type.startswith("text/plain") and got.filename == "notes.txt",
                  "B downloads A's file: same bytes, type and filename",
                  desc(got) if not isinstance(got, MemoryDownloadResponse)
                  else f"{got.content_type!r} {got.filename!r} {got.body[:40]!r}")
        picture = png(64, 48)
        up, _ = await a.upload(io.BytesIO(picture), content_type="image/png",
                               filename="picture.png", filesize=len(picture))
        check(isinstance(up, UploadResponse), "A uploads a picture", desc(up))
        if isinstance(up, UploadResponse):
            server, media_id = up.content_uri[len("mxc://"):].split("/", 1)
            thumb = await b.thumbnail(server, media_id, 32, 32, ResizingMethod.crop)
            size = png_size(thumb.body) if isinstance(thumb, ThumbnailResponse) else None
            check(isinstance(thumb, ThumbnailResponse) and size == (32, 32),
                  "B gets a 32x32 cropped thumbnail of A's picture",
                  desc(thumb) if not isinstance(thumb, ThumbnailResponse)
                  else f"{thumb.content_type!r} size {size}")

        token_a = a.access_token
        for name, client in (("A", a), ("B", b)):
            out = await client.logout()
            check(isinstance(out, LogoutResponse), f"{name} logs out", desc(out))
        refused, seen_whoami = await token_refused(base, token_a)
        check(refused, "A's access token is refused after logout (401 M_UNKNOWN_TOKEN)", seen_whoami)
    finally:
        await a.close()
        await b.close()


if __name__ == "__main__":
    run_main(run, __doc__, RUN_DEADLINE)
