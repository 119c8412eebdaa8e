"""``blina-cds serve`` for the live tests, without checking again the card files the test process already checked.

    python -m tests.serve_checked        # as `python -m service.cli serve`, same settings from the environment

Start-up checks every card against its rule's example findings (``check_at_start_up``); in a fresh process that
costs seconds (12 s on a loaded 2-core machine), and the live tests start over a dozen servers. The check is a pure
function of the files: ``check_at_start_up`` already skips a set of card files and knowledge that passed in the same
process (its key: the knowledge's fingerprint, the examples folder, every card file's origin and SHA-256). The test
process passes the keys that passed there in ``$CHECKED_ENV``; this module adds them before ``serve`` runs, so a
server on the same files skips the repeat, and a server on any other file (a site overlay a test writes, a broken
card) has another key and is checked as in production. Everything else is the real ``serve``: settings,
``create_app``, uvicorn, its worker processes.

The keys are added at import, outside ``__main__``: uvicorn's worker processes (``BLINA_CDS_WORKERS`` > 1) are
spawned, and a spawned process runs this module again (as ``__mp_main__``) before it builds its app.
"""

from __future__ import annotations

import json
import os
import sys

from service.tools import cards_check

CHECKED_ENV = "BLINA_TEST_CARDS_CHECKED"


def passed_keys() -> str:
    """The keys that passed the start-up check in this process (JSON), for ``$CHECKED_ENV``; "" if none."""
    passed = getattr(cards_check, "_PASSED", None)
    return json.dumps(sorted(passed)) if passed else ""


def _add_passed_keys() -> None:
    passed = getattr(cards_check, "_PASSED", None)
    keys = os.environ.get(CHECKED_ENV)
    if passed is not None and keys:  # without either, serve checks as it always does
        passed.update(tuple(key) for key in json.loads(keys))


_add_passed_keys()

if __name__ == "__main__":
    from service.cli import main

    sys.exit(main(["serve", *sys.argv[1:]]))
