// What real clients tripped over (issue 20), as matrix-js-sdk (the SDK under Element Web and
// Cinny; from npm, pinned in package.json / package-lock.json) sees it.
//
// Two fresh users A and B register (m.login.dummy, open registration) through the SDK's
// registerRequest. A acts through an SDK client that is never started (createRoom,
// sendTextMessage, invite, redactEvent); B's client is started (startClient, as an app does) and
// every check reads what the SDK made of the server's answers:
//
// (a) TURN: client.turnServer() resolves (no throw) without a TURN server configured, and the
//     SDK's own TURN polling (checkTurnServers, which startClient runs where WebRTC exists: the
//     client is told it has WebRTC, as in a browser) emits no TurnServersError and logs no
//     "Failed to get TURN URIs".
// (b) Room summary: client.getRoomSummary(roomId) on a public room B is not in resolves with
//     room_id, num_joined_members, join_rule, name (the call Cinny makes; js-sdk takes MSC3266's
//     unstable im.nheko.summary path unless /versions lists v1.15); the same request made
//     through the SDK's HTTP layer on both unstable paths, /summary/{id} and
//     /rooms/{id}/summary, which Cinny's SDK uses against servers that do not advertise v1.15.
// (c) History on accepting an invite: A creates a room, says "read this", then invites B; B's
//     SDK sees the invite, B accepts with client.joinRoom, and once the sync brings B's join,
//     room.getLiveTimeline().getEvents() holds "read this" without any pagination (what Cinny
//     shows right after accepting an invite).
// (d) Redaction in a room of version 12: A redacts a message B has seen; B's SDK marks it
//     isRedacted() (js-sdk reads only the top-level `redacts` of a redaction).
// (e) MSC4115: event.getMembershipAtEvent() (unsigned.membership) is "join" on B's join and on
//     A's message after it, and "leave" on "read this" (from before B was invited).
// (f) /versions: client.getVersions() lists v1.13, v1.14 and v1.15 (from v1.15 on, the SDK
//     takes the stable /v1/room_summary path in (b)).
//
// Checked against Synapse 1.163.2 as the reference server (spec-tests/synapse/synapse.sh): every
// check passes there, under Node 20 and under Debian 12's Node 18 alike.
//
// Usage: node clients.mjs BASE_URL      e.g. http://127.0.0.1:8008 (after `npm ci` here)
// Prints one line per check ("ok - ..." / "FAIL - ...") and ends with "N passed, M failed";
// exit status 1 on any failure. The whole run has a deadline of 120 s.

