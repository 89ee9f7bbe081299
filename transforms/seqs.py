"""Seq ranges: which seqs of a symbol's open windows were seen, one range per gap (DESIGN.md §3)."""
from __future__ import annotations


def insert_seq(ranges: list, seq: int, end: int) -> bool:
    """Record `seq` (of a tick in the window ending at `end`) in `ranges`.

    `ranges` is a sorted list of [low, high, last_window_end] seq ranges;
    returns False if `seq` was already there. Contiguous seqs share a range,
    so a gap-free feed costs one range per symbol however many ticks.
    """
    if ranges:
        last = ranges[-1]
        if seq == last[1] + 1:   # the common case: the next seq of the feed
            last[1] = seq
            if end > last[2]:
                last[2] = end
            return True
        if seq > last[1] + 1:
            ranges.append([seq, seq, end])
            return True
    lo, hi = 0, len(ranges)
    while lo < hi:  # bisect on the ranges' lower bounds
        mid = (lo + hi) // 2
        if ranges[mid][0] <= seq:
            lo = mid + 1
        else:
            hi = mid
    before = ranges[lo - 1] if lo else None
    after = ranges[lo] if lo < len(ranges) else None
    if before is not None and seq <= before[1]:
        return False
    joins_before = before is not None and before[1] == seq - 1
    joins_after = after is not None and after[0] == seq + 1
    if joins_before and joins_after:
        before[1] = after[1]
        before[2] = max(before[2], after[2], end)
        del ranges[lo]
    elif joins_before:
        before[1] = seq
        before[2] = max(before[2], end)
    elif joins_after:
        after[0] = seq
        after[2] = max(after[2], end)
    else:
        ranges.insert(lo, [seq, seq, end])
    return True


def touch_seq(ranges: list, seq: int, end: int) -> None:
    """Keep the range holding `seq` until the window ending at `end` closes."""
    for span in ranges:
        if span[0] <= seq <= span[1]:
            if end > span[2]:
                span[2] = end
            return
