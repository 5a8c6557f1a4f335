"""A fake Slack for tests: Web API + Socket Mode on loopback, and signed Events/command/action senders."""

from tests.fakes.slack.requests import SlackSender, new_ts, sign
from tests.fakes.slack.server import Call, Envelope, FakeSlack, Message

__all__ = ["Call", "Envelope", "FakeSlack", "Message", "SlackSender", "new_ts", "sign"]
