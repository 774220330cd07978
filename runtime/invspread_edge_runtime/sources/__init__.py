"""Where frames come from: video files, streams (RTSP, HTTP, RTP) and cameras, one interface.

`spec.parse_source` says what a user's argument names (an image, a video file, a folder, a
stream URL, a camera, a GStreamer pipeline); `frame.Frame` is one decoded picture with its source,
frame index and time; `frame.FrameSource` yields the frames that `sampling.Sampling` keeps. The
decoders (PyAV by default; GStreamer where a pipeline or a Jetson's hardware decoder is wanted) and
the live-stream reader (newest frame only, reconnects) implement `FrameSource`; `open.open_source`
picks one. Problems raise `errors.SourceError`.
"""