// js-sdk 43 wants Node 22 (package.json engines); the machines have Node 20, and Debian 12's
// package (what .ci/run installs where Node is missing) is Node 18. Two polyfills are enough for
// what this script uses: Promise.withResolvers (Node 22+) and a global Web Crypto (Node 19+).
if (globalThis.crypto?.getRandomValues === undefined) {
  globalThis.crypto = (await import("node:crypto")).webcrypto;
}
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function withResolvers() {
    let resolve, reject;
    const promise = new this((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}

// The SDK's own logging (loglevel, bound to the console methods when the SDK loads) would bury
// the check lines: its debug and info lines go nowhere, its warnings and errors to stderr. The
// checks print through `out`.
const out = console.log.bind(console);
for (const method of ["log", "info", "debug", "trace"]) console[method] = () => {};

const RUN_DEADLINE_MS = 120_000;
const WAIT_MS = 30_000; // how long B's client may take to see something through sync

const counts = { passed: 0, failed: 0 };

function check(cond, what, detail = "") {
  if (cond) {
    counts.passed += 1;
    out(`ok   - ${what}`);
  } else {
    counts.failed += 1;
    out(`FAIL - ${what}` + (detail ? `: ${detail}` : ""));
  }
  return Boolean(cond);
}

class Abort extends Error {}

function require_(cond, what, detail = "") {
  if (!check(cond, what, detail)) throw new Abort(what);
}

function finish() {
  out(`${counts.passed} passed, ${counts.failed} failed`);
  process.exit(counts.failed || counts.passed === 0 ? 1 : 0);
}

function short(value, limit = 1500) {
  let text;
  try {
    text = typeof value === "string" ? value : JSON.stringify(value);
  } catch {
    text = String(value);
  }
  text = text ?? String(value);
  return text.length <= limit ? text : text.slice(0, limit) + "...";
}

function errText(e) {
  return e ? `${e.name ?? "Error"}: ${e.message ?? e}${e.httpStatus ? ` (HTTP ${e.httpStatus})` : ""}` : "";
}

/** Waits until `predicate()` holds, polling every 50 ms, for at most `ms`. Returns whether it held. */
async function until(predicate, ms = WAIT_MS) {
  const end = Date.now() + ms;
  for (;;) {
    if (predicate()) return true;
    if (Date.now() >= end) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A logger for the SDK: keeps warnings and errors (to check and show them), drops the rest. */
function recordingLogger(lines, prefix = "") {
  const keep = (level) => (...args) => {
    lines.push(`${level} ${prefix}${args.map((a) => (a instanceof Error ? errText(a) : short(a, 300))).join(" ")}`);
  };
  const quiet = () => {};
  return {
    trace: quiet, debug: quiet, info: quiet, log: quiet,
    warn: keep("warn"), error: keep("error"),
    getChild: (name) => recordingLogger(lines, `${prefix}${name} `),
  };
}

async function run(base) {
  const sdk = await import("matrix-js-sdk");
  const suffix = Math.random().toString(16).slice(2, 12);
  const sdkLog = [];
  const requests = []; // "METHOD path" of every request B's client makes
  const recordingFetch = (input, init) => {
    const url = new URL(typeof input === "string" ? input : input.url ?? String(input));
    requests.push(`${init?.method ?? "GET"} ${url.pathname}`);
    return fetch(input, init);
  };
  const quietLogger = recordingLogger([]);

  const ids = {};
  for (const name of ["A", "B"]) {
    const local = `jssdk_${name.toLowerCase()}_${suffix}`;
    const tmp = sdk.createClient({ baseUrl: base, logger: quietLogger });
    let reg, err;
    try {
      reg = await tmp.registerRequest({
        username: local, password: `password-${name}-${suffix}`,
        auth: { type: "m.login.dummy" }, initial_device_display_name: `js-sdk ${name}`,
      });
    } catch (e) {
      err = e;
    }
    require_(reg?.user_id?.startsWith(`@${local}:`) && reg.access_token,
      `register ${name} (${local}) with registerRequest (m.login.dummy)`, errText(err) || short(reg));
    ids[name] = reg;
  }
  const alice = sdk.createClient({
    baseUrl: base, userId: ids.A.user_id, accessToken: ids.A.access_token,
    deviceId: ids.A.device_id, logger: quietLogger,
  });
  const bob = sdk.createClient({
    baseUrl: base, userId: ids.B.user_id, accessToken: ids.B.access_token,
    deviceId: ids.B.device_id, logger: recordingLogger(sdkLog), fetchFn: recordingFetch,
  });
  const aId = ids.A.user_id;
  const bId = ids.B.user_id;

  try {
    // (a) TURN.
    out("# (a) voip/turnServer");
    let turn, err;
    try {
      turn = await bob.turnServer();
    } catch (e) {
      err = e;
    }
    check(err === undefined && turn !== null && typeof turn === "object",
      "client.turnServer() resolves (an object) without a TURN server configured",
      err ? errText(err) : short(turn));

    // B's client as an app runs it: told that WebRTC is there (as in a browser), startClient
    // polls the TURN servers at once and then every 10 minutes.
    const turnErrors = [];
    bob.on(sdk.ClientEvent.TurnServersError, (e, fatal) => turnErrors.push(`${errText(e)} fatal=${fatal}`));
    bob.canSupportVoip = true;
    await bob.startClient({ lazyLoadMembers: true });
    const prepared = await until(() => ["PREPARED", "SYNCING"].includes(bob.getSyncState()));
    require_(prepared, "B's startClient gets through its first sync (PREPARED)",
      `sync state ${bob.getSyncState()}; SDK log: ${short(sdkLog.slice(-5))}`);
    require_(bob.pollingTurnServers, "B's client polls the TURN servers (checkTurnServers)");
    const good = await bob.checkTurnServers();
    check(good === false && bob.getTurnServers().length === 0,
      "checkTurnServers finds no TURN servers (none configured)",
      `returned ${good}, servers ${short(bob.getTurnServers())}`);
    const turnLog = sdkLog.filter((l) => /turn/i.test(l));
    check(turnErrors.length === 0 && turnLog.length === 0,
      "no TurnServersError emitted and no TURN error logged by startClient's polling",
      short({ turnErrors, turnLog }));

    // (f) The spec versions the server advertises, which the SDK reads to pick endpoints (the
    // room summary's among them).
    out("# (f) /versions");
    let versions;
    err = undefined;
    try {
      versions = await bob.getVersions();
    } catch (e) {
      err = e;
    }
    const missing = ["v1.13", "v1.14", "v1.15"].filter((v) => !versions?.versions?.includes(v));
    check(err === undefined && missing.length === 0,
      "client.getVersions() lists v1.13, v1.14 and v1.15",
      err ? errText(err) : `missing ${missing.join(", ")} in ${short(versions?.versions)}`);

    // (b) Room summary of a public room B is not in.
    out("# (b) room summary (MSC3266)");
    const name = `jssdk summary ${suffix}`;
    const { room_id: publicRoom } = await alice.createRoom({
      name, preset: sdk.Preset.PublicChat, visibility: sdk.Visibility.Public,
    });
    require_(typeof publicRoom === "string" && publicRoom.startsWith("!"), "A creates a public room");
    const isSummary = (s) => s?.room_id === publicRoom && s.num_joined_members === 1
      && s.join_rule === "public" && s.name === name && s.guest_can_join === false
      && s.world_readable === false;
    let summary;
    err = undefined;
    const before = requests.length;
    try {
      summary = await bob.getRoomSummary(publicRoom);
    } catch (e) {
      err = e;
    }
    const used = requests.slice(before).filter((r) => /summary/.test(r));
    check(err === undefined && isSummary(summary),
      `client.getRoomSummary(roomId) resolves with room_id, num_joined_members 1, join_rule, name (${used.join(", ") || "no request seen"})`,
      err ? errText(err) : short(summary));
    for (const path of [`/summary/${encodeURIComponent(publicRoom)}`,
      `/rooms/${encodeURIComponent(publicRoom)}/summary`]) {
      summary = undefined;
      err = undefined;
      try {
        summary = await bob.http.authedRequest(sdk.Method.Get, path, undefined, undefined,
          { prefix: "/_matrix/client/unstable/im.nheko.summary" });
      } catch (e) {
        err = e;
      }
      check(err === undefined && isSummary(summary),
        `the SDK's HTTP layer on the unstable path .../im.nheko.summary${path.replace(encodeURIComponent(publicRoom), "{roomId}")} gets the same summary`,
        err ? errText(err) : short(summary));
    }

    // (c) Accepting an invite shows the earlier history.
    out("# (c) accepting an invite");
    const { room_id: room } = await alice.createRoom({ name: `jssdk invite ${suffix}`, room_version: "12" });
    require_(typeof room === "string" && room.startsWith("!"), "A creates a private room (version 12)");
    const { event_id: readThis } = await alice.sendTextMessage(room, `read this (${suffix})`);
    require_(readThis?.startsWith("$"), "A says 'read this'");
    await alice.invite(room, bId);
    const invited = await until(() => bob.getRoom(room)?.getMyMembership() === "invite");
    require_(invited, "B's client sees the invite", `membership ${bob.getRoom(room)?.getMyMembership()}`);
    let joinErr;
    try {
      await bob.joinRoom(room);
    } catch (e) {
      joinErr = e;
    }
    require_(joinErr === undefined, "B accepts it with client.joinRoom", errText(joinErr));
    const live = () => bob.getRoom(room)?.getLiveTimeline().getEvents() ?? [];
    const ownJoin = () => live().find((e) => e.getType() === "m.room.member"
      && e.getStateKey() === bId && e.getContent().membership === "join");
    const joined = await until(() => ownJoin() !== undefined);
    require_(joined, "B's live timeline gets B's join through sync",
      short(live().map((e) => e.getType())));
    const describe = () => short(live().map((e) => `${e.getType()} ${e.getContent().body ?? e.getContent().membership ?? ""}`));
    const seenReadThis = live().find((e) => e.getId() === readThis);
    check(seenReadThis?.getContent().body === `read this (${suffix})` && seenReadThis.getSender() === aId,
      "room.getLiveTimeline().getEvents() holds A's earlier 'read this' (no pagination)",
      describe());

    // (d) Redaction in the version 12 room.
    out("# (d) redaction in a v12 room");
    const { event_id: target } = await alice.sendTextMessage(room, `a message A regrets (${suffix})`);
    const targetEv = () => live().find((e) => e.getId() === target);
    const got = await until(() => targetEv() !== undefined);
    require_(got, "B's client gets the message A will redact", describe());
    const { event_id: redaction } = await alice.redactEvent(room, target, undefined, { reason: "regret" });
    require_(redaction?.startsWith("$"), "A redacts it (reason 'regret')");
    const redactionSeen = await until(() => live().some((e) => e.getId() === redaction));
    check(redactionSeen, "B's client gets the redaction event", describe());
    const redacted = await until(() => targetEv()?.isRedacted() === true, 5_000);
    check(redacted, "B's SDK shows the message isRedacted()",
      short(live().find((e) => e.getId() === redaction)?.event));
    check(redacted && targetEv().getContent().body === undefined
      && targetEv().getUnsigned().redacted_because?.event_id === redaction,
      "its content is stripped and unsigned.redacted_because is the redaction",
      short(targetEv()?.event));
    // (e) MSC4115, on what B's SDK has.
    out("# (e) getMembershipAtEvent (MSC4115)");
    const membershipOf = (e) => e?.getMembershipAtEvent?.() ?? e?.getUnsigned().membership;
    check(membershipOf(ownJoin()) === "join", "getMembershipAtEvent() is 'join' on B's join",
      short(ownJoin()?.getUnsigned()));
    const { event_id: after } = await alice.sendTextMessage(room, `after the join (${suffix})`);
    const afterSeen = await until(() => live().some((e) => e.getId() === after));
    check(afterSeen, "B's client gets A's message sent after the join", describe());
    const afterEv = live().find((e) => e.getId() === after);
    check(membershipOf(afterEv) === "join", "getMembershipAtEvent() is 'join' on A's message after B joined",
      short(afterEv?.getUnsigned()));
    check(membershipOf(seenReadThis) === "leave",
      "getMembershipAtEvent() is 'leave' on 'read this' (sent before B was invited)",
      short(seenReadThis?.getUnsigned()));

    const unexpected = sdkLog.filter((l) => l.startsWith("error"));
    check(unexpected.length === 0, "B's SDK logged no error during the run", short(unexpected));
  } finally {
    bob.stopClient();
    alice.stopClient();
  }
}

const base = process.argv[2];
if (!base || !/^https?:\/\//.test(base) || process.argv.length > 3) {
  console.error("usage: node clients.mjs BASE_URL   (e.g. http://127.0.0.1:8008)");
  process.exit(2);
}
const deadline = setTimeout(() => {
  check(false, `the whole run finishes within ${RUN_DEADLINE_MS / 1000}s`);
  finish();
}, RUN_DEADLINE_MS);
process.on("unhandledRejection", (e) => {
  check(false, "no unhandled promise rejection", errText(e));
});
try {
  await run(base);
} catch (e) {
  if (e instanceof Abort) {
    out(`# stopped: later checks depend on "${e.message}"`);
  } else {
    check(false, "no unexpected exception", `${errText(e)}\n${e?.stack ?? ""}`);
  }
}
clearTimeout(deadline);
finish();
