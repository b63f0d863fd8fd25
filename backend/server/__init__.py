"""The dreamprop job server: ZeroMQ ROUTER loop, SQLite job store, GPU worker processes.

``python -m backend serve | submit | keygen`` (see ``backend.server.cli``).
"""
