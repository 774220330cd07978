"""`invedge watch` and `invedge serve --watch`: a source's frames searched against a gallery as they come.

`settings.WatchSettings` says what to watch and how (both verbs); `matcher.Matcher` decides which
search hits are matches (a score threshold, a cooldown per gallery item); `loop.watch_frames` runs
source → embed → search → decide until the source ends or is stopped, timing each frame from its
arrival (live) or from the moment the loop took it (a file); `save.MatchSaver` writes matched frames; `run.run_watch` is the whole of
`invedge watch` but the printing; `background.BackgroundWatch` runs the loop in a thread of the
service and keeps its last matches.
"""
