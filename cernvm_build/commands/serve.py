"""`serve`: a repository over HTTP on the loopback interface."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("serve", help="serve a repository over HTTP (loopback by default) with the caching "
                                     "headers stratum-1s send")
    p.add_argument("dir", type=Path)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from cernvm_build.cvmfs.serve import make_server

    server = make_server(args.dir, args.port, args.host)
    host, port = server.server_address[:2]
    print(f"serving {args.dir} at http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
