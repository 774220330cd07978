"""What to watch and how: the source, the matcher's rules and the stream options, shared by
`invedge watch` and `invedge serve --watch`. Stdlib only at import (serve's --help stays instant)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..bounds import COOLDOWN, OPEN_TIMEOUT, RECONNECT, THRESHOLD, WATCH_K, check_bounds
from ..sources.sampling import Sampling

if TYPE_CHECKING:  # pragma: no cover
    from ..sources.open import StreamSettings
    from ..sources.spec import SourceSpec

DEFAULT_THRESHOLD = 0.8
DEFAULT_COOLDOWN = 5.0  # seconds of frame time
DEFAULT_WATCH_K = 1  # the best match only
WATCH_BOUNDS = {
    "threshold": THRESHOLD,
    "cooldown": COOLDOWN,
    "k": WATCH_K,
    "open_timeout": OPEN_TIMEOUT,
    "reconnect": RECONNECT,
}


@dataclass(frozen=True)
class WatchSettings:
    """A watch: `source` as typed (a file, a stream URL, a camera, a gst: pipeline), when a gallery
    item's score counts as a match, and how the source is read."""

    source: str
    threshold: float = DEFAULT_THRESHOLD
    cooldown: float = DEFAULT_COOLDOWN
    k: int = DEFAULT_WATCH_K
    sampling: Sampling = field(default_factory=Sampling)
    open_timeout: float = 10.0
    reconnect: int = 5
    decoder: str = "auto"

    def streams(self) -> StreamSettings:
        """How the source is read, as `embed` and `search` read theirs."""
        from ..sources.open import StreamSettings

        return StreamSettings(self.sampling, self.open_timeout, self.reconnect, self.decoder)

    def check(self) -> SourceSpec:
        """The source's form, once every value is in range and the stream options fit the source
        (ConfigError, SourceError: one line), as `embed` and `search` check theirs."""
        from ..errors import ConfigError
        from ..sources.open import choose_decoder
        from ..sources.spec import parse_source

        check_bounds(WATCH_BOUNDS, vars(self))
        self.streams()  # its own checks (the decoder's name)
        spec = parse_source(self.source)
        if spec.kind == "image":
            raise ConfigError(
                f"{spec.name} is an image: a watch reads a video file, a stream or a camera",
                "Search an image with 'invedge search'",
            )
        if spec.live and (self.sampling.start is not None or self.sampling.end is not None):
            raise ConfigError(
                f"--start and --end apply to video files, not to the live source {spec.name}",
                "Use --duration for a stream or camera",
            )
        choose_decoder(spec, self.decoder)
        return spec
