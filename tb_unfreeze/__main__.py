import sys

from tb_unfreeze.cli import main

sys.exit(main())
