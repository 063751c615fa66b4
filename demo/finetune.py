"""The fine-tuning story: frozen accuracy X on shifted digits, unfreeze, fine-tune with Keras, accuracy Y, re-freeze.

    python demo/finetune.py [--logdir out] [--epochs 5] [--shift invert|rotate] [--batch-norm-trainable]

Then `tensorboard --logdir out` shows the loss/accuracy curves beside the graphs in the Unfreeze tab.
"""

import argparse
import sys

from tb_unfreeze import errors
from tb_unfreeze.finetune import SHIFTS, run_finetune


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="out")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--shift", choices=SHIFTS, default="invert")
    parser.add_argument(
        "--batch-norm-trainable",
        action="store_true",
        help="let gradient descent move the batch-norm moving statistics too",
    )
    args = parser.parse_args(argv)
    try:
        report = run_finetune(
            logdir=args.logdir, epochs=args.epochs, shift=args.shift, batch_norm_trainable=args.batch_norm_trainable
        )
    except errors.UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"X (frozen) = {report['accuracy_frozen']:.3f}   Y (fine-tuned) = {report['accuracy_finetuned']:.3f}")
    print(f"re-frozen graph: {report['refrozen']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
