"""Prepare the demo (two real frozen digits models and their graph runs) and serve TensorBoard's Unfreeze tab.

    python demo/run_demo.py [--logdir out] [--no-serve] [--host 127.0.0.1] [--port 6006]

The same as `tb-unfreeze demo`; both call tb_unfreeze.demo.
"""

import argparse
import sys

from tb_unfreeze import errors
from tb_unfreeze.demo import prepare_demo, serve


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="out")
    parser.add_argument("--no-serve", action="store_true", help="only write the models and graph runs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6006)
    args = parser.parse_args(argv)
    try:
        for path in prepare_demo(args.logdir):
            print(f"wrote {path}")
        return 0 if args.no_serve else serve(args.logdir, args.host, args.port)
    except errors.UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
