"""Timestep actors: agent, governor and scheduler processes over NATS JetStream (built on `timestep` and `subjects`)."""
