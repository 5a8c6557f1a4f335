"""Loopback fakes of the platforms Parley talks to. Real client libraries talk to them over real sockets."""
