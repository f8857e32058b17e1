"""Evaluation: metrics over per-frame records, the bag evaluator, HTML reports."""

from .metrics import DEFAULT_RECALL_THRESHOLDS, frame_record, summarize

__all__ = ["DEFAULT_RECALL_THRESHOLDS", "frame_record", "summarize"]
