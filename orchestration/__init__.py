"""The orchestrator behind ./setup.sh: modes, verbs, state and process supervision.

setup.sh only makes the Python environment and runs `cli.main` with every argument. A run is
`cli.parse` (one validated `options.Options`) -> `commands.run`, which picks the mode (local
processes or Docker Compose, `commands.choose_mode`) and calls the method named after the
verb on `local_mode.LocalMode` or `docker_mode.DockerMode`; both share one command set. What
a data dir remembers is `state.State` (state.json, versioned). Renderers (vault_config,
compose, layout) are pure and shared with the test harness.

Maintainer's note:
- A flag: add it in `cli._common_options`, a field in `options.Options` (validate in
  `__post_init__`), a line in usage.py; if it is remembered, a field in `state.State`
  (bump VERSION only when an old file would be misread). Test it in tests/orchestration.
- A verb (e.g. `restore`): add it to `options.VERBS` (its argument, if any, in
  `cli.build_parser` and `cli._verb_argument`; its old flag form in `cli.VERB_FLAGS`), then a
  method of that name (dashes as underscores) on both modes.
- A mode: a class with the verbs' methods, chosen in `commands.run`.
"""
