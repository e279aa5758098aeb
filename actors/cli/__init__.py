"""The `timestep` command line and the demos: the top of the stack, above the actors it starts.

`main` parses commands (the console script is `actors.cli.main:main`), `render` prints events for
people, `demo` and `demo_library` are the two demos, `demo_agents` their agent. May import `actors`,
`timestep` and `subjects`; nothing imports it.
"""
