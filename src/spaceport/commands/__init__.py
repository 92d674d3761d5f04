"""The commands' own flows: deploy (with its stage-in), save, undeploy, status and verify,
clone; each takes a path and :class:`~spaceport.commands.options.Options` and hands one
opened working copy down its steps. The command line (:mod:`spaceport.cli`) and the daemon
(:mod:`spaceport.daemon`) call them; they build on the safety mechanisms
(:mod:`spaceport.safety`), the engine (:mod:`spaceport.engine`), the formats
(:mod:`spaceport.formats`) and the stores (:mod:`spaceport.store`)."""
