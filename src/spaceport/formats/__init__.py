"""What spaceport writes and reads on disk, one module per format: the work marker, the
link manifest, the old tools' lists and locks, the trash, the save journal, the log of a
working copy. docs and README describe each format; these modules are their only readers
and writers."""
