"""Smoke test with matrix-nio, a Matrix client library nobody here wrote.

Two users register, one creates a named room and invites the other, the other joins, they
exchange messages and each sees the other's message through sync.

Usage: python nio_smoke.py BASE_URL
"""

import asyncio
import sys
import time
import uuid

from nio import (
    AsyncClient,
    JoinedMembersResponse,
    JoinResponse,
    LogoutResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
)

passed = 0
failed = 0


def desc(resp):
    """A short description of a nio response for the log: its type, and the error if any."""
    msg = getattr(resp, "message", None)
    return type(resp).__name__ + (f" ({msg})" if msg else "")


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   - {what}")
    else:
        failed += 1
        print(f"FAIL - {what}")
    return cond


async def sync_until(client, predicate, what, timeout=30.0):
    """Sync until predicate(client) holds; bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await client.sync(timeout=1000)
        if predicate(client):
            return True
    return check(False, f"{what} (timed out after {timeout}s)")


def saw_message(client, room_id, sender, body):
    room = client.rooms.get(room_id)
    return room is not None and any(
        isinstance(e, RoomMessageText) and e.sender == sender and e.body == body
        for e in getattr(room, "_seen_messages", [])
    )


async def main(base):
    suffix = uuid.uuid4().hex[:8]
    a = AsyncClient(base)
    b = AsyncClient(base)
    try:
        ra = await a.register(f"nio_a_{suffix}", "password-a-1234", "nio-a")
        rb = await b.register(f"nio_b_{suffix}", "password-b-1234", "nio-b")
        if not (check(isinstance(ra, RegisterResponse), f"register A: {desc(ra)}")
                and check(isinstance(rb, RegisterResponse), f"register B: {desc(rb)}")):
            return
        a_id, b_id = ra.user_id, rb.user_id

        # Record every text message each client sees.
        for client in (a, b):
            def make_cb(c):
                async def on_message(room, event):
                    room._seen_messages = getattr(room, "_seen_messages", []) + [event]
                return on_message
            client.add_event_callback(make_cb(client), RoomMessageText)

        created = await a.room_create(name="nio smoke", topic="interop", invite=[b_id])
        if not check(isinstance(created, RoomCreateResponse), f"A creates a room: {desc(created)}"):
            return
        room_id = created.room_id

        await sync_until(b, lambda c: room_id in c.invited_rooms, "B sees the invite")
        check(room_id in b.invited_rooms, "B sees the invite")
        joined = await b.join(room_id)
        check(isinstance(joined, JoinResponse), f"B joins: {desc(joined)}")

        sent_a = await a.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hello from A"})
        check(isinstance(sent_a, RoomSendResponse), f"A sends: {desc(sent_a)}")
        sent_b = await b.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hello back from B"})
        check(isinstance(sent_b, RoomSendResponse), f"B sends: {desc(sent_b)}")

        await sync_until(b, lambda c: saw_message(c, room_id, a_id, "hello from A"), "B sees A's message")
        check(saw_message(b, room_id, a_id, "hello from A"), "B sees A's message with the right sender and body")
        await sync_until(a, lambda c: saw_message(c, room_id, b_id, "hello back from B"), "A sees B's message")
        check(saw_message(a, room_id, b_id, "hello back from B"), "A sees B's message with the right sender and body")

        room_b = b.rooms.get(room_id)
        check(room_b is not None and room_b.name == "nio smoke", f"B sees the room name: {room_b and room_b.name}")
        check(room_b is not None and room_b.topic == "interop", f"B sees the topic: {room_b and room_b.topic}")

        members = await a.joined_members(room_id)
        ids = {m.user_id for m in members.members} if isinstance(members, JoinedMembersResponse) else set()
        check(ids == {a_id, b_id}, f"joined members are exactly A and B: {ids}")

        out = await a.logout()
        check(isinstance(out, LogoutResponse), f"A logs out: {desc(out)}")
    finally:
        await a.close()
        await b.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    asyncio.run(main(sys.argv[1]))
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed or passed == 0 else 0)
