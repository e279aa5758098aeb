"""The NATS side of the library: the bus connection (`connection`, the one module that imports
`nats`), the embedded nats-server (`server`), and the translation of wire messages into runs
(`intake`) and of their problems into the library's words (`problems`).

May import `subjects`, `timestep.durable`, `timestep.ops`, `timestep.errors` and `timestep.settings`; never `actors`.
"""
