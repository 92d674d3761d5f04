"""``python -m spaceport``, and the ``spaceport`` command (``run``).

A signal that arrives while Python still imports the command line (a few hundred
milliseconds in which nothing has been done yet) ends the process at once with exit 130 and
one line, instead of a KeyboardInterrupt traceback from the middle of an import. Then Ctrl-C
is Python's KeyboardInterrupt again, which the command line turns into exit 130; SIGTERM and
SIGHUP keep ending the process at once with 130 (as safe as the SIGKILL every command
survives) unless the command installs its own handling: deploy, save and undeploy stop
cleanly (:mod:`spaceport.stopping`), clone and the daemon have theirs.
"""

import os
import signal
import sys


def _at_once(signum, frame):
    os.write(2, f"{signal.Signals(signum).name}: stopped at once; run the same command again "
                "to resume\n".encode())
    os._exit(130)


def run() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _at_once)
    from . import cli  # the slow part: click, rich, the engine

    signal.signal(signal.SIGINT, signal.default_int_handler)
    return cli.main(restore_signals=False)


if __name__ == "__main__":
    sys.exit(run())
