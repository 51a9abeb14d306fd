"""What every command line of the package sets up the same way."""
import logging
from typing import Sequence

from absl import app


def start(argv: Sequence[str]) -> None:
    """Refuses stray arguments and sets up readable logging."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        force=True)
    # orbax and absl log every checkpoint step at INFO; keep the run's own lines readable.
    logging.getLogger("absl").setLevel(logging.WARNING)
