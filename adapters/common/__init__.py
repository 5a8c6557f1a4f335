"""What every platform shares: message splitting (split), paced streaming of replies (stream), the
moderators' flag report (flags), the narrow dependencies adapters get (deps) and the platform-package
contract the CLI drives (platform). Folding a reply stream is core's (:mod:`core.reply`): workers need it."""
