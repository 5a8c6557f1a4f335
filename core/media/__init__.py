"""Images: attachments in for vision personas (:mod:`core.media.vision`), ``/imagine`` out
(:mod:`core.media.imagine`), composed by :func:`core.media.setup.build_media`."""
