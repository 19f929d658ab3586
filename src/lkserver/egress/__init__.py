"""Egress: record and stream rooms, participants, tracks and web pages (LiveKit's Egress API).

`plan` validates requests into plans (sans-I/O), `manager` runs jobs on the event loop (status
machine, records, events, admission), `worker` is the per-job process that decodes, composes
(`compositor`), encodes and muxes (`sinks`), uploads (`storage`) and renders web pages (`web`);
`depacketize` turns RTP into frames.
"""
