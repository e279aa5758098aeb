"""The durable runtime: agent runs as DBOS workflows whose every model call, tool call and session
read or write is a recorded step; queues, schedules, sessions, saved run state, and the events runs emit.

`engine` is the one module that imports `dbos`. May import `subjects`, `timestep.ops`, `timestep.errors`
and `timestep.settings`; never `timestep.bus` or `actors`.
"""
