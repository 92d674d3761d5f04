"""The daemon, ``spaceport run``: one deployment's whole life, in a container or on a VM.

``lifecycle``    the phases in order: lock, stage in, ready, autosave loop, final save, release
``staging_in``   locking and staging-in: the project restored (or resumed), the source cloned;
                 after a stop before ready, the primary given back as it was
``running``      the autosave loop, and the saves asked for (POST /save, /confirm-deletions)
``staging_out``  the final save with retries inside its deadline, the release, the clean-up
``hold``         the lock the daemon holds: one writer at a time, release, fencing
``heartbeat``    the lock heartbeat thread
``cloning``      the source's clone, at stage-in and on POST /clone
``mainloop``     the main thread: signals counted and applied, waiting for workers, progress
``state``        what the daemon knows about itself (phase, tasks, saves, errors), for the web
``web``          the HTTP server: progress page, /status, /metrics, probes, POST /save, /clone
``config``       what it was told (folders, interval, deadline) and the files it writes
``logs``         its log lines, text or JSON, with secrets redacted

The command that starts it is in :mod:`spaceport.cli.daemon_cmd`.
"""
