"""The daemon, ``spaceport run``: one deployment's whole life, in a container or on a VM.

``lifecycle``  the phases: lock, stage in, ready, autosave loop, final save, release
``heartbeat``  the lock heartbeat thread, and fencing when another deployment took the lock
``state``      what the daemon knows about itself (phase, tasks, saves, errors), for the web
``web``        the HTTP server: progress page, /status, /metrics, probes, POST /save, /clone
``config``     what it was told (folders, interval, deadline) and the files it writes
``logs``       its log lines, text or JSON, with secrets redacted

The command that starts it is in :mod:`spaceport.cli.daemon_cmd`.
"""
