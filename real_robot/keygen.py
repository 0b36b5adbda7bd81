"""``python -m real_robot.keygen --dir keys``: make the server, client and operator keypairs.

By default it creates whichever of the three keypairs is missing and authorises the client and
operator public keys, which is what a single-machine sim setup needs. On a real cell, run it with
``--name`` and ``--role`` on each machine and copy only the public ``*.key`` files across.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from real_robot.keys import KeyFileError, authorize, generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m real_robot.keygen", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="keys", help="key directory (default: ./keys)")
    parser.add_argument("--name", help="make only this keypair (e.g. a second client's)")
    parser.add_argument("--role", choices=["client", "operator", "server"], help="role of --name")
    args = parser.parse_args(argv)
    directory = Path(args.dir)
    wanted = (
        [(args.name, args.role or "client")]
        if args.name
        else [
            ("server", "server"),
            ("client", "client"),
            ("operator", "operator"),
        ]
    )
    try:
        for name, role in wanted:
            if (directory / f"{name}.key_secret").exists():
                print(f"keep     {directory / name}.key_secret (exists)")
                continue
            public, secret = generate(directory, name)
            print(f"created  {secret} (secret, mode 0600) and {public}")
            if role != "server":
                print(f"allowed  {authorize(public, directory, role)}")
    except KeyFileError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
