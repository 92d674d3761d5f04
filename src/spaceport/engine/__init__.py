"""The engine: walking trees (scan), knowing what is saved (index), deciding what to do
(plan, renames, appends), and copying it (transfer, snapshots of SQLite databases), with
progress. It knows nothing of locks or commands; the commands drive it."""
