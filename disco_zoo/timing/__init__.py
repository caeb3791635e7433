"""One model of time: per-device programs replayed over FIFO links (docs/time-model.md).

It predicts a measured DISCO run and an EdgeFlow plan alike; it knows nothing of the
runtime, the planner or torch, so both can build on it.
"""
from disco_zoo.timing.links import Link, Links, parse_bandwidth, parse_latency
from disco_zoo.timing.replay import (
    ComputeProfile, Event, MessageCost, RankProgram, Replay, Segment, median_program, predict_latency, replay,
)

__all__ = ["ComputeProfile", "Event", "Link", "Links", "MessageCost", "RankProgram", "Replay", "Segment",
           "median_program", "parse_bandwidth", "parse_latency", "predict_latency", "replay"]
