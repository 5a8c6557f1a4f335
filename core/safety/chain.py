"""The moderation chain: local rules, then the moderation endpoint, judged by the bot's profile.

    text -> invisible characters (strip / refuse) -> local rules (blocked patterns, prompt injection,
         personal data, links, mentions; on output also the canary and the system prompt's sentences)
         -> the moderation endpoint (skipped when a rule already refused; it is sent the *redacted* text)
         -> one :class:`Verdict`: the most severe action wins (refuse > redact > flag > allow)

While a reply streams, the engine asks again every few hundred characters (``final=False``): then only a
refusal matters, the endpoint is asked only when the profile says ``stream_checks = "full"``, and nothing is
recorded unless the reply is refused. With ``since`` (the length already checked) a streamed check looks only
at the new text plus :data:`core.safety.rules.STREAM_OVERLAP` characters, so a reply costs linear time in all;
the final check sees the whole reply and records every decision that is not a plain allow.
"""

from __future__ import annotations

import structlog

from core.moderation import Action, Verdict
from core.safety.endpoint import ModerationEndpoint, ModerationUnavailable
from core.safety.events import Decision, EventLog
from core.safety.profiles import SEVERITY, Profile, Stage
from core.safety.rules import Hit, LocalRules, apply_spans, stream_window_start
from core.safety.text import has_invisible, neutralize_mentions, strip_invisible
from core.types import Turn

log = structlog.get_logger("parley.safety")

REMOVED = "[message removed by moderation]"
ALWAYS_FLAGGED = frozenset({"prompt_leak"})
RECORDED_BY_ENGINE = frozenset({"prompt_leak"})  # the turn observer records these (one source per category)


