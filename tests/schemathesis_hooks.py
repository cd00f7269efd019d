"""Schemathesis hooks for the fuzz test: the CPU engine generates a few tokens per case, not thousands, so the run
stays bounded in time. The limits themselves are tested apart; every other generated value goes as it is."""

import schemathesis

MOST_TOKENS = 16


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if isinstance(case.body, dict):
        for field in ("max_tokens", "max_completion_tokens", "min_tokens"):
            value = case.body.get(field)
            if isinstance(value, int) and not isinstance(value, bool) and value > MOST_TOKENS:
                case.body[field] = MOST_TOKENS
