"""`python -m trtopt.train.worker`: one rank started by the local launcher (trtopt.train.launch)."""
from __future__ import annotations

import logging
import os
import sys

from trtopt.train.launch import worker_main

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("trtopt").setLevel(os.environ.get("TRTOPT_LOG_LEVEL", "INFO"))
    sys.exit(worker_main())