class ModerationChain:
    """A :class:`core.moderation.Moderator` built from a :class:`Profile`."""

    def __init__(
        self,
        *,
        profile: Profile,
        rules: LocalRules,
        events: EventLog,
        endpoint: ModerationEndpoint | None = None,
    ) -> None:
        self.profile = profile
        self.rules = rules
        self.events = events
        self.endpoint = endpoint if profile.endpoint else None

    async def check_input(self, turn: Turn, text: str) -> Verdict:
        return await self._check(turn, "input", text, final=True)

    def remote_only(self, text: str) -> bool:
        """True when the local rules find nothing in ``text`` (no invisible characters, no rule hit, so no
        rewrite: secrets and blocked patterns included) and the endpoint is still to be asked: only a
        network verdict is pending. The engine's early request (``early_llm_request``) waits for this."""
        return self.endpoint is not None and not has_invisible(text) and not self.rules.check_input(text)

    async def check_output(self, turn: Turn, text: str, *, final: bool, since: int = 0) -> Verdict:
        if final or since <= 0:
            return await self._check(turn, "output", text, final=final)
        verdict = await self._check(turn, "output", text[stream_window_start(text, since) :], final=False)
        return verdict if verdict.action is Action.REFUSE else Verdict(Action.ALLOW, text)

    async def check_image(self, turn: Turn, url: str) -> Verdict:
        """An image attachment, before any model sees it: the endpoint's image scores, judged like input
        text. Without an endpoint nothing can look at it: the profile's fail-open / fail-closed applies."""
        if self.endpoint is None:
            if self.profile.on_error == "open":
                return Verdict(Action.ALLOW, "")
            hit = Hit("moderation_unavailable", detail="fail_closed:no_endpoint")
            await self.events.record(
                turn, [Decision("input", hit.category, "refuse", "endpoint", hit.detail)]
            )
            return Verdict(Action.REFUSE, "", hit.category, hit.detail)
        hits = await self._endpoint_hits(turn, "input", url, image=True)
        decisions = [
            Decision("input", h.category, a.value, s, h.detail) for h, a, s in hits if a is not Action.ALLOW
        ]
        verdict = self._verdict("input", "", hits)
        await self.events.record(turn, decisions)
        if verdict.action is Action.REDACT:  # an image cannot be partly shown: a redaction refuses it
            return Verdict(Action.REFUSE, "", verdict.category, verdict.reason, flag=verdict.flag)
        return verdict

    async def aclose(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.aclose()

    # ------------------------------------------------------------------------------------------ the check

    def _action(self, stage: Stage, category: str) -> Action:
        if category in ALWAYS_FLAGGED:
            return Action.REFUSE
        return self.profile.action(stage, category)

    async def _check(self, turn: Turn, stage: Stage, text: str, *, final: bool) -> Verdict:
        hits: list[tuple[Hit, Action, str]] = []
        work = text
        if has_invisible(text):
            action = self._action(stage, "invisible_chars")
            hits.append((Hit("invisible_chars", detail="invisible"), action, "rules"))
            if action is not Action.ALLOW:
                work = strip_invisible(text)  # later rules must see through "ig\u200bnore"
        rule_hits = self.rules.check_input(work) if stage == "input" else self.rules.check_output(work)
        hits += [(h, self._action(stage, h.category), "rules") for h in rule_hits]

        refused = any(a is Action.REFUSE for _, a, _ in hits)
        ask_endpoint = self.endpoint is not None and (
            stage == "input" or final or self.profile.stream_checks == "full"
        )
        if ask_endpoint and not refused:
            hits += await self._endpoint_hits(turn, stage, work)

        decisions = [
            Decision(stage, h.category, a.value, source, h.detail)
            for h, a, source in hits
            if a is not Action.ALLOW
        ]
        decisions += [
            Decision(stage, h.category, "allow", source, h.detail)
            for h, a, source in hits
            if h.category == "moderation_unavailable" and a is Action.ALLOW
        ]
        verdict = self._verdict(stage, work, hits)
        if final or verdict.action is Action.REFUSE:
            await self.events.record(turn, [d for d in decisions if d.category not in RECORDED_BY_ENGINE])
        return verdict

    async def _endpoint_hits(
        self, turn: Turn, stage: Stage, text: str, *, image: bool = False
    ) -> list[tuple[Hit, Action, str]]:
        assert self.endpoint is not None
        try:
            if image:
                scores = await self.endpoint.image_scores(text, deadline=self.profile.timeout)
            else:
                probe = self.rules.redactor.redact(text)  # the endpoint never sees personal data
                scores = await self.endpoint.scores(probe, deadline=self.profile.timeout)
        except ModerationUnavailable as exc:
            mode = self.profile.on_error
            log.warning(
                "moderation_endpoint_failed",
                mode=f"fail-{mode}",
                error=exc.code,
                stage=stage,
                turn_id=turn.turn_id,
            )
            await self.events.count(f"endpoint:{mode}:{exc.code}")
            action = Action.ALLOW if mode == "open" else Action.REFUSE
            return [(Hit("moderation_unavailable", detail=f"fail_{mode}:{exc.code}"), action, "endpoint")]
        out = []
        for category, threshold in self.profile.thresholds.items():
            score = scores.get(category, 0.0)
            if score >= threshold:
                out.append(
                    (Hit(category, detail=f"score={score:.2f}"), self._action(stage, category), "endpoint")
                )
        return out

    def _verdict(self, stage: Stage, text: str, hits: list[tuple[Hit, Action, str]]) -> Verdict:
        acting = [(h, a) for h, a, _ in hits if a is not Action.ALLOW]
        if not acting:
            return Verdict(Action.ALLOW, text)
        worst = max((a for _, a in acting), key=SEVERITY.__getitem__)
        first = next(h for h, a in acting if a is worst)
        flagged = next((h.category for h, a in acting if a is Action.FLAG), "")
        if worst is Action.REFUSE:
            flag = (
                first.category
                if (self.profile.flag_refusals or first.category in ALWAYS_FLAGGED)
                else flagged
            )
            return Verdict(Action.REFUSE, text, first.category, first.detail, flag=flag)
        if worst is Action.REDACT:
            redacting = [h for h, a in acting if a is Action.REDACT]
            if any(not h.spans and h.category not in {"mentions", "invisible_chars"} for h in redacting):
                return Verdict(Action.REDACT, REMOVED, first.category, first.detail, flag=flagged)
            new = apply_spans(text, [s for h in redacting for s in h.spans])
            if any(h.category == "mentions" for h in redacting):
                new = neutralize_mentions(new)
            return Verdict(Action.REDACT, new, first.category, first.detail, flag=flagged)
        return Verdict(Action.FLAG, text, first.category, first.detail, flag=first.category)
