"""Write an application service registration for mautrix_bridge.py.

Usage: python make_registration.py OUT.yaml AS_PORT SERVER_NAME
       e.g. python make_registration.py /tmp/mxb.yaml 29333 localhost

The registration: id "mautrix-interop", url http://127.0.0.1:AS_PORT, fresh random as_token and
hs_token, sender_localpart "mxbridge", exclusive namespaces for users @mxb_.*:SERVER_NAME and
aliases #mxb_.*:SERVER_NAME (the server name regex-escaped), rate_limited false, ephemeral events
asked for under both names that registrations in the wild use (receive_ephemeral and the unstable
de.sorunome.msc2409.push_ephemeral), the MSC3202 transaction extensions (org.matrix.msc3202) and
protocols ["mxb"]. Give the file to the homeserver (Synapse: app_service_config_files, or
SYNAPSE_APPSERVICES for spec-tests/synapse/synapse.sh; Plexus: PLEXUS_APPSERVICE_REGISTRATIONS)
before it starts, then to mautrix_bridge.py.

Standard library only: every value is written as a JSON string, which YAML reads as a
double-quoted scalar.
"""

import json
import os
import re
import secrets
import sys

APPSERVICE_ID = "mautrix-interop"
SENDER_LOCALPART = "mxbridge"
PREFIX = "mxb_"


def registration(as_port, server_name):
    """The registration as YAML text."""
    server = re.escape(server_name)
    s = json.dumps
    return f"""\
# Written by spec-tests/interop/make_registration.py for mautrix_bridge.py.
id: {s(APPSERVICE_ID)}
url: {s(f"http://127.0.0.1:{as_port}")}
as_token: {s(secrets.token_hex(32))}
hs_token: {s(secrets.token_hex(32))}
sender_localpart: {s(SENDER_LOCALPART)}
namespaces:
  users:
    - exclusive: true
      regex: {s(f"@{PREFIX}.*:{server}")}
  aliases:
    - exclusive: true
      regex: {s(f"#{PREFIX}.*:{server}")}
  rooms: []
rate_limited: false
receive_ephemeral: true
de.sorunome.msc2409.push_ephemeral: true
org.matrix.msc3202: true
protocols: [{s("mxb")}]
"""


def main():
    if len(sys.argv) != 4 or not sys.argv[2].isdigit() or not 0 < int(sys.argv[2]) < 65536:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    out, as_port, server_name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    text = registration(as_port, server_name)
    # The tokens are secrets: the file is the owner's alone.
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    print(f"wrote {out}: appservice {APPSERVICE_ID} on http://127.0.0.1:{as_port} "
          f"for server {server_name}")


if __name__ == "__main__":
    main()
